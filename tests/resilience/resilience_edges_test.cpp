// resilience/ at the edges of the contracts its headers state (found by a
// review): slow refills, infinite bursts, exact failure rates, seeds, a
// child that never stays up, permits reported twice.

#include <chrono>
#include <cmath>
#include <limits>
#include <random>

#include <gtest/gtest.h>

#include "vigil/resilience/backoff.hpp"
#include "vigil/resilience/circuit_breaker.hpp"
#include "vigil/resilience/token_bucket.hpp"

using namespace vigil::resilience;
using namespace std::chrono_literals;

// token_bucket.hpp: time_until "How long until `n` tokens are there: zero
// if they are now, `duration::max()` if they never will be". A slow but
// positive refill rate makes the wait longer than a duration can hold.
TEST(resilience_edges_test, time_until_with_a_slow_refill_is_never_negative) {
  manual_clock clk;
  token_bucket b{1, 1e-12, clk, 0}; // one token per ~31700 years
  auto d = b.time_until(1);
  EXPECT_GT(d, duration::zero()) << "time_until returned " << d.count()
                                 << " ns";
}

TEST(resilience_edges_test, rate_limiter_delay_with_a_slow_rate_is_never_negative) {
  manual_clock clk;
  rate_limiter r{1e-12, 1, clk};
  ASSERT_TRUE(r.try_acquire());
  auto d = r.delay();
  EXPECT_GT(d, duration::zero()) << "delay() returned " << d.count()
                                 << " ns; a caller that sleeps this long "
                                    "retries at once";
}

// token_bucket.hpp: "A negative or NaN capacity or rate is taken as 0."
// An infinite capacity (an unlimited burst) is neither, yet the bucket
// holds nothing and a rate limiter built with it never lets a call through.
TEST(resilience_edges_test, an_infinite_burst_is_not_taken_as_zero) {
  manual_clock clk;
  rate_limiter r{1000, std::numeric_limits<double>::infinity(), clk};
  EXPECT_TRUE(r.try_acquire());
  clk.advance(1s);
  EXPECT_TRUE(r.try_acquire()) << "1000 per second, unlimited burst, yet "
                                  "no call goes through";
}

// token_bucket.cpp:279: "Round up, so that waiting this long always
// suffices."
TEST(resilience_edges_test, waiting_time_until_always_suffices) {
  std::mt19937_64 rng{42};
  std::uniform_real_distribution<double> cap_d{1, 1000};
  std::uniform_real_distribution<double> rate_d{0.001, 1e6};
  int failures = 0;
  std::string first;
  for (int i = 0; i < 20000; ++i) {
    manual_clock clk{time_point{std::chrono::nanoseconds{
      static_cast<int64_t>(rng() % 1'000'000'000'000ULL)}}};
    auto cap = cap_d(rng);
    auto rate = rate_d(rng);
    token_bucket b{cap, rate, clk, 0};
    std::uniform_real_distribution<double> n_d{0.0001, cap};
    auto n = n_d(rng);
    auto w = b.time_until(n);
    clk.advance(w);
    if (!b.try_take(n)) {
      if (failures++ == 0)
        first = "cap " + std::to_string(cap) + " rate "
                + std::to_string(rate) + " n " + std::to_string(n)
                + " wait " + std::to_string(w.count()) + "ns";
    }
  }
  EXPECT_EQ(failures, 0) << "first: " << first;
}

// child_spec.hpp backoff_spec: "n returns to 0 after `reset_after` without
// a restart" (Akka's resetBackoff: the child ran that long). A child that
// crashes right after every restart never ran `reset_after`, yet once its
// delay reaches reset_after the next failure is "reset_after after the
// previous failure" and the backoff starts over: the delay never grows
// past reset_after, whatever `max` says.
TEST(resilience_edges_test, a_child_crashing_at_once_after_each_restart_keeps_backing_off) {
  manual_clock clk;
  backoff_policy p;
  p.initial = 1s;
  p.max = 60s;
  p.multiplier = 2.0;
  p.reset_after = 10s;
  backoff b{p, clk};
  backoff_track t;
  std::vector<duration> delays;
  for (int i = 0; i < 7; ++i) {
    auto d = b.next(t); // the child failed: wait d, restart it
    delays.push_back(d);
    clk.advance(d);     // restarted now
    clk.advance(1ms);   // and it crashes 1 ms later
  }
  std::string got;
  for (auto d : delays)
    got += std::to_string(
             std::chrono::duration_cast<std::chrono::milliseconds>(d).count())
           + "ms ";
  EXPECT_EQ(delays.back(), 60s) << "delays: " << got;
}

