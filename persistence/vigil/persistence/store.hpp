#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "vigil/persistence/record.hpp"
#include "vigil/persistence/status.hpp"
#include "vigil/store.pb.h"

namespace vigil {

/// How a commit reaches the disk. Every mode survives kill -9 of the node:
/// a committed transaction is in the OS page cache, which outlives the
/// process. They differ on an OS crash or power loss:
/// - `full`: fsync of data and meta page per commit; nothing committed is
///   lost.
/// - `nometasync`: the meta page is not synced; the last committed
///   transaction may be undone, the database stays intact (ACI, not D).
/// - `nosync`: nothing is synced; recent transactions may be lost, and on
///   filesystems that do not keep write order the file may be corrupted.
enum class sync_mode : uint8_t { full, nometasync, nosync };

/// Parses "full", "nometasync" or "nosync".
bool from_string(std::string_view s, sync_mode& out) noexcept;
const char* to_string(sync_mode x) noexcept;

/// Where and how a node keeps its LMDB environment.
struct store_options {
  std::string dir;                            ///< Data directory (created).
  sync_mode sync = sync_mode::full;
  size_t map_size = size_t{64} << 20;         ///< Initial LMDB map size.
  size_t max_map_size = size_t{16} << 30;     ///< MDB_MAP_FULL grows the map
                                              ///< (doubling) up to this.
  /// Versions of each shared key kept in its history (at least 1).
  uint32_t kv_history = 32;
  /// The wall clock of shared state (lease expiry, write times), in Unix
  /// milliseconds; empty: the system clock. Tests inject one.
  std::function<uint64_t()> wall_ms;
  /// Walk every database before opening (vigil/persistence/integrity.hpp):
  /// a damaged B-tree refuses the open instead of faulting later, and the
  /// records that fail their checksum are named in `open_notes`. The size
  /// check against data.mdb's meta page runs either way.
  bool verify = true;
  /// The walk's time limit; zero: 60 s plus 10 s per GiB.
  std::chrono::milliseconds verify_timeout{0};
};

/// The named databases of a node's environment.
enum class db : uint8_t {
  meta,         ///< "format" -> Meta
  snapshots,    ///< path -> Snapshot
  journal,      ///< path\0seq -> JournalEntry
  outbox,       ///< path\0seq -> OutboxEntry
  idempotency,  ///< path\0origin id -> IdempotencyRecord (guard_key)
  dead_letters, ///< seq -> DeadLetter
  /// supervisor path\0origin id -> SagaRun (durable sagas; guard_key's
  /// layout). A data dir written before it existed has none until it is
  /// opened for writing.
  sagas,
  /// tool_result_key -> ToolResultRecord: the recorded results of tool
  /// calls under their idempotency keys. Added after `sagas`, as it was.
  tool_results,
  /// tool_result_key -> ApprovalRecord: calls (and envelopes) held for a
  /// person's decision (vigil/persistence/approvals.hpp). Added after
  /// `tool_results`.
  approvals,
  /// Shared state: versioned key-value stores and leased task queues
  /// (vigil/persistence/shared.hpp). Added after `approvals`.
  shared,
};
constexpr size_t db_count = 10;
/// Databases a data dir written by an older vigil may lack; read-only
/// opens treat them as empty.
constexpr bool added_later(db x) noexcept {
  return x == db::sagas || x == db::tool_results || x == db::approvals
         || x == db::shared;
}
const char* to_string(db x) noexcept;

/// One change to one database.
struct mutation {
  enum class op : uint8_t {
    put,
    del,
    /// Appends `value` (a DeadLetter) to dead_letters under the next
    /// dead-letter seq; `key` is ignored.
    append_dead_letter,
    /// Runs the records::SharedOp serialized in `value` against
    /// `db::shared` (vigil/persistence/shared.hpp) and sets `key` to the
    /// serialized records::SharedResult. An operation that does not apply
    /// (a conflict, an expired lease) is a result, not a failure of the
    /// batch; `key` is rewritten each time the batch runs.
    shared,
  };
  op what = op::put;
  db where = db::meta;
  std::string key;
  std::string value;
};

/// One agent's change, applied atomically with the other items of a batch.
///
/// If `guard` is not empty it is a key in `db::idempotency`: when that key
/// exists the item is a duplicate and none of its mutations is applied;
/// otherwise `guard` is stored with `guard_value` and the mutations follow.
struct write_item {
  std::string guard;
  std::string guard_value;
  std::vector<mutation> muts;
};

enum class write_result : uint8_t { applied, duplicate };

/// What the node finds for one agent path at start.
struct recovered_agent {
  std::string path;
  bool has_snapshot = false;
  records::Snapshot snapshot;                 ///< Valid if has_snapshot.
  std::vector<records::JournalEntry> journal; ///< Unconsumed, seq order.
  std::vector<records::OutboxEntry> outbox;   ///< Undelivered, seq order.
};

/// A record that did not parse (or was of a newer format) and was moved to
/// the dead letters by `recover`.
struct quarantined {
  db where;
  std::string key;
  std::string reason;
  std::string path; ///< The agent whose record it was; empty if unknown.
};

/// Renders a binary key for a message: printable bytes as they are,
/// others as \xNN.
std::string printable_key(std::string_view key);

/// Formats `path\0n` with `n` big-endian, so keys of one path sort by `n`.
std::string path_key(std::string_view path, uint64_t n);
/// The serialized IdempotencyRecord (a `write_item::guard_value`) of an
/// envelope accepted now, at journal seq `seq`.
std::string idempotency_value(uint64_t seq);

/// Splits a key made by `path_key`; false if it is malformed.
bool split_path_key(std::string_view key, std::string_view& path,
                    uint64_t& n) noexcept;

/// A random node id, never 0 (Meta.node_id of a new data dir; the origin
/// of a node without one).
uint64_t random_node_id();

/// The idempotency key of message (origin, id) at `path`:
/// `path\0origin id`, both big-endian.
std::string guard_key(std::string_view path, uint64_t origin, uint64_t id);

/// Splits a key made by `guard_key`; false if it is malformed.
bool split_guard_key(std::string_view key, std::string_view& path,
                     uint64_t& origin, uint64_t& id) noexcept;

/// The idempotency key of a tool call made by `path` on behalf of message
/// (origin, id): `path\0origin id` (big-endian) and the call's index path,
/// one big-endian uint32 per level: the call's number among the calls made
/// by the handler (one level), or by the callback of the call whose index
/// path it extends (a call made in the callback of call 1 is 1.0, 1.1, ...).
/// A retry, or a replay after a restart, derives the same key whatever order
/// the calls' answers came in.
std::string tool_result_key(std::string_view path, uint64_t origin,
                            uint64_t id, std::string_view index_path);

/// `tool_result_key` of call `index` of the handler (one level).
std::string tool_result_key(std::string_view path, uint64_t origin,
                            uint64_t id, uint32_t index);

/// Splits a key made by `tool_result_key`; false if it is malformed.
bool split_tool_result_key(std::string_view key, std::string_view& path,
                           uint64_t& origin, uint64_t& id,
                           std::string_view& index_path) noexcept;

/// The same, for a key of one level only (false otherwise).
bool split_tool_result_key(std::string_view key, std::string_view& path,
                           uint64_t& origin, uint64_t& id,
                           uint32_t& index) noexcept;

/// One node's LMDB environment: a data directory with an exclusive lock
/// file, its named databases (`db`), and the format/boot record.
///
/// Threads: `apply` may be called from one thread at a time (the node's
/// writer). The read calls (`mailbox`, `snapshots`, `dead_letters`, `count`)
/// may run on any thread, also during `apply`, but not from inside another
/// call of the same thread. `recover` writes (it moves corrupt records away)
/// and must finish before the first `apply`. Read calls clear their output
/// vectors first.
///
/// Every error names the data dir, the database and the operation; LMDB's
/// codes are translated only in `check` (src/lmdb.cpp).
class store {
public:
  /// The data dir format this build reads and writes (Meta.format; the
  /// history is in proto/vigil/store.proto). `open` upgrades format 1.
  static constexpr uint32_t format = 2;

