// store::replay_dead_letters against the idempotency table: a dead letter
// is taken back into its agent's journal only if its message id is not
// accepted, or is accepted by the very journal entry whose consumption
// made the dead letter. Anything else was applied since, and a replay
// would apply it twice.

#include "persistence/store_support.hpp"

using namespace vigil;
using namespace vigil::test;

namespace {

const std::string path = "root/t";

/// A journal agent's snapshot, so that replay accepts the path.
mutation journal_agent(uint64_t next_seq) {
  auto x = snapshot(path, 0);
  x.set_durability(2);
  x.set_next_seq(next_seq);
  return put(db::snapshots, path, bytes(x));
}

/// A guard for message `id`, naming journal entry `seq`.
mutation guard(uint64_t id, uint64_t seq) {
  return put(db::idempotency, guard_key(path, 0, id), idempotency_value(seq));
}

/// A dead letter of message `id`; `consumed` is the journal seq whose
/// consumption made it, 0 if the envelope was never accepted.
mutation letter(uint64_t id, uint64_t consumed) {
  records::DeadLetter x;
  x.set_format(store::format);
  x.set_path(path);
  x.mutable_env()->set_type("vigil.test.Add");
  x.mutable_env()->set_id(id);
  x.mutable_env()->set_deadline(12345);
  x.set_reason("test");
  x.set_consumed_seq(consumed);
  return mutation{mutation::op::append_dead_letter, db::dead_letters, {},
                  bytes(x)};
}

/// The journal seq of the entry that holds message `id`, or 0.
uint64_t journal_seq_of(store& s, uint64_t id) {
  std::vector<records::JournalEntry> mb;
  EXPECT_TRUE(s.mailbox(path, mb).ok());
  for (auto& e : mb)
    if (e.env().id() == id)
      return e.seq();
  return 0;
}

struct replay_result {
  size_t replayed = 0;
  std::vector<std::string> problems;
};

replay_result replay_all(store& s) {
  replay_result out;
  EXPECT_TRUE(s.replay_dead_letters({}, true, out.problems, out.replayed).ok());
  return out;
}

TEST_F(store_test, replay_takes_back_an_id_that_was_never_accepted) {
  auto s = open();
  ASSERT_NE(s, nullptr);
  ASSERT_TRUE(apply(*s, {journal_agent(5), letter(42, 0)}).ok());
  auto r = replay_all(*s);
  EXPECT_EQ(r.replayed, 1u);
  EXPECT_TRUE(r.problems.empty());
  EXPECT_EQ(journal_seq_of(*s, 42), 5u);
  std::vector<records::JournalEntry> mb;
  ASSERT_TRUE(s->mailbox(path, mb).ok());
  ASSERT_EQ(mb.size(), 1u);
  EXPECT_EQ(mb[0].env().deadline(), 0) << "a replay is not too late";
  EXPECT_EQ(count(*s, db::dead_letters), 0u);
}

// Issue 11, case 1: the envelope became a dead letter without being
// accepted; its producer resent the id, which was accepted and applied.
TEST_F(store_test, replay_skips_an_id_accepted_since) {
  auto s = open();
  ASSERT_NE(s, nullptr);
  ASSERT_TRUE(
    apply(*s, {journal_agent(5), letter(4242, 0), guard(4242, 3)}).ok());
  auto r = replay_all(*s);
  EXPECT_EQ(r.replayed, 0u);
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_NE(r.problems[0].find("message id 4242"), std::string::npos)
    << r.problems[0];
  EXPECT_NE(r.problems[0].find("journal entry 3"), std::string::npos)
    << r.problems[0];
  EXPECT_EQ(count(*s, db::journal), 0u);
  EXPECT_EQ(count(*s, db::dead_letters), 1u) << "kept, to be purged";
}

TEST_F(store_test, replay_takes_back_an_id_consumed_by_its_own_failure) {
  auto s = open();
  ASSERT_NE(s, nullptr);
  // Accepted as entry 3, failed there: the guard still names 3.
  ASSERT_TRUE(apply(*s, {journal_agent(5), letter(7, 3), guard(7, 3)}).ok());
  auto r = replay_all(*s);
  EXPECT_EQ(r.replayed, 1u);
  EXPECT_TRUE(r.problems.empty()) << r.problems[0];
  EXPECT_EQ(journal_seq_of(*s, 7), 5u);
}

TEST_F(store_test, replay_skips_an_id_accepted_again_after_its_failure) {
  auto s = open();
  ASSERT_NE(s, nullptr);
  // Failed at entry 3; accepted again (redelivered) as entry 4.
  ASSERT_TRUE(apply(*s, {journal_agent(5), letter(7, 3), guard(7, 4)}).ok());
  auto r = replay_all(*s);
  EXPECT_EQ(r.replayed, 0u);
  ASSERT_EQ(r.problems.size(), 1u);
  EXPECT_NE(r.problems[0].find("not the one that failed (3)"),
            std::string::npos)
    << r.problems[0];
}

TEST_F(store_test, replay_takes_back_one_of_two_letters_of_an_id) {
  auto s = open();
  ASSERT_NE(s, nullptr);
  ASSERT_TRUE(
    apply(*s, {journal_agent(5), letter(9, 0), letter(9, 0)}).ok());
  auto r = replay_all(*s);
  EXPECT_EQ(r.replayed, 1u);
  EXPECT_EQ(r.problems.size(), 1u);
  EXPECT_EQ(count(*s, db::journal), 1u);
}

} // namespace
