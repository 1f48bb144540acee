// A user's own runner: register your agent types, then hand over to vigil's
// command line (run, check, inspect, dead-letters), built-ins included.
//
//   my_runner run examples/policies/my_runner.yaml --for 5s
#include <vigil/vigil.hpp>

#include "ocr.pb.h"

/// Reads scans and counts pages; an agent like any other.
class reader : public vigil::agent<examples::Stats> {
public:
  static void define(vigil::handlers<reader>& h) {
    h.on<examples::Scan>([](reader& self, vigil::context& ctx,
                            const examples::Scan& s) {
      self.state().set_pages(self.state().pages() + 1);
      examples::Text t;
      t.set_text(ctx.path() + " read " + s.document());
      t.set_pages(self.state().pages());
      return t;
    });
  }
};

int main(int argc, char** argv) {
  vigil::registry types;
  types.add<reader>("reader");
  return vigil::cli::main(argc, argv, std::move(types));
}
