#pragma once

#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <string>

#include <caf/actor.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/fwd.hpp>

#include "vigil/actors/counters.hpp"
#include "vigil/persistence/store.hpp"

namespace vigil {

/// Group-commit settings of a node's writer.
struct writer_options {
  /// Items per transaction at most; a full batch commits at once.
  size_t max_batch = 1000;
  /// How long the writer may wait for more items before it commits a
  /// non-full batch. Zero commits as soon as the writer's mailbox holds no
  /// more items (batching only what arrived meanwhile).
  std::chrono::microseconds max_latency{0};
  /// How long a journal agent remembers an accepted message id, so that a
  /// redelivery is not applied twice. Older ids are compacted away in the
  /// background once their envelope has left the journal; a message resent
  /// after that is applied again. Zero keeps every id for ever (the
  /// idempotency table then only grows).
  std::chrono::milliseconds idempotency_retention{std::chrono::hours{24 * 7}};
  /// How long a tool call's recorded result is kept under its idempotency
  /// key (as Stripe's, 24 h by default); a call with the key after that
  /// executes again. Records still running are kept. Zero keeps them for
  /// ever.
  std::chrono::milliseconds tool_result_retention{std::chrono::hours{24}};
  /// How long a completed task of a shared queue is kept (for inspection,
  /// and its dedupe key: an enqueue with the key after that adds a task
  /// again). Zero keeps them for ever.
  std::chrono::milliseconds task_retention{std::chrono::hours{24 * 7}};
  /// How often a compaction pass starts (idempotency records, then tool
  /// results, then completed tasks).
  std::chrono::milliseconds compact_every{std::chrono::minutes{1}};
  /// Records a compaction step looks at in one write transaction; a pass
  /// takes as many steps as it needs, with other writes between them.
  size_t compact_step = 5000;
  /// Run the writer on its own thread (the default), so that an fsync
  /// never stalls the scheduler. Deterministic tests run it on CAF's
  /// testing scheduler instead, where a detached actor would get a thread.
  bool detached = true;
};

/// Which owner of a path a write comes from. A path's durable records have
/// one owner at a time: the cell that holds the path's newest epoch, taken
/// from the writer's node-wide counter by a fence. The writer refuses a
/// write whose epoch is not the path's current one, so an instance that was
/// replaced (stuck in a handler when its supervisor gave up on it) can never
/// commit on top of its successor. A default `owner_ref` is unfenced: only
/// for records of no path's state (dead letters of envelopes never
/// accepted).
///
/// One word: the writer's slot for the path (low 24 bits, so at most 16.7
/// million paths owned at once per node) and the epoch (high 40 bits;
/// epochs start at 1), so that a write message stays as small as the
/// envelope it is about (see owned_write).
struct owner_ref {
  static constexpr int slot_bits = 24;
  static constexpr uint64_t max_slots = uint64_t{1} << slot_bits;
  uint64_t bits = 0;

