// Adversarial review of de5fb3a + 08bc04d (an attempt keeps its ticket and
// inbox until its cell takes it; the doorbell without the tool's gate; a
// spinning pool thread wakes the others; a drain submits at once only to a
// starved pool). Deterministic cases on CAF's testing scheduler, then real
// nodes and real pools with seeded random interleavings (the seed is
// printed; VIGIL_SEED=<n> replays one).

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
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

namespace {


/// Tool "blk": waits until `go` (bounded), then answers with cost 1.
struct blocking_svc {
  std::atomic<bool> entered{false};
  std::atomic<bool> go{false};
  static blocking_svc& get() {
    static blocking_svc b;
    return b;
  }
};

/// On Ping, keeps its context; its destructor (which the cell runs as it
/// ends, after it closed its tool calls) calls tool "svc" and keeps the
/// answer in `late_caller::last`.
class late_caller : public agent<> {
public:
  explicit late_caller(const params&) {
  }
  ~late_caller() override {
    if (ctx_ == nullptr)
      return;
    Ping q;
    q.set_n(7);
    ctx_->call_tool<Pong>(
      "svc", q, tool_options{}, [](Pong) { last() = caf::error{}; },
      [](const caf::error& e) { last() = e; });
  }
  static void define(handlers<late_caller>& h) {
    h.on<Ping>([](late_caller& self, context& ctx, const Ping& req) {
      self.ctx_ = &ctx;
      Pong p;
      p.set_n(req.n());
      return p;
    });
  }
  static std::optional<caf::error>& last() {
    static std::optional<caf::error> e;
    return e;
  }

private:
  context* ctx_ = nullptr;
};

/// tool_fixture with `chainer`, `late_caller` and tool implementation
/// "blk" in its registry.
class tool_review19_test : public tool_fixture {
public:
  tool_review19_test() {
    registry types = test_registry();
    types.add<tool_caller>("tool_caller");
    types.add<chainer>("chainer");
    types.add<late_caller>("late_caller");
    types.add_tool<Ping, Pong>("svc", [](const Ping& req, tool_call& c) {
      return service::get().call(req, c);
    });
    types.add_tool<Ping, Pong>("blk", [](const Ping& req, tool_call&) {
      auto& b = blocking_svc::get();
      b.entered = true;
      (void)eventually([&] { return b.go.load(); }, 10s);
      Pong p;
      p.set_n(req.n());
      return tool_result<Pong>{p, 1.0};
    });
    rt = std::make_shared<runtime>(std::move(types));
  }
};

} // namespace

// -- bulkhead: a finished call's place ---------------------------------------

// A tool with one place (max_concurrent 1, queue 0). An agent calls it,
// and from the result callback calls it again: the first call has ended
// (its answer is being delivered), so its place is free. Since de5fb3a the
// attempt keeps the ticket until the cell lets the attempt go, and
// on_tools_done / on_tool_done hold the attempt (`keep`, `att`) while the
// callback runs: the second call is refused with bulkhead_full.
TEST_F(tool_review19_test, a_call_made_from_the_previous_calls_callback_gets_its_place) {
  auto d = decl_of("svc");
  d.policy.bulkhead.max_concurrent = 1;
  d.policy.bulkhead.queue = 0;
  auto& svc = declare(d);
  ASSERT_FALSE(start_caller({}, "chainer"));
  ask_ping("t/c", 3);
  run();
  ASSERT_TRUE(answered(3));
  EXPECT_TRUE(answers[3].ok) << describe(answers[3].err);
  EXPECT_EQ(answers[3].pong.n(), 3);
  EXPECT_EQ(service::get().count(), 3u);
  EXPECT_EQ(svc.stats().bulkhead_full.load(), 0u);
  EXPECT_EQ(svc.in_use(), 0u);
}

// A call made as the cell ends, after it closed its tool calls (from the
// agent's destructor): refused with not_running, and nothing runs (its
// inbox would never be closed, and an execution could end up waiting for
// itself in close()).
TEST_F(tool_review19_test, a_call_after_the_cell_ended_its_calls_is_refused) {
  declare(decl_of("svc"));
  late_caller::last().reset();
  ASSERT_FALSE(start_caller({}, "late_caller"));
  ask_ping("t/c", 1);
  run();
  ASSERT_TRUE(answered(1));
  caf::anon_send_exit(handle("t/c"), caf::exit_reason::kill);
  run();
  ASSERT_TRUE(late_caller::last().has_value());
  EXPECT_TRUE(is(*late_caller::last(), errc::not_running))
    << describe(*late_caller::last());
  EXPECT_EQ(service::get().count(), 0u);
  EXPECT_EQ(executors["svc"]->submitted(), 0u);
}

