#pragma once

#include <cstdint>
#include <vector>

#include "vigil/resilience/backoff.hpp"
#include "vigil/resilience/clock.hpp"

namespace vigil::resilience {

/// The three states of a circuit breaker.
enum class breaker_state : uint8_t {
  /// Calls go through; outcomes are counted.
  closed,
  /// Calls fail fast until the open period ends.
  open,
  /// A bounded number of probe calls go through; their outcomes decide.
  half_open,
};

const char* to_string(breaker_state x) noexcept;

/// When a breaker opens and how it recovers. Either rule (or both) opens
/// it; a rule set to 0 is off.
struct circuit_breaker_policy {
  /// Opens after this many failures in a row.
  uint32_t consecutive_failures = 5;
  /// Opens when the share of failures among the last `window` calls
  /// reaches this, in (0, 1], once at least `minimum_calls` were counted.
  double failure_rate = 0.0;
  uint32_t window = 20;
  uint32_t minimum_calls = 10;
  /// How long it stays open: the n-th consecutive opening waits
  /// `open_for.next()` (so a dependency that keeps failing its probes is
  /// probed less and less often). Default: 30 s, constant.
  backoff_policy open_for{std::chrono::seconds{30}, std::chrono::seconds{30}};
  /// Probes let through at once while half-open (1 to 64); this many
  /// successes close the breaker, one failure opens it again. A probe's
  /// second report is ignored.
  uint32_t half_open_probes = 1;
  /// Opens when the share of slow calls (reported `slow`, successful or
  /// not) among the last `window` calls reaches this, in (0, 1], once at
  /// least `minimum_calls` were counted; 0 is off.
  double slow_call_rate = 0.0;
};

/// What a breaker must remember across a restart of its process: its
/// state, how long it stays open, and how many times in a row it opened (so
/// that the next opening waits as long as the backoff says).
struct breaker_snapshot {
  breaker_state state = breaker_state::closed;
  /// While open: the time left until probes are let through.
  duration open_remaining{0};
  /// Openings since it last closed.
  uint32_t trips = 0;
};

/// A circuit breaker (closed, open, half-open with bounded probes). Owned
/// and called by one actor (not thread-safe).
///
/// Each call asks `acquire()` first and reports its outcome with the permit
/// it got. A permit remembers the breaker's generation, so an outcome that
/// arrives after the state changed (a late reply to a call made while
/// closed, say) is ignored instead of deciding the new state.
class circuit_breaker {
public:
  /// The right to make one call.
  struct permit {
    uint64_t generation = 0;
    bool granted = false;
    /// A half-open probe's slot, so that a second report of it is ignored.
    uint32_t slot = 0;
    explicit operator bool() const noexcept {
      return granted;
    }
  };

  /// `clk` must outlive this object; `seed` seeds the open period's jitter.
  circuit_breaker(circuit_breaker_policy policy, const clock& clk,
                  uint64_t seed = 0);

  /// Asks to make a call now. Not granted while open (see `retry_after`)
  /// or while half-open with every probe slot in flight.
  [[nodiscard]] permit acquire();

  /// The call made under `p` succeeded; `slow` if it took longer than its
  /// owner's slow-call threshold.
  void on_success(const permit& p, bool slow = false);

  /// The call made under `p` failed.
  void on_failure(const permit& p, bool slow = false);

  /// The call made under `p` ended without an outcome that says anything
  /// about the dependency (it was cancelled, say): frees its probe slot.
  void on_ignored(const permit& p);

  /// The state now (an open breaker whose period ended is half-open).
  [[nodiscard]] breaker_state state();

  /// While open, how long until probes are let through; zero otherwise.
  [[nodiscard]] duration retry_after();

  /// Times the breaker opened since it was made.
  uint64_t openings() const noexcept {
    return openings_;
  }

  /// Failures in a row counted while closed.
  uint32_t consecutive_failures() const noexcept {
    return consecutive_;
  }

  /// The share of failures among the calls in the window (0 without a
  /// rate rule or before any call).
  double failure_rate() const noexcept {
    return ring_count_ == 0 ? 0.0
                            : static_cast<double>(ring_failures_) / ring_count_;
  }

  /// The state to keep across a restart.
  [[nodiscard]] breaker_snapshot snapshot();

  /// Takes the state `s` kept by an earlier breaker: open for
  /// `s.open_remaining` (half-open at once if none is left), or closed.
  /// `s.trips` continues the open period's backoff.
  void restore(const breaker_snapshot& s);

private:
  static constexpr uint32_t max_probes = 64;

  bool take_slot(const permit& p);
  void refresh();
  void trip();
  void close();
  void record(bool failure, bool slow);

  circuit_breaker_policy policy_;
  const clock* clock_;
  backoff open_backoff_;
  backoff_track open_track_;
  breaker_state state_ = breaker_state::closed;
  uint64_t generation_ = 1;
  uint64_t openings_ = 0;
  time_point open_until_{};
  uint32_t consecutive_ = 0;
  // The last `window` outcomes (bit 0: failure, bit 1: slow), as a ring.
  std::vector<uint8_t> ring_;
  uint32_t ring_pos_ = 0;
  uint32_t ring_count_ = 0;
  uint32_t ring_failures_ = 0;
  uint32_t ring_slow_ = 0;
  uint32_t probes_in_flight_ = 0;
  uint64_t probe_slots_ = 0; // bit i: probe slot i is in flight
  uint32_t probe_successes_ = 0;
};

} // namespace vigil::resilience
