// The recorded results of tool calls (db::tool_results) on real LMDB files:
// their keys, their compaction, and a data dir written before they existed.

#include <gtest/gtest.h>

#include <lmdb.h>

#include <set>
#include <string>
#include <vector>

#include "persistence/store_support.hpp"
#include "vigil/persistence/store.hpp"

namespace {

using namespace vigil;
using namespace vigil::test;

records::ToolResultRecord result_at(uint64_t ms, bool running = false) {
  records::ToolResultRecord rec;
  rec.set_format(store::format);
  rec.set_tool("pay");
  rec.set_fingerprint(std::string(32, '\x5a'));
  rec.set_running(running);
  rec.set_recorded_ms(ms);
  return rec;
}

TEST(tool_result_key_test, round_trips_and_sorts_by_path_message_and_index) {
  auto k = tool_result_key("a/b", 0x0102030405060708ull, 42, 0x01020304u);
  EXPECT_EQ(k.size(), 3u + 1 + 8 + 8 + 4);
  std::string_view path;
  uint64_t origin = 0, id = 0;
  uint32_t index = 0;
  ASSERT_TRUE(split_tool_result_key(k, path, origin, id, index));
  EXPECT_EQ(path, "a/b");
  EXPECT_EQ(origin, 0x0102030405060708ull);
  EXPECT_EQ(id, 42u);
  EXPECT_EQ(index, 0x01020304u);
  // One message's calls sort by their index, then the next message's.
  EXPECT_LT(tool_result_key("a", 1, 7, 1), tool_result_key("a", 1, 7, 256));
  EXPECT_LT(tool_result_key("a", 1, 7, 0xffffffffu),
            tool_result_key("a", 1, 8, 0));
  // Too short, or no separator where the path must end.
  EXPECT_FALSE(split_tool_result_key("short", path, origin, id, index));
  auto bad = k;
  bad[3] = 'x';
  EXPECT_FALSE(split_tool_result_key(bad, path, origin, id, index));
}

// Compaction drops the finished results recorded before the cutoff, in
// steps, and keeps newer ones, those still running, those without a time
// and those that do not parse. 1,500 records span many LMDB pages.
TEST_F(store_test, compaction_drops_old_tool_results_in_steps) {
  auto s = open();
  ASSERT_NE(s, nullptr);
  std::vector<mutation> muts;
  std::set<std::string> kept;
  for (uint32_t i = 0; i < 1000; ++i) {
    auto key = tool_result_key("a", 1, i / 10, i % 10);
    muts.push_back(put(db::tool_results, key, bytes(result_at(i + 1))));
    if (i + 1 >= 600)
      kept.insert(key);
  }
  for (uint32_t i = 0; i < 500; ++i) {
    auto key = tool_result_key("b/c", 2, i, 0);
    // Old, but running (a write whose execution may yet report), or
    // without a time: kept.
    muts.push_back(put(db::tool_results, key,
                       bytes(i % 2 ? result_at(1, true) : result_at(0))));
    kept.insert(key);
  }
  ASSERT_TRUE(apply(*s, muts).ok());
  s.reset(); // LMDB allows one environment handle per file and process
  auto junk = tool_result_key("a", 1, 999999, 0);
  ASSERT_EQ(raw_env{dir_}.put("tool_results", junk, "not a record"), 0);
  kept.insert(junk);
  s = open();
  ASSERT_NE(s, nullptr);
  std::string from, next;
  size_t deleted = 0, total = 0;
  int steps = 0;
  do {
    ASSERT_TRUE(s->compact_tool_results(600, from, 200, next, deleted).ok());
    total += deleted;
    from = next;
    ASSERT_LT(++steps, 100) << "compaction does not reach the end";
  } while (!next.empty());
  EXPECT_GE(steps, 7);
  EXPECT_EQ(total, 599u);
  EXPECT_EQ(count(*s, db::tool_results), kept.size());
  // A second pass finds nothing more.
  ASSERT_TRUE(s->compact_tool_results(600, "", 100000, next, deleted).ok());
  EXPECT_EQ(deleted, 0u);
  EXPECT_TRUE(next.empty());
  s.reset();
  raw_env raw{dir_};
  for (auto& key : kept)
    EXPECT_TRUE(raw.get("tool_results", key).has_value());
  EXPECT_FALSE(raw.get("tool_results", tool_result_key("a", 1, 0, 0)));
}

// A data dir written by a vigil from before tool results: opened
// read-only it reads as having none; opened for writing it gets the
// database, and what was there stays.
TEST_F(store_test, a_data_dir_without_tool_results_reads_as_empty) {
  {
    auto s = open();
    ASSERT_NE(s, nullptr);
    ASSERT_TRUE(apply(*s, {put(db::snapshots, "p", bytes(snapshot("p", 3)))})
                  .ok());
  }
  {
    // Drop the database, as an older vigil never made it.
    MDB_env* env = nullptr;
    ASSERT_EQ(mdb_env_create(&env), 0);
    ASSERT_EQ(mdb_env_set_maxdbs(env, 16), 0);
    ASSERT_EQ(mdb_env_open(env, dir_.c_str(), 0, 0644), 0);
    MDB_txn* txn = nullptr;
    ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
    MDB_dbi dbi;
    ASSERT_EQ(mdb_dbi_open(txn, "tool_results", 0, &dbi), 0);
    ASSERT_EQ(mdb_drop(txn, dbi, 1), 0);
    ASSERT_EQ(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
  }
  {
    std::unique_ptr<store> ro;
    auto st = store::open_read_only(options(), ro);
    ASSERT_TRUE(st.ok()) << st.message();
    EXPECT_EQ(count(*ro, db::tool_results), 0u);
    std::string raw;
    bool found = true;
    ASSERT_TRUE(ro->get(db::tool_results, tool_result_key("p", 0, 1, 0), raw,
                        found)
                  .ok());
    EXPECT_FALSE(found);
    EXPECT_EQ(count(*ro, db::snapshots), 1u);
  }
  auto s = open();
  ASSERT_NE(s, nullptr);
  auto key = tool_result_key("p", 0, 1, 0);
  ASSERT_TRUE(apply(*s, {put(db::tool_results, key, bytes(result_at(5)))})
                .ok());
  EXPECT_EQ(count(*s, db::tool_results), 1u);
  EXPECT_EQ(count(*s, db::snapshots), 1u);
}

} // namespace
