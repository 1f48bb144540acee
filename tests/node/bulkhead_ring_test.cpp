// Adversarial review of 530acfb (one cell kept per pool, a thread to
// spare): the bulkhead's documented guarantee (README, Bulkhead: "Each tool
// runs on its own pool of bulkhead.max_concurrent threads ... at most
// bulkhead.queue more calls wait") counted with a tool that records how
// many of its executions run at once; executions never waiting behind an
// agent's code kept on a pool thread; the `keeping` flag never left set
// (after crashes in kept callbacks, a randomized run). Real node, real
// threads.
//
//   VIGIL_BULK_SEEDS=N   seeds to run (default 6)
//   VIGIL_BULK_SEED=S    run only seed S

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <pthread.h>

#include <gtest/gtest.h>

#include "proto/test.pb.h"
#include "support/ring_support.hpp"
#include "support/seeds.hpp"
#include "support/eventually.hpp"
#include "vigil/node/node.hpp"

using namespace vigil;
using namespace vigil::test;
using namespace std::chrono_literals;

namespace {

/// What the tool and the agents saw (one test at a time).
struct bstats {
  std::mutex mtx;
  std::condition_variable cv;
  int inside = 0;          // executions running now
  int max_inside = 0;      // the most seen at once
  int entered = 0;         // executions started
  int hold_until = 0;      // an execution waits (bounded) until this many run at once
  std::chrono::milliseconds hold{0};
  std::atomic<int> work_us{0};       // each execution's own latency
  std::atomic<int> callbacks{0};
  std::atomic<int> on_pool{0};
  std::atomic<int> errors{0};
  std::atomic<int> blocked{0};       // slow callbacks now blocked
  bool release = false;              // slow callbacks may return

  void reset() {
    std::lock_guard<std::mutex> g{mtx};
    inside = max_inside = entered = hold_until = 0;
    hold = 0ms;
    work_us = 0;
    callbacks = on_pool = errors = blocked = 0;
    release = false;
  }
  static bstats& get() {
    static bstats s;
    return s;
  }
};

/// On Ping{n}: n calls of the tool at once (params: tool); answers
/// Pong{n: successes, seen: failures} when all are answered. On Add{k}: one
/// call whose callback blocks until the test releases it (bounded), or, with
/// k < 0, throws.
class fanner : public agent<> {
public:
  explicit fanner(const params& ps) : tool_(ps.at("tool")) {
    // nop
  }

  static void define(handlers<fanner>& h) {
    h.on<Ping>(&fanner::fan);
    h.on<Add>(&fanner::slow);
  }

  void fan(context& ctx, const Ping& req) {
    auto rp = ctx.defer();
    auto left = std::make_shared<int64_t>(req.n());
    auto ok = std::make_shared<int64_t>(0);
    auto bad = std::make_shared<int64_t>(0);
    auto done = [rp, left, ok, bad]() mutable {
      if (--*left == 0) {
        Pong p;
        p.set_n(*ok);
        p.set_seen(*bad);
        rp.deliver(p);
      }
    };
    if (req.n() == 0) {
      Pong p;
      rp.deliver(p);
      return;
    }
    for (int64_t i = 0; i < req.n(); ++i) {
      Ping p;
      p.set_n(i);
      ctx.call_tool<Pong>(
        tool_, p, tool_options{},
        [done, ok](Pong) mutable {
          auto& s = bstats::get();
          ++s.callbacks;
          if (on_tool_thread())
            ++s.on_pool;
          ++*ok;
          done();
        },
        [done, bad](const caf::error&) mutable {
          ++bstats::get().errors;
          ++*bad;
          done();
        });
    }
  }

