// Tests persistence/replay.cpp: a dead letter named twice in one replay.
#include "persistence/store_support.hpp"

using namespace vigil;
using namespace vigil::test;

namespace {

const std::string path = "root/t";

mutation journal_agent(uint64_t next_seq) {
  auto x = snapshot(path, 0);
  x.set_durability(2);
  x.set_next_seq(next_seq);
  return put(db::snapshots, path, bytes(x));
}

mutation guard(uint64_t id, uint64_t seq) {
  return put(db::idempotency, path_key(path, id), idempotency_value(seq));
}

mutation letter(uint64_t id, uint64_t consumed, bool journal = false) {
  records::DeadLetter x;
  x.set_format(store::format);
  x.set_path(path);
  x.mutable_env()->set_type("vigil.test.Add");
  x.mutable_env()->set_id(id);
  x.set_reason("test");
  x.set_consumed_seq(consumed);
  x.set_journal(journal);
  return mutation{mutation::op::append_dead_letter, db::dead_letters, {},
                  bytes(x)};
}

uint64_t first_dead_letter_seq(store& s) {
  std::vector<records::DeadLetter> dls;
  EXPECT_TRUE(s.dead_letters(dls).ok());
  return dls.empty() ? 0 : dls.front().seq();
}

// The same dead letter named twice (`vigil dead-letters replay 1 1`): it
// must go back into the journal once.
TEST_F(store_test, same_letter_named_twice_is_replayed_once) {
  auto s = open();
  ASSERT_NE(s, nullptr);
  ASSERT_TRUE(apply(*s, {journal_agent(5), letter(42, 0)}).ok());
  auto seq = first_dead_letter_seq(*s);
  std::vector<std::string> problems;
  size_t n = 0;
  ASSERT_TRUE(s->replay_dead_letters({seq, seq}, false, problems, n).ok());
  EXPECT_EQ(n, 1u);
  EXPECT_EQ(count(*s, db::journal), 1u);
}

// The same, for a letter consumed by its own failure.
TEST_F(store_test, same_consumed_letter_named_twice_is_replayed_once) {
  auto s = open();
  ASSERT_NE(s, nullptr);
  ASSERT_TRUE(apply(*s, {journal_agent(5), letter(7, 3), guard(7, 3)}).ok());
  auto seq = first_dead_letter_seq(*s);
  std::vector<std::string> problems;
  size_t n = 0;
  ASSERT_TRUE(s->replay_dead_letters({seq, seq}, false, problems, n).ok());
  EXPECT_EQ(n, 1u);
  EXPECT_EQ(count(*s, db::journal), 1u);
}

// A letter whose envelope carries message id 0: id 0 is guarded like any
// other (the live accept guards it too), so naming it twice puts it into
// the journal once.
TEST_F(store_test, id_zero_letter_named_twice_is_replayed_once) {
  auto s = open();
  ASSERT_NE(s, nullptr);
  ASSERT_TRUE(apply(*s, {journal_agent(5), letter(0, 0)}).ok());
  auto seq = first_dead_letter_seq(*s);
  std::vector<std::string> problems;
  size_t n = 0;
  ASSERT_TRUE(s->replay_dead_letters({seq, seq}, false, problems, n).ok());
  EXPECT_EQ(n, 1u);
  EXPECT_EQ(count(*s, db::journal), 1u);
}

// A journal agent with no record at all (it consumed nothing and its first
// record did not land): without a mark the path's mode is unknown and the
// letter stays. Its cell marks the letters it writes as a journal agent's;
// with one of them the replay takes every letter of the path and writes
// the path's first record.
TEST_F(store_test, a_marked_letter_of_a_path_without_records_is_replayed) {
  auto s = open();
  ASSERT_NE(s, nullptr);
  ASSERT_TRUE(apply(*s, {letter(10, 0, false)}).ok());
  std::vector<std::string> problems;
  size_t n = 0;
  ASSERT_TRUE(s->replay_dead_letters({}, true, problems, n).ok());
  EXPECT_EQ(n, 0u);
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_NE(problems[0].find("is not a journal agent"), std::string::npos)
    << problems[0];
  EXPECT_EQ(count(*s, db::journal), 0u);
  ASSERT_TRUE(apply(*s, {letter(9, 0, true)}).ok());
  problems.clear();
  ASSERT_TRUE(s->replay_dead_letters({}, true, problems, n).ok());
  EXPECT_EQ(n, 2u);
  EXPECT_TRUE(problems.empty());
  EXPECT_EQ(count(*s, db::journal), 2u);
  std::vector<records::Snapshot> snaps;
  ASSERT_TRUE(s->snapshots(snaps).ok());
  ASSERT_EQ(snaps.size(), 1u);
  EXPECT_EQ(snaps[0].durability(), 2u);
  EXPECT_EQ(snaps[0].next_seq(), 3u);
}

} // namespace
