// vigil::node on CAF's real scheduler (two threads): calls, restarts and the
// shutdown specs. Every wait has a deadline; nothing sleeps for a condition.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <string>
#include <vector>

#include "support/test_agents.hpp"
#include "vigil/node/node.hpp"

using namespace std::chrono_literals;
using namespace vigil;
using namespace vigil::test;

namespace {

constexpr auto deadline = 10s;

// -- an agent that records the order of on_stop calls --------------------------

std::mutex order_mtx;
std::vector<std::string> stop_order;

class orderly : public agent<Counter> {
public:
  static void define(handlers<orderly>& h) {
    h.on<Ping>([](orderly&, context& ctx, const Ping& m) {
      Pong p;
      p.set_n(m.n());
      p.set_from(ctx.path());
      return p;
    });
  }
  void on_stop(context& ctx) override {
    std::lock_guard<std::mutex> g{order_mtx};
    stop_order.push_back(ctx.path());
  }
};

registry node_registry() {
  auto r = test_registry();
  r.add<orderly>("orderly");
  return r;
}

node_config two_threads() {
  node_config nc;
  nc.threads = 2;
  return nc;
}

Ping ping(int64_t n) {
  Ping p;
  p.set_n(n);
  return p;
}

supervisor_spec one_worker(child_spec w) {
  supervisor_spec spec;
  spec.flags.intensity = 5;
  spec.children.push_back(std::move(w));
  return spec;
}

const child_info* find(const std::vector<child_info>& xs,
                       const std::string& id) {
  for (auto& x : xs)
    if (x.id == id)
      return &x;
  return nullptr;
}

/// An on_stop hook that blocks (the first time it runs) until released.
struct blocking_stop {
  std::promise<void> entered;
  std::promise<void> release;
  std::promise<void> left;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<int> calls{0};
  std::atomic<bool> inside{false};

  void install() {
    switches::get().on_stop_hook = [this] {
      if (calls.fetch_add(1) != 0)
        return;
      inside = true;
      entered.set_value();
      // Bounded, so that a failing test cannot hang the node forever.
      released.wait_for(deadline);
      inside = false;
      left.set_value();
    };
  }
};

class node_test : public ::testing::Test {
protected:
  void SetUp() override {
    switches::get().reset();
    std::lock_guard<std::mutex> g{order_mtx};
    stop_order.clear();
  }
  void TearDown() override {
    switches::get().reset();
  }
};

TEST_F(node_test, start_and_call_round_trip) {
  node n{node_registry(), two_threads()};
  auto err = n.start("app", one_worker(worker("w", "echo")));
  ASSERT_FALSE(err) << describe(err);
  auto r = n.call<Pong>("app/w", ping(7), deadline);
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_EQ(r->value.n(), 7);
  EXPECT_EQ(r->value.from(), "app/w");
  EXPECT_EQ(r->value.seen(), 1);
  EXPECT_FALSE(r->degraded);
  auto missing = n.call<Pong>("app/nobody", ping(1), deadline);
  ASSERT_FALSE(missing);
  EXPECT_TRUE(is(missing.error(), errc::not_found));
}

TEST_F(node_test, crash_then_call_again_works) {
  node n{node_registry(), two_threads()};
  ASSERT_FALSE(n.start("app", one_worker(worker("w", "echo"))));
  ASSERT_TRUE(n.call<Pong>("app/w", ping(1), deadline));
  Crash c;
  c.set_why("boom");
  auto failed = n.call<Pong>("app/w", c, deadline);
  ASSERT_FALSE(failed);
  EXPECT_TRUE(is(failed.error(), errc::handler_failed))
    << describe(failed.error());
  auto r = n.call<Pong>("app/w", ping(2), deadline);
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_EQ(r->value.seen(), 1) << "the reply is not from a new instance";
  auto kids = n.which_children("app");
  ASSERT_TRUE(kids) << describe(kids.error());
  auto* w = find(*kids, "w");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->restarts, 1u);
  EXPECT_EQ(w->status, "running");
  EXPECT_EQ(switches::get().start_count("app/w"), 2);
}

