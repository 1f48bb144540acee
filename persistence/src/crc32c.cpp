#include "vigil/persistence/crc32c.hpp"

#include <array>
#include <cstring>

#if defined(__x86_64__)
#  include <nmmintrin.h>
#endif

namespace vigil {

namespace detail {

namespace {

// Reflected Castagnoli polynomial 0x1EDC6F41.
constexpr uint32_t poly = 0x82F63B78u;

constexpr std::array<uint32_t, 256> make_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k)
      c = (c & 1) ? (c >> 1) ^ poly : c >> 1;
    t[i] = c;
  }
  return t;
}

constexpr auto table = make_table();

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t
crc32c_sse42(const void* p, size_t n, uint32_t crc) noexcept {
  auto b = static_cast<const unsigned char*>(p);
  uint64_t c = ~crc;
  for (; n >= 8; n -= 8, b += 8) {
    uint64_t w;
    std::memcpy(&w, b, 8);
    c = _mm_crc32_u64(c, w);
  }
  auto c32 = static_cast<uint32_t>(c);
  for (; n > 0; --n, ++b)
    c32 = _mm_crc32_u8(c32, *b);
  return ~c32;
}

const bool has_sse42 = __builtin_cpu_supports("sse4.2");
#endif

} // namespace

uint32_t crc32c_portable(const void* p, size_t n, uint32_t crc) noexcept {
  auto b = static_cast<const unsigned char*>(p);
  crc = ~crc;
  for (; n > 0; --n, ++b)
    crc = table[(crc ^ *b) & 0xff] ^ (crc >> 8);
  return ~crc;
}

bool crc32c_hardware() noexcept {
#if defined(__x86_64__)
  return has_sse42;
#else
  return false;
#endif
}

} // namespace detail

uint32_t crc32c(const void* p, size_t n, uint32_t crc) noexcept {
#if defined(__x86_64__)
  if (detail::has_sse42)
    return detail::crc32c_sse42(p, n, crc);
#endif
  return detail::crc32c_portable(p, n, crc);
}

} // namespace vigil
