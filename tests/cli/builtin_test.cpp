// vigil's built-in agents (source, counter, sink, flaky) on a real node,
// plus the two agent API additions they use: context::send_after and
// deferred_reply::deliver_bytes.

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <set>
#include <thread>

#include "support/eventually.hpp"
#include "support/temp_dir.hpp"
#include "vigil/builtin.pb.h"
#include "vigil/cli/app.hpp"
#include "vigil/node/node.hpp"
#include "vigil/saga.pb.h"

using namespace vigil;
using namespace vigil::test;
using namespace std::chrono_literals;
using builtin::Count;
using builtin::Get;
using builtin::Number;

namespace {

/// On Number{n}: sends Number{n} to root/counter (or root/nobody if n < 0)
/// after |n| milliseconds.
class timer : public agent<> {
public:
  static void define(handlers<timer>& h) {
    h.on<Number>([](timer&, context& ctx, const Number& n) {
      auto ms = std::chrono::milliseconds{n.n() < 0 ? -n.n() : n.n()};
      ctx.send_after(ms, n.n() < 0 ? "root/nobody" : "root/counter", n);
    });
  }
};

/// Answers Number{n} with the raw bytes of Count{n}, then tries to answer
/// twice more (which must do nothing).
class raw : public agent<> {
public:
  static void define(handlers<raw>& h) {
    h.on<Number>([](raw&, context& ctx, const Number& n) {
      auto r = ctx.defer();
      Count c;
      c.set_count(n.n());
      r.deliver_bytes(Count::descriptor()->full_name(), c.SerializeAsString());
      c.set_count(999);
      r.deliver(c);
      r.fail(make_error(errc::handler_failed, "too late"));
    });
  }
};

registry types() {
  registry r;
  cli::add_builtin_agents(r);
  r.add<timer>("timer").add<raw>("raw");
  return r;
}

supervisor_spec tree(std::vector<child_spec> children) {
  supervisor_spec spec;
  spec.flags.intensity = 100;
  spec.children = std::move(children);
  return spec;
}

child_spec flaky(std::string id, params ps) {
  auto cs = worker(std::move(id), "flaky");
  cs.params = std::move(ps);
  return cs;
}

child_spec source(std::string to, int64_t count, params more = {}) {
  auto cs = worker("source", "source")
              .with_param("to", std::move(to))
              .with_param("count", std::to_string(count));
  for (auto& [k, v] : more)
    cs.params[k] = v;
  return cs;
}

Number number(int64_t n) {
  Number x;
  x.set_n(n);
  return x;
}

Count count_of(node& nd, const std::string& path) {
  auto r = nd.call<Count>(path, Get{}, 5s);
  return r ? r->value : Count{};
}

child_info child(node& nd, const std::string& id) {
  auto kids = nd.which_children("root");
  if (kids)
    for (auto& k : *kids)
      if (k.id == id)
        return k;
  return {};
}

size_t outbox_size(node& nd) {
  size_t n = 1;
  return nd.rt()->storage()->count(db::outbox, n) ? 1 : n;
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(
           std::chrono::steady_clock::now() - t0)
    .count();
}

} // namespace

TEST(builtin_test, source_to_counter_delivers_each_number_once) {
  node nd{types()};
  ASSERT_FALSE(nd.start("root", tree({worker("counter", "counter"),
                                      source("root/counter", 1000,
                                             {{"batch", "64"}})})));
  ASSERT_TRUE(eventually(
    [&] { return count_of(nd, "root/counter").count() == 1000; }));
  auto src = count_of(nd, "root/source");
  EXPECT_EQ(src.count(), 1000);
  EXPECT_EQ(src.sum(), 500500);
  auto c = count_of(nd, "root/counter");
  EXPECT_EQ(c.count(), 1000);
  EXPECT_EQ(c.sum(), 500500);
  EXPECT_TRUE(nd.dead_letters().empty());
}

