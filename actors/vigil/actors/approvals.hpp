#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <caf/actor.hpp>
#include <caf/actor_addr.hpp>
#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <caf/fwd.hpp>

#include "vigil/persistence/approvals.hpp"
#include "vigil/persistence/store.hpp"

namespace google::protobuf {
class Message;
} // namespace google::protobuf

namespace vigil {

/// Where one approval stands, as `approval_desk` reports it.
struct approval_status {
  approval_state state = approval_state::pending;
  std::string id; ///< The id people use (approval_id of the key).
  std::string decided_by;
  std::string reason;
  uint64_t decided_unix_ms = 0;
  uint64_t expires_unix_ms = 0; ///< 0: never.

  bool pending() const noexcept {
    return state == approval_state::pending;
  }
  bool approved() const noexcept {
    return state == approval_state::approved;
  }
};

/// What a waiter receives (see `approval_desk::wait`), as the message
/// `(approval_atom, approval_outcome)`: the decision, or the expiry, of the
/// approval it waits for, after it was committed.
using approval_atom = caf::atom_constant<caf::atom("vapproval")>;

struct approval_outcome {
  std::string key;
  approval_state state = approval_state::expired; ///< Never pending.
  std::string by;     ///< Who decided; empty if it expired.
  std::string reason;
  uint64_t decided_unix_ms = 0;

  bool approved() const noexcept {
    return state == approval_state::approved;
  }
};

/// The record of a call (or envelope) that needs approval, as the cell
/// passes it to `approval_desk::request`: `request` rendered as JSON
/// (bounded: approval_request_max), asked for now, expiring at
/// `expires_unix_ms` (0: never). `tool` is the envelope's type for an
/// envelope.
records::ApprovalRecord
make_approval_record(std::string_view path, std::string_view tool,
                     const google::protobuf::Message& request,
                     uint64_t expires_unix_ms,
                     approval_kind kind = approval_kind::tool_call);

/// A node's approvals: it stores the calls that wait for a person, takes in
/// the decisions `vigil approvals approve|reject` drops into the data dir
/// (DIR/approvals/, every `approvals_poll`), and tells the waiting calls.
///
/// Every approval is a record in `db::approvals` under its call's key
/// (tool_result_key; an envelope's uses approval_envelope_index), so a call
/// replayed after a restart finds its approval again with `request`. A
/// record is decided at most once: pending -> approved | rejected |
/// expired. Its changes go through the node's writer (unfenced: no agent
/// owns them); the desk keeps the newest state of the records it is
/// writing, so every call here sees its own earlier changes at once, and
/// writes one again if its commit fails (5 attempts in all, then it goes
/// back to what the disk holds).
///
/// Owned by the runtime (`runtime::approvals()`); attached by the node to
/// its store and writer. Without a data dir every call fails with
/// `approval_unavailable`. Thread-safe: cells call it from their handlers
/// (nothing here blocks on an actor).
class approval_desk {
public:
  approval_desk();
  ~approval_desk();

  approval_desk(const approval_desk&) = delete;
  approval_desk& operator=(const approval_desk&) = delete;

  /// Attaches the node's store and writer and spawns the desk's actor,
  /// which sends the writes, receives their commits, and takes in decision
  /// files every `poll`. Called by the node once, before any agent runs
  /// (the decision files waiting at its start it has taken in directly:
  /// take_decisions).
  void attach(caf::actor_system& sys, std::shared_ptr<store> st,
              caf::actor writer, std::chrono::milliseconds poll);

  /// Stops the desk's actor; later calls fail with approval_unavailable.
  /// Writes already sent still commit; decision files whose commit was not
  /// acknowledged stay, and the next start ignores them if their record is
  /// decided. Called by the node after its tree stopped.
  void detach();

  /// True between attach and detach.
  bool attached() const;

  /// A call needs approval. If an approval is stored under `key` (this call
  /// asked before, e.g. before a restart), returns its state and changes
  /// nothing: approved, rejected, expired, or still pending. Otherwise
  /// stores `rec` as pending (format, state, key_text and
  /// requested_unix_ms are filled in, request_json bounded) and returns
  /// pending at once, the write queued; no decision can match it before it
  /// is committed. Errors: approval_unavailable (no data dir),
  /// storage_failed (the stored record does not parse, naming the key).
  [[nodiscard]] caf::expected<approval_status>
  request(const std::string& key, records::ApprovalRecord rec);

  /// The approval under `key` as it stands now; `not_found` if none.
  [[nodiscard]] caf::expected<approval_status>
  state(const std::string& key);

  /// `waiter` wants `(approval_atom, approval_outcome)` when the approval
  /// under `key` is decided or expires, once that is committed; if it is
  /// already, the message goes out now. One message per wait; a waiter
  /// that ended is skipped. `not_found` if no approval is stored or queued
  /// under `key`.
  [[nodiscard]] caf::error wait(const std::string& key,
                                const caf::actor_addr& waiter);

  /// Drops `waiter`'s wait for `key` (no message follows, unless it was
  /// already sent).
  void cancel(const std::string& key, const caf::actor_addr& waiter);

  /// The call's approval timeout passed: marks the approval expired (so the
  /// CLI shows it and a late decision is refused) and returns expired; its
  /// waiters get the outcome once committed. If a decision came first, the
  /// approval stays as it is and its state is returned: the caller must
  /// look (an approval may have won the race). `not_found` if none.
  [[nodiscard]] caf::expected<approval_status>
  expire(const std::string& key, std::string reason = {});

  /// Takes in the decision files in DIR/approvals now (the desk's actor
  /// does every `poll`). A corrupt file, or one naming no approval, is
  /// renamed *.bad and logged; a decision for a decided approval is
  /// logged and deleted; the others are written, and deleted once
  /// committed. Never throws.
  void intake();

private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

} // namespace vigil

// Outcomes go from a node's desk to its own cells only.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(vigil::approval_outcome)
