// Second adversarial review of shared state (exp19) on a real node:
// operations made in a tool callback of a journal agent's held envelope
// (refused, thrown, stopped, failed commit), the built-in cas_counter
// across restarts and keys changed by someone else, and task_worker under
// chaos with short leases.

#include <gtest/gtest.h>

#include <atomic>
#include <string>

#include "proto/test.pb.h"
#include "support/eventually.hpp"
#include "support/shared_node.hpp"
#include "support/shared_probe.hpp"
#include "support/temp_dir.hpp"
#include "vigil/actors/agent.hpp"
#include "vigil/actors/tool.hpp"
#include "vigil/builtin.pb.h"
#include "vigil/cli/app.hpp"
#include "vigil/node/node.hpp"
#include "vigil/persistence/record.hpp"
#include "vigil/persistence/shared.hpp"

using namespace vigil;
using namespace std::chrono_literals;
using test::ProbeOp;
using test::ProbeResult;
using test::ProbeState;

namespace {

// What the holder's callbacks saw (one holder per test).
std::atomic<int> g_tool_cb{0};     // tool callbacks run
std::atomic<int> g_tool_err{0};    // tool error callbacks run
std::atomic<int> g_put_cb{0};      // kv_put callbacks run
std::atomic<int> g_put_err{0};     // kv_put error callbacks run
std::atomic<uint64_t> g_put_version{0};
std::atomic<bool> g_put_applied{false};
std::atomic<int> g_claim_cb{0};
std::atomic<int> g_claim_empty{0};
std::atomic<uint32_t> g_claim_attempts{0};
std::atomic<bool> g_throw{false};  // throw once in the tool callback
std::atomic<int> g_handled{0};

void reset_globals() {
  g_tool_cb = 0;
  g_tool_err = 0;
  g_put_cb = 0;
  g_put_err = 0;
  g_put_version = 0;
  g_put_applied = false;
  g_claim_cb = 0;
  g_claim_empty = 0;
  g_claim_attempts = 0;
  g_throw = false;
  g_handled = 0;
}

/// A journal agent whose ProbeOp handler calls the tool "dep" (so that its
/// envelope is held) and makes a shared operation in the tool's callback,
/// then (by op.op()) refuses, throws once, or stops.
class holder : public agent<ProbeState> {
public:
  static void define(handlers<holder>& h) {
    h.on<ProbeOp>(&holder::run);
  }

  void run(context& ctx, const ProbeOp& op) {
    if (op.op() == "noop")
      return;
    ++g_handled;
    state().set_handled(state().handled() + 1);
    test::Ping p;
    p.set_n(1);
    auto kind = op.op();
    auto key = op.key();
    ctx.call_tool<test::Pong>(
      "dep", p,
      [this, &ctx, kind, key](test::Pong&&) {
        ++g_tool_cb;
        if (kind.rfind("claim", 0) == 0) {
          ctx.claim_task(
            "jobs", 60s,
            [this](std::optional<claimed_task> t) {
              ++g_claim_cb;
              state().set_callbacks(state().callbacks() + 1);
              if (!t)
                ++g_claim_empty;
              else
                g_claim_attempts = t->attempts;
            },
            [](const caf::error&) {});
        } else {
          ctx.kv_put(
            "s", key, "from-callback", 0,
            [this](kv_result r) {
              ++g_put_cb;
              state().set_callbacks(state().callbacks() + 1);
              g_put_version = r.entry.version;
              g_put_applied = r.applied;
            },
            [](const caf::error&) { ++g_put_err; });
        }
        if (kind == "put_refuse")
          throw tool_failure(make_error(errc::refused, "holder: refused"));
        if ((kind == "put_throw_first" || kind == "claim_throw_first")
            && g_throw.exchange(false))
          throw std::runtime_error("holder: thrown in the tool callback");
        if (kind == "put_stop")
          ctx.stop();
      },
      [](const caf::error&) { ++g_tool_err; });
  }
};

registry review2_registry() {
  auto r = test::probe_registry();
  r.add<holder>("holder");
  r.add_tool<test::Ping, test::Pong>(
    "dep", [](const test::Ping& q, tool_call&) -> tool_result<test::Pong> {
      test::Pong p;
      p.set_n(q.n());
      return p;
    });
  cli::add_builtin_agents(r); // with the shared ones
  return r;
}

ProbeOp op(std::string kind, std::string key = "k", std::string value = {},
           uint64_t expected = 0) {
  ProbeOp o;
  o.set_op(std::move(kind));
  o.set_key(std::move(key));
  o.set_value(std::move(value));
  o.set_expected(expected);
  return o;
}

bool has_shared_consume(write_item* const* items, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    bool sh = false, del = false;
    for (auto& m : items[i]->muts) {
      sh |= m.what == mutation::op::shared;
      del |= m.where == db::journal && m.what == mutation::op::del;
    }
    if (sh && del)
      return true;
  }
  return false;
}