TEST(builtin_test, journal_source_to_journal_counter_is_exact) {
  temp_dir dir;
  node_config nc;
  nc.data_dir = dir.path();
  nc.sync = sync_mode::nosync; // no power is pulled here
  auto children = [] {
    return std::vector<child_spec>{
      worker("counter", "counter").with_durability(durability_mode::journal),
      source("root/counter", 500, {{"batch", "50"}})
        .with_durability(durability_mode::journal)};
  };
  {
    node nd{types(), nc};
    ASSERT_FALSE(nd.start("root", tree(children())));
    ASSERT_TRUE(eventually(
      [&] { return count_of(nd, "root/counter").count() == 500; }));
    // Every outbox entry is answered and gone: nothing more can arrive.
    ASSERT_TRUE(eventually([&] { return outbox_size(nd) == 0; }));
    auto c = count_of(nd, "root/counter");
    EXPECT_EQ(c.count(), 500);
    EXPECT_EQ(c.sum(), 125250);
    EXPECT_EQ(count_of(nd, "root/source").count(), 500);
  }
  // A second node on the same dir resumes both: the source is done and
  // sends nothing again; the counter keeps its figures.
  node nd{types(), nc};
  ASSERT_FALSE(nd.start("root", tree(children())));
  EXPECT_EQ(count_of(nd, "root/source").count(), 500);
  EXPECT_EQ(outbox_size(nd), 0u);
  auto c = count_of(nd, "root/counter");
  EXPECT_EQ(c.count(), 500);
  EXPECT_EQ(c.sum(), 125250);
}

TEST(builtin_test, journal_source_with_rate_resumes_after_a_restart) {
  temp_dir dir;
  node_config nc;
  nc.data_dir = dir.path();
  nc.sync = sync_mode::nosync;
  node nd{types(), nc};
  ASSERT_FALSE(nd.start(
    "root",
    tree({worker("counter", "counter")
            .with_durability(durability_mode::journal),
          source("root/counter", 40, {{"rate", "200"}, {"batch", "1"}})
            .with_durability(durability_mode::journal)})));
  ASSERT_TRUE(
    eventually([&] { return count_of(nd, "root/counter").count() >= 5; }));
  // The pending timer is lost with the instance; the restarted one resumes
  // at its committed position and starts a new tick chain.
  ASSERT_FALSE(nd.terminate_child("root", "source"));
  auto again = nd.restart_child("root", "source");
  ASSERT_TRUE(again) << describe(again.error());
  ASSERT_TRUE(eventually([&] {
    return count_of(nd, "root/counter").count() == 40 && outbox_size(nd) == 0;
  }));
  auto c = count_of(nd, "root/counter");
  EXPECT_EQ(c.count(), 40);
  EXPECT_EQ(c.sum(), 820);
  EXPECT_EQ(count_of(nd, "root/source").count(), 40);
}

TEST(builtin_test, source_with_rate_paces_its_sends) {
  node nd{types()};
  auto t0 = std::chrono::steady_clock::now();
  // 200/s with the default batch (2) is a tick every 10 ms: the 20th
  // number goes out 9 ticks, 90 ms, after the first.
  ASSERT_FALSE(nd.start("root", tree({worker("counter", "counter"),
                                      source("root/counter", 20,
                                             {{"rate", "200"}})})));
  ASSERT_TRUE(
    eventually([&] { return count_of(nd, "root/counter").count() == 20; }));
  EXPECT_GE(ms_since(t0), 80.0);
  auto c = count_of(nd, "root/counter");
  EXPECT_EQ(c.count(), 20);
  EXPECT_EQ(c.sum(), 210);
}

TEST(builtin_test, sink_counts_without_replying) {
  node nd{types()};
  ASSERT_FALSE(nd.start("root", tree({worker("sink", "sink")})));
  auto r = nd.call<Count>("root/sink", number(7), 5s);
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_EQ(r->value.ByteSizeLong(), 0u); // an empty reply: void handler
  auto c = count_of(nd, "root/sink");
  EXPECT_EQ(c.count(), 1);
  EXPECT_EQ(c.sum(), 7);
}

// Bad params are refused before anything starts (check_child_specs runs
// the agent type's param check), naming the param.
TEST(builtin_test, bad_params_are_refused_before_the_start_naming_them) {
  struct bad {
    child_spec spec;
    const char* names;
  };
  std::vector<bad> cases{
    {worker("source", "source").with_param("count", "5"), "'to'"},
    {source("root/x", 5, {{"count", "many"}}), "'count'"},
    {source("root/x", 5, {{"rate", "-1"}}), "'rate'"},
    {source("root/x", 5, {{"batch", "0"}}), "'batch'"},
    {source("root/x", 5, {{"cuont", "5"}}), "'cuont'"},
    {flaky("flaky", {{"crash_after", "5x"}}), "'crash_after'"},
    {flaky("flaky", {{"delay", "ms"}}), "'delay'"},
    {flaky("flaky", {{"crash_probability", "1.5"}}), "'crash_probability'"},
    {flaky("flaky", {{"crash_every", "-2"}}), "'crash_every'"},
    {worker("counter", "counter").with_param("to", "x"), "'to'"},
  };
  for (auto& c : cases) {
    node nd{types()};
    auto err = nd.start("root", tree({c.spec}));
    EXPECT_TRUE(is(err, errc::invalid_child_spec)) << describe(err);
    EXPECT_NE(describe(err).find("invalid_params"), std::string::npos)
      << describe(err);
    EXPECT_NE(describe(err).find(c.names), std::string::npos)
      << describe(err);
  }
}

