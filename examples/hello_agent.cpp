// The whole agent API in one file: typed Protobuf handlers, state, hooks, a
// refusal, a request with a deadline, a deferred reply, a send, and a
// supervised tree.
#include <iostream>

#include <vigil/vigil.hpp>

#include "ocr.pb.h"

using namespace std::chrono_literals;
using examples::Scan, examples::Text, examples::Stats;

class ocr : public vigil::agent<Stats> { // Stats is this agent's state
public:
  static void define(vigil::handlers<ocr>& h) { h.on<Scan>(&ocr::read); }
  void on_start(vigil::context& ctx) override { std::cout << ctx.path() << " up\n"; }
  caf::expected<Text> read(vigil::context&, const Scan& s) {
    if (s.document().empty()) // refused: no restart, the caller gets the error
      return vigil::make_error(vigil::errc::refused, "empty scan");
    state().set_pages(state().pages() + 1);
    Text t;
    t.set_text("text of " + s.document());
    t.set_pages(state().pages());
    return t; // the reply
  }
};

class intake : public vigil::agent<> { // no state
public:
  static void define(vigil::handlers<intake>& h) { h.on<Scan>(&intake::take); }
  void take(vigil::context& ctx, const Scan& s) {
    auto reply = ctx.defer(); // answer later, from the callback
    ctx.request<Text>("invoices/ocr", s, 500ms, // deadline
      [reply](vigil::reply<Text> r) mutable { reply.deliver(r.value); },
      [reply](const caf::error& e) mutable { reply.fail(e); });
    examples::Audit a;
    a.set_line("scan " + s.document());
    ctx.send("invoices/audit", a); // fire and forget
  }
};

int main() {
  vigil::registry types;
  types.add<ocr>("ocr").add<intake>("intake");
  vigil::node node{std::move(types)};
  vigil::supervisor_spec tree; // one_for_one, 1 restart in 5 s, as in OTP
  tree.children = {vigil::worker("ocr", "ocr"), vigil::worker("intake", "intake")};
  if (auto err = node.start("invoices", tree))
    return std::cerr << vigil::describe(err) << '\n', 1;
  Scan s;
  s.set_document("scan-17.pdf");
  auto r = node.call<Text>("invoices/intake", s, 1s);
  std::cout << (r ? r->value.text() : vigil::describe(r.error())) << '\n';
  return r && r->value.text() == "text of scan-17.pdf" ? 0 : 1;
}
