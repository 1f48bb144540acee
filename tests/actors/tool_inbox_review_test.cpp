// Adversarial review of commit cde7778 (tool completions through a
// per-cell inbox, one heap entry per call): interleavings of an execution
// that returns into the inbox with the cell's timer, its restart and its
// exit, on CAF's deterministic testing scheduler.

#include <chrono>
#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <map>
#include <random>
#include <vector>

#include "support/tool_fixture.hpp"

using namespace vigil;
using namespace vigil::test;
using namespace std::chrono_literals;

namespace {

/// The fixture's tool_caller calls tool "bulk" for requests 100 and up
/// (param `bulk`), else "svc".
class tool_inbox_review_test : public tool_fixture {
public:
  caf::error start_caller(params ps = {}) {
    ps["bulk"] = "1";
    return tool_fixture::start_caller(std::move(ps));
  }

  /// Opens the breaker of `svc` (3 failed calls) and waits until it is
  /// half-open; the next call to it is its one probe.
  void open_then_half_open(detail::tool_runtime& svc) {
    service::get().mode = svc_mode::transient;
    for (int i = 1; i <= 3; ++i)
      ask_ping("t/c", i);
    run();
    ASSERT_EQ(svc.look().state, resilience::breaker_state::open);
    advance(30s);
    ASSERT_EQ(svc.look().state, resilience::breaker_state::half_open);
    service::get().mode = svc_mode::ok;
  }
};

} // namespace

// The instance that made a half-open probe is restarted; the probe's call
// reaches its deadline and its execution returns at that moment: the
// timer is ahead of the bell in the cell's mailbox. on_call_due sees the
// old generation and calls finish_call, whose abandon_attempt fails (the
// attempt finished: it is in the inbox) and so reports nothing; the call
// is erased, and when the bell comes on_tool_done finds no call and drops
// the outcome. The probe's permit is never reported: the breaker stays
// half-open with its one probe slot taken, refusing every call for ever.
TEST_F(tool_inbox_review_test, a_probe_returning_at_a_restarted_callers_deadline_decides) {
  auto d = decl_of("svc");
  d.policy.timeout = 1s;
  d.policy.attempt_timeout = 1s;
  d.policy.retry.max_attempts = 1;
  auto& svc = declare(d);
  ASSERT_FALSE(start_caller());
  open_then_half_open(svc);
  executors["svc"]->inline_run = false;
  ask_ping("t/c", 4);
  run();
  ASSERT_EQ(executors["svc"]->pending(), 1u);
  crash("t/c");
  ASSERT_EQ(status_of(sups.back(), "c"), "running");
  // The call's deadline comes (its tick is queued, not run yet) and the
  // probe returns now (its bell is queued behind the tick).
  sched.advance_time(1s);
  ASSERT_TRUE(executors["svc"]->run_nth(0));
  run();
  EXPECT_EQ(service::get().count(), 4u);
  EXPECT_EQ(svc.in_use(), 0u);
  // The probe succeeded: it closes the breaker. Whatever the breaker made
  // of it, it must take calls again in time.
  EXPECT_STREQ(to_string(svc.look().state), "closed");
  advance(10min);
  executors["svc"]->inline_run = true;
  ask_ping("t/c", 5);
  run();
  ASSERT_TRUE(answered(5));
  EXPECT_TRUE(answers[5].ok) << describe(answers[5].err) << "; breaker "
                             << to_string(svc.look().state);
}