  void slow(context& ctx, const Add& a) {
    auto rp = ctx.defer();
    bool crash = a.n() < 0;
    Ping p;
    p.set_n(a.n());
    ctx.call_tool<Pong>(
      tool_, p, tool_options{},
      [rp, crash](Pong) mutable {
        auto& s = bstats::get();
        ++s.callbacks;
        if (on_tool_thread())
          ++s.on_pool;
        if (crash) {
          Pong out; // answered first: the caller waits for nothing
          rp.deliver(out);
          throw std::runtime_error("crash in a callback");
        }
        ++s.blocked;
        {
          std::unique_lock<std::mutex> g{s.mtx};
          s.cv.wait_for(g, 20s, [&] { return s.release; });
        }
        --s.blocked;
        Pong out;
        out.set_n(1);
        rp.deliver(out);
      },
      [rp](const caf::error& err) mutable { rp.fail(err); });
  }

private:
  std::string tool_;
};

registry bulk_types() {
  registry r;
  r.add<fanner>("fanner");
  auto fn = [](const Ping& req, tool_call&) -> tool_result<Pong> {
    auto& s = bstats::get();
    {
      std::unique_lock<std::mutex> g{s.mtx};
      ++s.entered;
      s.max_inside = std::max(s.max_inside, ++s.inside);
      s.cv.notify_all();
      // Held (bounded) until more run at once than the bulkhead allows:
      // a bulkhead that holds never gets there and each waits `hold`.
      if (s.hold.count() > 0)
        s.cv.wait_for(g, s.hold, [&] { return s.inside >= s.hold_until; });
    }
    if (auto us = s.work_us.load(); us > 0) // the dependency's latency
      std::this_thread::sleep_for(std::chrono::microseconds{us});
    {
      std::lock_guard<std::mutex> g{s.mtx};
      --s.inside;
    }
    Pong p;
    p.set_n(req.n());
    return p;
  };
  r.add_tool<Ping, Pong>("rec", fn);
  // Its calls wait (as on I/O): a result may run its agent on the pool
  // thread (ring).
  r.tool_waits_on_io("rec");
  return r;
}

tool_decl rec_pool(std::string name, uint32_t threads, uint32_t queue) {
  auto d = pool_of(std::move(name), threads, "rec", queue);
  d.policy.timeout = 30s;
  d.policy.attempt_timeout = 30s;
  d.policy.retry.max_attempts = 1;
  d.policy.breaker.enabled = false;
  return d;
}

child_spec fan_child(std::string id, std::string tool) {
  child_spec c;
  c.id = std::move(id);
  c.agent = "fanner";
  c.params = {{"tool", std::move(tool)}};
  return c;
}

class bulkhead_ring_test : public ::testing::Test {
protected:
  void SetUp() override {
    bstats::get().reset();
  }
  void TearDown() override {
    auto& s = bstats::get();
    std::lock_guard<std::mutex> g{s.mtx};
    s.release = true;
    s.cv.notify_all();
  }
};

void release_slow() {
  auto& s = bstats::get();
  std::lock_guard<std::mutex> g{s.mtx};
  s.release = true;
  s.cv.notify_all();
}

int max_inside() {
  auto& s = bstats::get();
  std::lock_guard<std::mutex> g{s.mtx};
  return s.max_inside;
}

/// max_concurrent executions at most, with calls queued behind them.
void bulkhead_holds(uint32_t mc) {
  SCOPED_TRACE("max_concurrent " + std::to_string(mc));
  bstats::get().reset();
  auto& s = bstats::get();
  {
    std::lock_guard<std::mutex> g{s.mtx};
    s.hold = 300ms;
    s.hold_until = static_cast<int>(mc) + 1;
  }
  node_config cfg;
  cfg.threads = 2;
  cfg.tools.push_back(rec_pool("rec", mc, 16));
  supervisor_spec tree;
  tree.children.push_back(fan_child("f", "rec"));
  node n{bulk_types(), cfg};
  ASSERT_FALSE(n.start("root", std::move(tree)));
  Ping p;
  p.set_n(static_cast<int64_t>(mc) * 3);
  auto r = n.call<Pong>("root/f", p, 30s);
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_EQ(r->value.n(), p.n());
  EXPECT_LE(max_inside(), static_cast<int>(mc))
    << "executions of a tool with bulkhead.max_concurrent = " << mc
    << " ran " << max_inside() << " at once";
  EXPECT_FALSE(n.stop());
}

} // namespace

// -- defect: the spare thread runs executions too ---------------------------

TEST_F(bulkhead_ring_test, at_most_max_concurrent_executions_run_at_once_1) {
  bulkhead_holds(1);
}

TEST_F(bulkhead_ring_test, at_most_max_concurrent_executions_run_at_once_2) {
  bulkhead_holds(2);
}

