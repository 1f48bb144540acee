// Tests resilience/circuit_breaker.*: both opening rules, the open period
// and its backoff, bounded half-open probes, and late outcomes.

#include <chrono>

#include <gtest/gtest.h>

#include "vigil/resilience/circuit_breaker.hpp"

using namespace vigil::resilience;
using namespace std::chrono_literals;

namespace {

circuit_breaker_policy consecutive(uint32_t n, duration open_for) {
  circuit_breaker_policy p;
  p.consecutive_failures = n;
  p.open_for.initial = open_for;
  p.open_for.max = open_for;
  return p;
}

void fail(circuit_breaker& cb) {
  auto p = cb.acquire();
  ASSERT_TRUE(p);
  cb.on_failure(p);
}

void succeed(circuit_breaker& cb) {
  auto p = cb.acquire();
  ASSERT_TRUE(p);
  cb.on_success(p);
}

} // namespace

TEST(circuit_breaker_test, opens_after_consecutive_failures) {
  manual_clock clk;
  circuit_breaker cb{consecutive(3, 10s), clk};
  fail(cb);
  fail(cb);
  succeed(cb); // a success breaks the run
  fail(cb);
  fail(cb);
  EXPECT_EQ(cb.state(), breaker_state::closed);
  fail(cb);
  EXPECT_EQ(cb.state(), breaker_state::open);
  EXPECT_FALSE(cb.acquire());
  EXPECT_EQ(cb.retry_after(), 10s);
  EXPECT_EQ(cb.openings(), 1u);
}

TEST(circuit_breaker_test, half_open_lets_a_bounded_number_of_probes_through) {
  manual_clock clk;
  auto pol = consecutive(1, 5s);
  pol.half_open_probes = 2;
  circuit_breaker cb{pol, clk};
  fail(cb);
  clk.advance(4999ms);
  EXPECT_EQ(cb.state(), breaker_state::open);
  clk.advance(1ms);
  EXPECT_EQ(cb.state(), breaker_state::half_open);
  auto a = cb.acquire();
  auto b = cb.acquire();
  EXPECT_TRUE(a);
  EXPECT_TRUE(b);
  EXPECT_FALSE(cb.acquire()); // both slots in flight
  cb.on_success(a);
  EXPECT_EQ(cb.state(), breaker_state::half_open);
  EXPECT_FALSE(cb.acquire()); // one success, one in flight: still bounded
  cb.on_success(b);
  EXPECT_EQ(cb.state(), breaker_state::closed);
  EXPECT_TRUE(cb.acquire());
}

TEST(circuit_breaker_test, a_failed_probe_opens_it_again_for_longer) {
  manual_clock clk;
  auto pol = consecutive(1, 1s);
  pol.open_for.max = 8s; // doubling open periods
  circuit_breaker cb{pol, clk};
  fail(cb);
  EXPECT_EQ(cb.retry_after(), 1s);
  clk.advance(1s);
  fail(cb); // the probe fails
  EXPECT_EQ(cb.state(), breaker_state::open);
  EXPECT_EQ(cb.retry_after(), 2s);
  clk.advance(2s);
  fail(cb);
  EXPECT_EQ(cb.retry_after(), 4s);
  clk.advance(4s);
  succeed(cb); // closes, and the open period starts over
  EXPECT_EQ(cb.state(), breaker_state::closed);
  fail(cb);
  EXPECT_EQ(cb.retry_after(), 1s);
  EXPECT_EQ(cb.openings(), 4u);
}

TEST(circuit_breaker_test, opens_on_the_failure_rate_of_a_window) {
  manual_clock clk;
  circuit_breaker_policy pol;
  pol.consecutive_failures = 0; // rate rule only
  pol.failure_rate = 0.5;
  pol.window = 10;
  pol.minimum_calls = 10;
  circuit_breaker cb{pol, clk};
  // Alternating: 50% failures, but not until 10 calls were counted.
  for (int i = 0; i < 9; ++i) {
    if (i % 2 == 0)
      fail(cb);
    else
      succeed(cb);
    EXPECT_EQ(cb.state(), breaker_state::closed) << i;
  }
  succeed(cb); // 10 calls, 5 failures: not yet checked on a success
  EXPECT_EQ(cb.state(), breaker_state::closed);
  fail(cb); // window: 5 of the last 10 failed (the oldest failure left)
  EXPECT_EQ(cb.state(), breaker_state::open);
}

