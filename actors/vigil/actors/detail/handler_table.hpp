#pragma once

#include <cstdint>
#include <functional>
#include <type_traits>
#include <unordered_map>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "vigil/actors/envelope.hpp"

namespace vigil {

class agent_base;
class context;

namespace detail {

/// What a type-erased handler did with an envelope.
enum class handler_status : uint8_t {
  /// Handled; `out` holds the reply, if the handler returned one.
  done,
  /// The payload does not parse as the handler's request type.
  bad_payload,
  /// The handler refused the envelope with the error in `refusal`.
  refused,
};

/// Type-erased handler: parses `in.payload`, runs the handler and, if it
/// returns a message, serializes it into `out`.
using erased_handler
  = std::function<handler_status(agent_base&, context&, const envelope& in,
                                 envelope& out, caf::error& refusal)>;

template <class T>
struct is_expected : std::false_type {};

template <class T>
struct is_expected<caf::expected<T>> : std::true_type {};

struct handler_table {
  std::unordered_map<symbol, erased_handler, symbol_hash> by_type;
};

} // namespace detail

} // namespace vigil