class shared_review2 : public test::shared_node_fixture {
protected:
  void SetUp() override {
    reset_globals();
  }

  void start(std::vector<child_spec> children, int intensity = 100,
             bool real_wall = false) {
    auto nc = config(true, !real_wall);
    tool_decl d;
    d.name = "dep";
    nc.tools.push_back(d);
    start_tree(review2_registry(), std::move(nc), std::move(children),
               intensity);
  }

  static child_spec journal(std::string id, std::string type) {
    auto cs = worker(std::move(id), std::move(type))
                .with_durability(durability_mode::journal);
    cs.max_deliveries = 3;
    return cs;
  }

  /// True once counter `id` has nothing pending and no put in flight.
  bool settled(const std::string& id) {
    auto r = nd_->call<builtin::CasCount>("t/" + id, builtin::Get{}, 5s);
    return r && r->value.pending() == 0 && !r->value.inflight();
  }

  /// The cas_counters' states and the dead letters, for a failure.
  std::string describe_counters() {
    std::string out;
    for (auto c : {"c1", "c2", "c3"}) {
      auto r = nd_->call<builtin::CasCount>(std::string{"t/"} + c,
                                            builtin::Get{}, 5s);
      out += std::string{"\n "} + c + ": ";
      if (!r) {
        out += describe(r.error());
        continue;
      }
      auto& v = r->value;
      out += "applied " + std::to_string(v.applied()) + " conflicts "
             + std::to_string(v.conflicts()) + " base v"
             + std::to_string(v.base_version()) + " total "
             + std::to_string(v.base_total()) + " pending "
             + std::to_string(v.pending())
             + (v.inflight() ? " in flight" : "") + " " + v.error();
    }
    for (auto& d : nd_->dead_letters())
      out += "\n dead letter: " + d.path + " " + d.env.type.str() + " "
             + d.reason;
    return out;
  }

};

// -- 1. held envelopes --------------------------------------------------------

// README ("Committed with the agent's own state", "Failures"): a put made in
// a callback of a call the held envelope waits for commits with that
// envelope's consume; a refusal is committed like a reply. So the put is
// applied once and its callback runs once, after the commit; the envelope
// is a dead letter.
TEST_F(shared_review2, held_put_then_refused_in_the_callback) {
  start({journal("h", "holder")});
  ASSERT_FALSE(nd_->send("t/h", op("put_refuse", "k1")));
  ASSERT_TRUE(test::eventually([&] { return g_put_cb.load() >= 1; }, 10s))
    << "tool cb " << g_tool_cb << " tool err " << g_tool_err << " put err "
    << g_put_err;
  bool found = false;
  auto rec = kv("s", "k1", &found);
  EXPECT_TRUE(found);
  EXPECT_EQ(rec.version(), 1u);
  EXPECT_EQ(g_put_cb.load(), 1);
  EXPECT_TRUE(g_put_applied.load());
  EXPECT_EQ(g_handled.load(), 1);
  EXPECT_TRUE(test::eventually([&] { return nd_->dead_letters().size() == 1; },
                               5s));
}

// README: a callback that throws fails the held envelope's delivery
// (redelivered): what the first delivery's callbacks did is not applied and
// their callbacks never run; the redelivery applies the put once.
TEST_F(shared_review2, held_put_then_thrown_in_the_callback_applies_once) {
  start({journal("h", "holder")});
  g_throw = true;
  ASSERT_FALSE(nd_->send("t/h", op("put_throw_first", "k2")));
  ASSERT_TRUE(test::eventually([&] { return g_put_cb.load() >= 1; }, 10s))
    << "tool cb " << g_tool_cb << " tool err " << g_tool_err << " put err "
    << g_put_err << " handled " << g_handled;
  bool found = false;
  auto rec = kv("s", "k2", &found);
  EXPECT_TRUE(found);
  EXPECT_EQ(rec.version(), 1u);
  EXPECT_EQ(g_put_cb.load(), 1);
  EXPECT_EQ(g_put_err.load(), 0);
  EXPECT_TRUE(g_put_applied.load()) << "the redelivery's put met a conflict: "
                                       "the failed delivery's put was applied";
  EXPECT_EQ(g_handled.load(), 2);
  EXPECT_TRUE(nd_->dead_letters().empty());
}

