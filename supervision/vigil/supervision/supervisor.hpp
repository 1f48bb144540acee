#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/atom.hpp>
#include <caf/fwd.hpp>

#include "vigil/actors/runtime.hpp"
#include "vigil/supervision/child_info.hpp"
#include "vigil/supervision/child_spec.hpp"
#include "vigil/supervision/wire.hpp"

namespace vigil {

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
