#pragma once

// What an agent gets back from the node's shared state (context::kv_get,
// kv_put, kv_delete, enqueue_task, claim_task, extend_lease, complete_task,
// fail_task): versioned
// entries of a key-value store, and tasks of a leased queue.

#include <cstdint>
#include <string>

namespace vigil {

/// One key of a store as the last committed write left it.
struct kv_entry {
  std::string value;
  /// 0: the key was never written. Versions count every write and delete
  /// of the key, so a value is never mistaken for an older equal one.
  uint64_t version = 0;
  /// False if the key was never written or was deleted (`version` is then
  /// the tombstone's, 0 if never written).
  bool found = false;
  /// Who wrote this version: the agent's path and the message id it was
  /// handling (0 outside a handler), and when (Unix ms).
  std::string writer;
  uint64_t writer_id = 0;
  uint64_t written_ms = 0;
  /// The calling agent's own last write of the key, whoever wrote since:
  /// its version and the message it was handling then (origin and id); 0
  /// if it never wrote the key. An agent that crashed after its put
  /// committed can tell from it whether that put applied.
  uint64_t my_version = 0;
  uint64_t my_message_origin = 0;
  uint64_t my_message_id = 0;
};

/// The outcome of a compare-and-swap (kv_put, kv_delete).
struct kv_result {
  /// True: the write was committed, and `entry` is the new version (for a
  /// delete, its tombstone). False: a conflict; `entry` is what the key
  /// holds now, to retry from.
  bool applied = false;
  kv_entry entry;
  bool conflict() const noexcept {
    return !applied;
  }
};

/// The right to work one task until `expires_ms`: only its holder's
/// extend, complete or fail is accepted, and only before it expires.
struct lease {
  std::string queue;
  uint64_t task = 0;
  /// Which lease of the task this is (1 for its first claim); a newer
  /// claim of the task makes an older lease stale.
  uint64_t number = 0;
  /// When it expires, in Unix ms on the node's wall clock.
  uint64_t expires_ms = 0;
};

/// A task as claim gives it.
struct claimed_task {
  vigil::lease lease;
  std::string payload;
  /// Leases taken so far, this one included.
  uint32_t attempts = 0;
  uint32_t max_attempts = 0;
  /// Why the previous lease ended (a fail's reason, or its expiry).
  std::string last_error;
};

/// Options of an enqueue.
struct enqueue_options {
  /// Leases a task may take before it becomes a dead letter (each fail or
  /// expiry spends one); 0: 5.
  uint32_t max_attempts = 0;
  /// Non-empty: a second enqueue with the same key (a retry, a resent
  /// message) returns the first task's id instead of adding another.
  std::string dedupe_key;
};

} // namespace vigil
