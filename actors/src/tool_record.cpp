#include "vigil/actors/detail/tool_record.hpp"

#include <openssl/evp.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>

#include <google/protobuf/io/coded_stream.h>

#include "vigil/persistence/store.hpp"
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

namespace vigil::detail {

namespace {

struct md_ctx_free {
  void operator()(EVP_MD_CTX* c) const noexcept {
    EVP_MD_CTX_free(c);
  }
};

/// Hashes `s` after its length (8 bytes, big-endian), so that the parts
/// cannot run into each other ("ab" + "c" is not "a" + "bc").
void update(EVP_MD_CTX* c, std::string_view s) {
  unsigned char len[8];
  uint64_t n = s.size();
  for (int i = 7; i >= 0; --i, n >>= 8)
    len[i] = static_cast<unsigned char>(n & 0xff);
  if (EVP_DigestUpdate(c, len, sizeof(len)) != 1
      || EVP_DigestUpdate(c, s.data(), s.size()) != 1)
    throw std::runtime_error("tool_fingerprint: EVP_DigestUpdate failed");
}

} // namespace

std::string tool_fingerprint(std::string_view tool,
                             const google::protobuf::Message& req) {
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream out{&bytes};
    google::protobuf::io::CodedOutputStream coded{&out};
    coded.SetSerializationDeterministic(true);
    if (!req.SerializeToCodedStream(&coded))
      throw std::runtime_error("tool_fingerprint: "
                               + req.GetTypeName() + " did not serialize");
  }
  std::unique_ptr<EVP_MD_CTX, md_ctx_free> c{EVP_MD_CTX_new()};
  if (!c || EVP_DigestInit_ex(c.get(), EVP_sha256(), nullptr) != 1)
    throw std::runtime_error("tool_fingerprint: EVP_DigestInit_ex failed");
  update(c.get(), tool);
  update(c.get(), req.GetTypeName());
  update(c.get(), bytes);
  std::string out(EVP_MAX_MD_SIZE, '\0');
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(c.get(), reinterpret_cast<unsigned char*>(out.data()),
                         &len)
      != 1)
    throw std::runtime_error("tool_fingerprint: EVP_DigestFinal_ex failed");
  out.resize(len);
  return out;
}

std::string call_result_key(std::string_view path, uint64_t origin,
                            uint64_t id, std::string_view index_path) {
  constexpr size_t max_inline = 16 * 4;
  if (index_path.size() <= max_inline)
    return tool_result_key(path, origin, id, index_path);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(index_path.data(), index_path.size(), md, &len, EVP_sha256(),
                 nullptr)
      != 1)
    throw std::runtime_error("call_result_key: EVP_Digest failed");
  std::string hashed(4, '\xff');
  hashed.append(reinterpret_cast<const char*>(md), len);
  return tool_result_key(path, origin, id, hashed);
}

namespace {

// Big-endian loads and stores of index paths.
template <class T>
T big_endian(T v) noexcept {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  if constexpr (sizeof(T) == 8)
    return __builtin_bswap64(v);
  else
    return __builtin_bswap32(v);
#else
  return v;
#endif
}

template <class T>
void store_be(char* out, T v) noexcept {
  v = big_endian(v);
  std::memcpy(out, &v, sizeof(T));
}

template <class T>
T load_be(const char* in) noexcept {
  T v;
  std::memcpy(&v, in, sizeof(T));
  return big_endian(v);
}

/// A path deeper than 3 levels (a loop written in callbacks) becomes
/// 0xffffffff and a 64-bit hash of it, so that it stays 12 bytes (no
/// allocation, and O(1) per call however deep the loop goes). The hash of
/// a path of 12 bytes or more (hashed already, or the FNV-1a of 3 levels).
uint64_t path_hash(std::string_view path) noexcept {
  if (load_be<uint32_t>(path.data()) == 0xffffffff)
    return load_be<uint64_t>(path.data() + 4);
  uint64_t h = 0xcbf29ce484222325ull;
  for (char c : path)
    h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
  return h;
}

/// The hash of the path whose hash is `h` with the call's number `i`
/// pushed: splitmix64 of the two.
uint64_t pushed_hash(uint64_t h, uint32_t i) noexcept {
  uint64_t z = h + 0x9e3779b97f4a7c15ull * (uint64_t{i} + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

} // namespace

void push_index(std::string& index_path, uint32_t i) {
  char be[12];
  if (index_path.size() < 12) {
    store_be(be, i);
    index_path.append(be, 4);
    return;
  }
  store_be(be, uint32_t{0xffffffff});
  store_be(be + 4, pushed_hash(path_hash(index_path), i));
  index_path.assign(be, 12);
}

call_index::bytes call_index::encode() const noexcept {
  bytes out{};
  if (depth_ > 3) {
    store_be(out.data, uint32_t{0xffffffff});
    store_be(out.data + 4, hash_);
    out.size = 12;
    return out;
  }
  for (uint8_t k = 0; k < depth_; ++k)
    store_be(out.data + 4 * k, levels_[k]);
  out.size = static_cast<uint8_t>(4 * depth_);
  return out;
}

void call_index::push(uint32_t i) noexcept {
  if (depth_ < 3) {
    levels_[depth_++] = i;
    return;
  }
  if (depth_ == 3) {
    hash_ = path_hash(encode().view());
    depth_ = 4;
  }
  hash_ = pushed_hash(hash_, i);
}

std::string tool_key_text(std::string_view path, uint64_t origin, uint64_t id,
                          std::string_view index_path) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(path.size() + 48);
  bool printable = true;
  for (char c : path)
    printable = printable && c > ' ' && c < 127 && c != ':';
  out.append(path);
  out += ':';
  for (auto v : {origin, id})
    for (int k = 60; k >= 0; k -= 4)
      out += hex[(v >> k) & 0xf];
  out += ':';
  for (size_t k = 0; k + 4 <= index_path.size(); k += 4) {
    uint32_t i = 0;
    for (size_t b = 0; b < 4; ++b)
      i = (i << 8) | static_cast<unsigned char>(index_path[k + b]);
    if (k != 0)
      out += '.';
    out += std::to_string(i);
  }
  if (printable && out.size() <= 255)
    return out;
  // Hashed: unique as the binary key is.
  std::string key{path};
  key += '\0';
  key.append(out, path.size() + 1, std::string::npos);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(key.data(), key.size(), md, &len, EVP_sha256(), nullptr) != 1)
    throw std::runtime_error("tool_key_text: EVP_Digest failed");
  std::string h = "vigil-";
  for (unsigned int k = 0; k < len; ++k) {
    h += hex[md[k] >> 4];
    h += hex[md[k] & 0xf];
  }
  return h;
}

} // namespace vigil::detail
