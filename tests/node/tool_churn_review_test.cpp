// Adversarial review of the tool-call hot path (de5fb3a, 08bc04d) on real
// nodes under churn: random delays, ignored cancellations, costs, retries,
// timeouts, crashes and restarts, then node stop and destruction, on the
// default pool and on injected executors. Seeded (VIGIL_SEED=<n>).

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "support/eventually.hpp"
#include "support/tool_chains.hpp"
#include "support/tool_fixture.hpp"
#include "vigil/node/node.hpp"

using namespace vigil;
using namespace vigil::test;
using namespace std::chrono_literals;

// -- real nodes under churn ----------------------------------------------------

namespace {

/// A dependency whose executions take a random time (some ignore their
/// cancellation), sometimes fail, and sometimes cost.
struct chaos_dep {
  std::atomic<int> executions{0};
  std::atomic<int> running{0};
  std::atomic<int> slow_pct{10};
  std::atomic<int> max_ms{30};
  std::atomic<bool> no_delay{false};
  tool_result<Pong> call(const Ping& req, tool_call& c) {
    ++executions;
    ++running;
    thread_local std::mt19937 rng{std::random_device{}()};
    int r = static_cast<int>(rng() % 100);
    if (!no_delay) {
      auto ms = r < slow_pct ? static_cast<int>(rng() % max_ms) : 0;
      bool ignore = rng() % 2;
      auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds{ms};
      while (std::chrono::steady_clock::now() < until) {
        if (!ignore && c.cancelled())
          break;
        std::this_thread::sleep_for(200us);
      }
      if (r % 7 == 3)
        std::this_thread::sleep_for(std::chrono::microseconds{rng() % 100});
    }
    --running;
    double cost = r % 5 == 0 ? 1.0 : 0.0;
    if (r % 4 == 1)
      return tool_error::transient("503");
    Pong p;
    p.set_n(req.n());
    return {p, cost};
  }
  static chaos_dep& get() {
    static chaos_dep d;
    return d;
  }
};

tool_decl chaos_decl(std::mt19937_64& rng) {
  tool_decl d;
  d.name = "dep";
  d.policy.timeout = std::chrono::milliseconds{20 + rng() % 80};
  d.policy.attempt_timeout = std::chrono::milliseconds{2 + rng() % 15};
  d.policy.retry.max_attempts = 1 + rng() % 3;
  d.policy.retry.initial = 1ms;
  d.policy.retry.max = 3ms;
  d.policy.breaker.enabled = rng() % 2;
  d.policy.breaker.consecutive_failures = 50;
  d.policy.breaker.open_for = 5ms;
  d.policy.breaker.max_open_for = 10ms;
  d.policy.bulkhead.max_concurrent = 1 + rng() % 4;
  d.policy.bulkhead.queue = rng() % 6;
  d.policy.budget.min_per_second = 1e6;
  return d;
}

/// Calls from `clients` threads and crashes (restarts) from one more,
/// for `run_for`, then stops the node with calls in flight; then every
/// place of the bulkhead must come back and the counters agree.
void churn(uint64_t seed, node_config cfg, int cells, std::chrono::milliseconds run_for,
           int clients = 3) {
  std::mt19937_64 rng{seed};
  auto& dep = chaos_dep::get();
  dep.executions = 0;
  std::shared_ptr<detail::tool_shared> sh;
  std::atomic<int> unanswered{0};
  std::atomic<int> calls{0};
  {
    node n{dep_types<chaos_dep>(), cfg};
    ASSERT_FALSE(n.start("root", dep_tree(cells, true, 100000, 1000ms)));
    auto* tool = n.rt()->find_tool("dep");
    ASSERT_NE(tool, nullptr);
    sh = tool->shared();
    std::atomic<bool> stop{false};
    std::vector<std::thread> ts;
    for (int k = 0; k < clients; ++k)
      ts.emplace_back([&, k, s = rng()] {
        std::mt19937_64 r{s};
        while (!stop) {
          Ping p;
          p.set_n(1 + r() % 4);
          auto path = "root/c" + std::to_string(r() % cells);
          auto t0 = std::chrono::steady_clock::now();
          auto res = n.call<Pong>(path, p, 3s);
          ++calls;
          if (std::chrono::steady_clock::now() - t0 > 2500ms)
            ++unanswered;
        }
      });
    ts.emplace_back([&, s = rng()] {
      std::mt19937_64 r{s};
      while (!stop) {
        std::this_thread::sleep_for(std::chrono::microseconds{r() % 3000});
        Crash c;
        c.set_why("chaos");
        (void)n.send("root/c" + std::to_string(r() % cells), c);
      }
    });
    std::this_thread::sleep_for(run_for);
    // Stop the tree while calls are in flight, then let the clients go.
    EXPECT_FALSE(n.stop());
    stop = true;
    for (auto& t : ts)
      t.join();
    // The node still there (its pools run what is queued): every place
    // comes back and every abandoned execution is counted out.
    EXPECT_TRUE(eventually([&] { return sh->in_use.load() == 0; }, 5s))
      << "seed " << seed << ": " << sh->in_use.load()
      << " places still held with the tree stopped";
    EXPECT_TRUE(eventually(
      [&] { return sh->stats.abandoned_running.load() == 0; }, 5s))
      << "seed " << seed << ": abandoned_running "
      << static_cast<int64_t>(sh->stats.abandoned_running.load())
      << " with the tree stopped";
  }
  EXPECT_EQ(unanswered.load(), 0) << "seed " << seed;
  EXPECT_GT(calls.load(), 0);
  std::cout << "  node calls " << calls.load() << ", tool calls "
            << sh->stats.calls.load() << ", executions "
            << sh->stats.executions.load() << ", abandoned "
            << sh->stats.abandoned.load() << ", bulkhead_full "
            << sh->stats.bulkhead_full.load() << ", retries "
            << sh->stats.retries.load() << ", ok "
            << sh->stats.succeeded_without_retry.load() + sh->stats.succeeded_with_retry.load()
            << std::endl;
  EXPECT_TRUE(eventually([&] { return dep.running.load() == 0; }, 5s));
  EXPECT_TRUE(eventually([&] { return sh->in_use.load() == 0; }, 5s))
    << "seed " << seed << ": " << sh->in_use.load() << " places still held";
  EXPECT_TRUE(eventually(
    [&] { return sh->stats.abandoned_running.load() == 0; }, 5s))
    << "seed " << seed << ": abandoned_running "
    << static_cast<int64_t>(sh->stats.abandoned_running.load());
  EXPECT_EQ(sh->stats.executions.load(),
            static_cast<uint64_t>(dep.executions.load()))
    << "seed " << seed;
}

} // namespace

