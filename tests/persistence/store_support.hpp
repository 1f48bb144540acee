#pragma once

// Helpers for the store tests: a raw LMDB handle for records the store would
// never write, record builders, and a fixture with a fresh data dir per test.

#include <gtest/gtest.h>

#include <lmdb.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "vigil/persistence/store.hpp"

namespace vigil::test {

constexpr size_t kib = 1024;
constexpr size_t mib = 1024 * kib;
const std::string garbage = "\xff\xff\xff garbage";

/// A raw LMDB environment on a data dir, for what the store never writes.
/// Only while no store has the dir open (LMDB forbids two envs on one file
/// in one process).
class raw_env {
public:
  explicit raw_env(const std::string& dir, size_t map_size = 0) {
    rc_ = mdb_env_create(&env_);
    if (rc_ == 0)
      rc_ = mdb_env_set_maxdbs(env_, 8);
    if (rc_ == 0 && map_size != 0)
      rc_ = mdb_env_set_mapsize(env_, map_size);
    if (rc_ == 0)
      rc_ = mdb_env_open(env_, dir.c_str(), 0, 0644);
  }
  ~raw_env() {
    mdb_env_close(env_);
  }
  int rc() const {
    return rc_;
  }
  /// Puts one record in a named database; returns LMDB's code.
  int put(const char* db, const std::string& key, const std::string& value) {
    MDB_txn* txn = nullptr;
    MDB_dbi dbi;
    if (auto rc = mdb_txn_begin(env_, nullptr, 0, &txn))
      return rc;
    auto rc = mdb_dbi_open(txn, db, MDB_CREATE, &dbi);
    MDB_val k{key.size(), const_cast<char*>(key.data())};
    MDB_val v{value.size(), const_cast<char*>(value.data())};
    if (rc == 0)
      rc = mdb_put(txn, dbi, &k, &v, 0);
    if (rc != 0) {
      mdb_txn_abort(txn);
      return rc;
    }
    return mdb_txn_commit(txn);
  }
  std::optional<std::string> get(const char* db, const std::string& key) {
    MDB_txn* txn = nullptr;
    MDB_dbi dbi;
    std::optional<std::string> out;
    if (mdb_txn_begin(env_, nullptr, MDB_RDONLY, &txn) != 0)
      return out;
    MDB_val k{key.size(), const_cast<char*>(key.data())};
    MDB_val v;
    if (mdb_dbi_open(txn, db, 0, &dbi) == 0 && mdb_get(txn, dbi, &k, &v) == 0)
      out.emplace(static_cast<const char*>(v.mv_data), v.mv_size);
    mdb_txn_abort(txn);
    return out;
  }

private:
  MDB_env* env_ = nullptr;
  int rc_ = 0;
};

/// `m` as the store keeps it (framed: see vigil/persistence/record.hpp).
template <class Message>
std::string bytes(const Message& m) {
  return encode_record(m);
}

inline records::JournalEntry journal_entry(uint64_t seq,
                                           std::string type = "ping") {
  records::JournalEntry x;
  x.set_format(store::format);
  x.set_seq(seq);
  x.mutable_env()->set_type(std::move(type));
  x.mutable_env()->set_id(seq * 10);
  return x;
}

inline records::Snapshot snapshot(const std::string& path, uint64_t applied) {
  records::Snapshot x;
  x.set_format(store::format);
  x.set_path(path);
  x.set_agent("counter");
  x.set_applied_seq(applied);
  return x;
}

inline mutation put(db where, std::string key, std::string value) {
  return mutation{mutation::op::put, where, std::move(key), std::move(value)};
}

inline mutation del(db where, std::string key) {
  return mutation{mutation::op::del, where, std::move(key), {}};
}

inline mutation dead_letter(const std::string& reason) {
  records::DeadLetter x;
  x.set_format(store::format);
  x.set_reason(reason);
  return mutation{mutation::op::append_dead_letter, db::dead_letters, {},
                  bytes(x)};
}

/// Applies `items` as one batch.
inline status apply(store& s, std::vector<write_item>& items,
                    std::vector<write_result>* results = nullptr) {
  std::vector<write_item*> ptrs;
  for (auto& x : items)
    ptrs.push_back(&x);
  std::vector<write_result> res(items.size(), write_result::duplicate);
  auto st = s.apply(ptrs.data(), ptrs.size(), res.data());
  if (results != nullptr)
    *results = res;
  return st;
}

inline status apply(store& s, std::vector<mutation> muts) {
  std::vector<write_item> items(1);
  items[0].muts = std::move(muts);
  return apply(s, items);
}

inline size_t count(store& s, db d) {
  size_t n = 0;
  EXPECT_TRUE(s.count(d, n).ok());
  return n;
}

inline std::vector<uint64_t>
seqs(const std::vector<records::JournalEntry>& xs) {
  std::vector<uint64_t> out;
  for (auto& x : xs)
    out.push_back(x.seq());
  return out;
}

/// Dead letters (keys big-endian `first`..`first + n - 1`, ~200 bytes
/// each) and, with `guards`, an idempotency record per letter, `batch`
/// letters a commit: several pages per database for the damage tests.
inline void fill_letters(store& s, uint64_t n, uint64_t first, uint64_t batch,
                         bool guards) {
  for (uint64_t i = first; i < first + n; i += batch) {
    std::vector<mutation> muts;
    for (uint64_t j = i; j < std::min(first + n, i + batch); ++j) {
      records::DeadLetter dl;
      dl.set_format(store::format);
      dl.set_seq(j);
      dl.set_path("root/agent");
      dl.set_reason("letter " + std::to_string(j) + std::string(160, 'x'));
      std::string key(8, '\0');
      for (int b = 7, k = 0; b >= 0; --b, ++k)
        key[k] = static_cast<char>((j >> (8 * b)) & 0xff);
      muts.push_back(put(db::dead_letters, std::move(key), bytes(dl)));
      if (guards)
        muts.push_back(put(db::idempotency, guard_key("root/agent", 7, j),
                           idempotency_value(j)));
    }
    ASSERT_TRUE(apply(s, std::move(muts)).ok());
  }
}

/// A fresh data dir per test, `<root>/nodes/n1` (not created: `open` makes
/// it), removed with its temporary root after the test.
class store_test : public ::testing::Test {
protected:
  void SetUp() override {
    char tmpl[] = "/tmp/vigil-store-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    dir_ = root_ + "/nodes/n1";
  }

  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }

  store_options options() const {
    store_options opts;
    opts.dir = dir_;
    return opts;
  }

  std::unique_ptr<store> open(const store_options& opts) {
    std::unique_ptr<store> s;
    auto st = store::open(opts, s);
    EXPECT_TRUE(st.ok()) << to_string(st.code()) << ": " << st.message();
    return s;
  }

  std::unique_ptr<store> open() {
    return open(options());
  }

  std::string root_;
  std::string dir_;
};

/// `n` journal entries of `path` from seq `first`, each with a payload of
/// `value_size` bytes.
inline std::vector<mutation> big_batch(const std::string& path,
                                       uint64_t first, size_t n,
                                       size_t value_size) {
  std::vector<mutation> out;
  for (size_t i = 0; i < n; ++i) {
    auto x = journal_entry(first + i);
    x.mutable_env()->set_payload(
      std::string(value_size, static_cast<char>('a' + i % 26)));
    out.push_back(put(db::journal, path_key(path, first + i), bytes(x)));
  }
  return out;
}

} // namespace vigil::test
