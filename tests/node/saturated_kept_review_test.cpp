// A saturated I/O pool wakes no thread for the call a kept cell makes: the
// kept thread counts as free for it. A review of 8ded91c found such a call
// waiting for the cell's later messages (up to 4 in a kept run: seconds of
// agent code, and deadlines missed); the kept run now ends after the
// message that made the call. These tests check that the call waits for
// no later agent work, against controls on an unsaturated pool. Real
// node, real threads, every wait bounded.
//
//   VIGIL_SAT_SEEDS=N   seeds to run (default 6)
//   VIGIL_SAT_SEED=S    run only seed S

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

#include <gtest/gtest.h>

#include "proto/test.pb.h"
#include "support/eventually.hpp"
#include "support/ring_support.hpp"
#include "support/seeds.hpp"
#include "vigil/actors/detail/tool_runtime.hpp"
#include "vigil/node/node.hpp"

using namespace vigil;
using namespace vigil::test;
using namespace std::chrono_literals;

namespace {

using clk = std::chrono::steady_clock;

struct sstats {
  std::mutex mtx;
  std::condition_variable cv;
  int blocking = 0;        // blocker executions running now
  bool release = false;    // blockers may return
  // The call C made in the kept callback: when the callback ran, when C's
  // execution started.
  clk::time_point cb_at{};
  clk::time_point c_started{};
  bool c_seen = false;
  std::atomic<bool> cb_on_pool{false};
  std::atomic<int> slow_ms{500};      // the agent work after the callback
  std::atomic<int> c_timeout_ms{0};   // C's timeout (0: the tool's)
  std::atomic<int> first_us{5000};    // latency of the first call
  std::atomic<int> c_calls{1};        // calls C made by the callback
  int c_count = 0;                    // C executions started
  clk::time_point c_last{};           // the last one's start
  std::atomic<int> waited_out{0};     // Slow handlers that waited in vain
  std::string c_tool = "io";          // the tool C calls (set before start)

  void reset() {
    std::lock_guard<std::mutex> g{mtx};
    blocking = 0;
    release = false;
    cb_at = c_started = {};
    c_seen = false;
    cb_on_pool = false;
    slow_ms = 500;
    c_timeout_ms = 0;
    first_us = 5000;
    c_calls = 1;
    c_count = 0;
    c_last = {};
    waited_out = 0;
    c_tool = "io";
  }
  static sstats& get() {
    static sstats s;
    return s;
  }
};

void release_blockers() {
  auto& s = sstats::get();
  std::lock_guard<std::mutex> g{s.mtx};
  s.release = true;
  s.cv.notify_all();
}

/// On Ping{n}: n blocker calls (Ping{0}) of the tool, answered at once.
class blocker : public agent<> {
public:
  explicit blocker(const params&) {
  }
  static void define(handlers<blocker>& h) {
    h.on<Ping>([](blocker&, context& ctx, const Ping& req) {
      for (int64_t i = 0; i < req.n(); ++i) {
        Ping p;
        p.set_n(0);
        ctx.call_tool<Pong>("io", p, tool_options{}, [](Pong) {},
                            [](const caf::error&) {});
      }
      Pong out;
      out.set_n(req.n());
      return out;
    });
  }
};

/// On Ping: one call (Ping{1}, a few ms, so that the agent is idle when it
/// returns and is kept on the pool thread); its callback makes call C
/// (Ping{2}) and sends this agent a Slow (agent work, slow_ms). Answers
/// Pong{n: 1 if C succeeded, else -(error code)} when C is answered.
class keeper : public agent<> {
public:
  explicit keeper(const params&) {
  }
  static void define(handlers<keeper>& h) {
    h.on<Ping>(&keeper::go);
    h.on<Slow>([](keeper&, context&, const Slow& w) {
      // Agent code that takes a while (a CPU-heavy step, a blocking read).
      if (w.ms() >= 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds{w.ms()});
        return;
      }
      // ms < 0: agent code that waits (bounded, -ms) for something that
      // call C's execution does (e.g. C posts to a service this step
      // then reads from).
      auto& s = sstats::get();
      std::unique_lock<std::mutex> g{s.mtx};
      if (!s.cv.wait_for(g, std::chrono::milliseconds{-w.ms()},
                         [&] { return s.c_seen; }))
        ++s.waited_out;
    });
  }