TEST(circuit_breaker_test, old_outcomes_leave_the_window) {
  manual_clock clk;
  circuit_breaker_policy pol;
  pol.consecutive_failures = 0;
  pol.failure_rate = 0.5;
  pol.window = 4;
  pol.minimum_calls = 4;
  circuit_breaker cb{pol, clk};
  fail(cb);
  succeed(cb);
  succeed(cb);
  succeed(cb);
  for (int i = 0; i < 20; ++i) { // 1 failure in 4, over and over
    fail(cb);
    succeed(cb);
    succeed(cb);
    succeed(cb);
  }
  EXPECT_EQ(cb.state(), breaker_state::closed);
}

TEST(circuit_breaker_test, late_outcomes_of_an_older_state_are_ignored) {
  manual_clock clk;
  circuit_breaker cb{consecutive(2, 1s), clk};
  auto slow = cb.acquire(); // made while closed, answers late
  fail(cb);
  fail(cb);
  EXPECT_EQ(cb.state(), breaker_state::open);
  clk.advance(1s);
  auto probe = cb.acquire();
  ASSERT_TRUE(probe);
  cb.on_success(slow); // must not count as the probe's success
  EXPECT_EQ(cb.state(), breaker_state::half_open);
  cb.on_failure(slow); // nor reopen it
  EXPECT_EQ(cb.state(), breaker_state::half_open);
  cb.on_success(probe);
  EXPECT_EQ(cb.state(), breaker_state::closed);
  cb.on_failure(probe); // a second report of the same permit: ignored
  EXPECT_EQ(cb.state(), breaker_state::closed);
}

TEST(circuit_breaker_test, an_ignored_probe_frees_its_slot) {
  manual_clock clk;
  circuit_breaker cb{consecutive(1, 1s), clk};
  fail(cb);
  clk.advance(1s);
  auto p = cb.acquire();
  ASSERT_TRUE(p);
  EXPECT_FALSE(cb.acquire());
  cb.on_ignored(p);
  auto q = cb.acquire();
  EXPECT_TRUE(q);
  cb.on_success(q);
  EXPECT_EQ(cb.state(), breaker_state::closed);
}

TEST(circuit_breaker_test, a_refused_permit_reports_nothing) {
  manual_clock clk;
  circuit_breaker cb{consecutive(1, 1s), clk};
  fail(cb);
  auto refused = cb.acquire();
  EXPECT_FALSE(refused);
  clk.advance(1s);
  cb.on_failure(refused); // not granted: no effect on the half-open state
  EXPECT_EQ(cb.state(), breaker_state::half_open);
}

TEST(circuit_breaker_test, slow_calls_open_it_by_their_rate) {
  manual_clock clk;
  circuit_breaker_policy p;
  p.consecutive_failures = 0;
  p.slow_call_rate = 0.5;
  p.window = 10;
  p.minimum_calls = 4;
  circuit_breaker cb{p, clk};
  // Successful but slow calls: 1 of 3 is below the minimum of 4 calls.
  for (int i = 0; i < 3; ++i) {
    auto x = cb.acquire();
    ASSERT_TRUE(x);
    cb.on_success(x, i == 0);
  }
  EXPECT_EQ(cb.state(), breaker_state::closed);
  auto x = cb.acquire();
  cb.on_success(x, true); // 2 slow of 4: 50%
  EXPECT_EQ(cb.state(), breaker_state::open);
}

TEST(circuit_breaker_test, a_snapshot_restores_state_time_left_and_trips) {
  manual_clock clk;
  auto p = consecutive(1, 10s);
  p.open_for.max = 80s;
  p.open_for.multiplier = 2.0;
  circuit_breaker a{p, clk};
  fail(a); // open 10 s
  clk.advance(10s);
  auto probe = a.acquire();
  ASSERT_TRUE(probe);
  a.on_failure(probe); // failed probe: open 20 s
  clk.advance(5s);
  auto s = a.snapshot();
  EXPECT_EQ(s.state, breaker_state::open);
  EXPECT_EQ(s.open_remaining, 15s);
  EXPECT_EQ(s.trips, 2u);
  circuit_breaker b{p, clk};
  b.restore(s);
  EXPECT_EQ(b.state(), breaker_state::open);
  EXPECT_EQ(b.retry_after(), 15s);
  clk.advance(15s);
  auto q = b.acquire();
  ASSERT_TRUE(q); // half-open: one probe
  EXPECT_FALSE(b.acquire());
  b.on_failure(q); // the third trip in a row: 40 s
  EXPECT_EQ(b.retry_after(), 40s);
  // A closed snapshot restores a closed breaker.
  circuit_breaker c{p, clk};
  c.restore(breaker_snapshot{});
  EXPECT_EQ(c.state(), breaker_state::closed);
}
