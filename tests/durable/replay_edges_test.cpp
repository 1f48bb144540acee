// Dead-letter replay end to end on det_node (found by a review of issue
// 11): a letter consumed by a failure that does not repeat (its deadline)
// is applied exactly once after replays and a restart; the letter of a
// journal agent that never consumed anything is taken back; a letter of
// message id 0 named twice is applied once.
#include <gtest/gtest.h>

#include "support/det_node.hpp"
#include "support/durable_agents.hpp"
#include "support/lifecycle_oracle.hpp"
#include "support/lifecycle_tree.hpp"
#include "support/temp_dir.hpp"

using namespace vigil;
using namespace vigil::test;
using namespace vigil::test::lifecycle;
using namespace std::chrono_literals;

namespace {

envelope add_env(int64_t n, uint64_t id, int64_t deadline) {
  Add a;
  a.set_n(n);
  envelope e;
  e.type = type_symbol(a);
  a.SerializeToString(&e.payload);
  e.id = id;
  e.trace_id = id;
  e.deadline = deadline;
  return e;
}

size_t replay_all(const std::string& dir, size_t& replayed,
                  std::vector<std::string>& problems) {
  store_options so;
  so.dir = dir;
  so.sync = sync_mode::nosync;
  std::unique_ptr<store> st;
  EXPECT_FALSE(store::open(so, st));
  EXPECT_FALSE(st->replay_dead_letters({}, true, problems, replayed));
  return replayed;
}

TEST(replay_edges_test, a_letter_consumed_by_a_deadline_is_replayed_once) {
  temp_dir dir;
  det_node nd{dir.path(), durable_registry()};
  ASSERT_FALSE(nd.start(tree()));
  nd.run();
  // Deadline 1 ns after the epoch: long past, so the journal agent accepts
  // it, then rejects it when it comes to handle it: a dead letter that
  // names the journal entry that consumed it.
  // Virtual time starts at 0: the deadline is 10 ms; the cell takes the
  // envelope in, is held until the deadline has passed, then handles it.
  auto cell = nd.cell("root/a");
  ASSERT_TRUE(cell);
  ASSERT_TRUE(nd.send("root/a", add_env(77, 77, 10'000'000)));
  nd.step(cell);
  nd.freeze(cell);
  nd.advance(100ms);
  nd.thaw_all();
  cell = nullptr; // the node must be able to end it
  nd.run();
  nd.advance(100ms);
  nd.stop();
  {
    size_t n = 0;
    std::vector<std::string> problems;
    replay_all(dir.path(), n, problems);
    EXPECT_EQ(n, 1u) << (problems.empty() ? "" : problems.front());
  }
  ASSERT_FALSE(nd.start(tree()));
  nd.run();
  nd.advance(300ms);
  nd.stop();
  {
    size_t n = 0;
    std::vector<std::string> problems;
    replay_all(dir.path(), n, problems);
    EXPECT_EQ(n, 0u) << "a second replay finds nothing to take back";
  }
  ASSERT_FALSE(nd.start(tree()));
  nd.run();
  nd.advance(300ms);
  nd.stop();
  lifecycle_facts facts;
  facts.sent["root/a"].insert(77);
  auto f = check_journal_guarantee(dir.path(), facts);
  for (auto& p : f.problems)
    ADD_FAILURE() << p;
  EXPECT_EQ(f.applied, 1u) << "the replayed envelope is applied once";
}

} // namespace

namespace {

// A journal agent that has not consumed an envelope yet has no snapshot
// record; replay (persistence/src/replay.cpp:50-61) takes that to mean
// "not a journal agent" and refuses its dead letters, though the agent is
// in the tree, running, as a journal agent.
TEST(replay_edges_test, a_letter_of_a_journal_agent_that_never_consumed_is_replayed) {
  temp_dir dir;
  det_node nd{dir.path(), durable_registry()};
  ASSERT_FALSE(nd.start(tree()));
  nd.run();
  auto root = nd.cell("root");
  auto t = nd.call(det_node::answer::unit, root, terminate_child_atom::value,
                   std::string{"a"});
  nd.run();
  ASSERT_TRUE(nd.result(t).done);
  root = nullptr;
  // Stopped: the cell answers not_running, a dead letter never accepted.
  nd.send("root/a", add_env(5, 5, 0));
  nd.run();
  nd.stop();
  {
    store_options so;
    so.dir = dir.path();
    so.sync = sync_mode::nosync;
    std::unique_ptr<store> st;
    ASSERT_FALSE(store::open(so, st));
    std::vector<records::DeadLetter> dls;
    ASSERT_FALSE(st->dead_letters(dls));
    ASSERT_EQ(dls.size(), 1u);
    std::vector<std::string> problems;
    size_t n = 0;
    ASSERT_FALSE(st->replay_dead_letters({dls[0].seq()}, false,
                                         problems, n));
    EXPECT_EQ(n, 1u) << (problems.empty() ? "" : problems.front());
  }
  ASSERT_FALSE(nd.start(tree()));
  nd.run();
  nd.advance(300ms);
  nd.stop();
  lifecycle_facts facts;
  facts.sent["root/a"].insert(5);
  auto f = check_journal_guarantee(dir.path(), facts);
  for (auto& p : f.problems)
    ADD_FAILURE() << p;
  EXPECT_EQ(f.applied, 1u);
}

} // namespace

namespace {

// A dead letter of an envelope with message id 0 (the default of
// vigil::envelope, which a producer that builds envelopes itself may send):
// replay skips the guard check for id 0 (persistence/src/replay.cpp:84) and
// writes no guard (replay.cpp:127), so naming the letter twice puts it into
// the journal twice and the agent applies it twice. The live path treats
// id 0 as any other id (a guard for it; a second copy is a duplicate).
TEST(replay_edges_test, a_letter_of_message_id_zero_named_twice_is_applied_once) {
  temp_dir dir;
  det_node nd{dir.path(), durable_registry()};
  ASSERT_FALSE(nd.start(tree()));
  nd.run();
  nd.send("root/a", add_env(1, 1, 0)); // consumed: root/a has a snapshot
  nd.run();
  auto root = nd.cell("root");
  auto t = nd.call(det_node::answer::unit, root, terminate_child_atom::value,
                   std::string{"a"});
  nd.run();
  ASSERT_TRUE(nd.result(t).done);
  root = nullptr;
  // Stopped: the cell answers not_running, a dead letter never accepted.
  nd.send("root/a", add_env(5, 0, 0));
  nd.run();
  nd.stop();
  {
    store_options so;
    so.dir = dir.path();
    so.sync = sync_mode::nosync;
    std::unique_ptr<store> st;
    ASSERT_FALSE(store::open(so, st));
    std::vector<records::DeadLetter> dls;
    ASSERT_FALSE(st->dead_letters(dls));
    ASSERT_EQ(dls.size(), 1u);
    std::vector<std::string> problems;
    size_t n = 0;
    ASSERT_FALSE(st->replay_dead_letters({dls[0].seq(), dls[0].seq()}, false,
                                         problems, n));
    EXPECT_EQ(n, 1u) << "one dead letter, named twice; "
                     << (problems.empty() ? "" : problems.front());
  }
  ASSERT_FALSE(nd.start(tree()));
  nd.run();
  nd.advance(300ms);
  nd.stop();
  lifecycle_facts facts;
  facts.sent["root/a"].insert(1);
  facts.sent["root/a"].insert(5);
  auto f = check_journal_guarantee(dir.path(), facts);
  for (auto& p : f.problems)
    ADD_FAILURE() << p;
  EXPECT_EQ(f.applied, 2u);
}

} // namespace
