#pragma once

// Approval records and data dirs holding them, for the approvals tests.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "vigil/persistence/approvals.hpp"
#include "vigil/persistence/record.hpp"
#include "vigil/persistence/store.hpp"

namespace vigil::test {

inline uint64_t wall_ms() {
  return static_cast<uint64_t>(
    std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::system_clock::now().time_since_epoch())
      .count());
}

/// A pending approval of a call to `tool` by `path`, asked for now.
inline records::ApprovalRecord pending_approval(const std::string& path,
                                                const std::string& tool,
                                                uint64_t expires_ms = 0) {
  records::ApprovalRecord r;
  r.set_format(store::format);
  r.set_path(path);
  r.set_tool(tool);
  r.set_kind(static_cast<uint32_t>(approval_kind::tool_call));
  r.set_request_type("vigil.test.Pay");
  r.set_request_json(R"({"amount": 120, "to": "acme"})");
  r.set_requested_unix_ms(wall_ms());
  r.set_expires_unix_ms(expires_ms);
  return r;
}

/// Stores raw values (key, bytes) in db::approvals of the data dir `dir`
/// (no node may hold it).
inline status put_raw_approvals(
  const std::string& dir,
  const std::vector<std::pair<std::string, std::string>>& kvs) {
  store_options so;
  so.dir = dir;
  std::unique_ptr<store> s;
  if (auto st = store::open(so, s))
    return st;
  write_item item;
  for (auto& [key, bytes] : kvs)
    item.muts.push_back({mutation::op::put, db::approvals, key, bytes});
  write_item* p = &item;
  write_result r;
  return s->apply(&p, 1, &r);
}

/// Stores `recs` (key, record) in the data dir `dir` (no node may hold it).
inline status put_approvals(
  const std::string& dir,
  const std::vector<std::pair<std::string, records::ApprovalRecord>>& recs) {
  std::vector<std::pair<std::string, std::string>> kvs;
  for (auto& [key, rec] : recs) {
    auto copy = rec;
    copy.set_key_text(printable_key(key));
    kvs.emplace_back(key, encode_record(copy));
  }
  return put_raw_approvals(dir, kvs);
}

} // namespace vigil::test
