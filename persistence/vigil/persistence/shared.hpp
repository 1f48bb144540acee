#pragma once

// Shared state in a node's LMDB environment: versioned key-value stores
// (compare-and-swap) and leased task queues. Records live in `db::shared`;
// the operations (records::SharedOp) run inside a write transaction of
// `store::apply`, so that a journal agent's operations commit with its state
// and the consumption of its envelope, or not at all.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "vigil/persistence/status.hpp"
#include "vigil/shared.pb.h"

namespace vigil {

class store;

/// Limits on names and keys: keys of `db::shared` embed both and LMDB keys
/// stop at 511 bytes. Names and keys hold no NUL byte; names are not empty.
constexpr size_t max_shared_name = 128;
constexpr size_t max_kv_key = 256;
/// A queue task's attempts when enqueue gives none.
constexpr uint32_t default_max_attempts = 5;
/// Versions of one key kept in its history when the store gives no number.
constexpr uint32_t default_kv_history = 32;

/// Why `op` cannot run (a phrase naming the field), or "" if it can.
std::string check_shared_op(const records::SharedOp& op);

/// The name of an operation's kind, e.g. "kv_put".
const char* to_string(records::SharedOp::Kind k) noexcept;
/// The name of a result's status, e.g. "lease_expired".
const char* to_string(records::SharedResult::Status s) noexcept;

/// The keys of `db::shared`. One byte says what the record is:
/// - `k` name \0 key                     -> KvRecord (current version)
/// - `h` name \0 key \0 version (be64)   -> KvRecord (history)
/// - `t` name \0 id (be64)               -> TaskRecord
/// - `r` name \0 id (be64)               -> "" (ready tasks, by id)
/// - `l` name \0 expires ms (be64) id    -> "" (live leases, by expiry)
/// - `w` name \0 key \0 writer          -> the writer's last write of the
///                                          key: version, origin, id (be64)
/// - `d` name \0 dedupe key             -> task id (be64)
/// - `n` name                            -> next task id (be64)
namespace shared_key {
std::string kv(std::string_view name, std::string_view key);
std::string history(std::string_view name, std::string_view key,
                    uint64_t version);
std::string task(std::string_view name, uint64_t id);
std::string ready(std::string_view name, uint64_t id);
std::string lease(std::string_view name, uint64_t expires_ms, uint64_t id);
std::string dedupe(std::string_view name, std::string_view key);
std::string mine(std::string_view name, std::string_view key,
                 std::string_view writer);
std::string next_id(std::string_view name);
/// Splits a `k` key (or, with `version`, an `h` key); false if malformed.
bool split_kv(std::string_view k, std::string_view& name,
              std::string_view& key) noexcept;
bool split_history(std::string_view k, std::string_view& name,
                   std::string_view& key, uint64_t& version) noexcept;
bool split_task(std::string_view k, std::string_view& name,
                uint64_t& id) noexcept;
} // namespace shared_key

/// What one store holds, for `vigil inspect`.
struct kv_listing {
  std::string name;
  std::string key;
  records::KvRecord current;
  bool readable = true;   ///< false: `problem` says why
  std::string problem;
};

/// What one queue holds, for `vigil inspect`.
struct queue_listing {
  std::string name;
  size_t ready = 0, leased = 0, done = 0, dead = 0;
  std::vector<records::TaskRecord> live_leases; ///< by task id
  size_t unreadable = 0;
};

/// Reads the current record of `key` in store `name` (`found` false if the
/// key never existed; a tombstone is found, with `deleted` set).
status kv_read(store& st, std::string_view name, std::string_view key,
               records::KvRecord& out, bool& found);

/// The last write of `key` in store `name` by `writer` (a path) into
/// `out`'s mine_version, mine_origin and mine_id (0 if none).
status kv_read_mine(store& st, std::string_view name, std::string_view key,
                    std::string_view writer, records::SharedResult& out);

/// The versions of `key` in store `name` still in its history, oldest
/// first.
status kv_history(store& st, std::string_view name, std::string_view key,
                  std::vector<records::KvRecord>& out);

/// Every key of every store (current versions), in (name, key) order.
status kv_list(store& st, std::vector<kv_listing>& out);

/// Every queue: counts by state and its live leases.
status queue_list(store& st, std::vector<queue_listing>& out);

/// Every task of queue `name`, in id order (those that do not read are
/// skipped and counted in `unreadable`).
status queue_tasks(store& st, std::string_view name,
                   std::vector<records::TaskRecord>& out,
                   size_t* unreadable = nullptr);

} // namespace vigil