// -- executions never wait behind agent code --------------------------------

namespace {

/// `slow_agents` agents' callbacks block (the first kept on a pool thread,
/// if it was idle); another agent's calls of the same tool still run and
/// answer meanwhile.
void calls_pass_blocked_callbacks(uint32_t mc, int slow_agents) {
  SCOPED_TRACE("max_concurrent " + std::to_string(mc) + ", "
               + std::to_string(slow_agents) + " blocked callbacks");
  bstats::get().reset();
  auto& s = bstats::get();
  node_config cfg;
  cfg.threads = static_cast<size_t>(slow_agents) + 2;
  cfg.tools.push_back(rec_pool("rec", mc, 16));
  supervisor_spec tree;
  for (int i = 0; i < slow_agents; ++i)
    tree.children.push_back(fan_child("s" + std::to_string(i), "rec"));
  tree.children.push_back(fan_child("f", "rec"));
  node n{bulk_types(), cfg};
  ASSERT_FALSE(n.start("root", std::move(tree)));
  std::vector<std::thread> slow;
  struct joiner {
    std::vector<std::thread>& ts;
    ~joiner() {
      release_slow();
      for (auto& t : ts)
        if (t.joinable())
          t.join();
    }
  } join_all{slow};
  for (int i = 0; i < slow_agents; ++i)
    slow.emplace_back([&n, i] {
      Add a;
      a.set_n(1);
      (void)n.call<Pong>("root/s" + std::to_string(i), a, 30s);
    });
  ASSERT_TRUE(vigil::test::eventually(
    [&] { return s.blocked.load() == slow_agents; }, 10s))
    << s.blocked.load() << " callbacks blocked";
  int kept = s.on_pool.load();
  Ping p;
  p.set_n(static_cast<int64_t>(mc) * 4);
  auto t0 = std::chrono::steady_clock::now();
  auto r = n.call<Pong>("root/f", p, 5s);
  auto took = std::chrono::steady_clock::now() - t0;
  release_slow();
  for (auto& t : slow)
    t.join();
  ASSERT_TRUE(r) << describe(r.error()) << " (with " << kept
                 << " blocked callbacks on a pool thread)";
  EXPECT_EQ(r->value.n(), p.n());
  EXPECT_LT(took, 3s);
  EXPECT_LE(max_inside(), static_cast<int>(mc));
  std::cout << kept << " of " << slow_agents
            << " blocked callbacks ran on a pool thread\n";
  EXPECT_FALSE(n.stop());
}

} // namespace

TEST_F(bulkhead_ring_test, calls_pass_one_blocked_callback_1) {
  calls_pass_blocked_callbacks(1, 1);
}
TEST_F(bulkhead_ring_test, calls_pass_two_blocked_callbacks_1) {
  calls_pass_blocked_callbacks(1, 2);
}
TEST_F(bulkhead_ring_test, calls_pass_two_blocked_callbacks_2) {
  calls_pass_blocked_callbacks(2, 2);
}

// -- `keeping` never left set -------------------------------------------------

namespace {

/// A chain of idle waits: does the pool still keep cells (callbacks on a
/// pool thread)? One agent calling with 5 ms latency, one call at a time.
int kept_of(node& n, const std::string& path, int calls) {
  auto& s = bstats::get();
  s.work_us = 5000;
  int before = s.on_pool.load();
  for (int i = 0; i < calls; ++i) {
    Ping p;
    p.set_n(1);
    auto r = n.call<Pong>(path, p, 10s);
    EXPECT_TRUE(r);
  }
  s.work_us = 0;
  return s.on_pool.load() - before;
}

} // namespace

TEST_F(bulkhead_ring_test, a_pool_keeps_cells_after_crashes_in_kept_callbacks) {
  node_config cfg;
  cfg.threads = 2;
  cfg.tools.push_back(rec_pool("rec", 1, 16));
  supervisor_spec tree;
  tree.flags.intensity = 1000;
  tree.children.push_back(fan_child("c", "rec"));
  tree.children.push_back(fan_child("f", "rec"));
  node n{bulk_types(), cfg};
  ASSERT_FALSE(n.start("root", std::move(tree)));
  EXPECT_GE(kept_of(n, "root/f", 10), 7);
  // Callbacks that throw, kept on the pool thread (the agent waited).
  bstats::get().work_us = 5000;
  for (int i = 0; i < 10; ++i) {
    Add a;
    a.set_n(-1);
    (void)n.call<Pong>("root/c", a, 5s);
  }
  EXPECT_GE(kept_of(n, "root/f", 10), 7) << "the pool no longer keeps cells";
  EXPECT_FALSE(n.stop());
}

