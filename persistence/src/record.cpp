#include "vigil/persistence/record.hpp"

#include <cstdio>

#include "vigil/persistence/crc32c.hpp"

namespace vigil {

namespace {

void put_le32(char* out, uint32_t x) noexcept {
  for (int i = 0; i < 4; ++i, x >>= 8)
    out[i] = static_cast<char>(x & 0xff);
}

uint32_t get_le32(const char* in) noexcept {
  auto p = reinterpret_cast<const unsigned char*>(in);
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16
         | uint32_t{p[3]} << 24;
}

std::string hex32(uint32_t x) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", x);
  return buf;
}

} // namespace

void encode_record(const google::protobuf::MessageLite& m, std::string& out) {
  auto n = m.ByteSizeLong();
  out.resize(record_header + n);
  auto body = reinterpret_cast<uint8_t*>(out.data() + record_header);
  m.SerializeWithCachedSizesToArray(body);
  out[0] = static_cast<char>(record_format);
  put_le32(out.data() + 1, crc32c(body, n));
}

std::string frame_record(std::string_view bytes) {
  std::string out;
  out.resize(record_header + bytes.size());
  out[0] = static_cast<char>(record_format);
  put_le32(out.data() + 1, crc32c(bytes));
  bytes.copy(out.data() + record_header, bytes.size());
  return out;
}

record_fault check_frame(std::string_view bytes) noexcept {
  if (bytes.empty())
    return record_fault::truncated;
  auto first = static_cast<uint8_t>(bytes[0]);
  if (first != record_format)
    return first >= 8 ? record_fault::unframed : record_fault::unknown_format;
  if (bytes.size() < record_header)
    return record_fault::truncated;
  auto body = bytes.substr(record_header);
  if (crc32c(body) != get_le32(bytes.data() + 1))
    return record_fault::checksum;
  return record_fault::none;
}

record_fault decode_record(std::string_view bytes,
                           google::protobuf::MessageLite& m) {
  if (auto f = check_frame(bytes); f != record_fault::none)
    return f;
  auto body = bytes.substr(record_header);
  if (!m.ParseFromArray(body.data(), static_cast<int>(body.size())))
    return record_fault::unparsable;
  return record_fault::none;
}

namespace {

std::string describe_as(record_fault f, std::string_view bytes,
                        const std::string& type) {
  switch (f) {
    case record_fault::none:
      return "no fault";
    case record_fault::truncated:
      return "truncated (" + std::to_string(bytes.size())
             + " bytes, a record has at least "
             + std::to_string(record_header) + ")";
    case record_fault::unframed: {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "0x%02x",
                    static_cast<unsigned>(static_cast<uint8_t>(bytes[0])));
      return std::string{"no record frame (first byte "} + buf
             + ", expected 0x0" + std::to_string(record_format)
             + "): bare bytes, as format 1 wrote them, or damage";
    }
    case record_fault::unknown_format:
      return "unknown record format "
             + std::to_string(static_cast<uint8_t>(bytes[0]))
             + " (this vigil writes " + std::to_string(record_format) + ")";
    case record_fault::checksum:
      return "checksum mismatch (stored "
             + hex32(get_le32(bytes.data() + 1)) + ", computed "
             + hex32(crc32c(bytes.substr(record_header))) + ")";
    case record_fault::unparsable:
      return "checksum matches but the bytes do not parse as " + type;
  }
  return "?";
}

} // namespace

std::string describe(record_fault f, std::string_view bytes) {
  return describe_as(f, bytes, "the record");
}

std::string describe(record_fault f, std::string_view bytes,
                     const google::protobuf::MessageLite& m) {
  return describe_as(f, bytes, m.GetTypeName());
}

} // namespace vigil