TEST(builtin_test, send_after_delivers_after_the_delay) {
  node nd{types()};
  ASSERT_FALSE(nd.start("root", tree({worker("counter", "counter"),
                                      worker("timer", "timer")})));
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_FALSE(nd.send("root/timer", number(100)));
  ASSERT_TRUE(
    eventually([&] { return count_of(nd, "root/counter").count() == 1; }));
  EXPECT_GE(ms_since(t0), 100.0);
  EXPECT_EQ(count_of(nd, "root/counter").sum(), 100);
  // No agent at the path: a dead letter at once, not after the delay.
  ASSERT_FALSE(nd.send("root/timer", number(-60000)));
  ASSERT_TRUE(eventually([&] { return nd.dead_letters().size() == 1; }));
  auto dl = nd.dead_letters()[0];
  EXPECT_EQ(dl.path, "root/nobody");
  EXPECT_NE(dl.reason.find("not_found"), std::string::npos) << dl.reason;
}

TEST(builtin_test, deliver_bytes_answers_once_with_the_raw_bytes) {
  node nd{types()};
  ASSERT_FALSE(nd.start("root", tree({worker("raw", "raw")})));
  auto r = nd.call<Count>("root/raw", number(42), 5s);
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_EQ(r->value.count(), 42); // the later deliver and fail did nothing
}

TEST(builtin_test, flaky_crash_every_is_restarted_one_for_one) {
  node nd{types()};
  ASSERT_FALSE(
    nd.start("root", tree({flaky("flaky", {{"crash_every", "3"}})})));
  std::vector<int64_t> failed;
  for (int64_t n = 1; n <= 9; ++n) {
    auto r = nd.call<Number>("root/flaky", number(n), 5s);
    if (!r) {
      EXPECT_TRUE(is(r.error(), errc::handler_failed)) << describe(r.error());
      failed.push_back(n);
    } else {
      EXPECT_EQ(r->value.n(), n);
    }
  }
  // The per-instance counter starts again after each restart.
  EXPECT_EQ(failed, (std::vector<int64_t>{3, 6, 9}));
  ASSERT_TRUE(eventually([&] { return child(nd, "flaky").restarts == 3; }));
  EXPECT_EQ(child(nd, "flaky").status, "running");
}

TEST(builtin_test, flaky_exit_after_stops_a_transient_child) {
  node nd{types()};
  ASSERT_FALSE(nd.start(
    "root", tree({flaky("flaky", {{"exit_after", "2"}})
                    .with_restart(restart_type::transient)})));
  for (int64_t n = 1; n <= 2; ++n) {
    auto r = nd.call<Number>("root/flaky", number(n), 5s);
    ASSERT_TRUE(r) << describe(r.error());
    EXPECT_EQ(r->value.n(), n);
  }
  ASSERT_TRUE(
    eventually([&] { return child(nd, "flaky").status == "stopped"; }));
  EXPECT_EQ(child(nd, "flaky").restarts, 0u);
  auto r = nd.call<Number>("root/flaky", number(3), 5s);
  ASSERT_FALSE(r);
  EXPECT_TRUE(is(r.error(), errc::not_running)) << describe(r.error());
}

TEST(builtin_test, flaky_corrupt_every_gives_bad_payload) {
  node nd{types()};
  ASSERT_FALSE(
    nd.start("root", tree({flaky("every", {{"corrupt_every", "1"}}),
                           flaky("second", {{"corrupt_every", "2"}})})));
  auto r = nd.call<Number>("root/every", number(1), 5s);
  ASSERT_FALSE(r);
  EXPECT_TRUE(is(r.error(), errc::bad_payload)) << describe(r.error());
  for (int64_t n = 1; n <= 4; ++n) {
    auto r2 = nd.call<Number>("root/second", number(n), 5s);
    if (n % 2 == 1) {
      ASSERT_TRUE(r2) << describe(r2.error());
      EXPECT_EQ(r2->value.n(), n);
    } else {
      ASSERT_FALSE(r2);
      EXPECT_TRUE(is(r2.error(), errc::bad_payload)) << describe(r2.error());
    }
  }
  // A corrupt reply is not a failure of the child.
  EXPECT_EQ(child(nd, "second").restarts, 0u);
  EXPECT_EQ(count_of(nd, "root/second").count(), 4);
}

