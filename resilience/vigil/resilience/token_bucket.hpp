#pragma once

#include <cstdint>

#include "vigil/resilience/clock.hpp"

namespace vigil::resilience {

/// A bucket of up to `capacity` tokens that refills at `refill_per_second`.
/// It starts with `initial` tokens (full if negative). Owned and called by one actor (not thread-safe).
///
/// The base of the retry budget and the rate limiter below; use those.
class token_bucket {
public:
  /// `clk` must outlive this object. A negative or NaN capacity or rate is
  /// taken as 0; an infinite one is unbounded.
  token_bucket(double capacity, double refill_per_second, const clock& clk,
               double initial = -1.0);

  /// Takes `n` tokens if the bucket holds them; false (and takes nothing)
  /// otherwise.
  [[nodiscard]] bool try_take(double n = 1.0) noexcept;

  /// Adds `n` tokens, up to the capacity.
  void put(double n) noexcept;

  /// The tokens in the bucket now.
  [[nodiscard]] double available() noexcept;

  /// How long until `n` tokens are there: zero if they are now,
  /// `duration::max()` if they never will be (n above the capacity, or no
  /// refill).
  [[nodiscard]] duration time_until(double n = 1.0) noexcept;

  double capacity() const noexcept {
    return capacity_;
  }

private:
  void refill() noexcept;

  double capacity_;
  double rate_;
  double tokens_;
  const clock* clock_;
  time_point last_;
};

/// Limits retries to a share of first attempts, so that a failing
/// dependency sees at most (1 + ratio) times its normal load instead of a
/// multiple of it (Finagle's RetryBudget, gRPC's retry throttling, the SRE
/// book's per-client retry ratio), with a floor so that a quiet client can
/// still retry. A new budget holds one second of the floor; from then on,
/// the retries it allows never exceed max(ratio x first attempts,
/// min_per_second x (seconds + 1)) while one term leads (the two terms
/// are not added). Unused allowance is saved up to `max_savings` retries
/// per term, so a long quiet spell does not buy a burst, and the debt of a
/// term is bounded by `max_savings` too, so a busy spell does not cost the
/// floor once the traffic is gone (after a change of regime, the bound may
/// be exceeded by at most `max_savings`).
struct retry_budget_policy {
  double ratio = 0.1;
  double min_per_second = 2.0;
  double max_savings = 10.0;
};

/// A retry budget with two credits: one earned by first attempts (`ratio`
/// each), one by time (`min_per_second`). A retry needs one whole credit
/// in either, and spends one from both, so each credit counts every retry
/// made: the retries never exceed either term's earnings while it is the
/// one that allows them. Owned and called by one thread at a time (not
/// thread-safe).
class retry_budget {
public:
  retry_budget(retry_budget_policy policy, const clock& clk);

  /// A first attempt is being made.
  void on_attempt() noexcept;

  /// True if a retry may be made now (and counts it); false if the budget
  /// is spent, in which case the caller fails instead of retrying.
  [[nodiscard]] bool try_retry() noexcept;

  /// The retries the budget would allow now.
  [[nodiscard]] double balance() noexcept;

  const retry_budget_policy& policy() const noexcept {
    return policy_;
  }

private:
  void refill() noexcept;

  retry_budget_policy policy_;
  const clock* clock_;
  time_point last_;
  double by_attempts_ = 0.0;
  double by_time_ = 0.0;
};

/// At most `per_second` calls on average, with bursts of up to `burst`.
class rate_limiter {
public:
  rate_limiter(double per_second, double burst, const clock& clk)
    : bucket_(burst, per_second, clk) {
    // nop
  }

  /// True if a call may go now (and counts it).
  [[nodiscard]] bool try_acquire() noexcept {
    return bucket_.try_take(1.0);
  }

  /// How long until a call may go: zero if now, `duration::max()` if never.
  [[nodiscard]] duration delay() noexcept {
    return bucket_.time_until(1.0);
  }

private:
  token_bucket bucket_;
};

} // namespace vigil::resilience