TEST(tool_review19_node_test, churn_on_the_default_pool_gives_back_every_place) {
  auto seed = seed_for("churn_on_the_default_pool");
  std::mt19937_64 rng{seed};
  for (int i = 0; i < 3; ++i) {
    node_config cfg;
    cfg.tools.push_back(chaos_decl(rng));
    churn(rng(), cfg, 6, 1500ms);
    if (HasFailure()) {
      std::cout << "failed in node " << i << " of seed " << seed << std::endl;
      return;
    }
  }
}

namespace {

/// Runs each task on a thread of its own; says it is starved (a task
/// starts at once), so a draining cell submits to it at once. Joins its
/// threads when destroyed.
class thread_per_task_executor final : public tool_executor {
public:
  ~thread_per_task_executor() override {
    std::vector<std::thread> ts;
    {
      std::lock_guard<std::mutex> g{m_};
      ts.swap(ts_);
    }
    for (auto& t : ts)
      t.join();
  }
  void submit(std::function<void()> task) override {
    std::lock_guard<std::mutex> g{m_};
    ts_.emplace_back(std::move(task));
  }
  bool starved() const noexcept override {
    return true;
  }

private:
  std::mutex m_;
  std::vector<std::thread> ts_;
};

} // namespace

TEST(tool_review19_node_test, churn_on_an_inline_executor_ends) {
  auto seed = seed_for("churn_on_an_inline_executor");
  std::mt19937_64 rng{seed};
  chaos_dep::get().no_delay = true;
  for (int i = 0; i < 2 && !HasFailure(); ++i) {
    node_config cfg;
    cfg.tools.push_back(chaos_decl(rng));
    cfg.tool_executors = [](const tool_decl&) {
      return std::make_shared<inline_executor>();
    };
    churn(rng(), cfg, 6, 1500ms);
  }
  chaos_dep::get().no_delay = false;
}

TEST(tool_review19_node_test, churn_on_a_starved_thread_per_task_executor_ends) {
  auto seed = seed_for("churn_on_a_starved_thread_per_task_executor");
  std::mt19937_64 rng{seed};
  chaos_dep::get().max_ms = 10;
  for (int i = 0; i < 2 && !HasFailure(); ++i) {
    node_config cfg;
    cfg.tools.push_back(chaos_decl(rng));
    cfg.tool_executors = [](const tool_decl&) {
      return std::make_shared<thread_per_task_executor>();
    };
    churn(rng(), cfg, 6, 1500ms, 2);
  }
  chaos_dep::get().max_ms = 30;
}
