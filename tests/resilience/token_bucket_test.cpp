// Tests resilience/token_bucket.*: the bucket, the retry budget and the
// rate limiter, on a manual clock.

#include <chrono>
#include <algorithm>
#include <cmath>

#include <gtest/gtest.h>

#include "vigil/resilience/token_bucket.hpp"

using namespace vigil::resilience;
using namespace std::chrono_literals;

TEST(token_bucket_test, starts_full_and_refills_at_its_rate) {
  manual_clock clk;
  token_bucket b{5, 2, clk}; // 5 tokens, 2 per second
  for (int i = 0; i < 5; ++i)
    EXPECT_TRUE(b.try_take());
  EXPECT_FALSE(b.try_take());
  EXPECT_EQ(b.time_until(1), 500ms);
  clk.advance(499ms);
  EXPECT_FALSE(b.try_take());
  clk.advance(1ms);
  EXPECT_TRUE(b.try_take());
  clk.advance(1h); // refills to the capacity, not beyond
  EXPECT_DOUBLE_EQ(b.available(), 5.0);
}

TEST(token_bucket_test, a_failed_take_takes_nothing) {
  manual_clock clk;
  token_bucket b{3, 0, clk};
  EXPECT_FALSE(b.try_take(4));
  EXPECT_DOUBLE_EQ(b.available(), 3.0);
  EXPECT_FALSE(b.try_take(-1));
  EXPECT_FALSE(b.try_take(std::nan("")));
  EXPECT_DOUBLE_EQ(b.available(), 3.0);
}

TEST(token_bucket_test, never_is_duration_max) {
  manual_clock clk;
  token_bucket none{3, 0, clk, 0};
  EXPECT_EQ(none.time_until(1), duration::max()); // no refill
  token_bucket small{3, 1, clk};
  EXPECT_EQ(small.time_until(4), duration::max()); // above the capacity
  EXPECT_EQ(small.time_until(3), duration::zero());
}

TEST(token_bucket_test, a_clock_going_back_does_not_drain_or_fill) {
  manual_clock clk{time_point{} + 10s};
  token_bucket b{10, 1, clk, 0};
  clk.set(time_point{} + 5s);
  EXPECT_DOUBLE_EQ(b.available(), 0.0);
  clk.set(time_point{} + 7s); // still before the bucket's mark (10 s)
  EXPECT_DOUBLE_EQ(b.available(), 0.0);
  clk.set(time_point{} + 12s);
  EXPECT_DOUBLE_EQ(b.available(), 2.0);
}

TEST(token_bucket_test, bad_parameters_are_zero) {
  manual_clock clk;
  token_bucket b{-5, std::nan(""), clk};
  EXPECT_DOUBLE_EQ(b.capacity(), 0.0);
  EXPECT_FALSE(b.try_take());
  b.put(10);
  EXPECT_DOUBLE_EQ(b.available(), 0.0);
}

TEST(retry_budget_test, retries_are_a_share_of_attempts) {
  manual_clock clk;
  retry_budget_policy p;
  p.ratio = 0.1;
  p.min_per_second = 0; // only first attempts count
  retry_budget rb{p, clk};
  EXPECT_FALSE(rb.try_retry()); // nothing attempted yet
  int retries = 0;
  for (int i = 0; i < 1000; ++i) {
    rb.on_attempt();
    while (rb.try_retry()) // every call fails and wants to retry
      ++retries;
  }
  // 1000 first attempts at 10%: 100 retries, not 1000 or 3000.
  EXPECT_EQ(retries, 100);
}

TEST(retry_budget_test, a_quiet_client_may_retry_at_the_minimum_rate) {
  manual_clock clk;
  retry_budget_policy p;
  p.ratio = 0.1;
  p.min_per_second = 2;
  p.max_savings = 4;
  retry_budget rb{p, clk};
  // A new budget holds one second of the floor.
  EXPECT_TRUE(rb.try_retry());
  EXPECT_TRUE(rb.try_retry());
  EXPECT_FALSE(rb.try_retry());
  clk.advance(500ms);
  EXPECT_TRUE(rb.try_retry());
  EXPECT_FALSE(rb.try_retry());
  clk.advance(10s); // savings are capped
  EXPECT_DOUBLE_EQ(rb.balance(), 4.0);
  for (int i = 0; i < 4; ++i)
    EXPECT_TRUE(rb.try_retry());
  EXPECT_FALSE(rb.try_retry());
}

TEST(retry_budget_test, the_floor_and_the_ratio_are_not_added) {
  // N first attempts at a steady rate over T seconds, every one failing and
  // retried as often as allowed: at most max(0.1 N, floor (T + 1 s))
  // retries, and close to it.
  for (int per_second : {2, 5, 10, 50, 500}) {
    manual_clock clk;
    retry_budget_policy p;
    p.min_per_second = 1;
    retry_budget rb{p, clk};
    int firsts = 0;
    int retries = 0;
    auto step = std::chrono::microseconds{1000000 / per_second};
    for (auto t = 0us; t < 30s; t += step) {
      clk.set(time_point{} + t);
      rb.on_attempt();
      ++firsts;
      while (rb.try_retry())
        ++retries;
    }
    double bound = std::max(0.1 * firsts, 1.0 * (30 + 1));
    EXPECT_LE(retries, bound) << per_second << "/s";
    EXPECT_GE(retries, bound - 2) << per_second << "/s";
  }
}

TEST(retry_budget_test, a_burst_after_a_quiet_spell_still_earns_by_ratio) {
  manual_clock clk;
  retry_budget_policy p;
  p.min_per_second = 1;
  retry_budget rb{p, clk};
  clk.advance(std::chrono::hours{1}); // time savings: capped at 10
  int retries = 0;
  for (int i = 0; i < 10000; ++i) {
    rb.on_attempt();
    while (rb.try_retry())
      ++retries;
  }
  EXPECT_GE(retries, 1000);
  EXPECT_LE(retries, 1011);
}

TEST(rate_limiter_test, bursts_then_holds_the_rate) {
  manual_clock clk;
  rate_limiter rl{10, 3, clk}; // 10 per second, bursts of 3
  EXPECT_TRUE(rl.try_acquire());
  EXPECT_TRUE(rl.try_acquire());
  EXPECT_TRUE(rl.try_acquire());
  EXPECT_FALSE(rl.try_acquire());
  EXPECT_EQ(rl.delay(), 100ms);
  // Over 10 simulated seconds, calling as fast as allowed: 3 + 100 calls.
  int calls = 0;
  for (int i = 0; i < 10000; ++i) {
    clk.advance(1ms);
    calls += rl.try_acquire();
  }
  EXPECT_EQ(calls, 100);
}
