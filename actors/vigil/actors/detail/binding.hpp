#pragma once

#include <atomic>

#include <caf/actor.hpp>

namespace vigil::detail {

/// One binding of a path to the cell that hosts its agent. The runtime's
/// directory makes a new binding each time a path is bound to another
/// cell, and clears `live` on the old one when it is replaced or unbound,
/// so a cached handle notices at once.
struct binding {
  explicit binding(caf::actor x) : actor(std::move(x)) {
    // nop
  }
  const caf::actor actor;
  std::atomic<bool> live{true};
};

} // namespace vigil::detail