// The same lost probe when the cell ends: end_tool_calls takes the inbox
// once, then abandons each call's attempt. An execution that returns after
// the take and before its call is abandoned (a real thread; here, made to
// return at that very moment by the hook of another tool's breaker, which
// end_tool_calls calls when it reports what it took from the inbox) wins
// the race in tool_attempt::phase: abandon_attempt fails and reports
// nothing, and the attempt lands in an inbox nobody takes again. The probe
// slot of the half-open breaker stays taken for ever.
TEST_F(tool_inbox_review_test, a_probe_returning_while_its_killed_cell_ends_its_calls_decides) {
  auto d = decl_of("svc");
  d.policy.retry.max_attempts = 1;
  auto& svc = declare(d);
  auto b = decl_of("bulk");
  b.policy.retry.max_attempts = 1;
  b.policy.breaker.consecutive_failures = 1;
  auto& bulk = declare(b);
  ASSERT_FALSE(start_caller());
  open_then_half_open(svc);
  service::get().script[100] = {svc_mode::transient};
  executors["svc"]->inline_run = false;
  executors["bulk"]->inline_run = false;
  ask_ping("t/c", 4);   // svc's probe
  ask_ping("t/c", 100); // a call of bulk
  run();
  ASSERT_EQ(executors["svc"]->pending(), 1u);
  ASSERT_EQ(executors["bulk"]->pending(), 1u);
  ASSERT_EQ(svc.look().state, resilience::breaker_state::half_open);
  // When bulk's failure (taken from the inbox by end_tool_calls) opens
  // bulk's breaker, svc's probe returns.
  int hooked = 0;
  bulk.on_breaker_change([&](const resilience::breaker_snapshot&) {
    if (hooked++ == 0)
      executors["svc"]->run_nth(0);
  });
  auto cell = handle("t/c");
  ASSERT_TRUE(cell);
  caf::anon_send_exit(cell, caf::exit_reason::kill);
  ASSERT_TRUE(executors["bulk"]->run_nth(0)); // into the inbox
  run();
  EXPECT_FALSE(alive(cell));
  ASSERT_EQ(hooked, 1) << "bulk's breaker did not open in end_tool_calls";
  EXPECT_EQ(bulk.look().state, resilience::breaker_state::open);
  EXPECT_EQ(service::get().count_of(4), 1u);
  EXPECT_EQ(svc.in_use(), 0u);
  // The probe succeeded: one probe closes the breaker.
  EXPECT_STREQ(to_string(svc.look().state), "closed");
}

// A retry whose backoff is due before the deadline, with the cell's tick
// coming only after the deadline (the cell was busy): on_call_due starts
// the retry first (it checks the backoff before the deadline), so the
// tool is executed after its call's deadline passed (here inline: the
// call then succeeds after its deadline). A call must not run its tool
// once its deadline has passed.
TEST_F(tool_inbox_review_test, a_retry_is_not_started_after_the_deadline) {
  auto d = decl_of("svc");
  d.policy.timeout = 1s;
  d.policy.attempt_timeout = 1s;
  d.policy.retry.max_attempts = 3;
  d.policy.retry.initial = 500ms;
  d.policy.retry.max = 500ms;
  declare(d);
  service::get().script[1] = {svc_mode::transient, svc_mode::ok};
  service::get().retry_after = 400ms; // the retry is due in 400..500 ms
  ASSERT_FALSE(start_caller());
  ask_ping("t/c", 1);
  run();
  ASSERT_EQ(service::get().count(), 1u);
  ASSERT_FALSE(answered(1));
  // The tick, due in 400..500 ms, runs at 2 s.
  advance(2s);
  ASSERT_TRUE(answered(1));
  EXPECT_EQ(service::get().count(), 1u)
    << "attempt 2 was executed 1 s after the call's deadline";
  ASSERT_FALSE(answers[1].ok) << "answered with attempt "
                               << answers[1].pong.attempt();
  // (vigil::is on an empty caf::error crashes: checked first.)
  ASSERT_TRUE(answers[1].err);
  EXPECT_TRUE(is(answers[1].err, errc::deadline_exceeded))
    << describe(answers[1].err);
}

