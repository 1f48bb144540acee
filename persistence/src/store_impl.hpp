#pragma once

// Private to the persistence component: the state behind `store` and the
// write-transaction loop shared by store.cpp and recover.cpp.

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "lmdb.hpp"
#include "vigil/persistence/integrity.hpp"
#include "vigil/persistence/store.hpp"

namespace vigil::detail {

/// Returned by a write body to abort its transaction without an LMDB error;
/// the body reports what went wrong through its own status.
constexpr int abort_rc = INT_MIN;

inline void put_be64(char* out, uint64_t n) noexcept {
  for (int i = 7; i >= 0; --i, n >>= 8)
    out[i] = static_cast<char>(n & 0xff);
}

inline uint64_t get_be64(const void* in) noexcept {
  auto p = static_cast<const unsigned char*>(in);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i)
    n = (n << 8) | p[i];
  return n;
}

inline std::string_view view(const MDB_val& v) noexcept {
  return {static_cast<const char*>(v.mv_data), v.mv_size};
}

/// The value of hex digit `c`, or -1.
inline int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/// Renders a binary key for a message: printable bytes as is, others \xNN.
std::string printable(std::string_view key);

/// Owns a file descriptor.
class unique_fd {
public:
  unique_fd() = default;
  ~unique_fd() {
    if (fd_ >= 0)
      ::close(fd_);
  }
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;
  void reset(int fd) noexcept {
    if (fd_ >= 0)
      ::close(fd_);
    fd_ = fd;
  }
  int get() const noexcept {
    return fd_;
  }
  int release() noexcept {
    return std::exchange(fd_, -1);
  }

private:
  int fd_ = -1;
};

} // namespace vigil::detail

namespace vigil {

struct op_result;

namespace detail {

/// What the value of meta/"format" says about a data dir.
enum class meta_state : uint8_t {
  current,  ///< A framed Meta: `meta` is filled.
  format1,  ///< Bare Protobuf of format 1: `meta` is filled, upgrade it.
  damaged,  ///< Neither: `why` says what is wrong.
};

/// read_data_file for a tool that needs an existing, non-empty data.mdb:
/// `not_found`, naming `dir`, otherwise.
status existing_data_file(const std::string& dir, data_file_info& info);

/// The checks before an open: permissions (warnings into `notes`), the
/// file's size against its meta page, and with `opts.verify` the walk. A
/// structural problem fails; records that fail their checksum are named in
/// `notes` (the first 10) and left where they are: recovery moves those of
/// snapshots, journal and outbox aside, and every other reader refuses them
/// by name. Moving a guard, a saga run or a recorded result aside here
/// would forget that its effect happened.
status vet_data_dir(const store_options& opts,
                    std::vector<std::string>& notes);

/// check_data_file, except that with `short_ok` a file that ends before
/// its meta page's last page passes (the walk decides; see vet_data_dir).
status check_data_file(const std::string& dir, bool single_file,
                       bool short_ok);

/// `f` ends before the last page its meta page names.
bool ends_early(const data_file_info& f) noexcept;

/// Whether `key` has the layout of `which`'s keys (see `db`): a damaged
/// branch page can make one database's walk read another's pages, whose
/// records check. False for such a misplaced record.
bool key_fits(db which, std::string_view key) noexcept;

/// The agent path a key of `which` names, where its layout has one (a
/// snapshot's key, path_key, guard_key); empty otherwise.
std::string path_of(db which, std::string_view key);

/// Reads the value of meta/"format" (any format this build knows).
meta_state read_meta(std::string_view bytes, records::Meta& meta,
                     std::string& why);

} // namespace detail

/// Where a write body failed: LMDB's code, the database and the call.
struct op_result {
  int rc = MDB_SUCCESS;
  const char* db = nullptr;
  const char* op = nullptr;
  /// The key, copied: a body's keys are its locals, gone once it returns.
  std::optional<std::string> key = std::nullopt;
};

/// The state behind a `store`: the lock file, the environment, the database
/// handles, and the locks that make map resizing safe.
struct store::impl {
  /// A read transaction with the shared resize lock held for its lifetime.
  struct reader {
    std::shared_lock<std::shared_mutex> lock;
    lmdb::txn txn; // declared after `lock`: aborted before it is released
  };

