// Issue 15: durable sagas. A saga run's progress is committed in LMDB
// before every call it sends; after a crash of the node it resumes where
// it was, re-sending the call in flight under the same id, which a journal
// step answers with the answer it kept. So each step's effect and each
// compensation lands exactly once, whatever the point of the crash.
//
// The node runs on CAF's deterministic scheduler (det_node) with a real
// LMDB data dir; a crash drops the writer's uncommitted batch and every
// actor, as kill -9 would. The oracle is the steps' own committed state
// (executes and compensations counted in it), read from the data dir.

#include <gtest/gtest.h>

#include <cstdlib>
#include <random>

#include "support/durable_saga_fixture.hpp"
#include "support/temp_dir.hpp"
#include "vigil/persistence/record.hpp"
#include "vigil/supervision/check.hpp"

using namespace std::chrono_literals;
using namespace vigil;
using namespace vigil::test;

namespace {

using exec = saga_script::exec;
using comp = saga_script::comp;

/// root -> [outcomes, if outcome_to is set] -> checkout (a durable saga)
/// -> reserve, charge, ship (journal ledger steps; memory steps of `agent`
/// if `journal` is false).
supervisor_spec durable_tree(saga_spec opts = {}, bool journal = true,
                             const std::string& agent = "ledger") {
  tree_opts o;
  o.saga = opts;
  o.journal = journal;
  o.agent = agent;
  if (!opts.outcome_to.empty())
    o.before.push_back(worker("outcomes", "outcome_sink")
                         .with_durability(durability_mode::journal));
  return make_tree(o);
}

class saga_durable : public ::testing::Test {
protected:
  void SetUp() override {
    saga_script::get() = saga_script{};
  }
};

// -- validation --------------------------------------------------------------

TEST_F(saga_durable, a_saga_may_be_journal_durable_and_nothing_else) {
  auto types = durable_types();
  auto tree = durable_tree();
  EXPECT_TRUE(check_child_specs(tree, &types).empty());
  // snapshot is refused on a saga, durability on a plain supervisor too.
  auto snap = tree;
  snap.children[0].with_durability(durability_mode::snapshot);
  auto p = check_child_specs(snap, &types);
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0].field, "durability");
  EXPECT_NE(p[0].detail.find("journal"), std::string::npos) << p[0].detail;
  supervisor_spec plain;
  plain.children.push_back(worker("a", "ledger"));
  supervisor_spec root;
  root.children.push_back(
    supervisor("plain", plain).with_durability(durability_mode::journal));
  p = check_child_specs(root, &types);
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0].field, "durability");
  // outcome_to needs a durable saga, and a path.
  saga_spec o;
  o.outcome_to = "done";
  auto mem = durable_tree(o);
  mem.children.back().durability.mode = durability_mode::none; // the saga
  p = check_child_specs(mem, &types);
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0].field, "saga.outcome_to");
  o.outcome_to = "/done";
  p = check_child_specs(durable_tree(o), &types);
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0].field, "saga.outcome_to");
  saga_spec r;
  r.retention = milliseconds{0};
  p = check_child_specs(durable_tree(r), &types);
  ASSERT_EQ(p.size(), 1u);
  EXPECT_EQ(p[0].field, "saga.retention");
}

TEST_F(saga_durable, without_a_data_dir_a_durable_saga_says_so) {
  auto rt = std::make_shared<runtime>(durable_types());
  caf::actor_system_config cfg;
  cfg.set("scheduler.max-threads", 2);
  add_message_types(cfg);
  caf::actor_system sys{cfg};
  auto tree = durable_tree();
  // Steps are memory agents here, so that only the saga needs a data dir.
  auto root = spawn_supervisor(sys, rt, durable_tree({}, false, "scripted"),
                               "root");
  caf::scoped_actor self{sys};
  self->request(root, caf::infinite, start_cmd{})
    .receive([](uint64_t) {},
             [](caf::error& e) { FAIL() << describe(e); });
  caf::error got;
  self->request(rt->lookup(saga_at), caf::infinite, order_input("o", 1, 9))
    .receive([](envelope&) { FAIL() << "a durable saga ran without a data dir"; },
             [&](caf::error& e) { got = e; });
  EXPECT_TRUE(is(got, errc::not_running)) << describe(got);
  EXPECT_NE(describe(got).find("data dir"), std::string::npos)
    << describe(got);
  self->request(root, caf::infinite, stop_cmd{}).receive([] {}, [](caf::error&) {});
  self->send_exit(root, caf::exit_reason::user_shutdown);
}

// -- without crashes ----------------------------------------------------------

