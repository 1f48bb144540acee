// What a tool call's record needs: the fingerprint of its request.
#pragma once

#include <string>
#include <string_view>

#include <google/protobuf/message.h>

namespace vigil::detail {

/// SHA-256 (32 bytes) of the tool's name, the request's type and its
/// deterministic serialization (map entries in key order): a call with the
/// key of a recorded one but another fingerprint is idempotency_mismatch.
std::string tool_fingerprint(std::string_view tool,
                             const google::protobuf::Message& req);

} // namespace vigil::detail
