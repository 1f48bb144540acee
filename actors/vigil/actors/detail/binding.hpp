#pragma once

#include <atomic>

#include <caf/actor.hpp>

#include "vigil/actors/detail/queue_gauge.hpp"

namespace vigil::detail {

/// One binding of a path to the cell that hosts its agent. The runtime's
/// directory makes a new binding each time a path is bound to another
/// cell, and clears `live` on the old one when it is replaced or unbound,
/// so a cached handle notices at once.
struct binding {
  explicit binding(caf::actor x, queue_gauge* g = nullptr)
    : actor(std::move(x)), gauge(g) {
    // nop
  }
  const caf::actor actor;
  /// The cell's queue count (inside the cell object, which `actor` keeps
  /// alive); null for a path whose actor is no cell (a supervisor).
  queue_gauge* const gauge;
  std::atomic<bool> live{true};
};

/// The actor bound at a path and its queue count (null: none kept).
struct bound {
  caf::actor actor;
  queue_gauge* gauge = nullptr;
};

} // namespace vigil::detail
