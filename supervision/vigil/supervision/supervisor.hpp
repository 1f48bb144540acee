#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/fwd.hpp>

#include "vigil/actors/runtime.hpp"
#include "vigil/supervision/child_spec.hpp"

namespace vigil {

/// One row of `which_children`, in start order.
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

// The supervisor's runtime API, as messages (OTP's supervisor calls).
//   (start_child_atom, child_spec)                  -> child_info | error
//   (start_child_atom, params, std::string name)    -> child_info | error   [simple_one_for_one]
//   (terminate_child_atom, std::string id)          -> unit | error
//   (restart_child_atom, std::string id)            -> child_info | error
//   (delete_child_atom, std::string id)             -> unit | error
//   (which_children_atom)                           -> std::vector<child_info>
//   (count_children_atom)                           -> child_counts
// A supervisor is spawned idle; (start_atom, false, error{}) starts its
// children in order and answers with a uint64_t once all run, or with the
// error of the first child that failed to start. (stop_atom, true, false)
// stops it: children in reverse start order, then the supervisor.
using start_child_atom = caf::atom_constant<caf::atom("vstartc")>;
using terminate_child_atom = caf::atom_constant<caf::atom("vtermc")>;
using restart_child_atom = caf::atom_constant<caf::atom("vrestartc")>;
using delete_child_atom = caf::atom_constant<caf::atom("vdeletec")>;
using which_children_atom = caf::atom_constant<caf::atom("vwhich")>;
using count_children_atom = caf::atom_constant<caf::atom("vcount")>;

/// Spawns an idle supervisor at `path` for `spec`. Send `start_atom` to
/// start it. A parent monitors the supervisor and sees its exit reason (an
/// escalation carries the cause chain); the supervisor monitors `parent` (if
/// valid) and stops its children and itself when the parent goes away.
caf::actor spawn_supervisor(caf::actor_system& sys,
                            std::shared_ptr<runtime> rt, supervisor_spec spec,
                            std::string path, caf::actor parent = {});

} // namespace vigil

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vigil::child_spec)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vigil::child_info)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<vigil::child_info>)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vigil::child_counts)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vigil::params)
