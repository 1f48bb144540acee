#pragma once

#include <caf/actor_clock.hpp>

#include "vigil/resilience/clock.hpp"

namespace vigil::detail {

static_assert(std::is_same_v<caf::actor_clock::clock_type,
                             resilience::clock_type>,
              "the resilience mechanisms read CAF's clock type");

/// CAF's actor clock as the clock of a resilience mechanism: the steady
/// clock normally, virtual time under CAF's testing scheduler. The clock
/// belongs to the actor system and must outlive the mechanism.
class actor_clock_view final : public resilience::clock {
public:
  explicit actor_clock_view(caf::actor_clock& clk) : clk_(&clk) {
    // nop
  }
  resilience::time_point now() const noexcept override {
    return clk_->now();
  }

private:
  caf::actor_clock* clk_;
};

} // namespace vigil::detail
