#pragma once

#include <cstdint>
#include <string>

#include <type_traits>

#include <caf/error.hpp>
#include <caf/meta/load_callback.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/none.hpp>

#include "vigil/actors/symbol.hpp"

namespace vigil {

/// The unit of delivery: every message that crosses a mailbox, the disk or
/// the network travels as an envelope.
///
/// The payload is the serialized bytes of a Protobuf message whose fully
/// qualified name is in `type` (interned: see symbol.hpp). The envelope itself is a CAF message type
/// (see `inspect` below), so it can be persisted and sent to another node
/// unchanged.
///
/// `deadline` is nanoseconds on the node's actor clock (steady, monotonic,
/// injectable in tests); 0 means none. It is node-local: the net layer turns
/// it into a remaining budget at the node boundary, as gRPC does.
struct envelope {
  /// Flag bits.
  static constexpr uint32_t degraded_flag = 1u;
  /// The deadline bounds when handling may start, not when it ends: a
  /// handler that starts in time is answered however long it runs
  /// (Temporal's schedule-to-start). Refused before it starts, the envelope
  /// is `expired`; a stopping agent does not keep it for a later start, and
  /// a replay does not take it. Saga steps are sent so.
  static constexpr uint32_t start_deadline_flag = 2u;
  /// The requester may ask again after it crashed: a journal agent stores
  /// the answer with the message id when it consumes the envelope, and a
  /// resend of the id gets that answer (or, while the envelope still
  /// waits in the journal, the answer when it is handled) instead of
  /// `duplicate`. A durable saga's calls to its steps are sent so.
  static constexpr uint32_t keep_reply_flag = 4u;
  /// Holds a place in the receiving cell's queue count (see
  /// detail::queue_gauge): set by the sender that took it, cleared by the
  /// cell that gives it back. Never persisted or sent to another node.
  static constexpr uint32_t queued_flag = 8u;

  /// W3C trace flag: sampled.
  static constexpr uint8_t sampled_flag = 1u;

  symbol type;                 ///< Protobuf full name of the payload.
  std::string payload;         ///< Serialized Protobuf bytes.
  /// Message id. (origin, id) is unique across nodes: `origin` is the node
  /// that minted the id (its data dir's random node id), or 0 when the
  /// caller chose the id (`send_options::message_id`) or the envelope was
  /// written by data dir format 1. Idempotency is keyed by both.
  uint64_t id = 0;
  uint64_t origin = 0;
  std::string idempotency_key; ///< Stable across retries of one logical call.
  int64_t deadline = 0;        ///< Actor-clock nanoseconds; 0 = no deadline.
  /// W3C trace context: the 128-bit trace id is trace_id_high:trace_id,
  /// shared by every envelope of one trace; `span_id` is the span that sent
  /// this envelope (W3C parent-id; 0 for a root); `trace_flags` are W3C's.
  uint64_t trace_id = 0;
  uint64_t trace_id_high = 0;
  uint64_t span_id = 0;
  std::string sender;          ///< Sender path; empty for external callers.
  uint32_t attempt = 1;        ///< 1 for the first delivery.
  /// Retries that calls made on behalf of this envelope may still spend
  /// (nested retries draw from one budget instead of multiplying); 0 = none
  /// set. Envelopes sent by a handler inherit it.
  uint32_t attempt_budget = 0;
  /// The account `attempt_budget` is drawn from: every envelope of one
  /// request tree (a request and the requests its handler makes) shares
  /// it, so that every layer spends from one budget. 0: the account of
  /// this envelope's own (origin, id) (see `budget_account`).
  uint64_t budget_id = 0;
  uint32_t flags = 0;          ///< `degraded_flag`, `start_deadline_flag`.
  uint8_t trace_flags = 0;     ///< W3C trace flags (`sampled_flag`).

  /// The retry account this envelope's handling draws from.
  uint64_t budget_account() const noexcept {
    if (budget_id != 0)
      return budget_id;
    uint64_t z = id ^ (origin * 0xc2b2ae3d27d4eb4full);
    z = (z ^ (z >> 33)) * 0xff51afd7ed558ccdull;
    z ^= z >> 33;
    return z != 0 ? z : 1;
  }

  bool degraded() const noexcept {
    return (flags & degraded_flag) != 0;
  }

  bool keep_reply() const noexcept {
    return (flags & keep_reply_flag) != 0;
  }
  bool start_deadline() const noexcept {
    return deadline != 0 && (flags & start_deadline_flag) != 0;
  }

  /// The id of the span that handles this delivery of the envelope: the
  /// `span_id` of every envelope its handler sends. Derived from (origin,
  /// id, attempt), so it needs no state and differs per delivery attempt;
  /// never 0 (W3C forbids an all-zero span id).
  uint64_t handling_span() const noexcept {
    // splitmix64's finalizer over the three fields.
    uint64_t z = id ^ (origin * 0x9e3779b97f4a7c15ull)
                 ^ (uint64_t{attempt} << 48);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return z != 0 ? z : 1;
  }
};

/// CAF serialization for `symbol`: the characters; loading interns them.
template <class Inspector>
std::enable_if_t<Inspector::reads_state, typename Inspector::result_type>
inspect(Inspector& f, symbol& x) {
  std::string tmp = x.str();
  return f(tmp);
}

template <class Inspector>
std::enable_if_t<Inspector::writes_state, typename Inspector::result_type>
inspect(Inspector& f, symbol& x) {
  std::string tmp;
  auto load = caf::meta::load_callback([&]() -> caf::error {
    x = symbol{tmp};
    return caf::none;
  });
  return f(tmp, load);
}

/// CAF serialization for `envelope`.
/// A loaded envelope never holds a place in a queue (queued_flag is this
/// node's own bookkeeping, not to be trusted from bytes).
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, envelope& x) {
  return f(caf::meta::type_name("vigil.envelope"), x.type, x.payload, x.id,
           x.origin, x.idempotency_key, x.deadline, x.attempt,
           x.attempt_budget, x.budget_id, x.trace_id, x.trace_id_high, x.span_id,
           x.trace_flags, x.sender, x.flags,
           caf::meta::load_callback([&]() -> caf::error {
             x.flags &= ~envelope::queued_flag;
             return caf::none;
           }));
}

} // namespace vigil
