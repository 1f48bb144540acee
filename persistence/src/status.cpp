#include "vigil/persistence/status.hpp"

#include "vigil/persistence/store.hpp"

namespace vigil {

const char* to_string(store_errc x) noexcept {
  switch (x) {
    case store_errc::ok: return "ok";
    case store_errc::io: return "io";
    case store_errc::locked: return "locked";
    case store_errc::newer_format: return "newer_format";
    case store_errc::older_format: return "older_format";
    case store_errc::map_full: return "map_full";
    case store_errc::corrupt: return "corrupt";
    case store_errc::not_found: return "not_found";
    case store_errc::invalid: return "invalid";
    case store_errc::lmdb: return "lmdb";
  }
  return "unknown";
}

const char* to_string(sync_mode x) noexcept {
  switch (x) {
    case sync_mode::full: return "full";
    case sync_mode::nometasync: return "nometasync";
    case sync_mode::nosync: return "nosync";
  }
  return "unknown";
}

bool from_string(std::string_view s, sync_mode& out) noexcept {
  for (auto x : {sync_mode::full, sync_mode::nometasync, sync_mode::nosync}) {
    if (s == to_string(x)) {
      out = x;
      return true;
    }
  }
  return false;
}

const char* to_string(db x) noexcept {
  switch (x) {
    case db::meta: return "meta";
    case db::snapshots: return "snapshots";
    case db::journal: return "journal";
    case db::outbox: return "outbox";
    case db::idempotency: return "idempotency";
    case db::dead_letters: return "dead_letters";
    case db::sagas: return "sagas";
    case db::tool_results: return "tool_results";
    case db::approvals: return "approvals";
    case db::shared: return "shared";
  }
  return "unknown";
}

} // namespace vigil