// Same for a claim: the failed delivery's claim takes no lease, so the
// redelivery's claim gets the task on its first attempt.
TEST_F(shared_review2, held_claim_then_thrown_in_the_callback_claims_once) {
  start({journal("p", "probe"), journal("h", "holder")});
  ASSERT_TRUE(call("p", op("enqueue", "", "payload")).error().empty());
  g_throw = true;
  ASSERT_FALSE(nd_->send("t/h", op("claim_throw_first")));
  ASSERT_TRUE(test::eventually([&] { return g_claim_cb.load() >= 1; }, 10s))
    << "tool cb " << g_tool_cb << " handled " << g_handled;
  EXPECT_EQ(g_claim_cb.load(), 1);
  EXPECT_EQ(g_claim_empty.load(), 0)
    << "the failed delivery's claim took the task's lease";
  EXPECT_EQ(g_claim_attempts.load(), 1u);
  EXPECT_EQ(g_handled.load(), 2);
}

// ctx.stop() in the callback commits the held envelope as handled, with
// the put; the put's callback is dropped (the instance ended), and the
// envelope is not run again.
TEST_F(shared_review2, held_put_then_stop_in_the_callback) {
  start({journal("h", "holder")});
  ASSERT_FALSE(nd_->send("t/h", op("put_stop", "k3")));
  ASSERT_TRUE(test::eventually(
    [&] {
      bool found = false;
      kv("s", "k3", &found);
      return found;
    },
    10s))
    << "tool cb " << g_tool_cb << " handled " << g_handled;
  // The restarted instance (permanent child) settles; nothing more runs.
  ASSERT_TRUE(test::eventually(
    [&] {
      auto c = nd_->which_children("t");
      return c && !c->empty() && c->front().status == "running";
    },
    10s));
  auto st = nd_->call<ProbeResult>("t/h", op("noop"), 5s); // a barrier
  (void)st;
  EXPECT_EQ(kv("s", "k3").version(), 1u);
  EXPECT_EQ(g_put_cb.load(), 0) << "a callback ran after ctx.stop()";
  EXPECT_EQ(g_tool_cb.load(), 2 - (g_handled.load() == 1 ? 1 : 0));
  EXPECT_GE(g_handled.load(), 1);
}

// The held envelope's release commit (holding the callback's put) fails:
// nothing of it is applied, the put's callback never runs; the envelope runs
// again (the tool answer replayed from its record) and the put applies once.
TEST_F(shared_review2, held_put_whose_release_commit_fails_applies_once) {
  start({journal("h", "holder")});
  std::atomic<int> failing{1};
  nd_->rt()->storage()->set_apply_hook(
    [&](write_item* const* items, size_t n) {
      return has_shared_consume(items, n) && failing.fetch_sub(1) > 0;
    });
  ASSERT_FALSE(nd_->send("t/h", op("put_plain", "k4")));
  ASSERT_TRUE(test::eventually([&] { return g_put_cb.load() >= 1; }, 10s))
    << "tool cb " << g_tool_cb << " handled " << g_handled << " failing "
    << failing;
  EXPECT_LE(failing.load(), 0) << "the hook never failed a commit";
  bool found = false;
  auto rec = kv("s", "k4", &found);
  EXPECT_TRUE(found);
  EXPECT_EQ(rec.version(), 1u);
  EXPECT_EQ(g_put_cb.load(), 1);
  EXPECT_TRUE(g_put_applied.load());
  EXPECT_EQ(g_put_version.load(), 1u);
}

// -- 2. cas_counter -----------------------------------------------------------

int64_t total_of(const std::string& v) {
  return std::stoll(v.substr(0, v.find('|')));
}

child_spec counter_spec(std::string id) {
  auto cs = worker(std::move(id), "cas_counter")
              .with_durability(durability_mode::journal)
              .with_param("store", "s")
              .with_param("key", "count");
  cs.max_deliveries = 5;
  return cs;
}

void send_number(node& nd, const std::string& path, int64_t n) {
  builtin::Number num;
  num.set_n(n);
  ASSERT_TRUE(test::eventually([&] { return !nd.send(path, num); }, 10s));
}