  /// Opens (or creates) the environment in `opts.dir` and increments the
  /// boot counter. A data dir of format 1 is upgraded to this format in the
  /// same transaction (every value framed, idempotency keys re-keyed); if
  /// that fails, nothing of it is committed. Fails with `locked` if another
  /// live process holds the directory, `newer_format` if it was written by
  /// a newer vigil, `io` if the directory cannot be created or written,
  /// `corrupt` if data.mdb is shorter than its meta page says, has no valid
  /// meta page, or (with `opts.verify`) fails the structural walk. A new
  /// dir is created 0700 and its files 0600.
  static status open(const store_options& opts, std::unique_ptr<store>& out);

  /// Opens an existing data dir for reading only, without its lock file, so
  /// that `vigil inspect` can look while a node runs in it. Writes fail with
  /// `invalid`. `not_found` if `opts.dir` holds no vigil data dir.
  static status open_read_only(const store_options& opts,
                               std::unique_ptr<store>& out);

  ~store();
  store(const store&) = delete;
  store& operator=(const store&) = delete;

  const store_options& options() const noexcept;

  /// The boot counter after this open (1 for a new data dir).
  uint64_t boots() const noexcept;

  /// The data dir's node id (Meta.node_id): random, never 0, made when the
  /// data dir was created or upgraded from format 1. The origin of the
  /// message ids the node mints.
  uint64_t node_id() const noexcept;

