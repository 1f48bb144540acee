#pragma once

#include <chrono>

namespace vigil::resilience {

/// The clock every mechanism reads: steady, like `caf::actor_clock`.
using clock_type = std::chrono::steady_clock;
using time_point = clock_type::time_point;
using duration = clock_type::duration;

/// A source of the current time, injected into each mechanism so that tests
/// drive it by hand. The runtime passes a view of its actor clock (a test
/// clock under CAF's testing scheduler). Must outlive the mechanism that
/// reads it; `now()` is called from the mechanism's owner only.
class clock {
public:
  virtual ~clock() = default;
  virtual time_point now() const noexcept = 0;
};

/// The process's steady clock.
class steady_clock final : public clock {
public:
  time_point now() const noexcept override {
    return clock_type::now();
  }
  /// One shared instance; it has no state.
  static const steady_clock& instance() noexcept {
    static const steady_clock x;
    return x;
  }
};

/// A clock that moves only when told to; for tests.
class manual_clock final : public clock {
public:
  explicit manual_clock(time_point start = time_point{}) : now_(start) {
    // nop
  }
  time_point now() const noexcept override {
    return now_;
  }
  void advance(duration d) noexcept {
    now_ += d;
  }
  void set(time_point t) noexcept {
    now_ = t;
  }

private:
  time_point now_;
};

} // namespace vigil::resilience