/// Terminates child `id` of t and starts it again (OTP: restart_child
/// takes a terminated child): the instance ends, its state is the last
/// committed one.
void restart(node& nd, const std::string& id) {
  ASSERT_FALSE(nd.terminate_child("t", id));
  auto r = nd.restart_child("t", id);
  ASSERT_TRUE(static_cast<bool>(r)) << describe(r.error());
}

// Control: the key is deleted by someone else between two increments; the
// next increment re-creates it with that increment alone (the deleted total
// is gone, as a delete means).
TEST_F(shared_review2, cas_counter_after_a_delete_counts_from_zero) {
  start({journal("p", "probe"), counter_spec("c")});
  send_number(*nd_, "t/c", 1);
  ASSERT_TRUE(test::eventually(
    [&] { return kv("s", "count").value() == "1"; }, 10s));
  auto del = call("p", op("delete", "count", "", 1));
  ASSERT_TRUE(del.error().empty()) << del.value();
  ASSERT_TRUE(del.applied());
  send_number(*nd_, "t/c", 2);
  ASSERT_TRUE(test::eventually([&] { return settled("c"); }, 10s))
    << kv("s", "count").value() << describe_counters();
  EXPECT_EQ(kv("s", "count").value(), "2");
}

// The same, with a restart of the counter (restart_child, as an operator
// or a crash does) after its put was applied: the restarted instance must
// not apply increment 1 a second time. Each increment applies exactly once.
TEST_F(shared_review2, cas_counter_restart_after_a_delete_reapplies_nothing) {
  start({journal("p", "probe"), counter_spec("c")});
  send_number(*nd_, "t/c", 1);
  ASSERT_TRUE(test::eventually(
    [&] { return kv("s", "count").value() == "1"; }, 10s));
  auto del = call("p", op("delete", "count", "", 1));
  ASSERT_TRUE(del.error().empty()) << del.value();
  ASSERT_TRUE(del.applied());
  restart(*nd_, "c");
  send_number(*nd_, "t/c", 2);
  ASSERT_TRUE(test::eventually([&] { return settled("c"); }, 10s))
    << kv("s", "count").value() << describe_counters();
  auto rec = kv("s", "count");
  EXPECT_EQ(rec.value(), "2")
    << "increment 1 (applied at v1, deleted at v2) was applied again by the "
       "restarted counter; version "
    << rec.version();
}

// The same with a reset by someone else's put ("0"): increments already in
// the reset total stay out of it. (A first version, with per-counter marks
// in the value, put increment 1 in again after both.)
TEST_F(shared_review2, cas_counter_restart_after_a_reset_reapplies_nothing) {
  start({journal("p", "probe"), counter_spec("c")});
  send_number(*nd_, "t/c", 1);
  ASSERT_TRUE(test::eventually(
    [&] { return kv("s", "count").value() == "1"; }, 10s));
  auto put = call("p", op("put", "count", "0", 1));
  ASSERT_TRUE(put.applied()) << put.error() << put.value();
  restart(*nd_, "c");
  send_number(*nd_, "t/c", 2);
  ASSERT_TRUE(test::eventually([&] { return settled("c"); }, 10s))
    << kv("s", "count").value() << describe_counters();
  EXPECT_EQ(total_of(kv("s", "count").value()), 2)
    << kv("s", "count").value();
}

// Several counters on one key, each restarted in the middle: the total is
// exact.
TEST_F(shared_review2, cas_counters_with_restarts_add_exactly) {
  start({counter_spec("c1"), counter_spec("c2"), counter_spec("c3")});
  int64_t sent = 0;
  for (int64_t n = 1; n <= 60; ++n) {
    auto who = "t/c" + std::to_string(1 + n % 3);
    send_number(*nd_, who, n);
    sent += n;
    if (n % 10 == 0) {
      // Its Numbers handled first (a Get behind them): a Number still in
      // the mailbox of a terminated child is a not_running dead letter.
      auto id = "c" + std::to_string(1 + (n / 10) % 3);
      ASSERT_TRUE(nd_->call<builtin::CasCount>("t/" + id, builtin::Get{}, 5s));
      restart(*nd_, id);
    }
  }
  ASSERT_TRUE(test::eventually(
    [&] {
      bool f = false;
      auto r = kv("s", "count", &f);
      return f && total_of(r.value()) >= sent;
    },
    20s)) << kv("s", "count").value() << describe_counters();
  // Settled: every counter has nothing unapplied.
  for (auto c : {"c1", "c2", "c3"})
    ASSERT_TRUE(test::eventually(
      [&] {
        auto r = nd_->call<builtin::CasCount>(std::string{"t/"} + c,
                                              builtin::Get{}, 5s);
        return r && r->value.pending() == 0 && !r->value.inflight();
      },
      10s)) << c;
  EXPECT_EQ(total_of(kv("s", "count").value()), sent)
    << kv("s", "count").value();
}