TEST(builtin_test, flaky_delay_makes_the_callers_deadline_expire) {
  node nd{types()};
  ASSERT_FALSE(nd.start("root", tree({flaky("flaky", {{"delay", "200ms"}})})));
  auto t0 = std::chrono::steady_clock::now();
  auto r = nd.call<Number>("root/flaky", number(1), 50ms);
  ASSERT_FALSE(r);
  EXPECT_TRUE(is(r.error(), errc::deadline_exceeded)) << describe(r.error());
  EXPECT_LT(ms_since(t0), 200.0); // the caller did not wait for the handler
}

TEST(builtin_test, flaky_crash_probability_is_deterministic_for_a_seed) {
  auto run = [](const std::string& seed) {
    node nd{types()};
    EXPECT_FALSE(nd.start("root",
                          tree({flaky("flaky", {{"crash_probability", "0.5"},
                                                {"seed", seed}})})));
    std::vector<int64_t> failed;
    for (int64_t n = 1; n <= 40; ++n) {
      auto r = nd.call<Number>("root/flaky", number(n), 5s);
      if (!r) {
        EXPECT_TRUE(is(r.error(), errc::handler_failed))
          << describe(r.error());
        failed.push_back(n);
      }
    }
    EXPECT_TRUE(eventually(
      [&] { return child(nd, "flaky").restarts == failed.size(); }));
    return failed;
  };
  auto a = run("7");
  auto b = run("7");
  EXPECT_EQ(a, b);
  EXPECT_GT(a.size(), 0u);
  EXPECT_LT(a.size(), 40u);
  EXPECT_NE(run("8"), a);
}

TEST(builtin_test, flaky_crash_after_fails_once_its_time_is_up) {
  node nd{types()};
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_FALSE(
    nd.start("root", tree({flaky("flaky", {{"crash_after", "100ms"}})})));
  int64_t n = 0;
  ASSERT_TRUE(eventually([&] {
    auto r = nd.call<Number>("root/flaky", number(++n), 5s);
    return !r && is(r.error(), errc::handler_failed);
  }));
  EXPECT_GE(ms_since(t0), 100.0);
  ASSERT_TRUE(eventually([&] { return child(nd, "flaky").restarts == 1; }));
}

TEST(builtin_test, flaky_forwards_numbers_to_to) {
  node nd{types()};
  ASSERT_FALSE(
    nd.start("root", tree({worker("counter", "counter"),
                           flaky("flaky", {{"to", "root/counter"}})})));
  for (int64_t n = 1; n <= 5; ++n) {
    auto r = nd.call<Number>("root/flaky", number(n), 5s);
    ASSERT_TRUE(r) << describe(r.error());
    EXPECT_EQ(r->value.n(), n); // the echo
  }
  ASSERT_TRUE(
    eventually([&] { return count_of(nd, "root/counter").count() == 5; }));
  EXPECT_EQ(count_of(nd, "root/counter").sum(), 15);
  EXPECT_EQ(count_of(nd, "root/flaky").count(), 5);
}

// Review finding: a deferred reply of a journal agent, given while the cell
// drains (no requester), went to the cell itself and came back as input.
TEST(builtin_test, deferred_reply_of_a_journal_agent_does_not_come_back) {
  temp_dir dir;
  node_config nc;
  nc.data_dir = dir.path();
  nc.sync = sync_mode::nosync;
  node nd{types(), nc};
  auto f = flaky("f", {{"corrupt_every", "1"}});
  f.durability.mode = durability_mode::journal;
  ASSERT_FALSE(nd.start("root", tree({f})));
  for (int64_t n = 1; n <= 3; ++n)
    ASSERT_FALSE(nd.send("root/f", number(n)));
  ASSERT_TRUE(eventually([&] { return count_of(nd, "root/f").count() == 3; }));
  // Give a looping reply time to show up: it would be counted or dead-lettered.
  auto until = std::chrono::steady_clock::now() + 200ms;
  while (std::chrono::steady_clock::now() < until) {
    ASSERT_EQ(count_of(nd, "root/f").count(), 3);
    ASSERT_TRUE(nd.dead_letters().empty()) << nd.dead_letters()[0].reason;
  }
}

