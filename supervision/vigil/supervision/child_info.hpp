#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include <caf/actor.hpp>

#include "vigil/supervision/child_spec.hpp"

namespace vigil {

/// One row of `which_children`, in start order. Its wire form (see
/// vigil/supervision/wire.hpp) leaves out `handle`, a local actor.
struct child_info {
  std::string id;
  std::string path;
  child_kind kind = child_kind::worker;
  /// "running", "restarting", "stopped" (OTP's undefined) or "degraded".
  std::string status;
  uint64_t restarts = 0;
  /// The cell (worker) or supervisor actor; invalid when it has none.
  caf::actor handle;
};

/// OTP's count_children: specs, active, supervisors, workers.
struct child_counts {
  size_t specs = 0;
  size_t active = 0;
  size_t supervisors = 0;
  size_t workers = 0;
  bool operator==(const child_counts& y) const {
    return specs == y.specs && active == y.active
           && supervisors == y.supervisors && workers == y.workers;
  }
};

} // namespace vigil
