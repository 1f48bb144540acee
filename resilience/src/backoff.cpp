#include "vigil/resilience/backoff.hpp"

#include <algorithm>
#include <cmath>

namespace vigil::resilience {

namespace {

/// `ticks` as a duration in [0, max_delay]. A double at the top of int64's
/// range rounds up to 2^63, which no cast may take, so compare first.
duration from_ticks(double ticks) noexcept {
  if (!(ticks > 0.0))
    return duration::zero();
  auto top = static_cast<double>(max_delay.count());
  if (ticks >= top)
    return max_delay;
  return duration{static_cast<duration::rep>(ticks)};
}

} // namespace

backoff::backoff(backoff_policy policy, const clock& clk, uint64_t seed)
  : policy_(policy),
    clock_(&clk),
    rng_(seed) {
  if (policy_.max < policy_.initial)
    policy_.max = policy_.initial;
  if (!(policy_.multiplier >= 1.0)) // also rejects NaN
    policy_.multiplier = 1.0;
  policy_.spread = std::clamp(policy_.spread, 0.0, 1.0);
}

duration backoff::base(uint32_t attempts) const noexcept {
  if (policy_.initial <= duration::zero())
    return duration::zero();
  // In floating point, so that a long run of failures saturates at the cap
  // (pow gives inf past double's range) instead of overflowing.
  auto cap = static_cast<double>(policy_.max.count());
  auto d = static_cast<double>(policy_.initial.count())
           * std::pow(policy_.multiplier, static_cast<double>(attempts));
  return from_ticks(std::min(d, cap));
}

duration backoff::next(uint32_t& attempts, time_point& last_failure) {
  auto now = clock_->now();
  if (policy_.reset_after > duration::zero() && attempts > 0
      && now - last_failure >= policy_.reset_after)
    attempts = 0;
  auto d = base(attempts);
  if (attempts < UINT32_MAX)
    ++attempts;
  last_failure = now;
  if (d <= duration::zero())
    return d;
  auto x = static_cast<double>(d.count());
  switch (policy_.jitter) {
    case jitter_kind::none:
      break;
    case jitter_kind::proportional:
      if (policy_.spread > 0) {
        std::uniform_real_distribution<double> f{1.0 - policy_.spread,
                                                 1.0 + policy_.spread};
        x *= f(rng_);
      }
      break;
    case jitter_kind::full: {
      std::uniform_real_distribution<double> f{0.0, 1.0};
      x *= f(rng_);
      break;
    }
  }
  auto delay = from_ticks(x);
  // The quiet period counts from the retry, not from this failure.
  last_failure = now + delay; // max_delay: cannot overflow
  return delay;
}

} // namespace vigil::resilience
