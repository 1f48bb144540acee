// Built by install_test.sh with `g++ $(pkg-config --cflags --libs vigil)`
// against an installed vigil, without CMake: an agent over vigil's own
// built-in messages, under a supervisor, answering one call.
#include <iostream>

#include <vigil/vigil.hpp>
#include <vigil/builtin.pb.h>

using namespace std::chrono_literals;
using vigil::builtin::Count, vigil::builtin::Number;

class adder : public vigil::agent<Count> {
public:
  static void define(vigil::handlers<adder>& h) {
    h.on<Number>([](adder& self, vigil::context&, const Number& n) {
      self.state().set_count(self.state().count() + 1);
      self.state().set_sum(self.state().sum() + n.n());
      return self.state();
    });
  }
};

int main() {
  vigil::registry types;
  types.add<adder>("adder");
  vigil::node node{std::move(types)};
  vigil::supervisor_spec tree;
  tree.children = {vigil::worker("adder", "adder")};
  if (auto err = node.start("sums", tree))
    return std::cerr << vigil::describe(err) << '\n', 1;
  Count last;
  for (int i = 1; i <= 3; ++i) {
    Number n;
    n.set_n(i * 10);
    auto r = node.call<Count>("sums/adder", n, 5s);
    if (!r)
      return std::cerr << vigil::describe(r.error()) << '\n', 1;
    last = r->value;
  }
  std::cout << "vigil " << vigil::version_string << ": " << last.count()
            << " numbers, sum " << last.sum() << '\n';
  return 0;
}
