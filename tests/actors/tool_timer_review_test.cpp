// Adversarial review of the cell's one tool timer (cell::arm_tool_timer,
// cell::on_tool_tick in actors/src/cell_tools.cpp) and of the time
// arithmetic around it, on CAF's deterministic testing scheduler.

#include <atomic>
#include <chrono>

#include "support/tool_fixture.hpp"

using namespace vigil;
using namespace vigil::test;
using namespace std::chrono_literals;

namespace {

std::atomic<int> answered_calls{0};

/// On Ping{n}: with param `fanout`, makes n calls of tool "svc", call i
/// with a total timeout of 1 s + i ms (each call's deadline its own
/// tick); otherwise one call with tool_options::timeout = `timeout_ns`
/// (param) and replies with its answer.
class timer_caller : public agent<> {
public:
  explicit timer_caller(const params& ps) {
    fanout_ = ps.count("fanout") > 0;
    if (auto i = ps.find("timeout_ns"); i != ps.end())
      opts_.timeout = resilience::duration{std::stoll(i->second)};
    if (auto i = ps.find("max"); i != ps.end())
      opts_.timeout = resilience::duration::max();
  }

  static void define(handlers<timer_caller>& h) {
    h.on<Ping>(&timer_caller::ping);
  }

  void ping(context& ctx, const Ping& req) {
    if (fanout_) {
      for (int64_t i = 0; i < req.n(); ++i) {
        tool_options o;
        o.timeout = 1s + std::chrono::milliseconds{i};
        o.max_attempts = 1;
        Ping p;
        p.set_n(i);
        ctx.call_tool<Pong>(
          "svc", p, o, [](Pong) { ++answered_calls; },
          [](const caf::error&) { ++answered_calls; });
      }
      Pong out;
      out.set_n(req.n());
      auto rp = ctx.defer();
      rp.deliver(out);
      return;
    }
    auto rp = ctx.defer();
    ctx.call_tool<Pong>(
      "svc", req, opts_, [rp](Pong p) mutable { rp.deliver(p); },
      [rp](const caf::error& e) mutable { rp.fail(e); });
  }

private:
  bool fanout_ = false;
  tool_options opts_;
};

class tool_timer_review_test : public tool_fixture {
public:
  tool_timer_review_test() {
    registry types = rt->types();
    types.add<timer_caller>("timer_caller");
    rt = std::make_shared<runtime>(std::move(types));
    answered_calls = 0;
  }
};

} // namespace

// tool_options::timeout is not validated nor capped (the policy's timeout
// is capped at 168h by check_tool): `now + total` in call_tool_raw
// (cell_tools.cpp:108) overflows for a caller that asks for the longest
// deadline there is, and the call is refused at once with
// deadline_exceeded "has no time left (0 attempts)" instead of being made.
TEST_F(tool_timer_review_test, the_longest_timeout_is_not_no_time_left) {
  declare(decl_of("svc"));
  advance(1s); // any clock that is not at its epoch
  ASSERT_FALSE(start_one("c", "timer_caller", {{"max", "1"}}));
  ask_ping("t/c", 1);
  run();
  ASSERT_TRUE(answered(1));
  EXPECT_TRUE(answers[1].ok) << describe(answers[1].err);
  EXPECT_EQ(service::get().count(), 1u);
}

// A service that answers "retry after" with a very long time (a 503 with a
// Retry-After the tool maps to duration::max(), "not before I say so"):
// `now + delay` in retry_or_fail (cell_tools.cpp:371 and :405) overflows, the
// "no time for attempt 2" check passes, retry_due wraps into the past and
// the retry is made at once, ignoring the service's retry_after.
TEST_F(tool_timer_review_test, a_huge_retry_after_is_not_an_immediate_retry) {
  auto d = decl_of("svc");
  d.policy.timeout = 5s;
  declare(d);
  advance(1s);
  auto& svc = service::get();
  svc.mode = svc_mode::transient;
  svc.retry_after = resilience::duration::max();
  ASSERT_FALSE(start_one("c", "tool_caller"));
  ask_ping("t/c", 1);
  run();
  advance(1ms);
  advance(1ms);
  EXPECT_EQ(svc.count(), 1u)
    << "retried within 2 ms although the service said retry after "
       "duration::max()";
  ASSERT_TRUE(advance_until([&] { return answered(1); }, 100ms, 10s));
  EXPECT_EQ(svc.count(), 1u);
}

// The one timer is armed for the earliest due time, and each tick scans
// every call of the cell twice (on_tool_tick, cell_tools.cpp:431 and
// :447): with n calls in flight whose deadlines fall on n different ticks,
// a tick costs O(n) and the n deadlines O(n^2). One tick (one call's
// deadline, one answer) with 32,000 calls in flight should cost about
// what it costs with 2,000 (a priority queue of due times: O(log n)); it
// costs ~16 times as much.
TEST_F(tool_timer_review_test, a_tick_costs_the_same_with_many_calls_in_flight) {
  auto d = decl_of("svc");
  d.policy.bulkhead.queue = 1000000;
  d.policy.breaker.enabled = false;
  declare(d);
  executors["svc"]->inline_run = false; // every call hangs
  auto per_tick = [&](int64_t n, const std::string& id) {
    answered_calls = 0;
    child_spec c;
    c.id = id;
    c.agent = "timer_caller";
    c.params = {{"fanout", "1"}};
    supervisor_spec spec;
    spec.children.push_back(c);
    EXPECT_FALSE(start("s" + id, std::move(spec)));
    ask_ping("s" + id + "/" + id, n);
    run();
    // Up to just before the first deadline (1 s from the call).
    advance(999ms);
    EXPECT_EQ(answered_calls.load(), 0);
    const int ticks = 300;
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < ticks; ++i)
      advance(1ms);
    auto took = std::chrono::steady_clock::now() - t0;
    // Each step answered one call at its deadline.
    EXPECT_GE(answered_calls.load(), ticks - 2);
    EXPECT_LE(answered_calls.load(), ticks + 1);
    // Let every other call end at its deadline (fast: one big step per
    // 10 s lets a tick answer many calls at once).
    for (int i = 0; i < 10 && answered_calls.load() < n; ++i)
      advance(std::chrono::milliseconds{n + 2000});
    EXPECT_EQ(answered_calls.load(), n);
    executors["svc"]->run_all();
    run();
    return std::chrono::duration<double, std::micro>(took).count() / ticks;
  };
  // The fastest of three rounds each, alternating: a round slowed by
  // another process (ctest runs two tests at once) does not count.
  double small = 1e18, large = 1e18;
  for (int r = 0; r < 3; ++r) {
    small = std::min(small, per_tick(2000, "a" + std::to_string(r)));
    large = std::min(large, per_tick(32000, "b" + std::to_string(r)));
  }
  EXPECT_LT(large, 4 * small)
    << "a tick with 2,000 calls in flight takes " << small
    << " us, with 32,000 " << large << " us";
}
