// A tool's result rings its agent from the pool thread that ran the call;
// an idle agent then runs on that thread (detail::ring), a busy one goes
// back to the scheduler. Checked on a real node: where the callbacks ran,
// that an agent never runs on two threads at once nor out of order, and a
// randomized run (seeded) of chains, floods, crashes and a node stopped
// in the middle of it all.
//
//   VIGIL_RING_SEEDS=N    seeds to run (default 12)
//   VIGIL_RING_SEED=S     run only seed S

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <pthread.h>

#include <gtest/gtest.h>

#include "proto/test.pb.h"
#include "support/ring_support.hpp"
#include "support/seeds.hpp"
#include "vigil/node/node.hpp"

using namespace vigil;
using namespace vigil::test;
using namespace std::chrono_literals;

namespace {

/// What every chainer and the tools saw (one test at a time).
struct ring_stats {
  std::atomic<int> inside{0};    // handlers of "r" running now
  std::atomic<int> overlaps{0};  // a handler of "r" entered while one ran
  std::atomic<int> callbacks{0};
  std::atomic<int> on_pool{0};   // callbacks run on a thread of a tool pool
  std::atomic<int64_t> last_add{0};
  std::atomic<int> adds{0};
  std::atomic<int> out_of_order{0};
  std::atomic<int> delay_us{0};  // each execution's latency
  std::atomic<int> executions{0};
  // The pool thread of the callback that made the call now submitted (0:
  // it ran elsewhere); executions on that thread, and on another.
  std::atomic<uint64_t> caller_thread{0};
  std::atomic<int> stayed{0};
  std::atomic<int> moved{0};

  void reset() {
    inside = overlaps = callbacks = on_pool = adds = out_of_order = 0;
    last_add = 0;
    delay_us = 0;
    executions = stayed = moved = 0;
    caller_thread = 0;
  }
  static ring_stats& get() {
    static ring_stats s;
    return s;
  }
};

uint64_t this_thread_id() {
  return static_cast<uint64_t>(pthread_self());
}

/// Marks a handler or callback of the one agent watched ("r").
struct entered {
  explicit entered(bool watched) : watched(watched) {
    if (watched && ring_stats::get().inside.fetch_add(1) != 0)
      ++ring_stats::get().overlaps;
  }
  ~entered() {
    if (watched)
      --ring_stats::get().inside;
  }
  bool watched;
};

/// On Ping{n}: n tool calls one after the other, each made in the last
/// one's callback (params: tool); answers Pong{n: callbacks run,
/// seen: those run on a tool's thread}. On Add{k}: checks that k follows
/// the last one. On Crash: throws.
class chainer : public agent<> {
public:
  explicit chainer(const params& ps)
    : tool_(ps.at("tool")), watched_(ps.count("watched") > 0) {
    // nop
  }

  static void define(handlers<chainer>& h) {
    h.on<Ping>(&chainer::chain);
    h.on<Add>(&chainer::add);
    h.on<Crash>([](chainer&, context&, const Crash& c) {
      throw std::runtime_error(c.why());
    });
  }

  void chain(context& ctx, const Ping& req) {
    entered e{watched_};
    left_ = req.n();
    done_ = pooled_ = 0;
    rp_ = ctx.defer();
    step(ctx);
  }

  void add(context&, const Add& a) {
    entered e{watched_};
    auto& s = ring_stats::get();
    if (a.n() != s.last_add.load() + 1)
      ++s.out_of_order;
    s.last_add = a.n();
    ++s.adds;
  }

private:
  void step(context& ctx) {
    Ping p;
    p.set_n(left_);
    ctx.call_tool<Pong>(
      tool_, p, tool_options{},
      [this, &ctx](Pong) {
        entered e{watched_};
        auto& s = ring_stats::get();
        ++s.callbacks;
        ++done_;
        s.caller_thread = on_tool_thread() ? this_thread_id() : 0;
        if (on_tool_thread()) {
          ++s.on_pool;
          ++pooled_;
        }
        if (--left_ > 0)
          return step(ctx);
        Pong out;
        out.set_n(done_);
        out.set_seen(pooled_);
        rp_.deliver(out);
      },
      [this](const caf::error& err) { rp_.fail(err); });
  }