// -- randomized, with a model -------------------------------------------------

namespace {

/// One seed: 1 to 3 tools of 1 to 3 threads and queues of 0 to 8, agents
/// fanning out 1 to 10 calls at once, with latencies of 0 to 500 µs, some
/// crashing in a kept callback. Model: every call answered (a Pong or
/// bulkhead_full) exactly once; a fan-out of at most max_concurrent + queue
/// calls from an agent alone on its tool is never refused; never more than
/// max_concurrent executions of a tool at once; afterwards the pool still
/// keeps cells.
void run_seed(uint64_t seed) {
  SCOPED_TRACE("seed " + std::to_string(seed)
               + " (replay: VIGIL_BULK_SEED=" + std::to_string(seed) + ")");
  std::cout << "seed " << seed << "\n";
  std::mt19937_64 rng{seed};
  auto pick = [&](int lo, int hi) {
    return std::uniform_int_distribution<int>{lo, hi}(rng);
  };
  bstats::get().reset();
  auto& s = bstats::get();
  s.work_us = pick(0, 500);
  uint32_t mc = static_cast<uint32_t>(pick(1, 3));
  uint32_t queue = static_cast<uint32_t>(pick(0, 8));
  node_config cfg;
  cfg.threads = static_cast<size_t>(pick(1, 3));
  cfg.tools.push_back(rec_pool("rec", mc, queue));
  supervisor_spec tree;
  tree.flags.intensity = 1000;
  int agents = pick(1, 4);
  for (int i = 0; i < agents; ++i)
    tree.children.push_back(fan_child("a" + std::to_string(i), "rec"));
  tree.children.push_back(fan_child("c", "rec"));
  node n{bulk_types(), cfg};
  ASSERT_FALSE(n.start("root", std::move(tree)));
  std::atomic<int64_t> issued{0}, ok{0}, bad{0};
  std::atomic<int> lost{0};
  std::vector<std::thread> callers;
  for (int i = 0; i < agents; ++i) {
    int rounds = pick(1, 5);
    std::vector<int> fans;
    for (int k = 0; k < rounds; ++k)
      fans.push_back(pick(1, 10));
    callers.emplace_back([&, i, fans] {
      for (int f : fans) {
        Ping p;
        p.set_n(f);
        issued += f;
        auto r = n.call<Pong>("root/a" + std::to_string(i), p, 30s);
        if (!r) {
          ++lost;
          continue;
        }
        ok += r->value.n();
        bad += r->value.seen();
        if (r->value.n() + r->value.seen() != f)
          ++lost;
      }
    });
  }
  int crashes = pick(0, 4);
  callers.emplace_back([&, crashes] {
    for (int c = 0; c < crashes; ++c) {
      Add a;
      a.set_n(-1);
      (void)n.call<Pong>("root/c", a, 10s);
    }
  });
  for (auto& t : callers)
    t.join();
  EXPECT_EQ(lost.load(), 0);
  EXPECT_EQ(ok.load() + bad.load(), issued.load());
  EXPECT_LE(max_inside(), static_cast<int>(mc))
    << "max_concurrent " << mc << ", queue " << queue;
  if (agents == 1 && crashes == 0 && 10 <= mc + queue)
    EXPECT_EQ(bad.load(), 0);
  // Still keeping cells.
  EXPECT_GE(kept_of(n, "root/a0", 6), 3) << "the pool no longer keeps cells";
  EXPECT_FALSE(n.stop());
}

} // namespace

TEST_F(bulkhead_ring_test, randomized_fans_against_a_model) {
  for_seeds("VIGIL_BULK_SEED", "VIGIL_BULK_SEEDS", 6, 0xb01c0000u,
            [](uint64_t seed) { run_seed(seed); });
}
