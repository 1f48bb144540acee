#pragma once

// Builds the write items of durable agents (see durability.hpp). Pure
// functions: no CAF, no I/O; the cell sends the items to the node's writer.

#include <memory>
#include <string>
#include <vector>

#include <caf/expected.hpp>

#include "vigil/actors/detail/envelope_record.hpp"
#include "vigil/actors/envelope.hpp"
#include "vigil/persistence/store.hpp"

namespace vigil::detail {


/// An envelope sent by a journal agent's handler, bound for the outbox.
struct outbox_send {
  uint64_t seq = 0;
  std::string to;
  envelope env;
  /// Set: an effect (context::effect) instead of a send.
  std::shared_ptr<const records::Effect> effect;
  /// An effect's dispatches that failed so far (in memory).
  uint32_t failures = 0;
};

/// What a journal agent commits after handling envelope `seq`.
struct consume_args {
  const std::string* path = nullptr;
  const std::string* agent = nullptr;
  uint64_t seq = 0;             ///< The consumed journal entry (0: none).
  const std::string* state = nullptr; ///< New state bytes (nullptr: none).
  std::string state_type;
  uint64_t next_seq = 0;
  uint64_t next_outbox = 0;
  uint64_t processed = 0;
  uint32_t durability = 0;
  const std::vector<outbox_send>* outbox = nullptr;
  /// Serialized records::SharedOp to run in the same transaction.
  const std::vector<std::string>* shared = nullptr;
  /// Non-empty: the envelope failed for good and becomes a dead letter.
  std::string dead_reason;
  /// The dead letter is of a refusal (see DeadLetter.refused).
  bool dead_refused = false;
  const envelope* dead_env = nullptr;
  /// Snapshot mode: the unconsumed envelopes to keep with the state.
  const std::vector<const envelope*>* pending = nullptr;
  /// Journal mode: the consumed envelope asked for its answer to be kept
  /// (envelope::keep_reply_flag): stored with its message id, the reply if
  /// `reply_err` is empty. Neither set: the answer is not known (a
  /// deferred reply), and a resend gets `duplicate`.
  const envelope* keep_for = nullptr;
  const envelope* reply = nullptr;
  const caf::error* reply_err = nullptr;
};

/// The stored answer of an IdempotencyRecord as a reply or an error.
caf::expected<envelope> stored_answer(const records::IdempotencyRecord& r);

/// Accepting `e` as journal entry `seq` of `path`, guarded by its message id
/// (a duplicate id is not accepted twice).
write_item accept_item(const std::string& path, uint64_t seq,
                       const envelope& e);

/// Consumption of an entry (state, journal delete, outbox, dead letter) in
/// one item, or a snapshot-mode save when `a.seq` is 0.
write_item consume_item(const consume_args& a);

/// Rewrites journal entry `seq` (its attempt count changed).
write_item redeliver_item(const std::string& path, uint64_t seq,
                          const envelope& e);


/// A dead letter on its own; `journal`: written by a journal agent's cell.
/// `repeats`: how many more letters like it this one stands for.
write_item dead_letter_item(const std::string& path, const envelope& e,
                            const std::string& reason, bool journal = false,
                            uint64_t repeats = 0);

} // namespace vigil::detail
