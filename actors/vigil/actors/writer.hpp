#pragma once

#include <chrono>
#include <cstddef>
#include <memory>

#include <caf/actor.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/fwd.hpp>

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
  /// How often a compaction pass starts.
  std::chrono::milliseconds compact_every{std::chrono::minutes{1}};
  /// Records a compaction step looks at in one write transaction; a pass
  /// takes as many steps as it needs, with other writes between them.
  size_t compact_step = 5000;
};

// (write, token, write_item) -> after the commit returned, the sender
// receives (committed, tokens: std::vector<uint64_t>, error: caf::error):
// one message per sender and batch, tokens in the order written, with
// `duplicate_bit` set on items whose guard already existed. Token 0 asks
// for no acknowledgement.
using write_atom = caf::atom_constant<caf::atom("vwrite")>;
using committed_atom = caf::atom_constant<caf::atom("vcommit")>;
using flush_atom = caf::atom_constant<caf::atom("vflush")>;
// (reset) -> unit: after a failed commit the writer rejects every later
// item of that sender (so nothing it wrote on top of the lost state lands)
// until the sender asks for a reset; the answer comes after all its earlier
// writes, so the sender can then reload its records from the store.
using reset_atom = caf::atom_constant<caf::atom("vreset")>;
constexpr uint64_t duplicate_bit = uint64_t{1} << 63;

/// (stats) -> (items, commits, failures, largest batch, idempotency records
/// compacted, failed compaction steps, finished compaction passes): the
/// writer's counters since it started.
using stats_atom = caf::atom_constant<caf::atom("vstats")>;
/// Writer-internal: the next compaction step.
using compact_atom = caf::atom_constant<caf::atom("vcompact")>;

/// Spawns the node's single writer: a detached actor (its own thread, so a
/// write transaction may span messages) that owns every write transaction
/// of `st`, so that blocking fsyncs never stall the scheduler. It collects
/// items as they arrive and commits them together (group commit) when the
/// batch is full, when its mailbox runs empty, or after `max_latency`; only
/// then it acknowledges each item to its sender. A failed commit
/// acknowledges every item of the batch with `storage_failed`.
caf::actor spawn_writer(caf::actor_system& sys, std::shared_ptr<store> st,
                        writer_options opts);

} // namespace vigil

// Write items never leave their node: they go from a cell to its node's
// writer only, so they need no serialization.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vigil::write_item)
