#pragma once

// Private to the persistence component: thin RAII owners of LMDB handles and
// the one place where LMDB's int codes become a `status`.

#include <string>
#include <utility>

#include <lmdb.h>

#include "vigil/persistence/status.hpp"

namespace vigil::lmdb {

/// Translates `rc` (an LMDB code or an errno value returned by LMDB) into a
/// status. The message reads "lmdb: <dir> [<db>] <op>: <mdb_strerror(rc)>"
/// followed by what to do; `db` may be null for environment-wide calls.
/// Returns an ok status for `MDB_SUCCESS`. This is the only function that
/// maps LMDB codes to `store_errc`.
status check(int rc, const std::string& dir, const char* db, const char* op);

/// Points an MDB_val at the bytes of `s`, without copying: LMDB only reads
/// the keys and values passed to `mdb_put`/`mdb_get`/`mdb_del`, so the
/// caller's string backs the MDB_val for the duration of the call.
inline MDB_val val(const std::string& s) noexcept {
  return MDB_val{s.size(), const_cast<char*>(s.data())};
}

/// Owns an `MDB_env*`; the destructor calls `mdb_env_close`. Every
/// transaction and cursor of the environment must be gone before that.
class env {
public:
  env() = default;
  ~env();
  env(env&& other) noexcept : ptr_(std::exchange(other.ptr_, nullptr)) {
    // nop
  }
  env& operator=(env&& other) noexcept;
  env(const env&) = delete;
  env& operator=(const env&) = delete;

  /// Calls `mdb_env_create`; returns its code. Closes a previous handle.
  int create() noexcept;

  MDB_env* get() const noexcept {
    return ptr_;
  }

private:
  MDB_env* ptr_ = nullptr;
};

/// Owns an `MDB_txn*`. The destructor aborts a transaction that was neither
/// committed nor aborted. A write transaction may only be used by the thread
/// that began it; a read transaction (the environment uses MDB_NOTLS) may
/// move between threads but not be used by two at once.
class txn {
public:
  txn() = default;
  ~txn() {
    abort();
  }
  txn(txn&& other) noexcept : ptr_(std::exchange(other.ptr_, nullptr)) {
    // nop
  }
  txn& operator=(txn&& other) noexcept;
  txn(const txn&) = delete;
  txn& operator=(const txn&) = delete;

  /// Calls `mdb_txn_begin(e, nullptr, flags, ...)`; `flags` is 0 for a
  /// write transaction or MDB_RDONLY. Aborts a previous transaction first.
  int begin(MDB_env* e, unsigned flags) noexcept;

  /// Calls `mdb_txn_commit`. The handle is released whatever the result:
  /// LMDB frees a transaction that failed to commit.
  int commit() noexcept;

  /// Aborts the transaction if there is one; no-op otherwise.
  void abort() noexcept;

  MDB_txn* get() const noexcept {
    return ptr_;
  }

  explicit operator bool() const noexcept {
    return ptr_ != nullptr;
  }

private:
  MDB_txn* ptr_ = nullptr;
};

/// Owns an `MDB_cursor*`. Must be destroyed before its transaction ends
/// when that is a write transaction (LMDB frees write cursors at commit):
/// declare it after the `txn` it reads.
class cursor {
public:
  cursor() = default;
  ~cursor();
  cursor(const cursor&) = delete;
  cursor& operator=(const cursor&) = delete;

  /// Calls `mdb_cursor_open`; returns its code.
  int open(MDB_txn* t, MDB_dbi dbi) noexcept;

  /// Calls `mdb_cursor_get`; returns its code (MDB_NOTFOUND at the end).
  int get(MDB_val& key, MDB_val& value, MDB_cursor_op op) noexcept {
    return mdb_cursor_get(ptr_, &key, &value, op);
  }

  MDB_cursor* get() const noexcept {
    return ptr_;
  }

private:
  MDB_cursor* ptr_ = nullptr;
};

} // namespace vigil::lmdb