TEST_F(saga_durable, a_finished_run_is_kept_and_a_resend_gets_its_outcome) {
  temp_dir dir;
  det_node n{dir.path(), durable_types()};
  ASSERT_FALSE(n.start(durable_tree()));
  auto in = order_input("o1", 10, 101);
  auto first = ask_saga(n, in);
  ASSERT_TRUE(first) << describe(first.error());
  EXPECT_TRUE(first->completed());
  // Resent: the stored outcome, no second run; also after a restart.
  auto again = ask_saga(n, in);
  ASSERT_TRUE(again) << describe(again.error());
  EXPECT_EQ(again->SerializeAsString(), first->SerializeAsString());
  n.stop();
  ASSERT_FALSE(n.start(durable_tree()));
  auto after = ask_saga(n, in);
  ASSERT_TRUE(after) << describe(after.error());
  EXPECT_TRUE(after->completed());
  for (auto& id : step_ids) {
    auto e = effects_of(n, id);
    EXPECT_EQ(e.executed, 1) << id;
    EXPECT_EQ(e.compensated, 0) << id;
  }
  size_t runs = 0;
  ASSERT_FALSE(n.storage().count(db::sagas, runs));
  EXPECT_EQ(runs, 1u);
  n.stop();
}

// -- a crash at every point ---------------------------------------------------

// A run made by a tree whose saga had other steps is not resumed by this
// one: its step indexes would name other agents. It stays on disk.
TEST_F(saga_durable, a_run_made_with_other_steps_is_left_as_it_is) {
  temp_dir dir;
  det_node n{dir.path(), durable_types()};
  saga_script::get().execs[{"o", step_at("ship")}] = exec::refuse;
  ASSERT_FALSE(n.start(durable_tree()));
  auto in = order_input("o", 5, 778);
  n.call(det_node::answer::env, n.cell(saga_at), in);
  // Until reserve executed (the run is under way), then crash.
  for (int i = 0; i < 500 && effects_of(n, "reserve").executed == 0; ++i)
    n.run_some(1);
  ASSERT_EQ(effects_of(n, "reserve").executed, 1);
  n.crash();
  auto tree = durable_tree();
  auto& steps = const_cast<supervisor_spec&>(*tree.children.back().sup);
  steps.children.erase(steps.children.begin() + 1); // no charge now
  ASSERT_FALSE(n.start(tree));
  n.advance(200ms);
  std::string raw;
  bool found = false;
  ASSERT_FALSE(n.storage().get(db::sagas, saga_run_key(saga_at, 0, 778), raw,
                               found));
  ASSERT_TRUE(found);
  records::SagaRun rec;
  ASSERT_EQ(decode_record(raw, rec), record_fault::none);
  EXPECT_NE(rec.phase(), "finished");
  EXPECT_EQ(effects_of(n, "reserve").compensated, 0);
  EXPECT_EQ(effects_of(n, "ship").executed, 0);
  n.stop();
  // The tree it was made with finishes it.
  ASSERT_FALSE(n.start(durable_tree()));
  auto out = ask_saga(n, in);
  ASSERT_TRUE(out) << describe(out.error());
  expect_exact(n, *out, 2, "other steps");
  n.stop();
}

/// Where a crash now would catch the run of input (0, id): before its first
/// commit, its execute or compensation in flight (not yet accepted by the
/// step, waiting in the step's journal, or answered and not yet taken), or
/// after its outcome.
std::string point_of(det_node& n, uint64_t id) {
  std::string raw;
  bool found = false;
  EXPECT_FALSE(n.storage().get(db::sagas, saga_run_key(saga_at, 0, id), raw,
                               found));
  if (!found)
    return "before the run's first commit";
  records::SagaRun rec;
  EXPECT_EQ(decode_record(raw, rec), record_fault::none);
  if (rec.phase() == "finished")
    return "after the outcome";
  std::string call = rec.call_kind() == 1 ? "execute" : "compensation";
  auto path = step_at(step_ids.at(rec.call_step()));
  std::string ir_raw;
  EXPECT_FALSE(n.storage().get(db::idempotency,
                               guard_key(path, 0, rec.call_id()), ir_raw,
                               found));
  if (!found)
    return call + " sent, not accepted";
  records::IdempotencyRecord ir;
  EXPECT_EQ(decode_record(ir_raw, ir), record_fault::none);
  return call + (ir.answered() ? " answered, not taken" : " in the journal");
}