  void go(context& ctx, const Ping&) {
    auto rp = ctx.defer();
    Ping p;
    p.set_n(1);
    ctx.call_tool<Pong>(
      "io", p, tool_options{},
      [rp, &ctx](Pong) mutable {
        auto& s = sstats::get();
        s.cb_on_pool = on_tool_thread();
        {
          std::lock_guard<std::mutex> g{s.mtx};
          s.cb_at = clk::now();
        }
        Ping c;
        c.set_n(2);
        tool_options o;
        if (auto t = s.c_timeout_ms.load(); t > 0)
          o.timeout = std::chrono::milliseconds{t};
        auto left = std::make_shared<int>(s.c_calls.load());
        auto res = std::make_shared<Pong>();
        res->set_n(1);
        for (int i = 0, n = *left; i < n; ++i)
          ctx.call_tool<Pong>(
            s.c_tool, c, o,
            [rp, left, res](Pong) mutable {
              if (--*left == 0)
                rp.deliver(*res);
            },
            [rp, left, res](const caf::error& err) mutable {
              res->set_n(-static_cast<int64_t>(err.code()));
              res->set_from(describe(err));
              if (--*left == 0)
                rp.deliver(*res);
            });
        Slow w;
        w.set_ms(s.slow_ms.load());
        ctx.send("root/k", w);
      },
      [rp](const caf::error& err) mutable { rp.fail(err); });
  }
};

registry sat_types() {
  registry r;
  r.add<blocker>("blocker");
  r.add<keeper>("keeper");
  auto fn = [](const Ping& req, tool_call&) -> tool_result<Pong> {
    auto& s = sstats::get();
    if (req.n() == 0) {
      std::unique_lock<std::mutex> g{s.mtx};
      ++s.blocking;
      s.cv.notify_all();
      s.cv.wait_for(g, 15s, [&] { return s.release; });
      --s.blocking;
    } else if (req.n() == 1) {
      std::this_thread::sleep_for(std::chrono::microseconds{s.first_us.load()});
    } else {
      std::lock_guard<std::mutex> g{s.mtx};
      if (!s.c_seen)
        s.c_started = clk::now();
      s.c_last = clk::now();
      ++s.c_count;
      s.c_seen = true;
      s.cv.notify_all();
    }
    Pong p;
    p.set_n(req.n());
    return p;
  };
  r.add_tool<Ping, Pong>("svc", fn);
  r.tool_waits_on_io("svc");
  return r;
}

unsigned cores() {
  return std::max(1u, std::thread::hardware_concurrency());
}

struct outcome {
  bool kept = false;          // the callback ran on the pool thread
  bool c_started = false;
  long long c_delay_ms = -1;  // from the callback to C's start
  int64_t c_result = 0;       // 1: C succeeded; else -(error code)
  std::string c_error;
  bool answered = false;
  int c_count = 0;
  long long c_last_delay_ms = -1;
  int waited_out = 0;
};

