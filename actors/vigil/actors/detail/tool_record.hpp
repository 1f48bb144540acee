// What a tool call's record needs: the fingerprint of its request.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <google/protobuf/message.h>

namespace vigil::detail {

/// SHA-256 (32 bytes) of the tool's name, the request's type and its
/// deterministic serialization (map entries in key order): a call with the
/// key of a recorded one but another fingerprint is idempotency_mismatch.
std::string tool_fingerprint(std::string_view tool,
                             const google::protobuf::Message& req);

/// A tool call's idempotency key as the tool sees it (tool_call::
/// idempotency_key, the `Idempotency-Key` header): printable ASCII of at
/// most 255 bytes, `path:ORIGINID:i.j` (origin and id in hex, the index
/// path in decimal); for a path that is long or not printable, `vigil-`
/// and the hex SHA-256 of the binary key.
std::string tool_key_text(std::string_view path, uint64_t origin, uint64_t id,
                          std::string_view index_path);

/// The binary idempotency key of a call (persistence's tool_result_key),
/// with an index path deeper than 16 levels (a loop written in callbacks)
/// replaced by 0xffffffff and its SHA-256: at most 17 + 64 bytes after the
/// path, within LMDB's 511-byte keys for any path a node accepts (400).
std::string call_result_key(std::string_view path, uint64_t origin,
                            uint64_t id, std::string_view index_path);

/// Appends `i` to an index path (big-endian, 4 bytes); past 3 levels the
/// path is 0xffffffff and a 64-bit hash of it instead (12 bytes at most,
/// so that a loop written in callbacks costs O(1) per call; a handler's
/// call number 0xffffffff is never reached).
void push_index(std::string& index_path, uint32_t i);

/// An index path held as numbers: what push_index makes, without a
/// string. Every call made on behalf of an envelope takes one (whether or
/// not it needs a key), and copies it with its origin, so this one never
/// allocates, copies as three words, and makes its bytes only for a key.
class call_index {
public:
  static constexpr size_t capacity = 12;
  /// The path's bytes, as push_index makes them.
  struct bytes {
    char data[capacity];
    uint8_t size;
    std::string_view view() const noexcept {
      return {data, size};
    }
  };
  bytes encode() const noexcept;
  /// As push_index.
  void push(uint32_t i) noexcept;

private:
  /// Past 3 levels: the path's hash.
  uint64_t hash_ = 0;
  uint32_t levels_[3] = {};
  /// Levels pushed, up to 3; 4: past 3 (hashed).
  uint8_t depth_ = 0;
};

} // namespace vigil::detail
