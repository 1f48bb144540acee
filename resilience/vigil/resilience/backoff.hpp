#pragma once

#include <cstdint>
#include <random>

#include "vigil/resilience/clock.hpp"

namespace vigil::resilience {

/// The longest delay a backoff returns: half the range of `duration`, so
/// that `now + delay` cannot overflow either.
inline constexpr duration max_delay = duration::max() / 2;

/// How a delay is spread at random, so that many clients that failed
/// together do not retry together.
enum class jitter_kind : uint8_t {
  /// No randomness: attempt n waits exactly its base delay.
  none,
  /// The base delay times a factor drawn from [1 - jitter, 1 + jitter]
  /// (the supervisor's `backoff.jitter`, Akka's randomFactor).
  proportional,
  /// A delay drawn from [0, base delay] ("full jitter", the AWS
  /// architecture blog's recommendation for contended retries).
  full,
};

/// Exponential backoff: attempt n (from 0) waits
/// min(max, initial * multiplier^n), then jittered. An `initial` of zero
/// means no delay at all (OTP's restart behaviour).
struct backoff_policy {
  duration initial{0};
  /// The cap; zero means `initial` (a constant delay).
  duration max{0};
  double multiplier = 2.0;
  jitter_kind jitter = jitter_kind::none;
  /// For `proportional`: the spread, in [0, 1].
  double spread = 0.0;
  /// The attempt count returns to 0 once the activity ran this long
  /// without a failure, counted from its last retry (the delay itself does
  /// not count, so one that fails at once after each retry keeps backing
  /// off); zero never resets it (only `reset()` does).
  duration reset_after{0};
};

/// What a backoff remembers of one retried activity (a supervisor's child,
/// a cell's probes, an outbox): 16 bytes, so that a supervisor with a
/// million children pays little for it.
struct backoff_track {
  /// When the last retry was due (its failure plus its delay).
  time_point last_failure{};
  uint32_t attempts = 0;
};

/// The delays of retried activities under one policy. A supervisor keeps
/// one `backoff` and a `backoff_track` per child. Owned and called by one
/// actor (not thread-safe). The arithmetic saturates at `max`, so no policy
/// makes a delay overflow or go negative.
class backoff {
public:
  /// `clk` must outlive this object. `seed` fixes the jitter's sequence, so
  /// that a test (or a `jitter_seed` in a policy file) repeats it.
  backoff(backoff_policy policy, const clock& clk, uint64_t seed = 0);

  /// Records a failure of `t` now and returns how long to wait before its
  /// next attempt.
  [[nodiscard]] duration next(backoff_track& t) {
    return next(t.attempts, t.last_failure);
  }

  /// `next` on a track kept as two fields (a supervisor's child packs them
  /// with its other fields, so that a million children stay small).
  [[nodiscard]] duration next(uint32_t& attempts, time_point& last_failure);

  /// The delay `next(t)` would return before jitter and reset, without
  /// recording anything.
  [[nodiscard]] duration base(const backoff_track& t) const noexcept {
    return base(t.attempts);
  }

  /// The delay of attempt `attempts` before jitter.
  [[nodiscard]] duration base(uint32_t attempts) const noexcept;

  /// Back to attempt 0 (after a success).
  static void reset(backoff_track& t) noexcept {
    t.attempts = 0;
  }

  const backoff_policy& policy() const noexcept {
    return policy_;
  }

private:
  backoff_policy policy_;
  const clock* clock_;
  // Knuth's MMIX LCG: 8 bytes (a cell may hold a backoff) and the whole
  // 64-bit seed matters.
  std::linear_congruential_engine<uint64_t, 6364136223846793005ULL,
                                  1442695040888963407ULL, 0>
    rng_;
};

} // namespace vigil::resilience