// The same with a full bulkhead of 4 places and 4 chains at once: each
// chain's next call is made while its previous call's place is still
// counted, so every chain but none is refused.
TEST_F(tool_review19_test, chains_filling_the_bulkhead_are_not_refused) {
  auto d = decl_of("svc");
  d.policy.bulkhead.max_concurrent = 2;
  d.policy.bulkhead.queue = 2;
  auto& svc = declare(d);
  child_spec c;
  c.agent = "chainer";
  auto spec = flags(strategy::one_for_one, 100, 60000);
  for (int i = 0; i < 4; ++i) {
    c.id = "c" + std::to_string(i);
    spec.children.push_back(c);
  }
  ASSERT_FALSE(start("t", std::move(spec)));
  executors["svc"]->inline_run = false;
  for (int i = 0; i < 4; ++i)
    ask_ping("t/c" + std::to_string(i), 10 + i);
  run();
  ASSERT_EQ(svc.in_use(), 4u);
  // Every execution returns; each chain goes on from its callback.
  for (int round = 0; round < 40 && executors["svc"]->pending() > 0; ++round) {
    executors["svc"]->run_all();
    run();
  }
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(answered(10 + i)) << i;
    EXPECT_TRUE(answers[10 + i].ok) << i << ": " << describe(answers[10 + i].err);
  }
  EXPECT_EQ(svc.stats().bulkhead_full.load(), 0u);
  EXPECT_EQ(svc.in_use(), 0u);
}

// The deterministic form of a_returned_execution_in_a_busy_cells_inbox_
// holds_no_place (below): a call given up at its deadline while its
// execution runs keeps its place until the execution returns
// (tool_ticket: "held by the call and by each of its executions still
// running"). Once it returned (with a cost, so into the cell's inbox),
// nothing runs and the call is over, but the place is still taken until
// the cell takes its inbox. (The execution runs on a thread of its own,
// while the test thread only waits for it.)
TEST_F(tool_review19_test, a_given_up_execution_gives_its_place_back_when_it_returns) {
  auto d = decl_of("b");
  d.type = "blk";
  d.policy.timeout = 1s;
  d.policy.attempt_timeout = 1s;
  d.policy.retry.max_attempts = 1;
  d.policy.bulkhead.max_concurrent = 1;
  d.policy.bulkhead.queue = 0;
  auto& b = declare(d);
  auto& blk = blocking_svc::get();
  blk.entered = false;
  blk.go = false;
  ASSERT_FALSE(start_caller({{"tool", "b"}}));
  executors["b"]->inline_run = false;
  ask_ping("t/c", 1);
  run();
  ASSERT_EQ(executors["b"]->pending(), 1u);
  std::thread th{[this] { executors["b"]->run_nth(0); }};
  ASSERT_TRUE(eventually([&] { return blk.entered.load(); }, 5s));
  advance(1s); // the deadline: the call is answered, its attempt given up
  ASSERT_TRUE(answered(1));
  EXPECT_TRUE(is(answers[1].err, errc::deadline_exceeded))
    << describe(answers[1].err);
  EXPECT_EQ(b.in_use(), 1u); // the execution runs: it holds the place
  blk.go = true;
  th.join(); // it returned, into the (idle) cell's inbox
  EXPECT_EQ(b.stats().executions.load(), 1u);
  EXPECT_EQ(b.in_use(), 0u)
    << "the call ended and its execution returned, yet its place is held";
  run();
  EXPECT_EQ(b.in_use(), 0u);
}

// -- bulkhead on a real node --------------------------------------------------

namespace {

struct quick_dep {
  std::atomic<int> executions{0};
  tool_result<Pong> call(const Ping& req, tool_call&) {
    ++executions;
    Pong p;
    p.set_n(req.n());
    return p;
  }
  static quick_dep& get() {
    static quick_dep d;
    return d;
  }
};

} // namespace

