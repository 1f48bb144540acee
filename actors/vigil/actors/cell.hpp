#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <caf/actor.hpp>
#include <caf/atom.hpp>
#include <caf/fwd.hpp>

#include "vigil/actors/agent.hpp"
#include "vigil/actors/durability.hpp"
#include "vigil/actors/runtime.hpp"

namespace vigil {

/// How a cell hosts one child: the agent type, its parameters and limits.
struct cell_config {
  std::string path;
  const agent_type* type = nullptr;
  /// Shared with the child spec (every child of a simple_one_for_one
  /// supervisor shares its template's); null means none.
  std::shared_ptr<const vigil::params> params;
  /// Envelopes kept while the child is between instances (for a journal
  /// child: always, while they wait for their commit and their handler);
  /// beyond this a request fails with `buffer_overflow` and a send becomes
  /// a dead letter.
  uint32_t buffer_cap = 10000;
  /// Deliveries of one envelope: with 1 a failing envelope is not retried;
  /// with N > 1 it is redelivered to the restarted instance until it has
  /// failed N times, then it is a dead letter (poison_message).
  uint32_t max_deliveries = 1;
  /// none, snapshot or journal; durable cells need the runtime's store.
  durability_spec durability;
};

// The cell protocol. Supervisor -> cell messages are sent with high priority.
using start_atom = caf::atom_constant<caf::atom("vstart")>;     // (start, is_restart, reason) -> gen
// (stop, graceful, keep_buffer[, give_up_at]) -> unit; give_up_at (the
// actor clock's time since its epoch, 0 = never) is when the supervisor
// gives up on the stop: a cell that only gets to it later stops without
// on_stop.
using stop_atom = caf::atom_constant<caf::atom("vstop")>;
using retire_atom = caf::atom_constant<caf::atom("vretire")>;   // (retire): reject buffer, quit
// (abandon): the supervisor gave up on this cell (it did not stop in time)
// and may start another at its path: drop the instance, unbind the path,
// forward what reaches it, end once its writes are settled.
using abandon_atom = caf::atom_constant<caf::atom("vabandon")>;
using gone_atom = caf::atom_constant<caf::atom("vgone")>;       // cell-internal: abandon's marker
using degrade_atom = caf::atom_constant<caf::atom("vdegrade")>; // (degrade, default, min, max)
using probe_atom = caf::atom_constant<caf::atom("vprobe")>;     // cell-internal timer
// Cell -> supervisor, as ordinary messages.
using exit_atom = caf::atom_constant<caf::atom("vexit")>;       // (exit, key, gen, reason)
using recover_atom = caf::atom_constant<caf::atom("vrecover")>; // (recover, key, gen)
using state_atom = caf::atom_constant<caf::atom("vstate")>;     // query: -> string
using drain_atom = caf::atom_constant<caf::atom("vdrain")>;     // cell-internal: next buffer chunk
using snap_atom = caf::atom_constant<caf::atom("vsnap")>;     // cell-internal: snapshot timer
using outbox_atom = caf::atom_constant<caf::atom("voutbox")>; // cell-internal: outbox retry
// (stop, graceful, keep_buffer, give_up_at, ack): like stop, but answers
// with a plain (ack, key) message to the supervisor instead of a response.
using ack_atom = caf::atom_constant<caf::atom("vack")>;

/// Spawns a cell for the child `key` of supervisor `parent`. The cell starts
/// without an instance: it buffers envelopes until it receives `start_atom`.
caf::actor spawn_cell(caf::actor_system& sys, std::shared_ptr<runtime> rt,
                      cell_config cfg, caf::actor parent, uint64_t key);

} // namespace vigil