  static owner_ref make(uint32_t slot, uint64_t epoch) noexcept {
    return owner_ref{(epoch << slot_bits) | slot};
  }
  uint32_t slot() const noexcept {
    return static_cast<uint32_t>(bits & (max_slots - 1));
  }
  uint64_t epoch() const noexcept {
    return bits >> slot_bits;
  }
  explicit operator bool() const noexcept {
    return bits != 0;
  }
};

/// A write as the writer receives it: the item and who writes it.
///
/// Size matters here. The scheduler thread that runs a cell frees the
/// envelopes it handles and allocates this cell's writes, which the
/// writer's thread frees. When a write message falls in the same malloc
/// size class as an envelope message, it reuses a chunk from that thread's
/// cache; otherwise every write takes the contended arena path. Measured on
/// 2 cores, sync full, batch 1000: 16 bytes more per write message cut
/// durable throughput from about 220k to 145k envelopes/s (commits rose
/// from 1,004 to about 1,600 for the same million items, as the writer
/// starved). cell_durable.cpp asserts that the two stay in one class.
/// Data dir format 2 grew the envelope by 32 bytes (origin, trace context,
/// attempt budget), which moved the envelope message up one class;
/// `reserved_` moves this message along with it.
struct owned_write {
  owner_ref owner;
  write_item item;
  uint64_t reserved_[3] = {};
};

/// What a fence grants: the epoch, and the path's records (snapshot,
/// unconsumed journal, undelivered outbox) exactly as they are on disk at
/// the fence, after every earlier write of the path was committed. The
/// first fence of a path after the node started gets what the start's
/// recovery read (nothing of the path was written since); later ones are
/// read from LMDB. `error` is set if they could not be read.
struct fence_grant {
  owner_ref owner;
  recovered_agent view;
  std::string error;
};

// (write, token, owned_write) -> after the commit returned, the
// sender receives (committed, tokens: std::vector<uint64_t>, error:
// caf::error): one message per sender and batch, tokens in the order
// written, with `duplicate_bit` set on items whose guard already existed.
// Token 0 asks for no acknowledgement; a failed commit is told to every
// owner in the batch all the same (with no tokens), so that none goes on
// unaware. A refused write (`fenced`: its epoch is not the path's current
// one; `storage_failed`: an earlier commit of this epoch failed) is
// acknowledged the same way, after the acknowledgements of the sender's
// earlier writes.
using write_atom = caf::atom_constant<caf::atom("vwrite")>;
using committed_atom = caf::atom_constant<caf::atom("vcommit")>;
using flush_atom = caf::atom_constant<caf::atom("vflush")>;
// (fence, path, prev_epoch) -> fence_grant: takes ownership of `path` at a
// new epoch. prev_epoch 0 is a new cell, which always wins (its supervisor
// gave up on any older one); otherwise it is the cell's own epoch after a
// failed commit, granted only if nobody took the path meanwhile (else the
// error `fenced`). The grant comes after every write of the path already
// received has been committed.
using fence_atom = caf::atom_constant<caf::atom("vfence")>;
// (release, path): a cell that sent a fence has ended. Once every such cell
// released the path, the writer forgets it.
using release_atom = caf::atom_constant<caf::atom("vrelease")>;
// (orphans) -> std::vector<std::string>: paths that recovery found at start
// and no fence claimed; their cached records are dropped (a later fence of
// such a path reads LMDB).
using orphans_atom = caf::atom_constant<caf::atom("vorphans")>;
constexpr uint64_t duplicate_bit = uint64_t{1} << 63;
/// Set by a sender on the token of an item that holds shared-state
/// operations (mutation::op::shared): after a successful commit, and
/// before the acknowledgement, the writer sends it
/// (shared_done, token, results: std::vector<std::string>), one serialized
/// records::SharedResult per operation in the item's order (none if the
/// item was a duplicate). The acknowledgement carries the token as sent.
constexpr uint64_t shared_bit = uint64_t{1} << 61;
using shared_done_atom = caf::atom_constant<caf::atom("vshdone")>;

/// (stats) -> (items, commits, failures, largest batch, idempotency records
/// compacted, failed compaction steps, finished compaction passes, paths
/// owned now, writes refused): the `writer_*` fields of the counters it
/// counts into (see spawn_writer), read at once; one writer counts into a
/// node's counters, so they run from the node's start.
using stats_atom = caf::atom_constant<caf::atom("vstats")>;
/// Writer-internal: the next compaction step.
using compact_atom = caf::atom_constant<caf::atom("vcompact")>;
/// Test hook, (crash): the writer quits at once, and what it holds
/// uncommitted is lost, as in a crash of the node. Deterministic tests use
/// it to crash a node without a process to kill.
using crash_atom = caf::atom_constant<caf::atom("vcrash")>;

/// Spawns the node's single writer: a detached actor (its own thread, so a
/// write transaction may span messages) that owns every write transaction
/// of `st`, so that blocking fsyncs never stall the scheduler. It collects
/// items as they arrive and commits them together (group commit) when the
/// batch is full, when its mailbox runs empty, or after `max_latency`; only
/// then it acknowledges each item to its sender. A failed commit
/// acknowledges every item of the batch with `storage_failed`. `found` is
/// what `store::recover` read at the node's start; the writer keeps it in a
/// `recovery_table`, which answers the first fence of each path. The writer
/// counts into `stats` (the node's counters, `runtime::shared_stats`), or
/// into counters of its own if null; `stats_atom` reads them.
caf::actor spawn_writer(caf::actor_system& sys, std::shared_ptr<store> st,
                        writer_options opts,
                        std::map<std::string, recovered_agent> found = {},
                        std::shared_ptr<counters> stats = nullptr);

} // namespace vigil

// Write items never leave their node: they go from a cell to its node's
// writer only, so they need no serialization.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vigil::write_item)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vigil::owned_write)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vigil::fence_grant)