// A real node, a real pool: a tool with one place, one agent chaining 20
// calls from its callbacks (nothing else calls the tool). Fails every run
// at 08bc04d; at ffa1696 it failed about half the runs (the execution
// dropped its own ticket only after it rang the cell, a race with the
// callback); the deterministic forms above pass there.
TEST(tool_review19_node_test, a_chain_of_calls_on_a_one_place_tool_is_never_refused) {
  tool_decl d;
  d.name = "dep";
  d.policy.timeout = 5s;
  d.policy.attempt_timeout = 5s;
  d.policy.bulkhead.max_concurrent = 1;
  d.policy.bulkhead.queue = 0;
  node_config cfg;
  cfg.tools.push_back(d);
  node n{dep_types<quick_dep>(), cfg};
  ASSERT_FALSE(n.start("root", dep_tree(1, false, 1000)));
  Ping p;
  p.set_n(20);
  auto r = n.call<Pong>("root/c0", p, 10s);
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_EQ(r->value.n(), 20);
  auto* tool = n.rt()->find_tool("dep");
  EXPECT_EQ(tool->stats().bulkhead_full.load(), 0u);
  EXPECT_TRUE(eventually([&] { return tool->in_use() == 0; }, 5s));
}

// -- order of the executions a drain starts -----------------------------------

namespace {

/// Every call the `fanner` makes (its number, in the order made) and every
/// execution of tool "ord" (the number it got, in the order started).
struct order_log {
  std::mutex m;
  std::vector<int64_t> made;
  std::vector<int64_t> started;
  std::atomic<int64_t> next{1};
  static order_log& get() {
    static order_log l;
    return l;
  }
};

/// On Ping{n}: starts n chains of 6 calls of tool "ord" each (param
/// `tool2` also alternates a second tool), the next of a chain from the
/// previous one's callback; replies once every chain ended.
class fanner : public agent<> {
public:
  explicit fanner(const params& ps) {
    two_ = ps.count("tool2") > 0;
  }
  static void define(handlers<fanner>& h) {
    h.on<Ping>(&fanner::ping);
  }
  void ping(context& ctx, const Ping& req) {
    auto left = std::make_shared<int64_t>(req.n());
    auto rp = ctx.defer();
    for (int64_t i = 0; i < req.n(); ++i)
      step(ctx, rp, left, 6);
  }

private:
  void step(context& ctx, deferred_reply rp, std::shared_ptr<int64_t> left,
            int depth) {
    if (depth == 0) {
      if (--*left == 0) {
        Pong p;
        rp.deliver(p);
      }
      return;
    }
    auto& log = order_log::get();
    Ping q;
    q.set_n(log.next++);
    bool second = two_ && q.n() % 2 == 0;
    if (!second) {
      std::lock_guard<std::mutex> g{log.m};
      log.made.push_back(q.n());
    }
    ctx.call_tool<Pong>(
      second ? "ord2" : "ord", q, tool_options{},
      [this, &ctx, rp, left, depth](Pong) mutable {
        step(ctx, rp, left, depth - 1);
      },
      [rp](const caf::error& e) mutable { rp.fail(e); });
  }
  bool two_ = false;
};

registry order_types() {
  registry r;
  r.add<fanner>("fanner");
  r.add_tool<Ping, Pong>("ord", [](const Ping& req, tool_call&) {
    auto& log = order_log::get();
    {
      std::lock_guard<std::mutex> g{log.m};
      log.started.push_back(req.n());
    }
    thread_local std::mt19937 rng{std::random_device{}()};
    if (rng() % 3 == 0)
      std::this_thread::sleep_for(std::chrono::microseconds{rng() % 60});
    Pong p;
    p.set_n(req.n());
    return tool_result<Pong>{p};
  });
  r.add_tool<Ping, Pong>("ord2", [](const Ping& req, tool_call&) {
    Pong p;
    p.set_n(req.n());
    return tool_result<Pong>{p};
  });
  return r;
}

} // namespace

