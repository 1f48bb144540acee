#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace vigil {

/// CRC-32C (Castagnoli, iSCSI; RFC 3720 appendix B.4) of `n` bytes at `p`,
/// continuing from `crc` (0 for a new sum): the checksum of every record
/// vigil writes to LMDB.
///
/// Uses the SSE 4.2 `crc32` instruction where the CPU has it and a table
/// otherwise; both give the same result (tests/persistence/crc32c_test.cpp).
/// Debian 12 packages no CRC-32C library (Google's crc32c arrives with
/// Debian 13), and Boost.CRC would add Boost for a byte-at-a-time loop.
uint32_t crc32c(const void* p, size_t n, uint32_t crc = 0) noexcept;

inline uint32_t crc32c(std::string_view s, uint32_t crc = 0) noexcept {
  return crc32c(s.data(), s.size(), crc);
}

namespace detail {

/// The table implementation, exposed to test the two against each other.
uint32_t crc32c_portable(const void* p, size_t n, uint32_t crc) noexcept;

/// True if `crc32c` uses the CPU's instruction.
bool crc32c_hardware() noexcept;

} // namespace detail

} // namespace vigil
