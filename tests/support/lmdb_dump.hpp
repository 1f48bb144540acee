#pragma once

// What the damage tests share: a raw dump of every record of a data dir
// (or a backup file), and the ways they damage data.mdb.

#include <sys/stat.h>

#include <lmdb.h>

#include <fstream>
#include <map>
#include <random>
#include <string>

#include <gtest/gtest.h>

#include "vigil/persistence/store.hpp"

namespace vigil::test {

using dump_t = std::map<std::pair<std::string, std::string>, std::string>;

/// Every (database, key) -> value of an undamaged (or verified) data dir
/// or LMDB file, read with a raw read-only environment.
inline dump_t dump(const std::string& path, bool single_file = false) {
  dump_t out;
  MDB_env* env = nullptr;
  EXPECT_EQ(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 16);
  unsigned flags = MDB_RDONLY | (single_file ? MDB_NOSUBDIR | MDB_NOLOCK : 0);
  auto rc = mdb_env_open(env, path.c_str(), flags, 0600);
  EXPECT_EQ(rc, 0) << path << ": " << mdb_strerror(rc);
  MDB_txn* txn = nullptr;
  if (rc == 0 && mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn) == 0) {
    for (size_t i = 0; i < db_count; ++i) {
      auto name = to_string(static_cast<db>(i));
      MDB_dbi dbi;
      if (mdb_dbi_open(txn, name, 0, &dbi) != 0)
        continue;
      MDB_cursor* c = nullptr;
      mdb_cursor_open(txn, dbi, &c);
      MDB_val k, v;
      while (mdb_cursor_get(c, &k, &v, MDB_NEXT) == 0)
        out[{name, std::string{static_cast<char*>(k.mv_data), k.mv_size}}] =
          std::string{static_cast<char*>(v.mv_data), v.mv_size};
      mdb_cursor_close(c);
    }
    mdb_txn_abort(txn);
  }
  mdb_env_close(env);
  return out;
}

inline std::string be64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 7; i >= 0; --i, n >>= 8)
    s[i] = static_cast<char>(n & 0xff);
  return s;
}

inline uint64_t file_size(const std::string& p) {
  struct stat sb;
  return ::stat(p.c_str(), &sb) == 0 ? static_cast<uint64_t>(sb.st_size) : 0;
}

inline unsigned mode_of(const std::string& p) {
  struct stat sb;
  return ::stat(p.c_str(), &sb) == 0 ? (sb.st_mode & 0777) : 0;
}

/// Overwrites `n` random bytes (seeded) past the two meta pages.
inline void damage_bytes(const std::string& file, uint32_t seed, int n) {
  std::mt19937_64 rng{seed};
  auto size = file_size(file);
  std::fstream f{file, std::ios::in | std::ios::out | std::ios::binary};
  for (int i = 0; i < n; ++i) {
    std::uniform_int_distribution<uint64_t> at{8192, size - 1};
    f.seekp(static_cast<std::streamoff>(at(rng)));
    char c = static_cast<char>(rng() & 0xff);
    f.write(&c, 1);
  }
}

inline void zero_page(const std::string& file, uint64_t page) {
  std::fstream f{file, std::ios::in | std::ios::out | std::ios::binary};
  f.seekp(static_cast<std::streamoff>(page * 4096));
  std::string zeros(4096, '\0');
  f.write(zeros.data(), 4096);
}

} // namespace vigil::test