// One cell, a tool with a pool of one thread (so executions start in the
// order they are submitted), chains whose next calls are made from their
// callbacks, many at once in a drain: the executions start in the order
// the calls were made, whether a call went out at once (starved pool) or
// with the drain's batch; also with a second tool's calls in between.
TEST(tool_review19_node_test, a_drains_calls_start_in_the_order_they_were_made) {
  auto seed = seed_for("a_drains_calls_start_in_the_order_they_were_made");
  std::mt19937_64 rng{seed};
  for (int two = 0; two < 2; ++two) {
    tool_decl d;
    d.name = "ord";
    d.policy.timeout = 10s;
    d.policy.attempt_timeout = 10s;
    d.policy.bulkhead.max_concurrent = 1;
    d.policy.bulkhead.queue = 1000;
    d.policy.breaker.enabled = false;
    auto d2 = d;
    d2.name = "ord2";
    d2.policy.bulkhead.max_concurrent = 2;
    node_config cfg;
    cfg.tools = {d, d2};
    node n{order_types(), cfg};
    supervisor_spec spec;
    child_spec c;
    c.id = "f";
    c.agent = "fanner";
    if (two)
      c.params = {{"tool2", "1"}};
    spec.children.push_back(c);
    ASSERT_FALSE(n.start("root", spec));
    auto& log = order_log::get();
    for (int round = 0; round < 40; ++round) {
      {
        std::lock_guard<std::mutex> g{log.m};
        log.made.clear();
        log.started.clear();
      }
      Ping p;
      p.set_n(1 + static_cast<int64_t>(rng() % 40));
      auto r = n.call<Pong>("root/f", p, 10s);
      ASSERT_TRUE(r) << describe(r.error());
      std::lock_guard<std::mutex> g{log.m};
      ASSERT_EQ(log.made.size(), log.started.size());
      for (size_t i = 0; i < log.made.size(); ++i)
        ASSERT_EQ(log.made[i], log.started[i])
          << "seed " << seed << " two " << two << " round " << round
          << ": execution " << i << " of " << log.made.size()
          << " out of call order";
    }
  }
}

// -- bulkhead: an abandoned execution that returned ---------------------------

namespace {

/// Takes `delay_ms` whatever its cancellation says, and costs `cost`.
struct costly_dep {
  std::atomic<int> delay_ms{0};
  std::atomic<int> returned{0};
  std::atomic<int> executions{0};
  double cost = 1.0;
  tool_result<Pong> call(const Ping& req, tool_call&) {
    ++executions;
    std::this_thread::sleep_for(std::chrono::milliseconds{delay_ms.load()});
    Pong p;
    p.set_n(req.n());
    ++returned;
    return {p, cost};
  }
  static costly_dep& get() {
    static costly_dep d;
    return d;
  }
};

/// tool_caller that also blocks its cell for Slow{ms} (a long handler).
class busy_caller : public tool_caller {
public:
  using tool_caller::tool_caller;
  static void define(handlers<busy_caller>& h) {
    h.on<Ping>(&busy_caller::ping);
    h.on<Slow>([](busy_caller&, context&, const Slow& s) {
      std::this_thread::sleep_for(std::chrono::milliseconds{s.ms()});
    });
  }
};

} // namespace

// A tool with one place. Cell A's call reaches its deadline while its
// execution runs (given up: it keeps the place until it returns). The
// execution returns, with a cost, while A is busy in a long handler.
// Nothing runs any more, yet the place stays taken until A gets round to
// its inbox (since de5fb3a the attempt, in A's inbox, holds the ticket;
// before, the execution let it go when it returned): cell B's call is
// refused with bulkhead_full.
TEST(tool_review19_node_test, a_returned_execution_in_a_busy_cells_inbox_holds_no_place) {
  auto& dep = costly_dep::get();
  dep.delay_ms = 100;
  registry r;
  r.add<busy_caller>("busy_caller");
  r.add_tool<Ping, Pong>("dep", [](const Ping& req, tool_call& c) {
    return costly_dep::get().call(req, c);
  });
  tool_decl d;
  d.name = "dep";
  d.policy.timeout = 30ms;
  d.policy.attempt_timeout = 30ms;
  d.policy.retry.max_attempts = 1;
  d.policy.breaker.enabled = false;
  d.policy.bulkhead.max_concurrent = 1;
  d.policy.bulkhead.queue = 0;
  node_config cfg;
  cfg.tools.push_back(d);
  node n{std::move(r), cfg};
  supervisor_spec spec;
  for (auto id : {"a", "b"}) {
    child_spec c;
    c.id = id;
    c.agent = "busy_caller";
    c.params = {{"tool", "dep"}};
    spec.children.push_back(c);
  }
  ASSERT_FALSE(n.start("root", spec));
  auto* tool = n.rt()->find_tool("dep");
  auto ra = n.call<Pong>("root/a", ping(1), 5s);
  ASSERT_FALSE(ra);
  EXPECT_TRUE(is(ra.error(), errc::deadline_exceeded)) << describe(ra.error());
  // A is busy for 1.5 s from now; its execution returns at ~100 ms.
  Slow s;
  s.set_ms(1500);
  ASSERT_FALSE(n.send("root/a", s));
  ASSERT_TRUE(eventually([&] { return dep.returned.load() == 1; }, 5s));
  std::this_thread::sleep_for(50ms);
  dep.delay_ms = 0; // B's execution is quick
  auto rb = n.call<Pong>("root/b", ping(2), 5s);
  EXPECT_TRUE(rb) << describe(rb.error()) << " (in_use " << tool->in_use()
                  << ", nothing running)";
  EXPECT_EQ(tool->stats().bulkhead_full.load(), 0u);
}