/// `blockers` long calls occupy the pool (max_concurrent = blockers + 1);
/// then one keeper round. `busy_at` < 0: the node's own pool (busy_at:
/// the cores); otherwise a pool made here with that busy_at.
outcome one_round(int blockers, int busy_at, int slow_ms, int c_timeout_ms,
                  int c_calls = 1, int mc = -1, bool other_pool = false) {
  sstats::get().reset();
  auto& s = sstats::get();
  if (other_pool)
    s.c_tool = "io2";
  s.slow_ms = slow_ms;
  s.c_timeout_ms = c_timeout_ms;
  s.c_calls = c_calls;
  node_config cfg;
  cfg.threads = 2;
  auto d = pool_of("io", static_cast<uint32_t>(mc > 0 ? mc : blockers + 1));
  d.policy.retry.max_attempts = 1;
  d.policy.breaker.enabled = false;
  cfg.tools.push_back(d);
  if (other_pool) {
    auto d2 = d;
    d2.name = "io2";
    d2.policy.bulkhead.max_concurrent = 2;
    cfg.tools.push_back(d2);
  }
  if (busy_at >= 0)
    cfg.tool_executors = [busy_at](const tool_decl& t) {
      return std::make_shared<detail::thread_pool>(
        t.policy.bulkhead.max_concurrent, t.name, 5s,
        detail::thread_pool::idle_mode::yield, true,
        static_cast<size_t>(busy_at));
    };
  supervisor_spec tree;
  child_spec b;
  b.id = "b";
  b.agent = "blocker";
  tree.children.push_back(b);
  child_spec k;
  k.id = "k";
  k.agent = "keeper";
  tree.children.push_back(k);
  outcome out;
  node n{sat_types(), cfg};
  if (n.start("root", std::move(tree))) {
    ADD_FAILURE() << "node did not start";
    return out;
  }
  struct releaser {
    ~releaser() {
      release_blockers();
    }
  } rel;
  if (blockers > 0) {
    Ping p;
    p.set_n(blockers);
    EXPECT_TRUE(n.call<Pong>("root/b", p, 5s));
    EXPECT_TRUE(eventually(
      [&] {
        std::lock_guard<std::mutex> g{s.mtx};
        return s.blocking == blockers;
      },
      5s));
  }
  Ping go;
  auto r = n.call<Pong>("root/k", go, 10s);
  {
    std::unique_lock<std::mutex> g{s.mtx};
    out.c_started = s.c_seen;
    out.c_count = s.c_count;
    out.waited_out = s.waited_out.load();
    if (s.c_seen) {
      out.c_delay_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                         s.c_started - s.cb_at)
                         .count();
      out.c_last_delay_ms
        = std::chrono::duration_cast<std::chrono::milliseconds>(s.c_last
                                                                - s.cb_at)
            .count();
    }
  }
  out.kept = s.cb_on_pool.load();
  out.answered = static_cast<bool>(r);
  if (r) {
    out.c_result = r->value.n();
    out.c_error = r->value.from();
  }
  release_blockers();
  EXPECT_FALSE(n.stop());
  return out;
}

std::string show(const outcome& o) {
  return std::string{"kept="} + (o.kept ? "yes" : "no") + " c_started="
         + (o.c_started ? "yes" : "no") + " c_delay_ms="
         + std::to_string(o.c_delay_ms) + " c_result="
         + std::to_string(o.c_result) + " c_count=" + std::to_string(o.c_count)
         + " c_last_delay_ms=" + std::to_string(o.c_last_delay_ms)
         + " waited_out=" + std::to_string(o.waited_out) + " " + o.c_error;
}

class saturated_kept_review_test : public ::testing::Test {
protected:
  void SetUp() override {
    sstats::get().reset();
  }
  void TearDown() override {
    release_blockers();
  }
};

/// Rounds until one has its callback kept on the pool thread (the case
/// under review); the others say nothing.
outcome kept_round(int blockers, int busy_at, int slow_ms, int c_timeout_ms,
                   int c_calls = 1, int mc = -1) {
  outcome o;
  for (int i = 0; i < 5; ++i) {
    o = one_round(blockers, busy_at, slow_ms, c_timeout_ms, c_calls, mc);
    if (o.kept)
      return o;
  }
  return o;
}

} // namespace

// -- a call made in a kept callback waits for the cell's later work ---------

// The node's own pool (busy_at = this machine's cores): cores - 1 calls in
// flight and the kept cell make it saturated. The callback's call C has a
// thread of the pool sleeping and a free bulkhead slot, yet it does not
// start until the agent's next message (500 ms of work) returns.
TEST_F(saturated_kept_review_test,
       default_pool_call_from_kept_callback_starts_without_waiting_for_agent_work) {
  int blockers = static_cast<int>(cores()) - 1;
  auto o = kept_round(blockers, -1, 500, 0);
  std::cout << "cores " << cores() << ": " << show(o) << "\n";
  ASSERT_TRUE(o.kept) << "inconclusive: never kept. " << show(o);
  ASSERT_TRUE(o.c_started) << show(o);
  EXPECT_LT(o.c_delay_ms, 100)
    << "call C waited for the kept cell's unrelated 500 ms handler while a "
       "pool thread slept: "
    << show(o);
  EXPECT_EQ(o.c_result, 1) << show(o);
}

// Control: the same with the saturation rule out of reach (busy_at 100).
TEST_F(saturated_kept_review_test,
       control_unsaturated_call_from_kept_callback_starts_at_once) {
  int blockers = static_cast<int>(cores()) - 1;
  auto o = kept_round(blockers, 100, 500, 0);
  std::cout << show(o) << "\n";
  ASSERT_TRUE(o.kept) << "inconclusive: never kept. " << show(o);
  ASSERT_TRUE(o.c_started) << show(o);
  EXPECT_LT(o.c_delay_ms, 100) << show(o);
  EXPECT_EQ(o.c_result, 1) << show(o);
}