// Review finding: outbox deliveries answered by a degraded receiver's
// stand-in counted as delivered, so they were never applied.
TEST(builtin_test, outbox_to_a_degraded_receiver_waits_for_its_recovery) {
  temp_dir dir;
  node_config nc;
  nc.data_dir = dir.path();
  nc.sync = sync_mode::nosync;
  node nd{types(), nc};
  auto dst = flaky("dst", {{"crash_every", "1"}});
  dst.durability.mode = durability_mode::journal;
  dst.failure = on_failure::degrade;
  dst.degrade.set_fallback(Count{});
  dst.degrade.probe_min = 30s; // no probe during this test
  dst.degrade.probe_max = 30s;
  supervisor_spec spec;
  spec.flags.intensity = 1; // the second crash degrades dst
  spec.children = {dst};
  ASSERT_FALSE(nd.start("root", spec));
  ASSERT_FALSE(nd.send("root/dst", number(100)));
  ASSERT_FALSE(nd.send("root/dst", number(101)));
  ASSERT_TRUE(eventually([&] { return child(nd, "dst").status == "degraded"; }));
  // Now a journal source delivers to the degraded dst through its outbox.
  auto src = worker("src", "source")
               .with_param("to", "root/dst")
               .with_param("count", "3")
               .with_durability(durability_mode::journal);
  ASSERT_TRUE(nd.start_child("root", src));
  // Every delivery so far met the stand-in: nothing may be counted as
  // delivered, so the outbox must still hold all three.
  ASSERT_TRUE(eventually([&] { return outbox_size(nd) == 3; }));
  auto until = std::chrono::steady_clock::now() + 700ms;
  while (std::chrono::steady_clock::now() < until)
    ASSERT_EQ(outbox_size(nd), 3u) << "a stand-in reply was taken as "
                                      "delivery";
}

// The built-in saga step, as examples/policies/saga.yaml uses it: charge
// refuses every 7th order, ship crashes on every 11th; every step that ran
// for a failed saga is compensated once, and nothing else is.
TEST(builtin_test, step_agents_make_a_saga_from_a_policy) {
  node nd{types()};
  supervisor_spec sg;
  sg.flags.intensity = 100;
  sg.saga.enabled = true;
  sg.children = {worker("reserve", "step"),
                 worker("charge", "step").with_param("refuse_every", "7"),
                 worker("ship", "step").with_param("crash_every", "11")};
  ASSERT_FALSE(nd.start("root", tree({supervisor("checkout", sg)})));
  int completed = 0;
  for (int n = 1; n <= 40; ++n) {
    auto r = nd.call<SagaOutcome>("root/checkout", number(n), 5s);
    ASSERT_TRUE(r) << describe(r.error());
    auto& out = r->value;
    bool declined = n % 7 == 0;
    bool crashed = !declined && n % 11 == 0;
    EXPECT_EQ(out.completed(), !declined && !crashed) << n;
    completed += out.completed() ? 1 : 0;
    if (declined) {
      EXPECT_EQ(out.failed_step(), "root/checkout/charge");
      EXPECT_NE(out.failure().find("refuse_every 7"), std::string::npos);
      EXPECT_EQ(out.steps(0).status(), "compensated");
    }
    if (crashed) {
      EXPECT_EQ(out.failed_step(), "root/checkout/ship");
      EXPECT_EQ(out.steps(1).status(), "compensated");
      EXPECT_EQ(out.steps(0).status(), "compensated");
    }
  }
  EXPECT_EQ(completed, 40 - 5 - 3); // 7..35 declined; 11, 22, 33 crashed
  auto state = [&](const std::string& p) {
    auto r = nd.call<builtin::StepCount>(p, Get{}, 5s);
    return r ? r->value : builtin::StepCount{};
  };
  EXPECT_EQ(state("root/checkout/reserve").executed(), 40);
  EXPECT_EQ(state("root/checkout/reserve").compensated(), 8);
  EXPECT_EQ(state("root/checkout/charge").executed(), 35);
  EXPECT_EQ(state("root/checkout/charge").refused(), 5);
  EXPECT_EQ(state("root/checkout/charge").compensated(), 3);
  // A memory step's count starts over with each instance: after the crash
  // on 33, ship ran 34, 36, 37, 38, 39 and 40.
  EXPECT_EQ(state("root/checkout/ship").executed(), 6);
  EXPECT_EQ(child(nd, "checkout").status, "running");
}