// The same late tick, with an executor that queues: the retry goes to the
// executor with no time left and is abandoned at once as *timed out*, a
// failure of the dependency for the breaker (and a wasted bulkhead place
// until the executor drops it). One real failure, two counted.
TEST_F(tool_inbox_review_test, a_retry_started_at_the_deadline_is_not_a_failure_of_the_tool) {
  auto d = decl_of("svc");
  d.policy.timeout = 1s;
  d.policy.attempt_timeout = 1s;
  d.policy.retry.max_attempts = 3;
  d.policy.retry.initial = 500ms;
  d.policy.retry.max = 500ms;
  auto& svc = declare(d);
  service::get().mode = svc_mode::transient;
  service::get().retry_after = 400ms;
  ASSERT_FALSE(start_caller());
  executors["svc"]->inline_run = false;
  ask_ping("t/c", 1);
  run();
  ASSERT_TRUE(executors["svc"]->run_nth(0)); // attempt 1 fails
  run();
  ASSERT_EQ(svc.look().consecutive_failures, 1u);
  advance(2s);
  ASSERT_TRUE(answered(1));
  EXPECT_EQ(executors["svc"]->submitted(), 1u)
    << "an attempt was submitted after the deadline";
  EXPECT_EQ(svc.stats().abandoned.load(), 0u);
  EXPECT_EQ(svc.look().consecutive_failures, 1u)
    << "an attempt that never had time counted as a failure";
}

// -- one heap entry per call: exactness under churn ---------------------------

namespace {

/// The calls of churn_caller: for each, when it was made, its deadline,
/// and its answers (when, and whether ok).
struct churn_log {
  struct call {
    int64_t made = 0;
    int64_t deadline = 0;
    std::vector<std::pair<int64_t, bool>> answers;
  };
  std::function<int64_t()> now_ms;
  std::mt19937_64 rng{1};
  std::map<int64_t, call> calls;
  std::vector<int64_t> order; ///< keys in submission order
  int64_t next = 1000;
  int chain_percent = 0;

  static churn_log& get() {
    static churn_log x;
    return x;
  }
};

/// On Ping{n}: makes n calls of "svc" with timeouts of 50..400 ms (from the
/// log's rng), one attempt each. Each answer is logged; with the log's
/// chain_percent, an answer's callback makes a new call (from inside the
/// batch of the inbox or the tick).
class churn_caller : public agent<> {
public:
  explicit churn_caller(const params&) {
  }

  static void define(handlers<churn_caller>& h) {
    h.on<Ping>([](churn_caller& self, context& ctx, const Ping& m) {
      for (int64_t i = 0; i < m.n(); ++i)
        self.one(ctx);
      Pong p;
      ctx.defer().deliver(p);
    });
  }

  void one(context& ctx) {
    auto& log = churn_log::get();
    auto key = log.next++;
    auto t = std::uniform_int_distribution<int>{50, 400}(log.rng);
    tool_options o;
    o.timeout = std::chrono::milliseconds{t};
    o.max_attempts = 1;
    auto now = log.now_ms();
    log.calls[key] = {now, now + t, {}};
    log.order.push_back(key);
    Ping p;
    p.set_n(key);
    auto on = [this, &ctx, key](bool ok) {
      auto& lg = churn_log::get();
      lg.calls[key].answers.emplace_back(lg.now_ms(), ok);
      if (std::uniform_int_distribution<int>{0, 99}(lg.rng) < lg.chain_percent)
        one(ctx);
    };
    ctx.call_tool<Pong>(
      "svc", p, o, [on](Pong) { on(true); },
      [on](const caf::error&) { on(false); });
  }
};

} // namespace

