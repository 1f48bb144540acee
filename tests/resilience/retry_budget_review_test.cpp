// Adversarial review of resilience::retry_budget (token_bucket.hpp): its
// bound against a model over random traffic (held up), and the floor it
// promises to a quiet client (does not hold after a busy spell).

#include <cmath>
#include <random>

#include <gtest/gtest.h>

#include "vigil/resilience/token_bucket.hpp"

using namespace vigil::resilience;
using namespace std::chrono_literals;

// Randomized: retries never exceed max(ratio x first attempts,
// min_per_second x (seconds + 1)) at any time, for random policies and
// traffic (this held up).
TEST(retry_budget_review_test, the_bound_holds_against_a_model) {
  for (uint64_t seed = 1; seed <= 300; ++seed) {
    std::mt19937_64 rng{seed};
    std::uniform_real_distribution<double> u{0.0, 1.0};
    retry_budget_policy p;
    p.ratio = std::floor(u(rng) * 10) / 10;
    p.min_per_second = std::floor(u(rng) * 50) / 10;
    p.max_savings = 1.0 + std::floor(u(rng) * 20);
    manual_clock clk{time_point{} + 1h};
    auto start = clk.now();
    retry_budget b{p, clk};
    double attempts = 0, retries = 0;
    for (int step = 0; step < 5000; ++step) {
      clk.advance(std::chrono::microseconds{
        static_cast<int64_t>(u(rng) * u(rng) * 200000)});
      auto n = static_cast<int>(u(rng) * 5);
      for (int i = 0; i < n; ++i) {
        b.on_attempt();
        ++attempts;
      }
      auto r = static_cast<int>(u(rng) * 6);
      for (int i = 0; i < r; ++i)
        if (b.try_retry())
          ++retries;
      std::chrono::duration<double> t = clk.now() - start;
      // A term's debt is bounded by max_savings (see retry_budget), so
      // after a change of regime the bound may be exceeded by that much.
      double bound = std::max(p.ratio * attempts,
                              p.min_per_second * (t.count() + 1.0))
                     + p.max_savings;
      ASSERT_LE(retries, bound + 1e-6)
        << "seed " << seed << " step " << step;
    }
  }
}

// The floor "so that a quiet client can still retry" (min_per_second) is
// lost for hours after a busy spell: every retry allowed by the ratio
// credit also spends the time credit, which has no lower bound, so one
// hour at 1000 calls/s to a dependency that fails (100 retries/s allowed
// by the 10% ratio) leaves the time credit ~350,000 retries in debt. The
// client then goes quiet (1 call/s, each failing): for the next ~49 hours
// it may retry once per 10 s (the ratio), not 2/s (the floor); a client
// that never was busy retries every call. The savings cap bounds the
// credit upwards (max_savings) but not downwards.
TEST(retry_budget_review_test, a_busy_spell_does_not_cost_the_floor_for_hours) {
  retry_budget_policy p; // 10%, 2/s, 10 saved
  manual_clock clk{time_point{} + 1h};
  retry_budget b{p, clk};
  // One hour at 1000 first attempts per second, each retried if allowed.
  uint64_t busy_retries = 0;
  for (int ms10 = 0; ms10 < 360000; ++ms10) {
    clk.advance(10ms);
    for (int i = 0; i < 10; ++i) {
      b.on_attempt();
      busy_retries += b.try_retry();
    }
  }
  EXPECT_LE(busy_retries, 360000u + 7202u); // the bound holds
  // Then quiet for a minute: one failing call per second, each wanting
  // one retry. The floor alone allows 2/s, so every one of them.
  int quiet_retries = 0;
  for (int s = 0; s < 60; ++s) {
    clk.advance(1s);
    b.on_attempt();
    quiet_retries += b.try_retry();
  }
  // Same quiet minute for a client that was never busy.
  manual_clock clk2{time_point{} + 1h};
  retry_budget fresh{p, clk2};
  int fresh_retries = 0;
  for (int s = 0; s < 60; ++s) {
    clk2.advance(1s);
    fresh.on_attempt();
    fresh_retries += fresh.try_retry();
  }
  EXPECT_EQ(fresh_retries, 60);
  EXPECT_GE(quiet_retries, 50)
    << "after a busy hour, a quiet client may retry " << quiet_retries
    << " of 60 failing calls in a minute (balance "
    << b.balance() << "); min_per_second is 2/s";
}
