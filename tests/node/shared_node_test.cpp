// Shared state from agents on a real node: a journal handler's operations
// commit in its consume transaction, are dropped when it throws, and their
// callbacks run only in the instance that called; agents without a journal
// commit each operation on its own; leases expire and extend on an
// injected clock; bad calls and a node without a data dir fail at once.

#include <gtest/gtest.h>

#include <atomic>

#include "support/eventually.hpp"
#include "support/shared_node.hpp"
#include "support/shared_probe.hpp"
#include "support/temp_dir.hpp"
#include "vigil/actors/agent.hpp"
#include "vigil/node/node.hpp"
#include "vigil/persistence/shared.hpp"

using namespace vigil;
using namespace std::chrono_literals;
using test::probe_registry;
using test::ProbeOp;
using test::ProbeResult;
using test::ProbeState;

namespace {

class shared_node_test : public test::shared_node_fixture {
protected:
  void start(durability_mode mode, bool with_dir = true) {
    std::vector<child_spec> children;
    for (auto id : {"a", "b"}) {
      auto cs = worker(id, "probe").with_durability(mode);
      cs.max_deliveries = 3; // a throw is delivered again
      children.push_back(std::move(cs));
    }
    start_tree(probe_registry(), config(with_dir), std::move(children));
  }

  static ProbeOp op(std::string kind, std::string key = "k",
                    std::string value = {}, uint64_t expected = 0) {
    ProbeOp o;
    o.set_op(std::move(kind));
    o.set_key(std::move(key));
    o.set_value(std::move(value));
    o.set_expected(expected);
    return o;
  }

  static ProbeOp lease_op(std::string kind, const ProbeResult& claimed,
                          uint64_t lease_ms = 0) {
    ProbeOp o;
    o.set_op(std::move(kind));
    o.set_task(claimed.task());
    o.set_lease(claimed.lease());
    o.set_lease_ms(lease_ms);
    return o;
  }