// A value someone else wrote that is not an integer: the counter reports a
// clear error and keeps its increment; it must not crash-loop through its
// supervisor's restart intensity (a first version restarted, flushed,
// conflicted and threw again, 34 times in 3 s). Once the value is an
// integer again, the increment is added.
TEST_F(shared_review2, cas_counter_on_a_foreign_value_does_not_crash_loop) {
  start({journal("p", "probe"), counter_spec("c")}, 1000);
  auto put = call("p", op("put", "count", "hello", 0));
  ASSERT_TRUE(put.applied());
  send_number(*nd_, "t/c", 5);
  // Give it the time of a few restarts (no condition to wait for: the
  // absence of a loop); bounded by the restart count itself.
  uint64_t restarts = 0;
  test::eventually(
    [&] {
      auto c = nd_->which_children("t");
      if (!c)
        return false;
      for (auto& ci : *c)
        if (ci.id == "c")
          restarts = ci.restarts;
      return restarts >= 20;
    },
    3s);
  EXPECT_LT(restarts, 20u) << "cas_counter restarted " << restarts
                           << " times in 3 s on a foreign value";
  // It says why, and keeps the increment for when the value is an integer.
  auto st = nd_->call<builtin::CasCount>("t/c", builtin::Get{}, 5s);
  ASSERT_TRUE(static_cast<bool>(st));
  EXPECT_NE(st->value.error().find("not an integer"), std::string::npos)
    << st->value.error();
  EXPECT_EQ(st->value.pending(), 5);
  auto fix = call("p", op("put", "count", "10", kv("s", "count").version()));
  ASSERT_TRUE(fix.applied()) << fix.error() << fix.value();
  EXPECT_TRUE(test::eventually([&] { return kv("s", "count").value() == "15"; },
                               5s))
    << kv("s", "count").value();
}

// -- 3. task_worker -------------------------------------------------------------

// Every task's Number reaches the journal sink once, with stalls past short
// leases, crashes, failures and two workers.
TEST_F(shared_review2, task_workers_under_chaos_deliver_each_task_once) {
  auto enq = journal("e", "enqueuer");
  enq.params["queue"] = "jobs";
  enq.params["max_attempts"] = "10";
  auto sink = journal("sink", "sink");
  auto w = [](std::string id) {
    auto cs = journal(std::move(id), "task_worker");
    cs.params["queue"] = "jobs";
    cs.params["to"] = "t/sink";
    cs.params["lease"] = "100ms";
    cs.params["poll"] = "10ms";
    cs.params["stall_every"] = "3";
    cs.params["crash_every"] = "5";
    cs.params["fail_every"] = "7";
    cs.params["fail_attempts"] = "2";
    return cs;
  };
  // The node's real wall clock: leases expire in real time.
  start({sink, enq, w("w1"), w("w2")}, 1000, true);
  int64_t sum = 0;
  const int64_t tasks = 40;
  for (int64_t n = 1; n <= tasks; ++n) {
    send_number(*nd_, "t/e", n);
    sum += n;
  }
  bool done = test::eventually(
    [&] {
      auto r = nd_->call<builtin::Count>("t/sink", builtin::Get{}, 5s);
      return r && r->value.count() >= tasks;
    },
    60s);
  // A little more time for duplicates to show (bounded by the same check).
  auto r = nd_->call<builtin::Count>("t/sink", builtin::Get{}, 5s);
  ASSERT_TRUE(done) << (r ? r->value.count() : -1);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->value.count(), tasks);
  EXPECT_EQ(r->value.sum(), sum);
  // The chaos did happen.
  int64_t stalled = 0, failed = 0;
  for (auto id : {"t/w1", "t/w2"}) {
    auto c = nd_->call<builtin::WorkerCount>(id, builtin::Get{}, 5s);
    ASSERT_TRUE(c) << id;
    stalled += c->value.stalled();
    failed += c->value.failed();
  }
  EXPECT_GT(stalled, 0);
  EXPECT_GT(failed, 0);
}

} // namespace