  /// The format this open upgraded the data dir from (0: it was current),
  /// and the number of records the upgrade rewrote.
  uint32_t upgraded_from() const noexcept;
  size_t upgraded_records() const noexcept;

  /// The current map size in bytes (grows on MDB_MAP_FULL).
  size_t map_size() const noexcept;

  /// The map's size and the bytes of it in use (pages up to the last one
  /// used, times the page size), now. Any thread.
  struct usage_info {
    size_t map_size = 0;
    size_t used = 0;
  };
  usage_info usage() const;

  /// What the open has to tell an operator: permissions wider than 0700 /
  /// 0600, the walk's time, and records that fail their checksum. Each
  /// line names the data dir.
  const std::vector<std::string>& open_notes() const noexcept;

  /// Deletes the record `key` of `which` and keeps it as a dead letter with
  /// its database, key, raw bytes, agent path (where the key names one) and
  /// `reason`. `not_found` if it is not
  /// there; `invalid` on a read-only store or for the meta record.
  status move_aside(db which, const std::string& key,
                    const std::string& reason);

  /// Applies `items` in one write transaction and commits it with the
  /// configured sync mode. `results[i]` tells whether item i was applied or
  /// a duplicate. MDB_MAP_FULL grows the map and retries the whole batch,
  /// up to `max_map_size`; after that, `map_full`. On error nothing of the
  /// batch is committed.
  status apply(write_item* const* items, size_t n, write_result* results);

  /// Reads every snapshot, journal and outbox record, grouped by path.
  /// Records that do not parse, have malformed keys or a newer format are
  /// moved (in one transaction) to the dead letters with their db, key, raw
  /// bytes and reason, and listed in `bad`; they are reported only once.
  status recover(std::map<std::string, recovered_agent>& out,
                 std::vector<quarantined>& bad);

  /// Every record of `path` (snapshot, unconsumed journal, undelivered
  /// outbox) as one read transaction sees them: what the owner of a path
  /// starts from. `corrupt`, naming the key, if one does not parse.
  status load(std::string_view path, recovered_agent& out);

  /// The unconsumed journal entries of `path`, in seq order; `corrupt`
  /// (naming the key) if one does not parse.
  status mailbox(std::string_view path, std::vector<records::JournalEntry>& out);

  /// The undelivered outbox entries of `path`, in seq order; `corrupt`
  /// (naming the key) if one does not parse.
  status outbox(std::string_view path, std::vector<records::OutboxEntry>& out);

  /// The paths that have journal entries, sorted (also those of agents
  /// that have consumed nothing yet, and so have no snapshot).
  status journal_paths(std::vector<std::string>& out);

  /// Every snapshot, in path order (records that do not parse are skipped
  /// and named in `bad`, not moved).
  status snapshots(std::vector<records::Snapshot>& out,
                   std::vector<quarantined>* bad = nullptr);

  /// Every dead letter, oldest first (seq filled from the key). One that
  /// does not parse is listed with its raw bytes, so it can be removed.
  status dead_letters(std::vector<records::DeadLetter>& out);