/// Crashes the node after each number of scheduler jobs in turn, from the
/// input's arrival to its outcome and beyond, restarts it, and checks
/// that the resumed run ends exactly. `script` sets up saga_script;
/// `fails_at` is the step the saga fails at (3: none).
void sweep(const std::function<void()>& script, size_t fails_at,
           const char* name) {
  size_t finished_at = 0;
  size_t resumed = 0;
  std::map<std::string, size_t> points;
  for (size_t jobs = 0; jobs < 2000; ++jobs) {
    std::string seed = std::string{name} + ": crash after "
                       + std::to_string(jobs) + " jobs";
    saga_script::get() = saga_script{};
    script();
    temp_dir dir;
    det_node n{dir.path(), durable_types()};
    saga_spec opts;
    opts.outcome_to = "root/outcomes";
    ASSERT_FALSE(n.start(durable_tree(opts))) << seed;
    auto in = order_input("o", 5, 777);
    auto t = n.call(det_node::answer::env, n.cell(saga_at), in);
    // Runs `jobs` jobs; where none is left, the clock moves (a retry
    // timer waits) and the count goes on, until nothing is left to do.
    size_t ran = n.run_some(jobs);
    for (int tick = 0; ran < jobs && tick < 1000; ++tick) {
      n.advance_clock(10ms);
      ran += n.run_some(jobs - ran);
    }
    ++points[point_of(n, 777)];
    n.crash();
    ASSERT_FALSE(n.start(durable_tree(opts))) << seed;
    auto out = ask_saga(n, in);
    ASSERT_TRUE(out) << seed << ": " << describe(out.error());
    expect_exact(n, *out, fails_at, seed);
    // The outcome reached outcome_to once, and left the outbox.
    size_t outbox = 1;
    for (int i = 0; i < 200 && outbox > 0; ++i) {
      n.advance(50ms);
      ASSERT_FALSE(n.storage().count(db::outbox, outbox));
    }
    EXPECT_EQ(outbox, 0u) << seed;
    records::Snapshot snap;
    bool got = false;
    ASSERT_FALSE(n.storage().snapshot("root/outcomes", snap, got));
    Tally delivered;
    ASSERT_TRUE(got && delivered.ParseFromString(snap.state())) << seed;
    EXPECT_EQ(delivered.count(), 1) << seed;
    // Whether the restart resumed a run (it had started, and not ended).
    std::string raw;
    bool found = false;
    ASSERT_FALSE(n.storage().get(db::sagas, saga_run_key(saga_at, 0, 777),
                                 raw, found));
    ASSERT_TRUE(found) << seed;
    records::SagaRun rec;
    ASSERT_EQ(decode_record(raw, rec), record_fault::none) << seed;
    if (rec.resumes() > 0)
      ++resumed;
    n.stop();
    if (::testing::Test::HasFailure())
      return;
    if (ran < jobs) {
      // Past the outcome and its delivery: one more point, then done.
      if (finished_at++ > 0) {
        // Most points fall between the run's first commit and its last:
        // those resume it.
        EXPECT_GT(resumed * 2, jobs) << name << ": " << resumed
                                     << " of " << jobs << " points resumed";
        std::printf("%s: %zu crash points, %zu resumed a run\n", name, jobs,
                    resumed);
        for (auto& [where, k] : points)
          std::printf("  %3zu %s\n", k, where.c_str());
        // Every kind of point was hit: before a step, in flight (sent,
        // in the step's journal, answered), after the outcome.
        std::vector<std::string> want = {
          "before the run's first commit", "execute sent, not accepted",
          "execute in the journal", "execute answered, not taken",
          "after the outcome"};
        if (fails_at < step_ids.size())
          for (auto* x : {"compensation sent, not accepted",
                          "compensation in the journal",
                          "compensation answered, not taken"})
            want.emplace_back(x);
        for (auto& w : want)
          EXPECT_GT(points[w], 0u) << name << ": no crash " << w;
        return;
      }
    }
  }
  FAIL() << name << ": the run did not finish in 2000 jobs";
}

TEST_F(saga_durable, a_crash_at_any_point_of_a_completing_run_resumes_it) {
  sweep([] {}, 3, "completes");
}

TEST_F(saga_durable, a_crash_at_any_point_of_a_failing_run_undoes_it_once) {
  sweep(
    [] {
      saga_script::get().execs[{"o", step_at("ship")}] = exec::refuse;
    },
    2, "ship refuses");
}

TEST_F(saga_durable, a_crash_while_a_compensation_is_retried_undoes_once) {
  sweep(
    [] {
      auto& s = saga_script::get();
      s.execs[{"o", step_at("ship")}] = exec::refuse;
      s.comps[{"o", step_at("charge")}] = {comp::crash};
    },
    2, "charge's first compensation crashes");
}

// -- random histories ----------------------------------------------------------

/// A step's committed effects on the order of `amount`.
effects effects_on(det_node& n, const std::string& id, int64_t amount) {
  records::Snapshot snap;
  bool found = false;
  EXPECT_FALSE(n.storage().snapshot(step_at(id), snap, found));
  effects e;
  Tally t;
  if (found && t.ParseFromString(snap.state()))
    for (auto x : t.seen()) {
      e.executed += x == amount ? 1 : 0;
      e.compensated += x == -amount ? 1 : 0;
    }
  return e;
}