// -- an execution returning while its cell ends --------------------------------

namespace {

std::atomic<node*> killer_node{nullptr};
std::atomic<int> killer_spin{0};

registry killer_types() {
  registry r;
  r.add<tool_caller>("tool_caller");
  r.add_tool<Ping, Pong>("dep", [](const Ping& req, tool_call& c) {
    // Ends its caller's cell (a kill: its on_exit closes the inbox) and
    // returns at about the same moment, by a random margin.
    if (auto* n = killer_node.load()) {
      if (auto h = n->rt()->lookup(c.caller()); h && req.n() % 2 == 0)
        caf::anon_send_exit(h, caf::exit_reason::kill);
      auto spin = killer_spin.load() > 0 ? req.n() % killer_spin.load() : 0;
      auto until = std::chrono::steady_clock::now() + std::chrono::microseconds{spin};
      while (std::chrono::steady_clock::now() < until) {
      }
    }
    Pong p;
    p.set_n(req.n());
    return tool_result<Pong>{p};
  });
  return r;
}

} // namespace

// Executions that kill their own caller and return while its on_exit
// closes the inbox (the push racing the close, the doorbell racing the
// cell's end), from several cells at once; then the node is destroyed
// with such executions in flight. Nothing may hang, crash (run it under
// ASan) or keep a place.
TEST(tool_review19_node_test, executions_returning_while_their_cells_end) {
  auto seed = seed_for("executions_returning_while_their_cells_end");
  std::mt19937_64 rng{seed};
  auto t_end = std::chrono::steady_clock::now() + 10s;
  for (int round = 0; round < 8 && std::chrono::steady_clock::now() < t_end;
       ++round) {
    tool_decl d;
    d.name = "dep";
    d.policy.timeout = 2s;
    d.policy.attempt_timeout = 2s;
    d.policy.breaker.enabled = false;
    d.policy.bulkhead.max_concurrent = 1 + rng() % 4;
    d.policy.bulkhead.queue = 64;
    node_config cfg;
    cfg.tools.push_back(d);
    if (round % 4 == 3) // executions on the calling cell's own thread
      cfg.tool_executors = [](const tool_decl&) {
        return std::make_shared<inline_executor>();
      };
    std::shared_ptr<detail::tool_shared> sh;
    {
      node n{killer_types(), cfg};
      supervisor_spec spec;
      spec.flags.intensity = 1000000;
      spec.flags.period = 1000ms;
      for (int i = 0; i < 4; ++i) {
        child_spec c;
        c.id = "c" + std::to_string(i);
        c.agent = "tool_caller";
        c.params = {{"tool", "dep"}};
        spec.children.push_back(c);
      }
      ASSERT_FALSE(n.start("root", spec));
      sh = n.rt()->find_tool("dep")->shared();
      killer_node = &n;
      killer_spin = static_cast<int>(rng() % 40);
      std::atomic<bool> stop{false};
      std::atomic<int> slow{0};
      std::vector<std::thread> ts;
      for (int k = 0; k < 3; ++k)
        ts.emplace_back([&, s = rng()] {
          std::mt19937_64 r{s};
          while (!stop) {
            auto t0 = std::chrono::steady_clock::now();
            (void)n.call<Pong>("root/c" + std::to_string(r() % 4),
                               ping(static_cast<int64_t>(r() % 1000)), 3s);
            if (std::chrono::steady_clock::now() - t0 > 2500ms)
              ++slow;
          }
        });
      std::this_thread::sleep_for(std::chrono::milliseconds{200 + rng() % 500});
      if (round % 2 == 0) {
        EXPECT_FALSE(n.stop());
        EXPECT_TRUE(eventually([&] { return sh->in_use.load() == 0; }, 5s))
          << "seed " << seed << " round " << round << ": in_use "
          << sh->in_use.load();
      }
      stop = true;
      for (auto& t : ts)
        t.join();
      killer_node = nullptr;
      EXPECT_EQ(slow.load(), 0) << "seed " << seed << " round " << round;
    }
    EXPECT_TRUE(eventually([&] { return sh->in_use.load() == 0; }, 5s))
      << "seed " << seed << " round " << round;
  }
}
