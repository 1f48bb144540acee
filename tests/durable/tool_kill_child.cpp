// The process that tool_kill_test kills: a node on DATA_DIR whose journal
// agent kill/w, for each Ping n, makes a recorded call of the `http` tool
// "svc" (POST BASE/svc/{n}, an idempotent write) and, in its callback, an
// effect on the `http` tool "hook" (POST BASE/hook/{n}, irreversible)
// through its outbox. Both go to the counting service in the test process.
// Every request carries the header X-Vigil-Run: RUN, so that the service's
// records say which run executed what.
//
// At every start it sends Ping 1..N with message ids 1..N: the first run's
// are accepted, a later run's are duplicates (not applied twice). Then it
// watches its data dir and prints, on stdout:
//
//   accepted              all N envelopes are in the journal (or consumed)
//   settled               what earlier runs left half done is finished: the
//                         outbox was empty once since the start (every
//                         recovered effect dispatched and done) and two
//                         envelopes were consumed (the one whose call a
//                         kill interrupted, and the one after it, whose
//                         call may have run already), or none is left
//   done count=C sum=S dead=D
//                         nothing is left: C envelopes applied, summing the
//                         replies to S; D dead letters. Then it exits 0.
//
// It exits 2 on an error (on stderr).
//
//   tool_kill_child DATA_DIR BASE_URL N RUN

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>

#include "proto/test.pb.h"
#include "vigil/node/node.hpp"
#include "vigil/tools/http.hpp"

using namespace vigil;
using namespace std::chrono_literals;

namespace {

/// On Ping n: calls "svc" with it (recorded under the envelope's key), adds
/// the reply to its state, then sends "hook" the effect Ping n. On Get:
/// its state.
class caller : public agent<test::Tally> {
public:
  static void define(handlers<caller>& h) {
    h.on<test::Ping>(&caller::ping);
    h.on<test::Get>(
      [](caller& self, context&, const test::Get&) -> test::Tally {
        return self.state();
      });
  }

  void ping(context& ctx, const test::Ping& m) {
    ctx.call_tool<test::Pong>(
      "svc", m,
      [this, &ctx, m](test::Pong p) {
        state().set_count(state().count() + 1);
        state().set_sum(state().sum() + p.n());
        if (auto err = ctx.effect("hook", m))
          throw tool_failure(err);
      },
      [n = m.n()](const caf::error& e) {
        std::fprintf(stderr, "tool_kill_child: svc %lld failed: %s\n",
                     static_cast<long long>(n), describe(e).c_str());
        throw tool_failure(e);
      });
  }
};

/// The `http` tool `name`: POST base/name/{n}, Ping -> Pong, with the run's
/// header; no breaker, so that every call reaches the service, and 5
/// attempts a call.
tool_decl http_tool(const std::string& name, side_effect fx,
                    const std::string& base, const std::string& run) {
  http_spec s;
  s.method = "POST";
  s.url = base + "/" + name + "/{n}";
  s.request_type = "vigil.test.Ping";
  s.reply_type = "vigil.test.Pong";
  s.headers["X-Vigil-Run"] = run;
  tool_decl d;
  d.name = name;
  d.type = "http";
  d.effect = fx;
  d.policy.timeout = 20s;
  d.policy.attempt_timeout = 10s;
  d.policy.retry.max_attempts = 5; // (an irreversible tool makes 1)
  d.policy.retry.initial = 1ms;
  d.policy.retry.max = 5ms;
  d.policy.breaker.enabled = false;
  // Injected failures (tool_kill_test's VIGIL_TOOL_KILL_FAILURES) are
  // retried, never refused by the node's retry budget.
  d.policy.budget.ratio = 1.0;
  d.policy.budget.min_per_second = 1000.0;
  d.policy.budget.max_savings = 1000.0;
  std::vector<tool_problem> problems;
  d.impl = make_http_tool(name, s, problems);
  for (auto& p : problems)
    std::fprintf(stderr, "tool_kill_child: %s: %s: %s\n", name.c_str(),
                 p.field.c_str(), p.what.c_str());
  if (!d.impl)
    std::exit(2);
  return d;
}

size_t count(node& nd, db d) {
  size_t out = 0;
  if (auto s = nd.rt()->storage()->count(d, out); !s.ok()) {
    std::fprintf(stderr, "tool_kill_child: count %s: %s\n", to_string(d),
                 s.message().c_str());
    std::exit(2);
  }
  return out;
}

void say(const std::string& line) {
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

} // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr,
                 "usage: tool_kill_child DATA_DIR BASE_URL N RUN\n");
    return 2;
  }
  std::string base = argv[2];
  long n = std::strtol(argv[3], nullptr, 10);
  std::string run = argv[4];
  std::fprintf(stderr, "tool_kill_child: run %s\n", run.c_str());
  registry types;
  types.add<caller>("caller");
  node_config nc;
  nc.data_dir = argv[1];
  nc.tools.push_back(
    http_tool("svc", side_effect::idempotent_write, base, run));
  nc.tools.push_back(http_tool("hook", side_effect::irreversible, base, run));
  node nd{std::move(types), nc};
  supervisor_spec spec;
  spec.flags.intensity = 100;
  spec.children.push_back(
    worker("w", "caller").with_durability(durability_mode::journal));
  if (auto err = nd.start("kill", spec)) {
    std::fprintf(stderr, "tool_kill_child: %s\n", describe(err).c_str());
    return 2;
  }
  for (long k = 1; k <= n; ++k) {
    test::Ping p;
    p.set_n(k);
    call_options once;
    once.message_id = static_cast<uint64_t>(k);
    if (auto err = nd.send("kill/w", p, once)) {
      std::fprintf(stderr, "tool_kill_child: %s\n", describe(err).c_str());
      return 2;
    }
  }
  bool accepted = false;
  bool settled = false;
  bool outbox_was_empty = false;
  size_t first_journal = 0;
  auto give_up = std::chrono::steady_clock::now() + 300s;
  while (std::chrono::steady_clock::now() < give_up) {
    // The guards of accepted message ids stay (a week) after consumption.
    auto journal = count(nd, db::journal);
    auto outbox = count(nd, db::outbox);
    if (!accepted && count(nd, db::idempotency) >= static_cast<size_t>(n)) {
      accepted = true;
      first_journal = journal;
      say("accepted");
    }
    outbox_was_empty = outbox_was_empty || outbox == 0;
    if (accepted && !settled && outbox_was_empty
        && (journal == 0 || journal + 2 <= first_journal)) {
      settled = true;
      say("settled");
    }
    if (accepted && journal == 0 && outbox == 0) {
      auto r = nd.call<test::Tally>("kill/w", test::Get{}, 30s);
      if (!r) {
        std::fprintf(stderr, "tool_kill_child: Get: %s\n",
                     describe(r.error()).c_str());
        return 2;
      }
      say("done count=" + std::to_string(r->value.count()) + " sum="
          + std::to_string(r->value.sum()) + " dead="
          + std::to_string(nd.dead_letters().size()));
      return 0;
    }
    std::this_thread::sleep_for(2ms); // polling interval, bounded above
  }
  std::fprintf(stderr, "tool_kill_child: work not done in 300 s\n");
  return 2;
}
