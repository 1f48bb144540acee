// A tool declared in C++ and called from an agent: the OCR service is a
// C++ callable registered like an agent type, declared on the node with its
// side-effect class and policy, and every call goes through the stack
// (deadline, bulkhead, retries with the shared budgets, circuit breaker,
// rate and cost limits, attempt timeout).
#include <atomic>
#include <iostream>

#include <vigil/vigil.hpp>

#include "ocr.pb.h"

using namespace std::chrono_literals;
using examples::Scan, examples::Text;

std::atomic<int> calls{0}; // the "service" fails its first call

vigil::tool_result<Text> ocr_service(const Scan& s, vigil::tool_call& call) {
  if (++calls == 1) // a 503: transient, so the stack retries it
    return vigil::tool_error::transient("503 from the OCR service");
  if (s.document().empty()) // a 400: permanent, never retried
    return vigil::tool_error::permanent("no document");
  Text t;
  t.set_text("text of " + s.document());
  return {t, /*cost=*/1.0}; // cost units, for the cost limits
}

class intake : public vigil::agent<> {
public:
  static void define(vigil::handlers<intake>& h) { h.on<Scan>(&intake::take); }
  void take(vigil::context& ctx, const Scan& s) {
    auto reply = ctx.defer();
    ctx.call_tool<Text>("ocr", s,
      [reply](Text t) mutable { reply.deliver(t); },
      [reply](const caf::error& e) mutable { reply.fail(e); });
  }
};

int main() {
  vigil::registry types;
  types.add<intake>("intake");
  types.add_tool<Scan, Text>("ocr", ocr_service);
  vigil::node_config cfg;
  vigil::tool_decl ocr{"ocr", "", vigil::side_effect::read_only};
  ocr.policy.timeout = 5s;                  // every call has a deadline
  ocr.policy.retry.max_attempts = 3;        // the first attempt included
  ocr.policy.breaker.consecutive_failures = 3;
  ocr.policy.bulkhead.max_concurrent = 4;   // its own 4 threads
  ocr.policy.cost.per_agent = 1000;         // per hour, for each agent
  cfg.tools.push_back(ocr);
  vigil::node node{std::move(types), cfg};
  vigil::supervisor_spec tree;
  tree.children = {vigil::worker("intake", "intake")};
  if (auto err = node.start("invoices", tree))
    return std::cerr << vigil::describe(err) << '\n', 1;
  Scan s;
  s.set_document("scan-17.pdf");
  auto r = node.call<Text>("invoices/intake", s, 10s);
  std::cout << (r ? r->value.text() : vigil::describe(r.error())) << " after "
            << calls << " calls\n";
  return r && calls == 2 ? 0 : 1;
}