  store_options opts;
  detail::unique_fd lock;  // released after the environment is closed
  std::vector<std::string> notes; // store::open_notes
  lmdb::env env;
  MDB_dbi dbis[db_count] = {};
  uint64_t boots = 0;
  uint64_t node_id = 0;
  /// The format `open` upgraded from (0: none), and the records it rewrote.
  uint32_t upgraded_from = 0;
  size_t upgraded_records = 0;
  /// Opened by open_read_only: every write fails.
  bool read_only = false;
  /// Opened read-only on a data dir that lacks a database added later
  /// (added_later): it reads as empty.
  bool missing[db_count] = {};
  bool absent(db which) const noexcept {
    return missing[static_cast<size_t>(which)];
  }
  /// fail_apply_after: successful applies left before an injected failure
  /// (-1: none armed).
  std::atomic<int64_t> inject{-1};
  /// set_apply_hook: the hook, guarded by hook_mtx; `has_hook` is the fast
  /// check on every apply.
  std::atomic<bool> has_hook{false};
  std::mutex hook_mtx;
  std::shared_ptr<const apply_hook> hook;
  std::atomic<size_t> map_size{0};
  /// Held shared by every transaction of this process, exclusively by
  /// mdb_env_set_mapsize (which requires that no transaction is active).
  std::shared_mutex resize_mtx;
  /// Serializes the write transactions of this process; guards next_dead.
  std::mutex write_mtx;
  /// Next dead-letter seq as committed; 0 until looked up.
  uint64_t next_dead = 0;
  /// Next dead-letter seq inside the running write transaction.
  uint64_t txn_next_dead = 0;

  MDB_dbi dbi(db d) const noexcept {
    return dbis[static_cast<size_t>(d)];
  }

  /// The status for a failed write step; names the key if there is one.
  status fail(const op_result& r) const {
    if (!r.key)
      return lmdb::check(r.rc, opts.dir, r.db, r.op);
    auto op = std::string{r.op} + " key \"" + detail::printable(*r.key) + '"';
    return lmdb::check(r.rc, opts.dir, r.db, op.c_str());
  }

  status fail(int rc, db d, const char* op) const {
    return lmdb::check(rc, opts.dir, to_string(d), op);
  }

  void refresh_map_size() noexcept {
    MDB_envinfo info;
    if (mdb_env_info(env.get(), &info) == MDB_SUCCESS)
      map_size = info.me_mapsize;
  }

  /// Begins a transaction under the shared resize lock. Adopts a map grown
  /// by another process (MDB_MAP_RESIZED) and retries.
  int begin(lmdb::txn& t, std::shared_lock<std::shared_mutex>& lk,
            unsigned flags) {
    for (;;) {
      lk = std::shared_lock<std::shared_mutex>{resize_mtx};
      auto rc = t.begin(env.get(), flags);
      if (rc != MDB_MAP_RESIZED)
        return rc;
      lk.unlock();
      std::unique_lock<std::shared_mutex> ex{resize_mtx};
      if (rc = mdb_env_set_mapsize(env.get(), 0); rc != MDB_SUCCESS)
        return rc;
      refresh_map_size();
    }
  }

  status begin_read(reader& r) {
    if (auto rc = begin(r.txn, r.lock, MDB_RDONLY); rc != MDB_SUCCESS)
      return lmdb::check(rc, opts.dir, nullptr, "mdb_txn_begin(read)");
    return {};
  }

  /// Doubles the map, capped at max_map_size. Returns MDB_MAP_FULL if the
  /// map is already that big. No transaction of this process may be open.
  int grow() {
    std::unique_lock<std::shared_mutex> ex{resize_mtx};
    refresh_map_size();
    size_t cur = map_size;
    if (cur >= opts.max_map_size)
      return MDB_MAP_FULL;
    auto next = cur > opts.max_map_size / 2 ? opts.max_map_size : cur * 2;
    auto rc = mdb_env_set_mapsize(env.get(), next);
    refresh_map_size();
    return rc;
  }

  /// Runs `body(MDB_txn*) -> op_result` in a write transaction and commits
  /// it. On MDB_MAP_FULL the transaction is aborted, the map grows and the
  /// body runs again from the start.
  template <class Body>
  status write(Body&& body) {
    if (read_only)
      return {store_errc::invalid,
              "data dir " + opts.dir + " is open read-only"};
    std::lock_guard<std::mutex> guard{write_mtx};
    for (;;) {
      std::shared_lock<std::shared_mutex> lk;
      lmdb::txn t;
      op_result r{begin(t, lk, 0), nullptr, "mdb_txn_begin(write)"};
      if (r.rc != MDB_SUCCESS)
        return fail(r);
      txn_next_dead = next_dead;
      r = body(t.get());
      if (r.rc == MDB_SUCCESS)
        r = op_result{t.commit(), nullptr, "mdb_txn_commit"};
      else
        t.abort();
      if (r.rc == MDB_SUCCESS) {
        next_dead = txn_next_dead;
        return {};
      }
      if (r.rc == detail::abort_rc)
        return {};
      if (r.rc != MDB_MAP_FULL)
        return fail(r);
      lk.unlock();
      if (auto rc = grow(); rc == MDB_MAP_FULL) {
        auto st = fail(r);
        return {st.code(),
                st.message() + " (map_size = max_map_size = "
                  + std::to_string(opts.max_map_size) + " bytes)",
                st.lmdb_rc()};
      } else if (rc != MDB_SUCCESS) {
        return lmdb::check(rc, opts.dir, nullptr, "mdb_env_set_mapsize");
      }
    }
  }

