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

  symbol type;                 ///< Protobuf full name of the payload.
  std::string payload;         ///< Serialized Protobuf bytes.
  uint64_t id = 0;             ///< Message id, unique per node.
  std::string idempotency_key; ///< Stable across retries of one logical call.
  int64_t deadline = 0;        ///< Actor-clock nanoseconds; 0 = no deadline.
  uint64_t trace_id = 0;       ///< Shared by every envelope of one trace.
  std::string sender;          ///< Sender path; empty for external callers.
  uint32_t attempt = 1;        ///< 1 for the first delivery.
  uint32_t flags = 0;          ///< `degraded_flag` on stand-in replies.

  bool degraded() const noexcept {
    return (flags & degraded_flag) != 0;
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
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, envelope& x) {
  return f(caf::meta::type_name("vigil.envelope"), x.type, x.payload, x.id,
           x.idempotency_key, x.deadline, x.attempt, x.trace_id, x.sender,
           x.flags);
}

} // namespace vigil
