#include "lmdb.hpp"

#include <sys/resource.h>

#include <cerrno>
#include <string>

namespace vigil::lmdb {

namespace {

struct translation {
  store_errc code;
  const char* hint;
};

translation translate(int rc) noexcept {
  switch (rc) {
    case MDB_MAP_FULL:
      return {store_errc::map_full,
              "the map reached max_map_size; raise max_map_size (it grows by "
              "doubling up to that) or remove dead letters"};
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
      return {store_errc::corrupt,
              "the environment is damaged; restore the data dir from a "
              "backup"};
    case MDB_INVALID:
      return {store_errc::corrupt,
              "data.mdb is not an LMDB file; restore the data dir from a "
              "backup or use another --data-dir"};
    case MDB_VERSION_MISMATCH:
      return {store_errc::lmdb,
              "the data dir was written by an incompatible LMDB version; "
              "run the vigil that wrote it or use another --data-dir"};
    case MDB_INCOMPATIBLE:
      return {store_errc::corrupt,
              "a database has unexpected flags; the data dir was not written "
              "by vigil: use another --data-dir"};
    case MDB_PANIC:
      return {store_errc::lmdb,
              "LMDB hit a fatal error; restart the node, and restore the data "
              "dir from a backup if it recurs"};
    case MDB_NOTFOUND:
      return {store_errc::not_found, "the key does not exist"};
    case MDB_KEYEXIST:
      return {store_errc::invalid, "the key already exists"};
    case MDB_BAD_VALSIZE:
      return {store_errc::invalid,
              "a key is empty or longer than LMDB's maximum key size (511 "
              "bytes); use shorter agent paths or idempotency keys"};
    case MDB_DBS_FULL:
      return {store_errc::lmdb,
              "too many named databases; the data dir may have been written "
              "by a newer vigil"};
    case MDB_READERS_FULL:
      return {store_errc::lmdb,
              "the reader table is full; stop processes that hold stale "
              "readers (see mdb_stat -r) or restart the node"};
    case MDB_TXN_FULL:
      return {store_errc::lmdb,
              "the transaction has too many dirty pages; commit smaller "
              "batches"};
    case MDB_MAP_RESIZED:
      return {store_errc::lmdb,
              "another process grew the map; retry the operation"};
    case MDB_TLS_FULL:
    case MDB_CURSOR_FULL:
    case MDB_PAGE_FULL:
    case MDB_BAD_RSLOT:
    case MDB_BAD_TXN:
    case MDB_BAD_DBI:
      return {store_errc::lmdb,
              "LMDB was used wrongly; this is a bug in vigil, please report "
              "it"};
    case EACCES:
    case EPERM:
    case EROFS:
      return {store_errc::io,
              "choose a writable --data-dir or fix its permissions"};
    case ENOENT:
    case ENOTDIR:
      return {store_errc::io,
              "the data dir does not exist or is not a directory; check "
              "--data-dir"};
    case ENOSPC:
    case EDQUOT:
      return {store_errc::io, "the disk is full; free space on it"};
    case EFBIG:
      return {store_errc::io,
              "data.mdb reached the file size limit (ulimit -f, or the "
              "filesystem's largest file): raise the limit or move the data "
              "dir; what was committed before is kept"};
    case EIO:
      return {store_errc::io,
              "the disk reported an I/O error; check the disk (dmesg) and "
              "restore the data dir from a backup if needed"};
    case ENOMEM:
      return {store_errc::io,
              "the map does not fit into memory or address space; lower "
              "map_size/max_map_size or raise the process limits (ulimit -v)"};
    case EAGAIN:
    case EBUSY:
      return {store_errc::locked,
              "another process holds the environment; stop it or use another "
              "--data-dir"};
    case EINVAL:
      return {store_errc::invalid,
              "LMDB rejected an argument (e.g. a map size below the data "
              "already stored)"};
    default:
      if (rc > 0)
        return {store_errc::io, "check the data dir and its disk"};
      return {store_errc::lmdb, "see the LMDB documentation for this code"};
  }
}

} // namespace

status check(int rc, const std::string& dir, const char* db, const char* op) {
  if (rc == MDB_SUCCESS)
    return {};
  auto [code, hint] = translate(rc);
  std::string msg = "lmdb: ";
  msg += dir;
  if (db != nullptr && *db != '\0') {
    msg += " [";
    msg += db;
    msg += ']';
  }
  msg += ' ';
  msg += op;
  msg += ": ";
  msg += mdb_strerror(rc);
  msg += ": ";
  msg += hint;
  // A write cut short by RLIMIT_FSIZE reads as EIO (LMDB's short write) or
  // EFBIG: say which limit applies.
  rlimit lim;
  if ((rc == EIO || rc == EFBIG) && ::getrlimit(RLIMIT_FSIZE, &lim) == 0
      && lim.rlim_cur != RLIM_INFINITY)
    msg += " (this process has a file size limit of "
           + std::to_string(static_cast<unsigned long long>(lim.rlim_cur))
           + " bytes, ulimit -f: raise it if data.mdb reached it)";
  return {code, std::move(msg), rc};
}

env::~env() {
  if (ptr_ != nullptr)
    mdb_env_close(ptr_);
}

env& env::operator=(env&& other) noexcept {
  if (this != &other) {
    if (ptr_ != nullptr)
      mdb_env_close(ptr_);
    ptr_ = std::exchange(other.ptr_, nullptr);
  }
  return *this;
}

int env::create() noexcept {
  if (ptr_ != nullptr) {
    mdb_env_close(ptr_);
    ptr_ = nullptr;
  }
  return mdb_env_create(&ptr_);
}

txn& txn::operator=(txn&& other) noexcept {
  if (this != &other) {
    abort();
    ptr_ = std::exchange(other.ptr_, nullptr);
  }
  return *this;
}

int txn::begin(MDB_env* e, unsigned flags) noexcept {
  abort();
  MDB_txn* t = nullptr;
  auto rc = mdb_txn_begin(e, nullptr, flags, &t);
  if (rc == MDB_SUCCESS)
    ptr_ = t;
  return rc;
}

int txn::commit() noexcept {
  return mdb_txn_commit(std::exchange(ptr_, nullptr));
}

void txn::abort() noexcept {
  if (ptr_ != nullptr)
    mdb_txn_abort(std::exchange(ptr_, nullptr));
}

cursor::~cursor() {
  if (ptr_ != nullptr)
    mdb_cursor_close(ptr_);
}

int cursor::open(MDB_txn* t, MDB_dbi dbi) noexcept {
  if (ptr_ != nullptr) {
    mdb_cursor_close(ptr_);
    ptr_ = nullptr;
  }
  return mdb_cursor_open(t, dbi, &ptr_);
}

} // namespace vigil::lmdb