  /// Finds the seq after the last dead letter.
  int find_next_dead(MDB_txn* t, uint64_t& next) {
    lmdb::cursor c;
    if (auto rc = c.open(t, dbi(db::dead_letters)); rc != MDB_SUCCESS)
      return rc;
    MDB_val k, v;
    auto rc = c.get(k, v, MDB_LAST);
    while (rc == MDB_SUCCESS && k.mv_size != 8)
      rc = c.get(k, v, MDB_PREV);
    if (rc == MDB_NOTFOUND) {
      next = 1;
      return MDB_SUCCESS;
    }
    if (rc == MDB_SUCCESS)
      next = detail::get_be64(k.mv_data) + 1;
    return rc;
  }

  /// Stores `value` under the next dead-letter seq (inside `write`).
  op_result append_dead_letter(MDB_txn* t, const std::string& value) {
    constexpr auto name = "dead_letters";
    if (txn_next_dead == 0)
      if (auto rc = find_next_dead(t, txn_next_dead); rc != MDB_SUCCESS)
        return {rc, name, "mdb_cursor_get(last)"};
    char buf[8];
    detail::put_be64(buf, txn_next_dead);
    MDB_val k{sizeof(buf), buf};
    auto v = lmdb::val(value);
    if (auto rc = mdb_put(t, dbi(db::dead_letters), &k, &v, 0);
        rc != MDB_SUCCESS)
      return {rc, name, "mdb_put"};
    ++txn_next_dead;
    return {};
  }

  /// Rewrites a format 1 data dir into format 2 inside the write
  /// transaction `t` (store::open's, so the upgrade commits whole or not at
  /// all): frames every value and re-keys idempotency records to
  /// `guard_key(path, 0, id)`. Meta is written by the caller. `n` counts
  /// the records rewritten. (src/upgrade.cpp)
  op_result upgrade_from_format1(MDB_txn* t, size_t& n);

  /// Runs the shared-state operation of `m` (mutation::op::shared) and
  /// writes its result into `m.key` (inside `write`; src/shared.cpp).
  op_result run_shared(MDB_txn* t, mutation& m);
  class shared_txn;

  /// Replays the dead letter of a queue's task (src/replay.cpp): ready
  /// again, attempts reset; or named in `skipped`.
  op_result replay_task(MDB_txn* t, const records::DeadLetter& dl,
                        const std::string& id_text,
                        std::vector<std::string>& skipped);

  /// The wall clock of shared state, in Unix ms (opts.wall_ms or the
  /// system clock).
  uint64_t wall_now() const;

  /// Applies one mutation (inside `write`).
  op_result mutate(MDB_txn* t, const mutation& m) {
    auto where = to_string(m.where);
    auto k = lmdb::val(m.key);
    switch (m.what) {
      case mutation::op::put: {
        auto v = lmdb::val(m.value);
        if (auto rc = mdb_put(t, dbi(m.where), &k, &v, 0); rc != MDB_SUCCESS)
          return {rc, where, "mdb_put", m.key};
        // Keep the dead-letter seq ahead of an explicitly written one.
        if (m.where == db::dead_letters && m.key.size() == 8
            && txn_next_dead != 0)
          txn_next_dead =
            std::max(txn_next_dead, detail::get_be64(m.key.data()) + 1);
        return {};
      }
      case mutation::op::del: {
        auto rc = mdb_del(t, dbi(m.where), &k, nullptr);
        if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
          return {rc, where, "mdb_del", m.key};
        return {};
      }
      case mutation::op::append_dead_letter:
        return append_dead_letter(t, m.value);
      case mutation::op::shared:
        break; // run by apply (run_shared), which can write its result
    }
    return {EINVAL, where, "mutation(unknown op)"};
  }
};

} // namespace vigil