  std::string tool_;
  bool watched_;
  int64_t left_ = 0;
  int64_t done_ = 0;
  int64_t pooled_ = 0;
  deferred_reply rp_;
};

/// On Ping{n}: sends Add{1..n} to "root/r", one after the other.
class pusher : public agent<> {
public:
  explicit pusher(const params&) {
    // nop
  }
  static void define(handlers<pusher>& h) {
    h.on<Ping>([](pusher&, context& ctx, const Ping& req) {
      for (int64_t k = 1; k <= req.n(); ++k) {
        Add a;
        a.set_n(k);
        ctx.send("root/r", a);
      }
      Pong p;
      p.set_n(req.n());
      return p;
    });
  }
};

registry ring_types() {
  registry r;
  r.add<chainer>("chainer");
  r.add<pusher>("pusher");
  auto fn = [](const Ping& req, tool_call&) -> tool_result<Pong> {
    auto& s = ring_stats::get();
    ++s.executions;
    if (auto c = s.caller_thread.exchange(0); c != 0)
      ++(c == this_thread_id() ? s.stayed : s.moved);
    if (auto us = s.delay_us.load(); us > 0) // the dependency's latency
      std::this_thread::sleep_for(std::chrono::microseconds{us});
    Pong p;
    p.set_n(req.n());
    return p;
  };
  r.add_tool<Ping, Pong>("svc", fn);
  // Its calls wait (as on I/O): a result may run its agent on the pool
  // thread (ring).
  r.tool_waits_on_io("svc");
  return r;
}

child_spec chain_child(std::string id, std::string tool, bool watched) {
  child_spec c;
  c.id = std::move(id);
  c.agent = "chainer";
  c.params = {{"tool", std::move(tool)}};
  if (watched)
    c.params["watched"] = "1";
  c.queue_cap = 100000; // the pusher's floods arrive whole (none is shed)
  return c;
}

class tool_ring_test : public ::testing::Test {
protected:
  void SetUp() override {
    ring_stats::get().reset();
  }
};

} // namespace

TEST_F(tool_ring_test, an_idle_agent_runs_its_callbacks_on_the_tools_thread) {
  auto& s = ring_stats::get();
  s.delay_us = 20000; // 20 ms: the agent is idle long before the result
  node_config cfg;
  cfg.threads = 2;
  cfg.tools.push_back(pool_of("slow", 1));
  supervisor_spec tree;
  tree.children.push_back(chain_child("r", "slow", true));
  node n{ring_types(), cfg};
  ASSERT_FALSE(n.start("root", std::move(tree)));
  Ping p;
  p.set_n(10);
  auto r = n.call<Pong>("root/r", p, 10s);
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_EQ(r->value.n(), 10);
  EXPECT_EQ(s.callbacks.load(), 10);
  // Each result found the agent waiting: its callback ran where the call
  // did (a loaded machine may still have the agent busy for one of them).
  EXPECT_GE(r->value.seen(), 8) << r->value.seen() << " of 10 on the pool";
  EXPECT_EQ(s.overlaps.load(), 0);
  EXPECT_FALSE(n.stop());
}

namespace {

struct chained {
  int stayed = 0; // calls made on a pool thread that ran there
  int moved = 0;  // ... that ran on another thread
  uint64_t wake_ups = 0;
};

/// Chains 20 calls through a tool of one thread (1 ms each, so that the
/// agent waits for each result) on a pool that counts as saturated from
/// `busy_at` threads busy.
chained chain_on_pool(size_t busy_at) {
  auto& s = ring_stats::get();
  s.reset();
  s.delay_us = 1000;
  node_config cfg;
  cfg.threads = 2;
  cfg.tools.push_back(pool_of("slow", 1));
  std::shared_ptr<detail::thread_pool> pool;
  cfg.tool_executors = [busy_at, &pool](const tool_decl& t) {
    pool = std::make_shared<detail::thread_pool>(
      t.policy.bulkhead.max_concurrent, t.name, 5s,
      detail::thread_pool::idle_mode::yield, true, busy_at);
    return pool;
  };
  supervisor_spec tree;
  tree.children.push_back(chain_child("r", "slow", true));
  node n{ring_types(), cfg};
  EXPECT_FALSE(n.start("root", std::move(tree)));
  chained out;
  if (!pool) {
    ADD_FAILURE() << "the node made no pool for the tool";
    return out;
  }
  Ping p;
  p.set_n(20);
  auto w0 = pool->wake_ups();
  auto r = n.call<Pong>("root/r", p, 10s);
  out.wake_ups = pool->wake_ups() - w0;
  EXPECT_TRUE(r) << describe(r.error());
  if (r)
    EXPECT_EQ(r->value.n(), 20);
  EXPECT_EQ(s.overlaps.load(), 0);
  EXPECT_FALSE(n.stop());
  out.stayed = s.stayed.load();
  out.moved = s.moved.load();
  return out;
}

} // namespace