// busy_at 1, max_concurrent 1, no other call: the pool's spare thread
// sleeps while C waits for the kept run.
TEST_F(saturated_kept_review_test,
       busy_at_1_single_thread_call_waits_for_agent_work) {
  auto o = kept_round(0, 1, 500, 0);
  std::cout << show(o) << "\n";
  ASSERT_TRUE(o.kept) << "inconclusive: never kept. " << show(o);
  ASSERT_TRUE(o.c_started) << show(o);
  EXPECT_LT(o.c_delay_ms, 100) << show(o);
}

// -- ... and fails its deadline --------------------------------------------

// C has a 150 ms timeout; the tool answers at once. Unsaturated, C ran at
// once and its answer waits in the inbox for the cell. Saturated, C has
// not started when the cell (after its 400 ms handler) looks at C's
// deadline: deadline_exceeded for a call that no dependency delayed.
TEST_F(saturated_kept_review_test,
       default_pool_call_from_kept_callback_meets_its_deadline) {
  int blockers = static_cast<int>(cores()) - 1;
  auto o = kept_round(blockers, -1, 400, 150);
  std::cout << "cores " << cores() << ": " << show(o) << "\n";
  ASSERT_TRUE(o.kept) << "inconclusive: never kept. " << show(o);
  ASSERT_TRUE(o.answered) << show(o);
  EXPECT_EQ(o.c_result, 1) << "C failed though the tool answers at once: "
                           << show(o);
}

TEST_F(saturated_kept_review_test,
       control_unsaturated_call_from_kept_callback_meets_its_deadline) {
  int blockers = static_cast<int>(cores()) - 1;
  auto o = kept_round(blockers, 100, 400, 150);
  std::cout << show(o) << "\n";
  ASSERT_TRUE(o.kept) << "inconclusive: never kept. " << show(o);
  ASSERT_TRUE(o.answered) << show(o);
  EXPECT_EQ(o.c_result, 1) << show(o);
}

// -- agent code that waits for what its own call does ------------------------

// The step after the callback waits (bounded, 3 s) for C's execution to
// have started. Unsaturated, it has; saturated, C waits for this very step
// to return: a deadlock, broken only by the bound.
TEST_F(saturated_kept_review_test,
       default_pool_agent_step_waiting_on_its_call_is_not_deadlocked) {
  int blockers = static_cast<int>(cores()) - 1;
  auto t0 = clk::now();
  auto o = kept_round(blockers, -1, -3000, 0);
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(clk::now()
                                                                    - t0);
  std::cout << "cores " << cores() << ": " << show(o) << " round took "
            << took.count() << " ms\n";
  ASSERT_TRUE(o.kept) << "inconclusive: never kept. " << show(o);
  EXPECT_EQ(o.waited_out, 0)
    << "the agent step waited its whole 3 s bound for its call to start: "
    << show(o);
}

TEST_F(saturated_kept_review_test,
       control_unsaturated_agent_step_waiting_on_its_call) {
  int blockers = static_cast<int>(cores()) - 1;
  auto o = kept_round(blockers, 100, -3000, 0);
  std::cout << show(o) << "\n";
  ASSERT_TRUE(o.kept) << "inconclusive: never kept. " << show(o);
  EXPECT_EQ(o.waited_out, 0) << show(o);
}

// -- several calls from one kept callback (submit_all) -----------------------

// Two calls C from the kept callback, a pool of 2, busy_at 1: the woken
// thread wakes the other for the second (its to_wake does not count the
// kept thread), so neither waits for the agent's 500 ms.
TEST_F(saturated_kept_review_test,
       busy_at_1_two_calls_from_kept_callback) {
  auto o = kept_round(0, 1, 500, 0, 2, 2);
  std::cout << show(o) << "\n";
  ASSERT_TRUE(o.kept) << "inconclusive: never kept. " << show(o);
  ASSERT_EQ(o.c_count, 2) << show(o);
  EXPECT_LT(o.c_last_delay_ms, 100) << show(o);
}

// -- C goes to another pool (saturated, busy_at 1) ---------------------------

