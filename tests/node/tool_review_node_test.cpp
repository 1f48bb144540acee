// Adversarial review of issue 16 (tool calls) on a real node: stopping a
// node while calls to a healthy dependency are in flight, and a node
// destroyed while a tool hangs.

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "support/eventually.hpp"
#include "support/node_dependency.hpp"
#include "support/temp_dir.hpp"
#include "support/tool_fixture.hpp"
#include "vigil/node/node.hpp"
#include "vigil/persistence/store.hpp"

using namespace vigil;
using namespace vigil::test;
using namespace std::chrono_literals;

namespace {

tool_decl dep_decl() {
  tool_decl d;
  d.name = "dep";
  d.policy.timeout = 20s;
  d.policy.attempt_timeout = 20s;
  d.policy.bulkhead.max_concurrent = 4;
  return d;
}

class tool_review_node_test : public ::testing::Test {
protected:
  void SetUp() override {
    dependency::get().reset();
  }
};

} // namespace

// Stopping a node while three calls to a healthy (slow) dependency run:
// the cell's exit abandons each as a failure of the dependency, the
// breaker opens, the opening is kept in LMDB, and the next start of the
// node refuses every call with circuit_open for 30 s although the
// dependency never failed.
TEST_F(tool_review_node_test, stopping_a_node_mid_call_keeps_the_breaker_closed) {
  temp_dir dir;
  auto& dep = dependency::get();
  dep.delay_ms = 15000;
  node_config cfg;
  cfg.data_dir = dir.path();
  cfg.sync = sync_mode::nosync;
  cfg.tools.push_back(dep_decl());
  {
    node n{dependency_types(), cfg};
    ASSERT_FALSE(n.start("root", dependency_caller_tree()));
    std::vector<std::thread> callers;
    for (int i = 1; i <= 3; ++i)
      callers.emplace_back([&n, i] { (void)n.call<Pong>("root/c", ping(i), 15s); });
    ASSERT_TRUE(eventually([&] { return dep.running.load() == 3; }, 10s));
    EXPECT_FALSE(n.stop());
    for (auto& t : callers)
      t.join();
    auto v = n.rt()->find_tool("dep")->look();
    EXPECT_STREQ(to_string(v.state), "closed")
      << "openings: " << v.openings;
  }
  ASSERT_TRUE(eventually([&] { return dep.running.load() == 0; }, 10s));
  dep.delay_ms = 0;
  node n{dependency_types(), cfg};
  ASSERT_FALSE(n.start("root", dependency_caller_tree()));
  EXPECT_STREQ(to_string(n.rt()->find_tool("dep")->look().state), "closed");
  auto r = n.call<Pong>("root/c", ping(10), 5s);
  EXPECT_TRUE(r) << describe(r.error());
}

// A node with a data dir destroyed while an execution hangs and ignores
// its cancellation (the case thread_pool's destructor is written for: wait
// `grace`, then leave the task on its own thread). The execution's task
// holds a strong handle to its cell (`self` in cell::start_attempt), the
// cell holds the runtime, and the runtime holds the writer, a detached
// actor: ~actor_system (await_detached_threads) waits until the writer is
// destroyed, i.e. until the hung tool returns. ~node blocks for as long
// as the dependency hangs (for ever, for a tool that never returns); the
// data dir's lock is held as long.
TEST_F(tool_review_node_test, a_node_destroyed_while_a_tool_hangs_ends_in_bounded_time) {
  temp_dir dir;
  auto& dep = dependency::get();
  dep.delay_ms = 60000;
  dep.ignore_cancel = true; // returns on `release` only
  node_config cfg;
  cfg.data_dir = dir.path();
  cfg.sync = sync_mode::nosync;
  cfg.tools.push_back(dep_decl());
  // A watchdog lets the hung dependency go after 20 s, so that the test
  // ends whatever ~node does.
  std::atomic<bool> node_gone{false};
  std::thread watchdog{[&] {
    (void)eventually([&] { return node_gone.load(); }, 20s);
    dep.release = true;
  }};
  auto n = std::make_unique<node>(dependency_types(), cfg);
  ASSERT_FALSE(n->start("root", dependency_caller_tree()));
  auto r = n->call<Pong>("root/c", ping(1), 300ms);
  EXPECT_FALSE(r);
  EXPECT_EQ(dep.running.load(), 1);
  auto t0 = std::chrono::steady_clock::now();
  n.reset();
  auto took = std::chrono::steady_clock::now() - t0;
  bool released_first = dep.release.load();
  node_gone = true;
  watchdog.join();
  EXPECT_LT(took, 10s) << "~node took "
                       << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
                       << " ms";
  EXPECT_FALSE(released_first)
    << "~node returned only after the hung tool was let go";
  // Cleanup: wait until the execution returned and its node is really
  // gone (a node can open the data dir again) before the process goes on.
  dep.release = true;
  EXPECT_TRUE(eventually([&] { return dep.returned.load() == 1; }, 20s));
  EXPECT_TRUE(eventually(
    [&] {
      node n2{dependency_types(), cfg};
      return !n2.start("root", dependency_caller_tree());
    },
    20s));
}

// A breaker record kept in LMDB is taken at face value at node start: its
// open_until (wall clock) is restored whatever the tool's policy allows.
// A record written while the wall clock was wrong (or a damaged but
// parsable one) keeps a tool whose breaker opens for at most 5 minutes
// (max_open_for) refused for 10 days, without a word: restore_breaker
// (node/src/node.cpp) does not cap the time left by the policy.
TEST_F(tool_review_node_test, a_stored_breaker_stays_open_no_longer_than_its_policy_allows) {
  temp_dir dir;
  auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                  std::chrono::system_clock::now().time_since_epoch())
                  .count();
  {
    store_options so;
    so.dir = dir.path();
    std::unique_ptr<store> st;
    ASSERT_FALSE(store::open(so, st));
    records::BreakerState b;
    b.set_tool("dep");
    b.set_state(1); // open
    b.set_updated_unix_ms(now_ms);
    b.set_open_until_unix_ms(now_ms + int64_t{10} * 24 * 3600 * 1000);
    b.set_trips(1);
    write_item item;
    item.muts.push_back({mutation::op::put, db::meta, "breaker/dep",
                         encode_record(b)});
    write_item* items[] = {&item};
    write_result res[1];
    ASSERT_FALSE(st->apply(items, 1, res));
  }
  node_config cfg;
  cfg.data_dir = dir.path();
  cfg.sync = sync_mode::nosync;
  auto d = dep_decl();
  d.policy.breaker.open_for = 30s;
  d.policy.breaker.max_open_for = 5min;
  cfg.tools.push_back(d);
  node n{dependency_types(), cfg};
  ASSERT_FALSE(n.start("root", dependency_caller_tree()));
  auto v = n.rt()->find_tool("dep")->look();
  EXPECT_LE(v.retry_after, std::chrono::minutes{5})
    << "open for "
    << std::chrono::duration_cast<std::chrono::hours>(v.retry_after).count()
    << " h more";
}
