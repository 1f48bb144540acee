#pragma once

#include <cstdint>
#include <string>
#include <utility>

namespace vigil {

/// What went wrong in the persistence layer. Modelled on RocksDB's Status:
/// the layer under the actors has no CAF dependency, and the actors layer
/// turns a failed status into `errc::storage_failed` with the same text.
enum class store_errc : uint8_t {
  ok,
  io,           ///< The data dir cannot be created, opened or written.
  locked,       ///< Another live node holds the data dir.
  newer_format, ///< Written by a newer vigil.
  older_format, ///< Written by an older vigil; opening it to write upgrades it.
  map_full,     ///< The map reached `max_map_size`.
  corrupt,      ///< A record or the environment itself is damaged.
  not_found,
  invalid,      ///< A bad argument, e.g. an unknown sync mode.
  lmdb,         ///< Any other LMDB failure.
};

const char* to_string(store_errc x) noexcept;

/// The result of a persistence call: ok, or a code plus a message that
/// names the data dir, the database and the operation, and says what to do.
class [[nodiscard]] status {
public:
  status() = default;
  status(store_errc code, std::string msg, int lmdb_rc = 0)
    : code_(code), lmdb_rc_(lmdb_rc), msg_(std::move(msg)) {
    // nop
  }

  bool ok() const noexcept {
    return code_ == store_errc::ok;
  }
  /// True when this is an error, as with `caf::error`:
  /// `if (auto st = s.apply(...)) report(st.message());`
  explicit operator bool() const noexcept {
    return !ok();
  }
  store_errc code() const noexcept {
    return code_;
  }
  /// LMDB's return code, or 0 if the error did not come from LMDB.
  int lmdb_rc() const noexcept {
    return lmdb_rc_;
  }
  const std::string& message() const noexcept {
    return msg_;
  }

private:
  store_errc code_ = store_errc::ok;
  int lmdb_rc_ = 0;
  std::string msg_;
};

} // namespace vigil