TEST_F(tool_ring_test, saturated_a_call_made_on_the_pool_thread_waits_for_it) {
  // The pool counts as saturated with 1 thread busy (as 8 calls in flight
  // on 2 cores do): a callback run on the pool thread of the last call
  // makes the next one, and that call waits for this thread, free once
  // the cell's run returns, rather than wake the pool's other thread (a
  // system call and a context switch, on cores the I/O needs).
  auto c = chain_on_pool(1);
  EXPECT_GE(c.stayed, 15) << c.moved << " moved";
  EXPECT_EQ(c.moved, 0) << c.stayed << " stayed";
  // The first call, made by the agent on its scheduler thread, may wake
  // one; none of the 19 made on the pool does.
  EXPECT_LE(c.wake_ups, 1u);
}

TEST_F(tool_ring_test, unsaturated_a_call_made_on_the_pool_thread_wakes_another) {
  // Below saturation (3 threads busy would be, on this pool of 2), each of
  // those calls wakes the other thread, so that it starts at once even if
  // the cell's run goes on (the woken thread may still find it taken).
  auto c = chain_on_pool(3);
  EXPECT_GE(c.stayed + c.moved, 15);
  EXPECT_GE(c.wake_ups, 15u) << c.stayed << " stayed, " << c.moved
                             << " moved";
}

TEST_F(tool_ring_test, a_flooded_agent_rung_from_the_pool_keeps_its_order) {
  auto& s = ring_stats::get();
  node_config cfg;
  cfg.threads = 2;
  cfg.tools.push_back(pool_of("fast", 2));
  supervisor_spec tree;
  tree.children.push_back(chain_child("r", "fast", true));
  child_spec p;
  p.id = "p";
  p.agent = "pusher";
  tree.children.push_back(p);
  node n{ring_types(), cfg};
  ASSERT_FALSE(n.start("root", std::move(tree)));
  // The chain's results arrive while "r" works through a flood of Adds:
  // rung from a pool thread, it runs there for a few messages and goes
  // back to the scheduler with the rest.
  constexpr int chain = 3000;
  constexpr int flood = 20000;
  caf::expected<reply<Pong>> chained{caf::error{}};
  std::thread t{[&] {
    Ping c;
    c.set_n(chain);
    chained = n.call<Pong>("root/r", c, 60s);
  }};
  Ping f;
  f.set_n(flood);
  auto pushed = n.call<Pong>("root/p", f, 60s);
  t.join();
  ASSERT_TRUE(pushed) << describe(pushed.error());
  ASSERT_TRUE(chained) << describe(chained.error());
  EXPECT_EQ(chained->value.n(), chain);
  // Every Add reached "r", in the order sent, and nothing of "r" ever ran
  // on two threads at once. (A Ping after the flood is behind every Add.)
  Ping one;
  one.set_n(1);
  ASSERT_TRUE(n.call<Pong>("root/r", one, 10s));
  EXPECT_EQ(s.adds.load(), flood);
  EXPECT_EQ(s.out_of_order.load(), 0);
  EXPECT_EQ(s.overlaps.load(), 0);
  EXPECT_EQ(s.callbacks.load(), chain + 1);
  EXPECT_GT(s.on_pool.load(), 0);
  std::cout << s.on_pool.load() << " of " << s.callbacks.load()
            << " callbacks ran on the pool\n";
  EXPECT_FALSE(n.stop());
}