uint64_t seeds_from_env(const char* name, uint64_t fallback) {
  if (auto* v = std::getenv(name))
    return std::strtoull(v, nullptr, 10);
  return fallback;
}

// Random histories: 1-4 orders at once, each failing at a random step (or
// none), by a refusal or a crash, with up to two crashing compensation
// attempts; the node crashes 0-3 times at random points, and inputs are
// resent at random (a resend attaches to the run in progress). The model:
// every order ends completed, or with the steps before its failing one
// executed and compensated once each; nothing else ran, no compensation is
// in the dead letters. VIGIL_DSAGA_SEEDS (default 300) histories;
// VIGIL_DSAGA_SEED replays one.
TEST_F(saga_durable, random_histories_with_node_crashes_keep_effects_exact) {
  uint64_t first = 1, count = seeds_from_env("VIGIL_DSAGA_SEEDS", 300);
  if (auto* v = std::getenv("VIGIL_DSAGA_SEED")) {
    first = std::strtoull(v, nullptr, 10);
    count = 1;
  }
  size_t resumed_total = 0, crashes_total = 0, orders_total = 0;
  for (uint64_t seed = first; seed < first + count; ++seed) {
    std::string tag = "VIGIL_DSAGA_SEED=" + std::to_string(seed);
    std::mt19937_64 rng{seed};
    auto pick = [&](uint64_t n) { return rng() % n; };
    saga_script::get() = saga_script{};
    auto& script = saga_script::get();
    size_t orders = 1 + pick(4);
    std::vector<size_t> fails_at(orders, 3);
    std::vector<envelope> inputs;
    for (size_t i = 0; i < orders; ++i) {
      auto id = "o" + std::to_string(i);
      auto k = pick(5); // 3, 4: completes
      if (k < 3) {
        fails_at[i] = k;
        script.execs[{id, step_at(step_ids[k])}] =
          pick(2) == 0 ? exec::refuse : exec::crash;
      }
      for (size_t j = 0; j < 3; ++j) {
        auto crashes = pick(4) == 0 ? 1 + pick(2) : 0;
        for (size_t c = 0; c < crashes; ++c)
          script.comps[{id, step_at(step_ids[j])}].push_back(comp::crash);
      }
      inputs.push_back(order_input(id, static_cast<int64_t>(i + 1),
                                   1000 + seed * 10 + i));
    }
    temp_dir dir;
    det_node n{dir.path(), durable_types()};
    ASSERT_FALSE(n.start(durable_tree())) << tag;
    for (auto& in : inputs)
      n.call(det_node::answer::env, n.cell(saga_at), in);
    auto crashes = pick(4);
    for (size_t c = 0; c < crashes; ++c) {
      auto jobs = pick(200);
      size_t ran = 0;
      for (int tick = 0; ran < jobs && tick < 50; ++tick) {
        ran += n.run_some(jobs - ran);
        if (ran < jobs)
          n.advance_clock(20ms);
      }
      if (pick(3) == 0) // a resend while runs go on
        n.call(det_node::answer::env, n.cell(saga_at),
               inputs[pick(inputs.size())]);
      n.run_some(pick(20));
      resumed_total += n.rt().stats().saga_resumed.load();
      n.crash();
      ++crashes_total;
      ASSERT_FALSE(n.start(durable_tree())) << tag;
    }
    for (size_t i = 0; i < orders; ++i) {
      auto out = ask_saga(n, inputs[i]);
      ASSERT_TRUE(out) << tag << " order " << i << ": "
                       << describe(out.error());
      EXPECT_EQ(out->completed(), fails_at[i] == 3) << tag << " order " << i;
      EXPECT_FALSE(out->compensation_failed()) << tag << " order " << i;
      for (size_t k = 0; k < 3; ++k) {
        auto e = effects_on(n, step_ids[k], static_cast<int64_t>(i + 1));
        EXPECT_EQ(e.executed, k < fails_at[i] ? 1 : 0)
          << tag << " order " << i << " " << step_ids[k];
        EXPECT_EQ(e.compensated, k < fails_at[i] && fails_at[i] < 3 ? 1 : 0)
          << tag << " order " << i << " " << step_ids[k];
      }
      ++orders_total;
    }
    EXPECT_EQ(compensation_letters(n), 0u) << tag;
    resumed_total += n.rt().stats().saga_resumed.load();
    n.stop();
    if (HasFailure())
      return;
  }
  std::printf("%llu histories, %zu orders, %zu node crashes, %zu runs "
              "resumed\n",
              static_cast<unsigned long long>(count), orders_total,
              crashes_total, resumed_total);
  if (count >= 50)
    EXPECT_GT(resumed_total, count / 4) << "crashes rarely hit a run";
}

} // namespace