  /// Removes the dead letters with the given seqs (all if `seqs` is empty
  /// and `all` is true). `removed` counts what was there.
  status remove_dead_letters(const std::vector<uint64_t>& seqs, bool all,
                             size_t& removed);

  /// Moves dead letters back into the journal of their agent (as new
  /// entries after its last one, attempt 1), so that it applies them when
  /// it next runs; all in one transaction. An effect's dead letter goes
  /// back into its agent's outbox (after its last entry), its key
  /// unchanged, so that it is dispatched again; if a person rejected it,
  /// or its approval expired, that approval is dropped, so that its next
  /// dispatch asks again (named in `notes`, with the decision dropped). A
  /// quarantined record, or one whose path is not a journal agent here,
  /// stays and is named in `problems`, as is an unknown seq.
  status replay_dead_letters(const std::vector<uint64_t>& seqs, bool all,
                             std::vector<std::string>& problems,
                             size_t& replayed,
                             std::vector<std::string>* notes = nullptr);

  /// The snapshot of `path`; `found` is false if there is none.
  status snapshot(std::string_view path, records::Snapshot& out,
                  bool& found);

  /// Test hook, in the manner of RocksDB's fault injection: after `n_ok`
  /// more successful `apply` calls, the next one fails with `io` (nothing of
  /// it committed). Thread-safe.
  void fail_apply_after(uint32_t n_ok) noexcept;

  /// What an apply hook sees: the batch about to be applied.
  using apply_hook = std::function<bool(write_item* const* items, size_t n)>;

  /// Test hook, in the manner of RocksDB's sync points: `hook` runs at the
  /// start of every `apply`, on the calling (writer) thread, with the batch.
  /// It may block (a test holds a commit that way), and returning true
  /// fails that apply with `io`, nothing of it committed. An empty hook
  /// removes it. Thread-safe; costs one relaxed load per apply when unset.
  void set_apply_hook(apply_hook hook);

  /// Number of records in `d`.
  status count(db d, size_t& out);

  /// The raw (framed) value of `key` in `d`; `found` is false if there is
  /// none. Decode it with decode_record.
  status get(db d, std::string_view key, std::string& raw, bool& found);

  /// Every (key, raw value) of `d` whose key starts with `prefix`, in key
  /// order, at most `max` of them after key `after` ("" = from the
  /// first); `more` is true if there are more.
  status scan_prefix(db d, std::string_view prefix,
                     std::vector<std::pair<std::string, std::string>>& out,
                     std::string_view after = {}, size_t max = SIZE_MAX,
                     bool* more = nullptr);

  /// One step of idempotency compaction, in one write transaction: looks
  /// at up to `max_scan` records of `db::idempotency` after key `from`
  /// ("" = from the first) and deletes those accepted before `cutoff_ms`
  /// (Unix milliseconds) whose envelope is no longer in the journal.
  /// Records without a time and records that do not parse are kept. A pass
  /// reads every record (ids do not sort by time: producers may choose
  /// their own). `next` is the key to pass as `from` next time, or "" when
  /// the pass reached the end. Same thread rules as `apply`.
  status compact_idempotency(uint64_t cutoff_ms, const std::string& from,
                             size_t max_scan, std::string& next,
                             size_t& deleted);

  /// One step of tool-result compaction, as compact_idempotency: deletes
  /// the records of `db::tool_results` recorded before `cutoff_ms` (their
  /// keys may then execute again, as Stripe's expire after 24 h). Records
  /// still running and records that do not parse are kept.
  status compact_tool_results(uint64_t cutoff_ms, const std::string& from,
                              size_t max_scan, std::string& next,
                              size_t& deleted);

  /// One step of task compaction, as compact_idempotency: deletes the
  /// tasks of the shared queues completed before `cutoff_ms` (Unix ms),
  /// with their dedupe records (an enqueue with the same key then adds a
  /// task again). Ready, leased and dead tasks, and records that do not
  /// parse, are kept. (src/shared_compact.cpp)
  status compact_tasks(uint64_t cutoff_ms, const std::string& from,
                       size_t max_scan, std::string& next, size_t& deleted);

private:
  store();
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace vigil
