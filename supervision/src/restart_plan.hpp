#pragma once

// The pure decision of a restart, apart from its effects (OTP's supervisor
// computes the children to restart before it acts, too).

#include <algorithm>
#include <cstdint>
#include <vector>

#include "vigil/supervision/child_spec.hpp"

namespace vigil::detail {

/// Which children a restart stops and starts.
struct restart_plan {
  /// Siblings to stop first, in this order (reverse start order).
  std::vector<uint64_t> stop;
  /// The children to start again, in start order (the failed one among
  /// them).
  std::vector<uint64_t> start;
};

/// The restart of child `failed` under strategy `s`. `children` maps each
/// child's key to anything, keys in start order (as the supervisor keeps
/// them). one_for_one and simple_one_for_one restart the failed child
/// alone; one_for_all every child; rest_for_one the failed child and those
/// started after it. As in OTP, a group restart starts every child in
/// range, also one stopped by terminate_child.
template <class Map>
restart_plan plan_restart(strategy s, const Map& children, uint64_t failed) {
  restart_plan p;
  switch (s) {
    case strategy::one_for_one:
    case strategy::simple_one_for_one:
      p.start.push_back(failed);
      break;
    case strategy::one_for_all:
    case strategy::rest_for_one: {
      bool all = s == strategy::one_for_all;
      for (auto& kvp : children) {
        if (!all && kvp.first < failed)
          continue;
        if (kvp.first != failed)
          p.stop.push_back(kvp.first);
        p.start.push_back(kvp.first);
      }
      std::reverse(p.stop.begin(), p.stop.end());
      break;
    }
  }
  return p;
}

} // namespace vigil::detail
