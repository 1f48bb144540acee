#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/atom.hpp>
#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include "vigil/actors/cell.hpp"
#include "vigil/actors/runtime.hpp"
#include "vigil/supervision/child_info.hpp"
#include "vigil/supervision/child_spec.hpp"
#include "vigil/supervision/wire.hpp"

namespace vigil {

// -- the supervisor protocol --------------------------------------------------
//
// Every message a supervisor takes, in one place: OTP's supervisor calls,
// the child protocol it shares with cells (start_cmd, stop_cmd; see
// vigil/actors/cell.hpp), its children's reports, and envelopes (a saga's
// input). `supervisor_api` below declares them as a CAF typed interface,
// and the supervisor's behavior is built as that interface's typed
// behavior, so a handler that takes or answers anything else does not
// compile. Every argument is a registered type with a wire form (see
// vigil/supervision/wire.hpp, vigil::add_message_types), so each message
// can be serialized. A message outside the protocol is answered with
// `unknown_message_type`, naming it (and logged), never dropped silently.
//
//   (start_child_atom, child_spec)                  -> child_info | error
//   (start_child_atom, params, std::string name)    -> child_info | error   [simple_one_for_one]
//   (terminate_child_atom, std::string id)          -> unit | error
//   (restart_child_atom, std::string id)            -> child_info | error
//   (delete_child_atom, std::string id)             -> unit | error
//   (which_children_atom)                           -> std::vector<child_info>
//   (count_children_atom)                           -> child_counts
//   start_cmd                                       -> uint64_t | error
//   stop_cmd                                        -> unit
//   envelope                                        -> envelope | error     [sagas]
//   exit_report, recover_report, stop_ack              (from its cells)
//
// A supervisor is spawned idle; `start_cmd{}` starts its children in order
// and answers once all run, or with the error of the first child that
// failed to start (its fields are for cells; a supervisor ignores them).
// `stop_cmd{}` stops it: children in reverse start order, then the
// supervisor.
using start_child_atom = caf::atom_constant<caf::atom("vstartc")>;
using terminate_child_atom = caf::atom_constant<caf::atom("vtermc")>;
using restart_child_atom = caf::atom_constant<caf::atom("vrestartc")>;
using delete_child_atom = caf::atom_constant<caf::atom("vdeletec")>;
using which_children_atom = caf::atom_constant<caf::atom("vwhich")>;
using count_children_atom = caf::atom_constant<caf::atom("vcount")>;

/// The supervisor's protocol as a CAF typed interface. `spawn_supervisor`
/// returns a plain `caf::actor` (a supervisor's children, cells and
/// supervisors alike, are held as such); `caf::actor_cast<supervisor_api>`
/// of it gives a handle whose requests are checked at compile time.
using supervisor_api = caf::typed_actor<
  caf::replies_to<start_child_atom, child_spec>::with<child_info>,
  caf::replies_to<start_child_atom, params, std::string>::with<child_info>,
  caf::replies_to<terminate_child_atom, std::string>::with<void>,
  caf::replies_to<restart_child_atom, std::string>::with<child_info>,
  caf::replies_to<delete_child_atom, std::string>::with<void>,
  caf::replies_to<which_children_atom>::with<std::vector<child_info>>,
  caf::replies_to<count_children_atom>::with<child_counts>,
  caf::replies_to<start_cmd>::with<uint64_t>,
  caf::replies_to<stop_cmd>::with<void>,
  caf::replies_to<envelope>::with<envelope>,
  caf::reacts_to<exit_report>, caf::reacts_to<recover_report>,
  caf::reacts_to<stop_ack>>;

/// Spawns an idle supervisor at `path` for `spec`. Send `start_cmd{}` to
/// start it. A parent monitors the supervisor and sees its exit reason (an
/// escalation carries the cause chain); the supervisor monitors `parent` (if
/// valid) and stops its children and itself when the parent goes away.
caf::actor spawn_supervisor(caf::actor_system& sys,
                            std::shared_ptr<runtime> rt, supervisor_spec spec,
                            std::string path, caf::actor parent = {});

} // namespace vigil
