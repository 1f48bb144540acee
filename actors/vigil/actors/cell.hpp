#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include <caf/actor.hpp>
#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/timestamp.hpp>
#include <caf/fwd.hpp>

#include "vigil/actors/agent.hpp"
#include "vigil/actors/detail/queue_gauge.hpp"
#include "vigil/actors/durability.hpp"
#include "vigil/actors/envelope.hpp"
#include "vigil/actors/tool.hpp"
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
  /// Envelopes queued for the cell (sent, not yet taken from its
  /// mailbox); a sender beyond it is refused or waits, per `overflow`.
  uint32_t queue_cap = 10000;
  overflow_policy overflow = overflow_policy::shed;
  /// Deliveries of one envelope: with 1 a failing envelope is not retried;
  /// with N > 1 it is redelivered to the restarted instance until it has
  /// failed N times, then it is a dead letter (poison_message).
  uint32_t max_deliveries = 1;
  /// none, snapshot or journal; durable cells need the runtime's store.
  durability_spec durability;
  /// What this child changes of the tools' policies for its own calls, by
  /// tool name (shared with the child spec); null means nothing.
  std::shared_ptr<const std::map<std::string, tool_override>> tool_overrides;
  /// Which of its envelopes wait for a person's approval (shared with the
  /// child spec); null: none.
  std::shared_ptr<const envelope_approval> approval;
};

// -- the cell protocol --------------------------------------------------------
//
// Every message between a supervisor and its children, in one place. The
// commands with arguments are named structs (with `inspect` overloads, and
// registered by vigil::add_message_types), so that a field is read by its
// name and a message of the wrong shape matches nothing: a cell answers a
// message it does not know with `unknown_message_type`, naming it, and
// never drops it silently. A supervisor is a child too (of its parent
// supervisor) and takes `start_cmd` and `stop_cmd` the same way.
//
// Supervisor -> child, sent with high priority:
//   start_cmd                  -> uint64_t (the instance's generation) | error
//   stop_cmd                   -> unit, or a stop_ack message (see `ack`)
//   degrade_cmd                   (cells; no answer)
//   retire_atom                   (cells: reject the buffer, end; no answer)
//   abandon_atom                  (cells: see below; no answer)
//   state_atom                 -> std::string (cells: the mode; for tests)
// Cell -> supervisor, as ordinary messages:
//   exit_report, recover_report, stop_ack
// Cell-internal timers and markers (a cell sends them to itself only):
//   drain_atom, probe_atom, snap_atom, outbox_atom, gone_atom.

/// Supervisor -> child: start an instance (a supervisor: its children, in
/// order). Answered with the instance's generation, or why it did not start.
struct start_cmd {
  /// on_restart instead of on_start.
  bool is_restart = false;
  /// What ended the previous instance (for on_restart).
  caf::error reason;
};

/// Supervisor -> child: stop the instance. Answered with unit, or, with
/// `ack`, by a `stop_ack` message to the supervisor instead of a response
/// (a batch stop of many children costs no pending request each).
struct stop_cmd {
  /// Run on_stop (and a snapshot agent's last save); false: brutal_kill.
  bool graceful = true;
  /// Keep buffering envelopes for the restart that follows; false: reject
  /// them (not_running).
  bool keep_buffer = false;
  /// When the supervisor gives up on this stop: the actor clock's time
  /// since its epoch; 0 = never. A cell that only gets to the stop later
  /// (its handler was stuck) stops without on_stop: a newer instance may
  /// run already.
  caf::timespan give_up_at{0};
  /// Answer with a `stop_ack` message instead of a response.
  bool ack = false;
};

/// Supervisor -> cell: the child spent its restart budget. Drop the
/// instance; answer every envelope with `fallback` (marked degraded), and
/// probe the child half-open after `probe_min`, doubling up to `probe_max`.
struct degrade_cmd {
  envelope fallback;
  caf::timespan probe_min{0};
  caf::timespan probe_max{0};
};

/// Cell -> supervisor: instance `gen` of child `key` ended with `reason`
/// (a throw, a failed commit, or ctx.stop()).
struct exit_report {
  uint64_t key = 0;
  uint64_t gen = 0;
  caf::error reason;
};

/// Cell -> supervisor: a half-open probe of degraded child `key` succeeded;
/// instance `gen` runs.
struct recover_report {
  uint64_t key = 0;
  uint64_t gen = 0;
};

/// Cell -> supervisor: child `key` carried out a `stop_cmd` with `ack`.
struct stop_ack {
  uint64_t key = 0;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, start_cmd& x) {
  return f(caf::meta::type_name("vigil.start_cmd"), x.is_restart, x.reason);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, stop_cmd& x) {
  return f(caf::meta::type_name("vigil.stop_cmd"), x.graceful, x.keep_buffer,
           x.give_up_at, x.ack);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, degrade_cmd& x) {
  return f(caf::meta::type_name("vigil.degrade_cmd"), x.fallback, x.probe_min,
           x.probe_max);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, exit_report& x) {
  return f(caf::meta::type_name("vigil.exit_report"), x.key, x.gen, x.reason);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, recover_report& x) {
  return f(caf::meta::type_name("vigil.recover_report"), x.key, x.gen);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, stop_ack& x) {
  return f(caf::meta::type_name("vigil.stop_ack"), x.key);
}

/// (retire): reject the buffer (not_running), end once the envelopes
/// queued before it are answered and the writes already sent are settled.
using retire_atom = caf::atom_constant<caf::atom("vretire")>;
/// (abandon): the supervisor gave up on this cell (it did not stop in
/// time) and may start another at its path: drop the instance, unbind the
/// path, forward what reaches it, end once its writes are settled.
using abandon_atom = caf::atom_constant<caf::atom("vabandon")>;
/// (state) -> std::string: the cell's mode ("running", "degraded", ...).
using state_atom = caf::atom_constant<caf::atom("vstate")>;
// Internal: abandon's and retire's marker; the half-open probe timer; the
// next buffer chunk; the snapshot timer; the outbox retry.
using gone_atom = caf::atom_constant<caf::atom("vgone")>;
using probe_atom = caf::atom_constant<caf::atom("vprobe")>;
using drain_atom = caf::atom_constant<caf::atom("vdrain")>;
using snap_atom = caf::atom_constant<caf::atom("vsnap")>;
using outbox_atom = caf::atom_constant<caf::atom("voutbox")>;
/// (expire_atom, origin, id) -> bool: refuse the envelope (origin, id) as
/// `expired` now if it waits in the cell's buffer past its deadline (see
/// envelope::start_deadline_flag). Any client may send it; it only
/// hastens what the deadline decides anyway.
using expire_atom = caf::atom_constant<caf::atom("vexpire")>;

/// Spawns a cell for the child `key` of supervisor `parent`. The cell starts
/// without an instance: it buffers envelopes until it receives `start_cmd`.
caf::actor spawn_cell(caf::actor_system& sys, std::shared_ptr<runtime> rt,
                      cell_config cfg, caf::actor parent, uint64_t key);

/// The queue count of a cell that `spawn_cell` returned (bind it with the
/// cell, see directory::bind). Valid while a handle to the cell is held.
detail::queue_gauge* queue_of(const caf::actor& cell);

} // namespace vigil
