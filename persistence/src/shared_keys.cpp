// Shared state's key layout, names and the checks of an operation (see
// vigil/persistence/shared.hpp).

#include "vigil/persistence/shared.hpp"

#include "store_impl.hpp"

namespace vigil {

namespace {

using records::KvRecord;
using records::SharedOp;
using records::SharedResult;
using records::TaskRecord;

std::string with_name(char tag, std::string_view name) {
  std::string k;
  k.reserve(2 + name.size() + 16);
  k.push_back(tag);
  k.append(name);
  k.push_back('\0');
  return k;
}

void append_be64(std::string& k, uint64_t n) {
  char buf[8];
  detail::put_be64(buf, n);
  k.append(buf, 8);
}

bool bad_text(std::string_view s) {
  return s.find('\0') != std::string_view::npos;
}

} // namespace

namespace shared_key {

std::string kv(std::string_view name, std::string_view key) {
  auto k = with_name('k', name);
  k.append(key);
  return k;
}

std::string history(std::string_view name, std::string_view key,
                    uint64_t version) {
  auto k = with_name('h', name);
  k.append(key);
  k.push_back('\0');
  append_be64(k, version);
  return k;
}

std::string task(std::string_view name, uint64_t id) {
  auto k = with_name('t', name);
  append_be64(k, id);
  return k;
}

std::string ready(std::string_view name, uint64_t id) {
  auto k = with_name('r', name);
  append_be64(k, id);
  return k;
}

std::string lease(std::string_view name, uint64_t expires_ms, uint64_t id) {
  auto k = with_name('l', name);
  append_be64(k, expires_ms);
  append_be64(k, id);
  return k;
}

std::string dedupe(std::string_view name, std::string_view key) {
  auto k = with_name('d', name);
  k.append(key);
  return k;
}

std::string mine(std::string_view name, std::string_view key,
                 std::string_view writer) {
  auto k = with_name('w', name);
  k.append(key);
  k.push_back('\0');
  k.append(writer);
  return k;
}

std::string next_id(std::string_view name) {
  std::string k{"n"};
  k.append(name);
  return k;
}

bool split_kv(std::string_view k, std::string_view& name,
              std::string_view& key) noexcept {
  if (k.size() < 3 || k[0] != 'k')
    return false;
  auto z = k.find('\0', 1);
  if (z == std::string_view::npos || z == 1)
    return false;
  name = k.substr(1, z - 1);
  key = k.substr(z + 1);
  return !key.empty();
}

bool split_history(std::string_view k, std::string_view& name,
                   std::string_view& key, uint64_t& version) noexcept {
  if (k.size() < 12 || k[0] != 'h' || k[k.size() - 9] != '\0')
    return false;
  auto z = k.find('\0', 1);
  if (z == std::string_view::npos || z == 1 || z >= k.size() - 9)
    return false;
  name = k.substr(1, z - 1);
  key = k.substr(z + 1, k.size() - 9 - z - 1);
  version = detail::get_be64(k.data() + k.size() - 8);
  return !key.empty();
}

bool split_task(std::string_view k, std::string_view& name,
                uint64_t& id) noexcept {
  if (k.size() < 11 || k[0] != 't' || k[k.size() - 9] != '\0')
    return false;
  name = k.substr(1, k.size() - 10);
  id = detail::get_be64(k.data() + k.size() - 8);
  return !name.empty() && !bad_text(name);
}

} // namespace shared_key

const char* to_string(SharedOp::Kind k) noexcept {
  switch (k) {
    case SharedOp::KV_GET: return "kv_get";
    case SharedOp::KV_PUT: return "kv_put";
    case SharedOp::KV_DELETE: return "kv_delete";
    case SharedOp::ENQUEUE: return "enqueue";
    case SharedOp::CLAIM: return "claim";
    case SharedOp::EXTEND: return "extend";
    case SharedOp::COMPLETE: return "complete";
    case SharedOp::FAIL: return "fail";
    default: return "unknown";
  }
}

const char* to_string(SharedResult::Status s) noexcept {
  switch (s) {
    case SharedResult::OK: return "ok";
    case SharedResult::CONFLICT: return "conflict";
    case SharedResult::EMPTY: return "empty";
    case SharedResult::LEASE_EXPIRED: return "lease_expired";
    case SharedResult::INVALID: return "invalid";
    case SharedResult::CORRUPT: return "corrupt";
    case SharedResult::NOT_FOUND: return "not_found";
    default: return "unknown";
  }
}

std::string check_shared_op(const SharedOp& op) {
  auto& n = op.name();
  if (n.empty())
    return "name: empty (a store or queue needs a name)";
  if (n.size() > max_shared_name)
    return "name: " + std::to_string(n.size()) + " bytes, at most "
           + std::to_string(max_shared_name);
  if (bad_text(n))
    return "name: holds a NUL byte";
  switch (op.kind()) {
    case SharedOp::KV_GET:
    case SharedOp::KV_PUT:
    case SharedOp::KV_DELETE:
      if (op.key().empty())
        return "key: empty";
      if (op.key().size() > max_kv_key)
        return "key: " + std::to_string(op.key().size()) + " bytes, at most "
               + std::to_string(max_kv_key);
      if (bad_text(op.key()))
        return "key: holds a NUL byte";
      if (op.kind() == SharedOp::KV_DELETE && op.expected_version() == 0)
        return "expected_version: 0 (a delete names the version it removes)";
      return {};
    case SharedOp::ENQUEUE:
      if (op.dedupe_key().size() > max_kv_key)
        return "dedupe_key: longer than " + std::to_string(max_kv_key)
               + " bytes";
      if (bad_text(op.dedupe_key()))
        return "dedupe_key: holds a NUL byte";
      return {};
    case SharedOp::CLAIM:
    case SharedOp::EXTEND:
      if (op.lease_ms() == 0)
        return "lease_ms: 0 (a lease needs a duration)";
      if (op.lease_ms() > uint64_t{365} * 24 * 3600 * 1000)
        return "lease_ms: longer than a year";
      if (op.kind() == SharedOp::CLAIM)
        return {};
      [[fallthrough]];
    case SharedOp::COMPLETE:
    case SharedOp::FAIL:
      if (op.task_id() == 0 || op.lease() == 0)
        return "lease: no task id or lease number (use the lease from claim)";
      return {};
    default:
      return "kind: unknown operation " + std::to_string(op.kind());
  }
}

} // namespace vigil