// circuit_breaker.hpp: "a bounded number of probe calls"; a duplicate
// outcome for one probe permit (a retried completion callback, say) wraps
// probes_in_flight_ (circuit_breaker.cpp:194) and the successes count
// closes the breaker on fewer real successes than half_open_probes.
TEST(resilience_edges_test, one_probe_reported_twice_does_not_close_a_three_probe_breaker) {
  manual_clock clk;
  circuit_breaker_policy pol;
  pol.consecutive_failures = 1;
  pol.half_open_probes = 3;
  pol.open_for = backoff_policy{1s, 1s};
  circuit_breaker cb{pol, clk};
  auto p0 = cb.acquire();
  cb.on_failure(p0);
  ASSERT_EQ(cb.state(), breaker_state::open);
  clk.advance(1s);
  ASSERT_EQ(cb.state(), breaker_state::half_open);
  auto p1 = cb.acquire();
  ASSERT_TRUE(p1);
  cb.on_success(p1);
  cb.on_success(p1);
  cb.on_success(p1);
  EXPECT_EQ(cb.state(), breaker_state::half_open)
    << "one probe that succeeded (reported three times) closed a breaker "
       "that needs three";
}

// circuit_breaker.hpp: "Opens when the share of failures among the last
// `window` calls reaches this". 7 of 25 is a share of exactly 0.28, but
// circuit_breaker.cpp:182-183 compares 7 >= 0.28 * 25 = 7.000000000000001.
TEST(resilience_edges_test, a_failure_share_that_reaches_the_rate_opens) {
  manual_clock clk;
  circuit_breaker_policy pol;
  pol.consecutive_failures = 0; // only the rate rule
  pol.failure_rate = 0.28;
  pol.window = 25;
  pol.minimum_calls = 25;
  circuit_breaker cb{pol, clk};
  for (int i = 0; i < 18; ++i)
    cb.on_success(cb.acquire());
  for (int i = 0; i < 7; ++i)
    cb.on_failure(cb.acquire());
  EXPECT_EQ(cb.state(), breaker_state::open)
    << "7 failures of 25 calls = 0.28, the configured failure_rate";
}

// backoff.hpp: "`seed` fixes the jitter's sequence, so that a test (or a
// `jitter_seed` in a policy file) repeats it." The 64-bit seed goes into
// std::minstd_rand (backoff.hpp:92), which reduces it mod 2^31-1 and maps
// 0 to 1: distinct seeds give the same "random" delays (the supervisor's
// old std::mt19937_64 took all 64 bits).
TEST(resilience_edges_test, distinct_seeds_give_distinct_jitter) {
  manual_clock clk;
  backoff_policy p;
  p.initial = 1s;
  p.max = 1s;
  p.jitter = jitter_kind::full;
  auto seq = [&](uint64_t seed) {
    backoff b{p, clk, seed};
    std::vector<duration> out;
    for (int i = 0; i < 8; ++i) {
      backoff_track t;
      out.push_back(b.next(t));
    }
    return out;
  };
  EXPECT_NE(seq(0), seq(1)) << "seeds 0 and 1";
  EXPECT_NE(seq(5), seq(5 + 2147483647ULL)) << "seeds 5 and 5 + 2^31-1";
  EXPECT_NE(seq(7), seq(7 + (uint64_t{2147483647} << 1)))
    << "seeds 7 and 7 + 2*(2^31-1)";
}
