// Tests resilience/backoff.*: exponential delays, the cap, jitter bounds,
// the quiet-period reset and saturation with absurd policies.

#include <chrono>
#include <set>

#include <gtest/gtest.h>

#include "vigil/resilience/backoff.hpp"

using namespace vigil::resilience;
using namespace std::chrono_literals;

namespace {

backoff_policy doubling(duration initial, duration max) {
  backoff_policy p;
  p.initial = initial;
  p.max = max;
  return p;
}

} // namespace

TEST(backoff_test, doubles_up_to_the_cap) {
  manual_clock clk;
  backoff b{doubling(100ms, 1s), clk};
  backoff_track t;
  std::vector<duration> got;
  for (int i = 0; i < 6; ++i)
    got.push_back(b.next(t));
  std::vector<duration> want{100ms, 200ms, 400ms, 800ms, 1s, 1s};
  EXPECT_EQ(got, want);
  EXPECT_EQ(t.attempts, 6u);
}

TEST(backoff_test, zero_initial_means_no_delay) {
  manual_clock clk;
  backoff b{doubling(0ms, 1s), clk};
  backoff_track t;
  for (int i = 0; i < 3; ++i)
    EXPECT_EQ(b.next(t), duration::zero());
}

TEST(backoff_test, a_zero_cap_means_a_constant_delay) {
  manual_clock clk;
  backoff b{doubling(250ms, 0ms), clk};
  backoff_track t;
  for (int i = 0; i < 4; ++i)
    EXPECT_EQ(b.next(t), 250ms);
}

TEST(backoff_test, reset_after_a_quiet_period) {
  manual_clock clk;
  auto p = doubling(100ms, 10s);
  p.reset_after = 5s;
  backoff b{p, clk};
  backoff_track t;
  EXPECT_EQ(b.next(t), 100ms); // the retry is due at 100 ms
  clk.advance(4s);
  EXPECT_EQ(b.next(t), 200ms); // 3.9 s since the retry: not quiet enough
  clk.advance(4999ms);         // the retry was due at 4.2 s; now 8.999 s
  EXPECT_EQ(b.next(t), 400ms); // 4.799 s: still not; the delay is no quiet
  clk.advance(5400ms);         // due at 9.399 s; now 14.399 s
  EXPECT_EQ(b.next(t), 100ms); // 5 s since the retry: back to the start
  EXPECT_EQ(b.next(t), 200ms);
  backoff::reset(t);
  EXPECT_EQ(b.next(t), 100ms);
}

TEST(backoff_test, tracks_are_independent) {
  manual_clock clk;
  backoff b{doubling(10ms, 1s), clk};
  backoff_track x, y;
  EXPECT_EQ(b.next(x), 10ms);
  EXPECT_EQ(b.next(x), 20ms);
  EXPECT_EQ(b.next(y), 10ms);
  EXPECT_EQ(b.base(x), 40ms);
  EXPECT_EQ(b.base(y), 20ms);
}

TEST(backoff_test, proportional_jitter_stays_in_its_band_and_varies) {
  manual_clock clk;
  auto p = doubling(1s, 1s);
  p.jitter = jitter_kind::proportional;
  p.spread = 0.2;
  backoff b{p, clk, 42};
  backoff_track t;
  std::set<duration::rep> seen;
  for (int i = 0; i < 1000; ++i) {
    auto d = b.next(t);
    EXPECT_GE(d, 800ms);
    EXPECT_LE(d, 1200ms);
    seen.insert(d.count());
  }
  EXPECT_GT(seen.size(), 900u);
}

TEST(backoff_test, full_jitter_spreads_over_zero_to_base) {
  manual_clock clk;
  auto p = doubling(1s, 1s);
  p.jitter = jitter_kind::full;
  backoff b{p, clk, 7};
  backoff_track t;
  int low = 0, high = 0;
  for (int i = 0; i < 1000; ++i) {
    auto d = b.next(t);
    EXPECT_GE(d, 0ms);
    EXPECT_LE(d, 1s);
    low += d < 250ms;
    high += d > 750ms;
  }
  // Uniform over [0, 1 s]: about 250 in each quarter.
  EXPECT_GT(low, 150);
  EXPECT_GT(high, 150);
}

TEST(backoff_test, the_same_seed_repeats_the_same_delays) {
  manual_clock clk;
  auto p = doubling(100ms, 10s);
  p.jitter = jitter_kind::full;
  backoff a{p, clk, 5}, b{p, clk, 5}, c{p, clk, 6};
  backoff_track ta, tb, tc;
  bool differs = false;
  for (int i = 0; i < 20; ++i) {
    auto x = a.next(ta);
    EXPECT_EQ(x, b.next(tb));
    differs |= x != c.next(tc);
  }
  EXPECT_TRUE(differs);
}

TEST(backoff_test, absurd_policies_saturate_instead_of_overflowing) {
  manual_clock clk;
  auto p = doubling(duration::max() / 4, duration::max());
  p.multiplier = 1e300;
  p.jitter = jitter_kind::proportional;
  p.spread = 1.0;
  backoff b{p, clk, 1};
  backoff_track t;
  t.attempts = UINT32_MAX - 1;
  for (int i = 0; i < 5; ++i) {
    auto d = b.next(t);
    EXPECT_GE(d, duration::zero());
    EXPECT_LE(d, max_delay);
  }
  EXPECT_EQ(t.attempts, UINT32_MAX); // saturates, does not wrap to 0
  // A multiplier below 1 (or NaN) would shrink delays: taken as 1.
  auto q = doubling(100ms, 1s);
  q.multiplier = std::nan("");
  backoff c{q, clk};
  backoff_track u;
  EXPECT_EQ(c.next(u), 100ms);
  EXPECT_EQ(c.next(u), 100ms);
}
