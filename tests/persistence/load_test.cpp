// store::load, what a path's new owner starts from, and the apply hook that
// tests use to hold or fail a commit on purpose.

#include <thread>

#include "persistence/store_support.hpp"
#include "support/gate.hpp"

using namespace vigil;
using namespace vigil::test;

namespace {

mutation outbox(const std::string& path, uint64_t seq) {
  records::OutboxEntry x;
  x.set_format(store::format);
  x.set_seq(seq);
  x.set_to("elsewhere");
  return put(db::outbox, path_key(path, seq), bytes(x));
}

mutation entry(const std::string& path, uint64_t seq) {
  return put(db::journal, path_key(path, seq), bytes(journal_entry(seq)));
}

TEST_F(store_test, load_reads_one_paths_records_and_nothing_else) {
  auto s = open();
  ASSERT_NE(s, nullptr);
  ASSERT_TRUE(apply(*s, {put(db::snapshots, "a", bytes(snapshot("a", 4))),
                         entry("a", 256), entry("a", 5), outbox("a", 2),
                         // Paths that share a's bytes as a prefix.
                         entry("ab", 1), entry("a/b", 7), outbox("a/b", 3),
                         put(db::snapshots, "ab", bytes(snapshot("ab", 1)))})
                .ok());
  recovered_agent a;
  ASSERT_TRUE(s->load("a", a).ok());
  EXPECT_EQ(a.path, "a");
  ASSERT_TRUE(a.has_snapshot);
  EXPECT_EQ(a.snapshot.applied_seq(), 4u);
  EXPECT_EQ(seqs(a.journal), (std::vector<uint64_t>{5, 256}));
  ASSERT_EQ(a.outbox.size(), 1u);
  EXPECT_EQ(a.outbox[0].seq(), 2u);
  recovered_agent none;
  none.has_snapshot = true; // load starts from nothing
  none.journal.push_back(journal_entry(1));
  ASSERT_TRUE(s->load("nobody", none).ok());
  EXPECT_FALSE(none.has_snapshot);
  EXPECT_TRUE(none.journal.empty());
  EXPECT_TRUE(none.outbox.empty());
}

TEST_F(store_test, load_names_a_corrupt_record) {
  {
    auto s = open(); // creates the data dir
    ASSERT_NE(s, nullptr);
  }
  {
    raw_env raw{dir_};
    ASSERT_EQ(raw.rc(), 0);
    ASSERT_EQ(raw.put("journal", path_key("a", 3), garbage), 0);
    ASSERT_EQ(raw.put("snapshots", "b", garbage), 0);
  }
  auto s = open();
  ASSERT_NE(s, nullptr);
  recovered_agent a;
  auto st = s->load("a", a);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), store_errc::corrupt);
  EXPECT_NE(st.message().find("[journal]"), std::string::npos)
    << st.message();
  EXPECT_NE(st.message().find("a\\x00"), std::string::npos) << st.message();
  recovered_agent b;
  st = s->load("b", b);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("[snapshots] \"b\""), std::string::npos)
    << st.message();
}

TEST_F(store_test, apply_hook_sees_the_batch_and_can_fail_it) {
  auto s = open();
  ASSERT_NE(s, nullptr);
  size_t seen = 0;
  s->set_apply_hook([&](write_item* const* items, size_t n) {
    seen = n;
    return items[0]->muts.size() == 2; // fails batches led by a pair
  });
  ASSERT_TRUE(apply(*s, {entry("a", 1)}).ok());
  EXPECT_EQ(seen, 1u);
  auto st = apply(*s, {entry("a", 2), entry("a", 3)});
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), store_errc::io);
  EXPECT_NE(st.message().find("injected"), std::string::npos);
  s->set_apply_hook({});
  ASSERT_TRUE(apply(*s, {entry("a", 4), entry("a", 5)}).ok());
  std::vector<records::JournalEntry> mb;
  ASSERT_TRUE(s->mailbox("a", mb).ok());
  EXPECT_EQ(seqs(mb), (std::vector<uint64_t>{1, 4, 5}));
}

TEST_F(store_test, apply_hook_can_hold_a_commit) {
  auto s = open();
  ASSERT_NE(s, nullptr);
  gate held;
  s->set_apply_hook([&](write_item* const*, size_t) {
    held.pass();
    return false;
  });
  std::thread writer{[&] { EXPECT_TRUE(apply(*s, {entry("a", 1)}).ok()); }};
  ASSERT_TRUE(held.arrived());
  EXPECT_EQ(count(*s, db::journal), 0u) << "committed while held";
  held.open();
  writer.join();
  EXPECT_EQ(count(*s, db::journal), 1u);
}

} // namespace