// Many calls, most of which return early (leaving stale entries, so that
// the heap is rebuilt again and again, also from callbacks run inside a
// tick or a batch of the inbox), the rest reaching their deadline: every
// call is answered exactly once, the early ones when they return, the
// others at their deadline to the millisecond. VIGIL_CHURN_SEED replays a
// seed.
TEST_F(tool_inbox_review_test, every_call_is_answered_once_and_on_time_under_churn) {
  registry types = rt->types();
  types.add<churn_caller>("churn_caller");
  rt = std::make_shared<runtime>(std::move(types));
  auto d = decl_of("svc");
  d.policy.bulkhead.queue = 1000000;
  d.policy.breaker.enabled = false;
  d.policy.attempt_timeout = std::chrono::hours{1};
  declare(d);
  auto& ex = *executors["svc"];
  ex.inline_run = false;
  uint64_t seeds = 20;
  uint64_t first = 1;
  if (auto* s = std::getenv("VIGIL_CHURN_SEEDS"))
    seeds = std::stoull(s);
  if (auto* s = std::getenv("VIGIL_CHURN_SEED")) {
    first = std::stoull(s);
    seeds = 1;
  }
  std::cout << "churn seeds " << first << ".." << first + seeds - 1
            << " (VIGIL_CHURN_SEED=n replays one)" << std::endl;
  for (uint64_t seed = first; seed < first + seeds; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed)
                 + " (VIGIL_CHURN_SEED replays it)");
    auto& log = churn_log::get();
    log = churn_log{};
    log.rng.seed(seed);
    log.chain_percent = 30;
    auto t0 = sched.clock().now();
    log.now_ms = [this, t0] {
      return std::chrono::duration_cast<std::chrono::milliseconds>(
               sched.clock().now() - t0)
        .count();
    };
    std::string id = "c" + std::to_string(seed);
    child_spec c;
    c.id = id;
    c.agent = "churn_caller";
    supervisor_spec spec;
    spec.children.push_back(c);
    ASSERT_FALSE(start("s" + id, std::move(spec)));
    const size_t base = ex.submitted(); // tasks of the earlier seeds
    size_t ran_before = base;
    std::map<int64_t, int64_t> returned; // key -> when it returned
    for (int step = 0; step < 600; ++step) {
      if (step < 300 && step % 20 == 0) {
        Ping p;
        p.set_n(200);
        ask_msg("s" + id + "/" + id, p, -1);
        run();
      }
      // Return most of the executions submitted since the last step, in
      // random order, some in one batch of the inbox.
      auto n = ex.submitted();
      std::vector<size_t> idx;
      for (size_t i = ran_before; i < n; ++i)
        if (std::uniform_int_distribution<int>{0, 99}(log.rng) < 80)
          idx.push_back(i);
      ran_before = n;
      std::shuffle(idx.begin(), idx.end(), log.rng);
      for (auto i : idx) {
        auto key = log.order.at(i - base);
        auto& cl = log.calls[key];
        if (ex.run_nth(i) && cl.answers.empty())
          returned[key] = log.now_ms();
        if (std::uniform_int_distribution<int>{0, 3}(log.rng) == 0)
          run();
      }
      run();
      advance(1ms);
    }
    log.chain_percent = 0; // the calls left end at their deadlines
    for (int i = 0; i < 500; ++i)
      advance(1ms);
    int bad = 0;
    for (auto& [key, cl] : log.calls) {
      std::string what;
      if (cl.answers.size() != 1) {
        what = std::to_string(cl.answers.size()) + " answers";
      } else {
        auto [at, ok] = cl.answers[0];
        auto r = returned.find(key);
        bool early = r != returned.end() && r->second < cl.deadline;
        if (early && (!ok || at != r->second))
          what = "returned at " + std::to_string(r->second) + ", answered "
                 + (ok ? "ok" : "error") + " at " + std::to_string(at);
        if (!early && (ok || at != cl.deadline))
          what = std::string{"answered "} + (ok ? "ok" : "error") + " at "
                 + std::to_string(at) + ", deadline "
                 + std::to_string(cl.deadline);
      }
      if (!what.empty() && bad++ < 5)
        ADD_FAILURE() << "call " << key << " made at " << cl.made << ": "
                      << what;
    }
    EXPECT_EQ(bad, 0) << "of " << log.calls.size() << " calls";
    EXPECT_GT(log.calls.size(), 3000u);
    if (bad != 0)
      break;
  }
}

// An answer that succeeded carries an empty error: asking which code it is
// must say "none of these", not crash (CAF 0.17's category() of an empty
// error dereferences nothing).
TEST(error_review_test, an_empty_error_is_no_code) {
  caf::error none;
  EXPECT_FALSE(is(none, errc::circuit_open));
  EXPECT_FALSE(is(none, errc::none));
  EXPECT_FALSE(undelivered(none));
  EXPECT_TRUE(is(make_error(errc::circuit_open), errc::circuit_open));
}
