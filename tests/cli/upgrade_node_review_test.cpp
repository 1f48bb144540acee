// Review: a format 1 data dir (tests/fixtures/format1) run by a node: the
// journal entries format 1 left pending are applied once, and a message id
// that format 1 accepted, resent by a caller after the upgrade, is a
// duplicate (not applied twice).

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>

#include "support/eventually.hpp"
#include "support/temp_dir.hpp"
#include "vigil/builtin.pb.h"
#include "vigil/cli/app.hpp"
#include "vigil/node/node.hpp"

using namespace vigil;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

builtin::Count count_of(node& nd, const std::string& path) {
  auto r = nd.call<builtin::Count>(path, builtin::Get{}, 5s);
  return r ? r->value : builtin::Count{};
}

} // namespace

TEST(upgrade_node_review, format1_ids_stay_duplicates_through_the_node) {
  test::temp_dir dir;
  fs::copy_file(fs::path{VIGIL_FIXTURES} / "format1" / "data.mdb",
                fs::path{dir.path()} / "data.mdb");
  registry types;
  cli::add_builtin_agents(types);
  node_config nc;
  nc.data_dir = dir.path();
  node nd{types, nc};
  supervisor_spec spec;
  spec.flags.intensity = 100;
  spec.children.push_back(
    worker("counter", "counter").with_durability(durability_mode::journal));
  ASSERT_FALSE(nd.start("chaos", spec));
  EXPECT_EQ(nd.rt()->storage()->upgraded_from(), 1u);
  // 693 applied before, 27 pending (n = 694..720).
  ASSERT_TRUE(
    test::eventually([&] { return count_of(nd, "chaos/counter").count() == 720; }))
    << count_of(nd, "chaos/counter").count();
  auto before = count_of(nd, "chaos/counter");
  // Id 0x1000000000e was accepted as chaos/counter's seq 1 under format 1.
  builtin::Number n;
  n.set_n(1000000);
  call_options again;
  again.message_id = 0x1000000000eull;
  ASSERT_FALSE(nd.send("chaos/counter", n, again));
  // A new id after it: once it is applied, the resend was handled first.
  builtin::Number m;
  m.set_n(1);
  call_options fresh;
  fresh.message_id = 0x7777000000000001ull;
  ASSERT_FALSE(nd.send("chaos/counter", m, fresh));
  ASSERT_TRUE(test::eventually([&] {
    return count_of(nd, "chaos/counter").count() >= before.count() + 1;
  }));
  auto after = count_of(nd, "chaos/counter");
  EXPECT_EQ(after.count(), before.count() + 1);
  EXPECT_EQ(after.sum(), before.sum() + 1);
}

#include <lmdb.h>

#include "vigil/persistence/record.hpp"

// A journal record with a flipped bit: the node starts, quarantines it, and
// says which record it was: its agent's path (the dead letter is addressed
// to it) and its key, not just the database and the key's length.
TEST(upgrade_node_review, a_quarantined_record_is_named_by_its_agent_and_key) {
  test::temp_dir dir;
  const std::string key = path_key("root/counter", 3);
  {
    std::unique_ptr<store> st;
    store_options so;
    so.dir = dir.path();
    ASSERT_FALSE(store::open(so, st));
    records::JournalEntry je;
    je.set_format(store::format);
    je.set_seq(3);
    je.mutable_env()->set_type("vigil.builtin.Number");
    std::vector<write_item> items(1);
    items[0].muts.push_back(
      {mutation::op::put, db::journal, key, encode_record(je)});
    write_item* p = &items[0];
    write_result r;
    ASSERT_FALSE(st->apply(&p, 1, &r));
  }
  {
    MDB_env* env = nullptr;
    ASSERT_EQ(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 8);
    ASSERT_EQ(mdb_env_open(env, dir.path().c_str(), 0, 0644), 0);
    MDB_txn* t = nullptr;
    ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &t), 0);
    MDB_dbi d;
    ASSERT_EQ(mdb_dbi_open(t, "journal", 0, &d), 0);
    MDB_val k{key.size(), const_cast<char*>(key.data())}, v;
    ASSERT_EQ(mdb_get(t, d, &k, &v), 0);
    std::string bytes{static_cast<char*>(v.mv_data), v.mv_size};
    bytes.back() ^= 0x01;
    MDB_val nv{bytes.size(), bytes.data()};
    ASSERT_EQ(mdb_put(t, d, &k, &nv, 0), 0);
    ASSERT_EQ(mdb_txn_commit(t), 0);
    mdb_env_close(env);
  }
  registry types;
  cli::add_builtin_agents(types);
  node_config nc;
  nc.data_dir = dir.path();
  node nd{types, nc};
  supervisor_spec spec;
  spec.flags.intensity = 100;
  spec.children.push_back(
    worker("counter", "counter").with_durability(durability_mode::journal));
  ASSERT_FALSE(nd.start("root", spec));
  auto q = nd.quarantine();
  ASSERT_EQ(q.size(), 1u);
  EXPECT_EQ(q[0].where, db::journal);
  EXPECT_EQ(q[0].key, key);
  auto dls = nd.rt()->dead_letters();
  ASSERT_EQ(dls.size(), 1u);
  EXPECT_EQ(dls[0].path, "root/counter") << dls[0].reason;
  EXPECT_NE(dls[0].reason.find("checksum mismatch"), std::string::npos)
    << dls[0].reason;
}