// kept_here checks the pool: a cell kept on pool "io" calling tool "io2"
// is not that pool's thread, so "io2" wakes one of its own.
TEST_F(saturated_kept_review_test, call_to_another_pool_from_kept_callback) {
  outcome o;
  for (int i = 0; i < 5; ++i) {
    o = one_round(0, 1, 500, 0, 1, -1, true);
    if (o.kept)
      break;
  }
  std::cout << show(o) << "\n";
  ASSERT_TRUE(o.kept) << "inconclusive: never kept. " << show(o);
  ASSERT_TRUE(o.c_started) << show(o);
  EXPECT_LT(o.c_delay_ms, 100) << show(o);
}

// -- node stopped while the call waits for the kept run ----------------------

TEST_F(saturated_kept_review_test, stop_while_a_call_waits_for_the_kept_run) {
  for (int round = 0; round < 5; ++round) {
    sstats::get().reset();
    auto& s = sstats::get();
    s.slow_ms = 800;
    node_config cfg;
    cfg.threads = 2;
    auto d = pool_of("io", 1);
    d.policy.retry.max_attempts = 1;
    d.policy.breaker.enabled = false;
    cfg.tools.push_back(d);
    size_t busy_at = 1; // VIGIL_SAT_STOP_BUSY_AT: a control
    if (auto* v = std::getenv("VIGIL_SAT_STOP_BUSY_AT"))
      busy_at = std::strtoull(v, nullptr, 10);
    cfg.tool_executors = [busy_at](const tool_decl& t) {
      return std::make_shared<detail::thread_pool>(
        t.policy.bulkhead.max_concurrent, t.name, 5s,
        detail::thread_pool::idle_mode::yield, true, busy_at);
    };
    supervisor_spec tree;
    child_spec k;
    k.id = "k";
    k.agent = "keeper";
    tree.children.push_back(k);
    node n{sat_types(), cfg};
    ASSERT_FALSE(n.start("root", std::move(tree)));
    caf::expected<reply<Pong>> r{caf::error{}};
    std::thread caller{[&] {
      Ping go;
      r = n.call<Pong>("root/k", go, 10s);
    }};
    ASSERT_TRUE(eventually(
      [&] {
        std::lock_guard<std::mutex> g{s.mtx};
        return s.cb_at != clk::time_point{};
      },
      5s));
    auto t0 = clk::now();
    (void)n.stop();
    auto took = clk::now() - t0;
    caller.join();
    EXPECT_LT(took, 3s) << "round " << round;
    std::cout << "round " << round << ": kept=" << s.cb_on_pool.load()
              << " stop took "
              << std::chrono::duration_cast<std::chrono::milliseconds>(took)
                   .count()
              << " ms, call " << (r ? "answered" : describe(r.error()))
              << "\n";
  }
}

// -- randomized ---------------------------------------------------------------

namespace {

void run_seed(uint64_t seed) {
  SCOPED_TRACE("seed " + std::to_string(seed)
               + " (replay: VIGIL_SAT_SEED=" + std::to_string(seed) + ")");
  std::cout << "seed " << seed << "\n";
  std::mt19937_64 rng{seed};
  auto pick = [&](int lo, int hi) {
    return std::uniform_int_distribution<int>{lo, hi}(rng);
  };
  int blockers = pick(0, 3);
  int busy_at = pick(0, 1) ? -1 : pick(1, blockers + 2);
  int slow = pick(150, 400);
  int timeout = pick(0, 1) ? 0 : pick(50, slow - 50);
  auto o = one_round(blockers, busy_at, slow, timeout);
  std::cout << "  blockers " << blockers << " busy_at " << busy_at
            << " slow " << slow << " timeout " << timeout << ": " << show(o)
            << "\n";
  ASSERT_TRUE(o.answered) << show(o);
  if (o.kept) {
    EXPECT_TRUE(o.c_started) << show(o);
    EXPECT_LT(o.c_delay_ms, 100) << show(o);
  }
  EXPECT_EQ(o.c_result, 1) << show(o);
}

} // namespace

TEST_F(saturated_kept_review_test, randomized_calls_from_kept_callbacks) {
  for_seeds("VIGIL_SAT_SEED", "VIGIL_SAT_SEEDS", 6, 0x5a700000u,
            [](uint64_t seed) { run_seed(seed); });
}