  ProbeState probe_state(const std::string& who) {
    // A get answered by the probe itself is not needed: its state is in
    // the data dir's snapshot once committed.
    records::Snapshot snap;
    bool found = false;
    EXPECT_FALSE(nd_->rt()->storage()->snapshot("t/" + who, snap, found));
    ProbeState s;
    if (found)
      EXPECT_TRUE(s.ParseFromString(snap.state()));
    return s;
  }

};

TEST_F(shared_node_test, journal_put_commits_with_the_handlers_consume) {
  start(durability_mode::journal);
  // Every batch the writer applies: the probe's put must travel in the
  // same item as its state and the deletion of its journal entry.
  std::atomic<bool> together{false};
  nd_->rt()->storage()->set_apply_hook([&](write_item* const* items,
                                           size_t n) {
    for (size_t i = 0; i < n; ++i) {
      bool op = false, state = false, consumed = false;
      for (auto& m : items[i]->muts) {
        op |= m.what == mutation::op::shared;
        state |= m.where == db::snapshots && m.what == mutation::op::put;
        consumed |= m.where == db::journal && m.what == mutation::op::del;
      }
      if (op && state && consumed)
        together = true;
    }
    return false;
  });
  auto r = call("a", op("put", "k", "v1", 0));
  EXPECT_TRUE(r.error().empty()) << r.error();
  EXPECT_TRUE(r.applied());
  EXPECT_EQ(r.version(), 1u);
  EXPECT_EQ(r.writer(), "t/a");
  EXPECT_TRUE(together.load());
  nd_->rt()->storage()->set_apply_hook({});
  r = call("b", op("put", "k", "v2", 0)); // create-if-absent: conflict
  EXPECT_FALSE(r.applied());
  EXPECT_EQ(r.version(), 1u);
  EXPECT_EQ(r.value(), "v1");
  r = call("b", op("put", "k", "v2", 1));
  EXPECT_TRUE(r.applied());
  EXPECT_EQ(r.version(), 2u);
  r = call("a", op("get", "k"));
  EXPECT_EQ(r.value(), "v2");
  EXPECT_EQ(r.writer(), "t/b");
  r = call("a", op("delete", "k", {}, 2));
  EXPECT_TRUE(r.applied());
  r = call("a", op("get", "k"));
  EXPECT_FALSE(r.found());
  EXPECT_EQ(r.version(), 3u);
}

TEST_F(shared_node_test, a_failed_commit_applies_the_put_once_on_the_redelivery) {
  start(durability_mode::journal);
  std::atomic<int> failing{1};
  nd_->rt()->storage()->set_apply_hook([&](write_item* const* items,
                                           size_t n) {
    for (size_t i = 0; i < n; ++i)
      for (auto& m : items[i]->muts)
        if (m.what == mutation::op::shared && failing.fetch_sub(1) > 0)
          return true; // this commit fails: nothing of it is applied
    return false;
  });
  // The requester learns of the failed commit; the envelope stays in the
  // journal and the next instance applies it, put included, once.
  auto r = nd_->call<ProbeResult>("t/a", op("put", "k", "v", 0), 10s);
  nd_->rt()->storage()->set_apply_hook({});
  ProbeResult got;
  for (int i = 0; i < 400; ++i) { // bounded: at most 400 × 5 ms
    got = call("b", op("get", "k"));
    if (got.found())
      break;
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_TRUE(got.found());
  EXPECT_EQ(got.version(), 1u) << "the put was applied twice";
  EXPECT_EQ(got.writer(), "t/a");
}

TEST_F(shared_node_test, a_throw_after_the_call_drops_it_the_retry_applies_once) {
  start(durability_mode::journal);
  auto o = op("put", "k", "v", 0);
  o.set_throw_first(true);
  // The first delivery throws: its put is not committed, its callback never
  // runs; the redelivery (attempt 2) makes the put again, once.
  ASSERT_FALSE(nd_->send("t/a", o));
  ProbeResult got;
  for (int i = 0; i < 400; ++i) { // bounded: at most 400 × 5 ms
    got = call("b", op("get", "k"));
    if (got.found())
      break;
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_EQ(got.version(), 1u);
  for (auto& dl : nd_->dead_letters())
    ADD_FAILURE() << "dead letter at " << dl.path << ": " << dl.reason;
  // The put committed with the state of the run that made it.
  EXPECT_EQ(probe_state("a").handled(), 1); // the committed run only
  EXPECT_EQ(got.writer(), "t/a");
  EXPECT_EQ(call("b", op("get", "k")).version(), 1u);
}

TEST_F(shared_node_test, agents_without_a_journal_commit_each_call_alone) {
  start(durability_mode::none);
  auto r = call("a", op("put", "k", "1", 0));
  EXPECT_TRUE(r.applied()) << r.error();
  r = call("b", op("put", "k", "2", 1));
  EXPECT_TRUE(r.applied());
  r = call("a", op("put", "k", "x", 1));
  EXPECT_FALSE(r.applied());
  EXPECT_EQ(r.value(), "2");
}

TEST_F(shared_node_test, bad_calls_and_no_data_dir_fail_at_once) {
  start(durability_mode::none, false);
  auto r = call("a", op("put", "k", "v", 0));
  EXPECT_EQ(r.error(), "storage_failed");
  EXPECT_FALSE(nd_->stop());
  nd_.reset();
  start(durability_mode::journal);
  r = call("a", op("put", "", "v", 0));
  EXPECT_EQ(r.error(), "bad_payload");
  r = call("a", op("put", std::string(300, 'x'), "v", 0));
  EXPECT_EQ(r.error(), "bad_payload");
  r = call("a", lease_op("complete", ProbeResult{}));
  EXPECT_EQ(r.error(), "bad_payload");
}

TEST_F(shared_node_test, leases_expire_and_extend_on_the_injected_clock) {
  start(durability_mode::journal);
  ASSERT_TRUE(call("a", op("enqueue", "", "payload")).error().empty());
  auto c = op("claim");
  c.set_lease_ms(1000);
  auto first = call("a", c);
  ASSERT_FALSE(first.empty()) << first.error();
  EXPECT_EQ(first.attempts(), 1u);
  EXPECT_EQ(first.value(), "payload");
  EXPECT_TRUE(call("b", c).empty()); // held
  test::probe_wall += 900;
  auto ext = call("a", lease_op("extend", first, 1000));
  EXPECT_TRUE(ext.error().empty()) << ext.error();
  EXPECT_EQ(ext.expires_ms(), test::probe_wall.load() + 1000);
  test::probe_wall += 900; // past the first expiry, inside the extension
  EXPECT_TRUE(call("b", c).empty());
  test::probe_wall += 100; // the extension is over
  auto second = call("b", c);
  ASSERT_FALSE(second.empty());
  EXPECT_EQ(second.task(), first.task());
  EXPECT_EQ(second.attempts(), 2u);
  EXPECT_EQ(call("a", lease_op("complete", first)).error(), "lease_expired");
  EXPECT_EQ(call("a", lease_op("extend", first, 10)).error(), "lease_expired");
  EXPECT_TRUE(call("b", lease_op("complete", second)).error().empty());
  EXPECT_EQ(call("b", lease_op("complete", second)).error(), "lease_expired");
  auto none = lease_op("complete", second);
  none.set_task(999);
  EXPECT_EQ(call("b", none).error(), "not_found");
}

TEST_F(shared_node_test, the_writer_compacts_completed_tasks) {
  auto nc = config();
  nc.writer.task_retention = std::chrono::milliseconds{1};
  nc.writer.compact_every = std::chrono::milliseconds{20};
  auto cs = worker("a", "probe").with_durability(durability_mode::journal);
  start_tree(probe_registry(), std::move(nc), {cs});
  ASSERT_TRUE(call("a", op("enqueue", "", "p1")).error().empty());
  ASSERT_TRUE(call("a", op("enqueue", "", "p2")).error().empty());
  auto c = op("claim");
  c.set_lease_ms(60000);
  auto first = call("a", c);
  ASSERT_FALSE(first.empty());
  ASSERT_TRUE(call("a", lease_op("complete", first)).error().empty());
  // The completed task leaves (its done time is far past, on the injected
  // clock); the ready one stays.
  std::vector<records::TaskRecord> ts;
  ASSERT_TRUE(test::eventually(
    [&] {
      return !queue_tasks(*nd_->rt()->storage(), "jobs", ts)
             && ts.size() == 1;
    },
    10s));
  EXPECT_EQ(ts[0].state(), "ready");
  EXPECT_EQ(ts[0].payload(), "p2");
}

TEST_F(shared_node_test, inspect_lists_leases_with_their_holders) {
  start(durability_mode::journal);
  ASSERT_TRUE(call("a", op("enqueue", "", "p1")).error().empty());
  ASSERT_TRUE(call("a", op("enqueue", "", "p2")).error().empty());
  auto c = op("claim");
  c.set_lease_ms(60000);
  ASSERT_FALSE(call("b", c).empty());
  std::vector<queue_listing> qs;
  ASSERT_FALSE(queue_list(*nd_->rt()->storage(), qs));
  ASSERT_EQ(qs.size(), 1u);
  EXPECT_EQ(qs[0].ready, 1u);
  ASSERT_EQ(qs[0].live_leases.size(), 1u);
  EXPECT_EQ(qs[0].live_leases[0].holder(), "t/b");
}

} // namespace
