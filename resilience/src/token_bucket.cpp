#include "vigil/resilience/token_bucket.hpp"

#include <algorithm>
#include <cmath>

namespace vigil::resilience {

namespace {

/// x, or 0 if it is negative or NaN (+inf stays: an unbounded burst).
double non_negative(double x) noexcept {
  return x > 0.0 ? x : 0.0;
}

} // namespace

token_bucket::token_bucket(double capacity, double refill_per_second,
                           const clock& clk, double initial)
  : capacity_(non_negative(capacity)),
    rate_(non_negative(refill_per_second)),
    tokens_(initial < 0.0 ? capacity_
                          : std::min(capacity_, non_negative(initial))),
    clock_(&clk),
    last_(clk.now()) {
  // nop
}

void token_bucket::refill() noexcept {
  auto now = clock_->now();
  if (now <= last_)
    return;
  std::chrono::duration<double> dt = now - last_;
  last_ = now;
  tokens_ = std::min(capacity_, tokens_ + dt.count() * rate_);
}

bool token_bucket::try_take(double n) noexcept {
  refill();
  if (!(n >= 0.0) || tokens_ < n)
    return false;
  tokens_ -= n;
  return true;
}

void token_bucket::put(double n) noexcept {
  refill();
  if (n > 0.0)
    tokens_ = std::min(capacity_, tokens_ + n);
}

double token_bucket::available() noexcept {
  refill();
  return tokens_;
}

duration token_bucket::time_until(double n) noexcept {
  refill();
  if (tokens_ >= n)
    return duration::zero();
  if (!(n <= capacity_) || rate_ <= 0.0)
    return duration::max();
  std::chrono::duration<double> wait{(n - tokens_) / rate_};
  // Past duration's range (a very slow refill) the cast would be undefined.
  if (!(wait < std::chrono::duration<double>{duration::max()}))
    return duration::max();
  // Round up, so that waiting this long always suffices.
  return std::chrono::ceil<duration>(wait);
}

retry_budget::retry_budget(retry_budget_policy policy, const clock& clk)
  : policy_(policy), clock_(&clk), last_(clk.now()) {
  policy_.ratio = non_negative(policy_.ratio);
  policy_.min_per_second = non_negative(policy_.min_per_second);
  policy_.max_savings = std::max(1.0, non_negative(policy_.max_savings));
  by_time_ = std::min(policy_.max_savings, policy_.min_per_second);
}

void retry_budget::refill() noexcept {
  auto now = clock_->now();
  if (now <= last_)
    return;
  std::chrono::duration<double> dt = now - last_;
  last_ = now;
  by_time_ = std::min(policy_.max_savings,
                      by_time_ + dt.count() * policy_.min_per_second);
}

void retry_budget::on_attempt() noexcept {
  by_attempts_ = std::min(policy_.max_savings, by_attempts_ + policy_.ratio);
}

bool retry_budget::try_retry() noexcept {
  refill();
  // With a tolerance: ten deposits of 0.1 make 0.9999999999999999.
  if (by_attempts_ < 1.0 - 1e-9 && by_time_ < 1.0 - 1e-9)
    return false;
  // Each credit pays for every retry, so neither term's bound is
  // exceeded; the debt is bounded, so that a busy spell does not cost the
  // floor for hours once the traffic is gone.
  by_attempts_ = std::max(by_attempts_ - 1.0, -policy_.max_savings);
  by_time_ = std::max(by_time_ - 1.0, -policy_.max_savings);
  return true;
}

double retry_budget::balance() noexcept {
  refill();
  return std::max(0.0, std::floor(std::max(by_attempts_, by_time_) + 1e-9));
}

} // namespace vigil::resilience
