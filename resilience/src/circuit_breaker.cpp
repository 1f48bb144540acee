#include "vigil/resilience/circuit_breaker.hpp"

#include <algorithm>

namespace vigil::resilience {

const char* to_string(breaker_state x) noexcept {
  switch (x) {
    case breaker_state::closed: return "closed";
    case breaker_state::open: return "open";
    case breaker_state::half_open: return "half_open";
  }
  return "?";
}

circuit_breaker::circuit_breaker(circuit_breaker_policy policy,
                                 const clock& clk, uint64_t seed)
  : policy_(policy),
    clock_(&clk),
    open_backoff_(policy.open_for, clk, seed) {
  policy_.half_open_probes = std::clamp<uint32_t>(policy_.half_open_probes,
                                                 1, max_probes);
  if (policy_.failure_rate > 0.0 || policy_.slow_call_rate > 0.0) {
    policy_.window = std::max<uint32_t>(policy_.window, 1);
    policy_.minimum_calls = std::clamp<uint32_t>(policy_.minimum_calls, 1,
                                                 policy_.window);
    ring_.assign(policy_.window, 0);
  }
}

void circuit_breaker::refresh() {
  if (state_ == breaker_state::open && clock_->now() >= open_until_) {
    state_ = breaker_state::half_open;
    ++generation_;
    probes_in_flight_ = 0;
    probe_slots_ = 0;
    probe_successes_ = 0;
  }
}

void circuit_breaker::trip() {
  state_ = breaker_state::open;
  ++generation_;
  ++openings_;
  auto wait = open_backoff_.next(open_track_);
  auto now = clock_->now();
  open_until_ = wait >= time_point::max() - now ? time_point::max()
                                                : now + wait;
  consecutive_ = 0;
  std::fill(ring_.begin(), ring_.end(), 0);
  ring_pos_ = ring_count_ = ring_failures_ = ring_slow_ = 0;
}

breaker_snapshot circuit_breaker::snapshot() {
  refresh();
  breaker_snapshot s;
  s.state = state_;
  s.trips = open_track_.attempts;
  if (state_ == breaker_state::open)
    s.open_remaining = open_until_ - clock_->now();
  return s;
}

void circuit_breaker::restore(const breaker_snapshot& s) {
  ++generation_;
  consecutive_ = 0;
  std::fill(ring_.begin(), ring_.end(), 0);
  ring_pos_ = ring_count_ = ring_failures_ = ring_slow_ = 0;
  probes_in_flight_ = 0;
  probe_slots_ = 0;
  probe_successes_ = 0;
  open_track_.attempts = s.trips;
  if (s.state == breaker_state::closed) {
    state_ = breaker_state::closed;
    return;
  }
  // Open or half-open: open until the time left (none: half-open at the
  // first look), so that the first call after a restart is a probe.
  state_ = breaker_state::open;
  auto now = clock_->now();
  auto left = std::max(s.open_remaining, duration::zero());
  open_until_ = left >= time_point::max() - now ? time_point::max()
                                                : now + left;
}

void circuit_breaker::close() {
  state_ = breaker_state::closed;
  ++generation_;
  backoff::reset(open_track_);
  consecutive_ = 0;
}

breaker_state circuit_breaker::state() {
  refresh();
  return state_;
}

duration circuit_breaker::retry_after() {
  refresh();
  if (state_ != breaker_state::open)
    return duration::zero();
  return open_until_ - clock_->now();
}

circuit_breaker::permit circuit_breaker::acquire() {
  refresh();
  switch (state_) {
    case breaker_state::closed:
      return {generation_, true};
    case breaker_state::open:
      return {generation_, false};
    case breaker_state::half_open:
      if (probes_in_flight_ + probe_successes_ >= policy_.half_open_probes)
        return {generation_, false};
      for (uint32_t i = 0; i < max_probes; ++i) {
        auto bit = uint64_t{1} << i;
        if ((probe_slots_ & bit) == 0) {
          probe_slots_ |= bit;
          ++probes_in_flight_;
          return {generation_, true, i};
        }
      }
      return {generation_, false};
  }
  return {generation_, false};
}

void circuit_breaker::record(bool failure, bool slow) {
  consecutive_ = failure ? consecutive_ + 1 : 0;
  if (!ring_.empty()) {
    auto& slot = ring_[ring_pos_];
    if (ring_count_ == ring_.size()) {
      ring_failures_ -= slot & 1u;
      ring_slow_ -= (slot >> 1) & 1u;
    } else {
      ++ring_count_;
    }
    slot = static_cast<uint8_t>((failure ? 1u : 0u) | (slow ? 2u : 0u));
    ring_failures_ += slot & 1u;
    ring_slow_ += (slot >> 1) & 1u;
    ring_pos_ = (ring_pos_ + 1) % static_cast<uint32_t>(ring_.size());
  }
  if (failure && policy_.consecutive_failures > 0
      && consecutive_ >= policy_.consecutive_failures)
    return trip();
  if (ring_.empty() || ring_count_ < policy_.minimum_calls)
    return;
  // With a tolerance: 0.28 * 25 is 7.000000000000001 in floating point,
  // and 7 failures of 25 reach a rate of 0.28.
  auto reaches = [&](uint32_t n, double rate) {
    return rate > 0.0
           && static_cast<double>(n)
                >= rate * static_cast<double>(ring_count_) - 1e-9;
  };
  if ((failure && reaches(ring_failures_, policy_.failure_rate))
      || (slow && reaches(ring_slow_, policy_.slow_call_rate)))
    trip();
}

void circuit_breaker::on_success(const permit& p, bool slow) {
  refresh();
  if (!p.granted || p.generation != generation_)
    return;
  if (state_ == breaker_state::closed)
    return record(false, slow);
  if (state_ == breaker_state::half_open && take_slot(p)) {
    if (++probe_successes_ >= policy_.half_open_probes)
      close();
  }
}

bool circuit_breaker::take_slot(const permit& p) {
  auto bit = uint64_t{1} << (p.slot % max_probes);
  if ((probe_slots_ & bit) == 0)
    return false; // reported already
  probe_slots_ &= ~bit;
  --probes_in_flight_;
  return true;
}

void circuit_breaker::on_failure(const permit& p, bool slow) {
  refresh();
  if (!p.granted || p.generation != generation_)
    return;
  if (state_ == breaker_state::closed)
    return record(true, slow);
  if (state_ == breaker_state::half_open && take_slot(p))
    trip();
}

void circuit_breaker::on_ignored(const permit& p) {
  refresh();
  if (p.granted && p.generation == generation_
      && state_ == breaker_state::half_open)
    take_slot(p);
}

} // namespace vigil::resilience
