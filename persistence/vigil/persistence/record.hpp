#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <google/protobuf/message_lite.h>

namespace vigil {

/// The frame around every value vigil writes to LMDB, from data dir
/// format 2 on:
///
///     byte 0      the record format (`record_format`)
///     bytes 1-4   CRC-32C of bytes 5.., little-endian
///     bytes 5..   the Protobuf bytes of the record (proto/vigil/store.proto)
///
/// A read checks the frame before it parses, so a flipped bit is reported
/// as damage instead of being read as a different record. Format 1 stored
/// bare Protobuf bytes; a valid Protobuf message never starts with a byte
/// below 8 (field number 0 does not exist), so the two cannot be confused.
constexpr uint8_t record_format = 2;
constexpr size_t record_header = 5;

/// Why a stored value cannot be read.
enum class record_fault : uint8_t {
  none,
  truncated,      ///< Shorter than the frame.
  unframed,       ///< Bare Protobuf bytes (format 1, not upgraded).
  unknown_format, ///< A format byte this build does not know.
  checksum,       ///< The CRC-32C does not match the bytes.
  unparsable,     ///< The checksum matches, the Protobuf bytes do not parse.
};

/// Serializes `m` framed into `out`, replacing its contents.
void encode_record(const google::protobuf::MessageLite& m, std::string& out);

inline std::string encode_record(const google::protobuf::MessageLite& m) {
  std::string out;
  encode_record(m, out);
  return out;
}

/// Checks the frame of `bytes` and parses the record into `m`.
record_fault decode_record(std::string_view bytes,
                           google::protobuf::MessageLite& m);

/// Why `bytes` gave `f`, as a phrase for an error message, e.g.
/// "checksum mismatch (stored 0x1a2b3c4d, computed 0x...)".
std::string describe(record_fault f, std::string_view bytes,
                     const google::protobuf::MessageLite& m);

/// Checks the frame of `bytes` (format byte, length and CRC-32C) without
/// parsing: `none`, `truncated`, `unframed`, `unknown_format` or `checksum`.
record_fault check_frame(std::string_view bytes) noexcept;

/// `describe` for a fault of `check_frame`.
std::string describe(record_fault f, std::string_view bytes);

/// Frames bytes that are already a serialized record (the format upgrade).
std::string frame_record(std::string_view protobuf_bytes);

} // namespace vigil