TEST_F(node_test, shutdown_timeout_kills_a_blocked_on_stop) {
  blocking_stop hook;
  hook.install();
  auto entered = hook.entered.get_future();
  auto left = hook.left.get_future();
  node n{node_registry(), two_threads()};
  ASSERT_FALSE(n.start("app", one_worker(worker("w", "echo").with_shutdown(
                                shutdown_spec::after(100ms)))));
  ASSERT_TRUE(n.call<Pong>("app/w", ping(1), deadline));
  auto t0 = std::chrono::steady_clock::now();
  auto err = n.terminate_child("app", "w");
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_FALSE(err) << describe(err);
  // terminate_child returned after the timeout, while on_stop still blocks.
  ASSERT_EQ(entered.wait_for(0s), std::future_status::ready);
  EXPECT_TRUE(hook.inside);
  EXPECT_EQ(left.wait_for(0s), std::future_status::timeout);
  EXPECT_GE(took, 100ms);
  EXPECT_EQ(switches::get().stop_count("app/w"), 0);
  auto kids = n.which_children("app");
  ASSERT_TRUE(kids);
  ASSERT_NE(find(*kids, "w"), nullptr);
  EXPECT_EQ(find(*kids, "w")->status, "stopped");
  hook.release.set_value();
  ASSERT_EQ(left.wait_for(deadline), std::future_status::ready);
  // The child can be started again, in a new cell.
  auto again = n.restart_child("app", "w");
  ASSERT_TRUE(again) << describe(again.error());
  EXPECT_EQ(again->status, "running");
  auto r = n.call<Pong>("app/w", ping(2), deadline);
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_EQ(r->value.seen(), 1);
}

TEST_F(node_test, brutal_kill_skips_on_stop) {
  std::atomic<int> hook_calls{0};
  switches::get().on_stop_hook = [&] { ++hook_calls; };
  node n{node_registry(), two_threads()};
  ASSERT_FALSE(n.start("app", one_worker(worker("w", "echo").with_shutdown(
                                shutdown_spec::brutal_kill()))));
  ASSERT_TRUE(n.call<Pong>("app/w", ping(1), deadline));
  auto err = n.terminate_child("app", "w");
  EXPECT_FALSE(err) << describe(err);
  auto kids = n.which_children("app");
  ASSERT_TRUE(kids);
  EXPECT_EQ(find(*kids, "w")->status, "stopped");
  EXPECT_EQ(switches::get().stop_count("app/w"), 0);
  EXPECT_EQ(hook_calls.load(), 0);
  // A stopped child does not answer.
  auto r = n.call<Pong>("app/w", ping(2), deadline);
  ASSERT_FALSE(r);
  EXPECT_TRUE(is(r.error(), errc::not_running)) << describe(r.error());
  n.stop();
  EXPECT_EQ(switches::get().stop_count("app/w"), 0);
  EXPECT_EQ(hook_calls.load(), 0);
}

TEST_F(node_test, shutdown_infinity_waits_for_on_stop) {
  blocking_stop hook;
  hook.install();
  auto entered = hook.entered.get_future();
  node n{node_registry(), two_threads()};
  ASSERT_FALSE(n.start("app", one_worker(worker("w", "echo").with_shutdown(
                                shutdown_spec::infinity()))));
  auto term = std::async(std::launch::async,
                         [&] { return n.terminate_child("app", "w"); });
  ASSERT_EQ(entered.wait_for(deadline), std::future_status::ready);
  // Well past any timeout a default spec would use here (100ms in the test
  // above), terminate_child is still waiting for on_stop.
  EXPECT_EQ(term.wait_for(300ms), std::future_status::timeout);
  EXPECT_TRUE(hook.inside);
  hook.release.set_value();
  ASSERT_EQ(term.wait_for(deadline), std::future_status::ready);
  auto err = term.get();
  EXPECT_FALSE(err) << describe(err);
  EXPECT_EQ(switches::get().stop_count("app/w"), 1);
}

TEST_F(node_test, stop_stops_children_in_reverse_start_order) {
  supervisor_spec inner;
  inner.children.push_back(worker("x", "orderly"));
  inner.children.push_back(worker("y", "orderly"));
  supervisor_spec spec;
  spec.children.push_back(worker("a", "orderly"));
  spec.children.push_back(supervisor("sub", inner));
  spec.children.push_back(worker("c", "orderly"));
  node n{node_registry(), two_threads()};
  ASSERT_FALSE(n.start("app", spec));
  ASSERT_TRUE(n.call<Pong>("app/sub/y", ping(1), deadline));
  auto err = n.stop();
  EXPECT_FALSE(err) << describe(err);
  std::lock_guard<std::mutex> g{order_mtx};
  EXPECT_EQ(stop_order, (std::vector<std::string>{"app/c", "app/sub/y",
                                                  "app/sub/x", "app/a"}));
}

} // namespace