namespace {

/// One seed: agents chaining calls through tools of 1 to 3 threads with
/// latencies of 0 to 300 µs, a flood into the watched one, crashes, and
/// the node stopped at a random moment. Predicts: every chain that
/// answers ran each of its callbacks once; the watched agent never ran on
/// two threads at once and took its Adds in order (from 1 after each
/// restart, which resets nothing: they keep counting); the node stops and
/// goes within its bounds.
void run_seed(uint64_t seed) {
  SCOPED_TRACE("seed " + std::to_string(seed)
               + " (replay: VIGIL_RING_SEED=" + std::to_string(seed) + ")");
  std::mt19937_64 rng{seed};
  auto pick = [&](int lo, int hi) {
    return std::uniform_int_distribution<int>{lo, hi}(rng);
  };
  ring_stats::get().reset();
  auto& s = ring_stats::get();
  s.delay_us = pick(0, 300);
  node_config cfg;
  cfg.threads = static_cast<size_t>(pick(1, 3));
  int tools = pick(1, 3);
  for (int i = 0; i < tools; ++i)
    cfg.tools.push_back(pool_of("t" + std::to_string(i),
                                static_cast<uint32_t>(pick(1, 3))));
  supervisor_spec tree;
  tree.flags.intensity = 1000;
  int agents = pick(2, 5);
  for (int i = 0; i < agents; ++i)
    tree.children.push_back(chain_child(i == 0 ? "r" : "a" + std::to_string(i),
                                        "t" + std::to_string(pick(0, tools - 1)),
                                        i == 0));
  child_spec p;
  p.id = "p";
  p.agent = "pusher";
  tree.children.push_back(p);
  node n{ring_types(), cfg};
  ASSERT_FALSE(n.start("root", std::move(tree)));
  std::atomic<int> answered{0};
  std::atomic<int> wrong{0};
  std::vector<std::thread> callers;
  for (int i = 0; i < agents; ++i) {
    auto path = i == 0 ? std::string{"root/r"} : "root/a" + std::to_string(i);
    int rounds = pick(1, 4);
    int len = pick(1, 200);
    callers.emplace_back([&, path, rounds, len] {
      for (int k = 0; k < rounds; ++k) {
        Ping c;
        c.set_n(len);
        auto r = n.call<Pong>(path, c, 20s);
        if (r) {
          ++answered;
          if (r->value.n() != len)
            ++wrong;
        }
      }
    });
  }
  int flood = pick(0, 5000);
  callers.emplace_back([&, flood] {
    Ping f;
    f.set_n(flood);
    (void)n.call<Pong>("root/p", f, 20s);
  });
  // Crashes of random agents, then the node stopped at a random moment
  // (the callers' calls then fail: not_running or the like).
  int crashes = pick(0, 3);
  auto stop_after = std::chrono::microseconds{pick(0, 200000)};
  auto t0 = std::chrono::steady_clock::now();
  for (int c = 0; c < crashes; ++c) {
    int who = pick(1, agents - 1);
    Crash x;
    x.set_why("chaos");
    (void)n.call<Pong>("root/a" + std::to_string(who), x, 2s);
  }
  std::this_thread::sleep_until(t0 + stop_after); // the chosen moment
  auto s0 = std::chrono::steady_clock::now();
  (void)n.stop();
  EXPECT_LT(std::chrono::steady_clock::now() - s0, 10s);
  for (auto& t : callers)
    t.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(s.overlaps.load(), 0);
  EXPECT_EQ(s.out_of_order.load(), 0);
  EXPECT_LE(s.callbacks.load(), s.executions.load());
}

} // namespace

TEST_F(tool_ring_test, randomized_chains_floods_crashes_and_stops) {
  for_seeds("VIGIL_RING_SEED", "VIGIL_RING_SEEDS", 12, 0x5eed0000u,
            [](uint64_t seed) { run_seed(seed); });
}

TEST_F(tool_ring_test, only_a_tool_that_waits_on_io_runs_its_agent_on_its_pool) {
  auto types = ring_types();
  EXPECT_FALSE(types.tool_waits_on_io("nope"));
  // Marked as computing: its pool's threads are the calls' (a CPU-bound
  // tool's pool runs calls faster than agents), so its results go to the
  // scheduler as any message.
  ASSERT_TRUE(types.tool_waits_on_io("svc", false));
  ASSERT_NE(types.find_tool("svc"), nullptr);
  EXPECT_FALSE(types.find_tool("svc")->waits_on_io);
  auto& s = ring_stats::get();
  s.delay_us = 2000;
  node_config cfg;
  cfg.threads = 2;
  cfg.tools.push_back(pool_of("cpu", 2));
  supervisor_spec tree;
  tree.children.push_back(chain_child("r", "cpu", true));
  node n{std::move(types), cfg};
  ASSERT_FALSE(n.start("root", std::move(tree)));
  Ping p;
  p.set_n(20);
  auto r = n.call<Pong>("root/r", p, 10s);
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_EQ(r->value.n(), 20);
  EXPECT_EQ(r->value.seen(), 0) << r->value.seen() << " of 20 on the pool";
  EXPECT_EQ(s.overlaps.load(), 0);
  EXPECT_FALSE(n.stop());
}
