// Adversarial review of issue 15 (durable sagas, 949e792): paths that
// saga_durable_test does not take. Every test states the promise it
// checks; the deterministic node (det_node) runs a real LMDB data dir on
// CAF's testing scheduler.

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <thread>

#include "support/durable_saga_fixture.hpp"
#include "support/temp_dir.hpp"
#include "vigil/actors/detail/envelope_record.hpp"
#include "vigil/persistence/record.hpp"
#include "vigil/supervision/check.hpp"
#include "vigil/supervision/wire.hpp"

using namespace std::chrono_literals;
using namespace vigil;
using namespace vigil::test;

namespace {

using exec = saga_script::exec;
using comp = saga_script::comp;

class saga_durable_review : public ::testing::Test {
protected:
  void SetUp() override {
    saga_script::get() = saga_script{};
    outcome_sink::handled = 0;
  }
};

/// Runs `jobs` scheduler jobs of the node, moving the clock when nothing is
/// left before `t` is answered (a retry timer waits). The jobs run.
size_t run_jobs(det_node& n, uint64_t t, size_t jobs) {
  size_t ran = n.run_some(jobs);
  for (int tick = 0; ran < jobs && !n.result(t).done && tick < 1000;
       ++tick) {
    n.advance_clock(10ms);
    ran += n.run_some(jobs - ran);
  }
  return ran;
}

// -- a restart of the saga supervisor inside a running node -------------------

/// The saga's sibling "bomb" crashes after each number of jobs in turn;
/// root is one_for_all, so the saga supervisor restarts while its run is
/// wherever it is. The requester must be answered, a resend must get the
/// outcome, and every effect must have landed exactly once.
void restart_sweep(const std::function<void()>& script, size_t fails_at,
                   const char* name) {
  size_t finished_at = 0;
  for (size_t jobs = 0; jobs < 3000; ++jobs) {
    std::string seed = std::string{name} + ": sibling crash after "
                       + std::to_string(jobs) + " jobs";
    saga_script::get() = saga_script{};
    script();
    temp_dir dir;
    det_node n{dir.path(), durable_types()};
    tree_opts o;
    o.root_strategy = strategy::one_for_all;
    o.siblings.push_back(worker("bomb", "scripted"));
    ASSERT_FALSE(n.start(make_tree(o))) << seed;
    auto in = order_input("o", 5, 777);
    auto t = n.call(det_node::answer::env, n.cell(saga_at), in);
    size_t ran = run_jobs(n, t, jobs);
    bool answered = n.result(t).done;
    ASSERT_TRUE(n.send("root/bomb", crash_input())) << seed;
    n.advance(10ms); // the restart happens
    EXPECT_TRUE(run_until(n, t)) << seed << ": the requester got no answer";
    if (std::getenv("REVIEW_DEBUG")) {
      auto kids = n.ask<std::vector<child_info>>("", which_children_atom::value);
      if (kids)
        for (auto& k : *kids)
          std::printf("%s: %s %s restarts %u\n", seed.c_str(), k.path.c_str(),
                      k.status.c_str(), (unsigned) k.restarts);
      auto& r = n.result(t);
      std::printf("first answer: %s\n", r.err ? describe(r.err).c_str() : "outcome");
    }
    auto out = ask_saga(n, in);
    ASSERT_TRUE(out) << seed << ": " << describe(out.error());
    if (answered)
      expect_exact(n, *out, fails_at, seed);
    else
      expect_all_or_nothing(n, *out, seed);
    if (fails_at < step_ids.size())
      EXPECT_FALSE(out->completed()) << seed << ": " << outcome_text(*out);
    n.stop();
    if (::testing::Test::HasFailure())
      return;
    if ((ran < jobs || answered) && finished_at++ > 0)
      return;
  }
  FAIL() << name << ": the run did not finish in 3000 jobs";
}

TEST_F(saga_durable_review, saga_supervisor_restart_at_any_point_completes) {
  restart_sweep([] {}, 3, "completes");
}

TEST_F(saga_durable_review, saga_supervisor_restart_at_any_point_undoes) {
  restart_sweep(
    [] { saga_script::get().execs[{"o", step_at("ship")}] = exec::refuse; },
    2, "ship refuses");
}

TEST_F(saga_durable_review, saga_supervisor_restart_during_comp_retry) {
  restart_sweep(
    [] {
      auto& s = saga_script::get();
      s.execs[{"o", step_at("ship")}] = exec::refuse;
      s.comps[{"o", step_at("charge")}] = {comp::crash, comp::crash};
    },
    2, "charge's compensation crashes twice");
}

// -- storage failures mid-run ---------------------------------------------------

/// The k-th write batch after the input fails (store::set_apply_hook), for
/// each k in turn. The requester must be answered; after the failure the
/// node goes on (no crash), and a resend must get an exact outcome.
void storage_sweep(const std::function<void()>& script, size_t fails_at,
                   const char* name) {
  for (int k = 1; k < 200; ++k) {
    std::string seed =
      std::string{name} + ": write batch " + std::to_string(k) + " fails";
    saga_script::get() = saga_script{};
    script();
    temp_dir dir;
    det_node n{dir.path(), durable_types()};
    ASSERT_FALSE(n.start(make_tree({}))) << seed;
    auto applies = std::make_shared<std::atomic<int>>(0);
    auto failed = std::make_shared<std::atomic<bool>>(false);
    n.storage().set_apply_hook([applies, failed, k](write_item* const*,
                                                    size_t) {
      if (++*applies == k) {
        *failed = true;
        return true;
      }
      return false;
    });
    auto in = order_input("o", 5, 4242);
    auto t = n.call(det_node::answer::env, n.cell(saga_at), in);
    EXPECT_TRUE(run_until(n, t)) << seed << ": the requester got no answer";
    n.storage().set_apply_hook({});
    bool hit = failed->load();
    // Let whatever resumes after the failure settle, then resend.
    n.advance(1000ms);
    auto out = ask_saga(n, in);
    ASSERT_TRUE(out) << seed << ": " << describe(out.error());
    expect_all_or_nothing(n, *out, seed);
    if (fails_at < step_ids.size())
      EXPECT_FALSE(out->completed()) << seed << ": " << outcome_text(*out);
    n.stop();
    if (::testing::Test::HasFailure())
      return;
    if (!hit) {
      std::printf("%s: %d write batches failed in turn\n", name, k - 1);
      return;
    }
  }
}

TEST_F(saga_durable_review, a_failed_write_at_any_point_completes_exactly) {
  storage_sweep([] {}, 3, "completes");
}

TEST_F(saga_durable_review, a_failed_write_at_any_point_undoes_exactly) {
  storage_sweep(
    [] { saga_script::get().execs[{"o", step_at("ship")}] = exec::refuse; },
    2, "ship refuses");
}

// -- memory steps in a durable saga ----------------------------------------------

/// A durable saga over memory steps: the README's condition says "the saga
/// never sends an execute twice". Restarting the saga supervisor while a
/// step's answer is on its way must not run that step again.
TEST_F(saga_durable_review, memory_steps_never_execute_twice_on_resume) {
  size_t finished_at = 0;
  for (size_t jobs = 0; jobs < 3000; ++jobs) {
    std::string seed = "sibling crash after " + std::to_string(jobs) + " jobs";
    saga_script::get() = saga_script{};
    temp_dir dir;
    det_node n{dir.path(), durable_types()};
    tree_opts o;
    o.journal = false;
    o.agent = "scripted";
    o.root_strategy = strategy::one_for_all;
    o.siblings.push_back(worker("bomb", "scripted"));
    ASSERT_FALSE(n.start(make_tree(o))) << seed;
    auto in = order_input("o", 5, 99);
    auto t = n.call(det_node::answer::env, n.cell(saga_at), in);
    size_t ran = run_jobs(n, t, jobs);
    bool answered = n.result(t).done;
    ASSERT_TRUE(n.send("root/bomb", crash_input())) << seed;
    n.advance(10ms);
    run_until(n, t);
    auto& r0 = n.result(t);
    std::string first = !r0.done ? "none" : r0.err ? describe(r0.err) : "outcome";
    auto out = ask_saga(n, in);
    auto& s = saga_script::get();
    std::string events;
    for (auto& ev : s.events)
      events += ev + "; ";
    for (auto& id : step_ids)
      EXPECT_LE(s.executed_of("o", step_at(id)), 1)
        << seed << ": " << step_at(id) << " executed "
        << s.executed_of("o", step_at(id)) << " times; outcome "
        << (out ? outcome_text(*out) : describe(out.error()))
        << "; first requester got: " << first << "; events: " << events
        << "; resumed " << n.rt().stats().saga_resumed.load();
    n.stop();
    if (::testing::Test::HasFailure())
      return;
    if ((ran < jobs || answered) && finished_at++ > 0)
      return;
  }
}

// -- the saga's steps changed between two runs of the node ------------------------

/// A run journaled with 3 steps resumes under a saga of 2 (ship removed
/// from the policy): the outcome must not say "completed" with steps that
/// ran reported `not_run` (or the run must be refused with a clear error
/// naming its record).
TEST_F(saga_durable_review, a_run_journaled_with_other_steps_is_not_faked) {
  temp_dir dir;
  det_node n{dir.path(), durable_types()};
  ASSERT_FALSE(n.start(make_tree({})));
  auto in = order_input("o", 5, 31);
  // ship is frozen: the run waits for its execute (journaled, in flight).
  n.freeze(n.cell(step_at("ship")));
  auto t = n.call(det_node::answer::env, n.cell(saga_at), in);
  for (int i = 0; i < 20; ++i)
    n.advance(10ms);
  ASSERT_FALSE(n.result(t).done);
  EXPECT_EQ(effects_of(n, "reserve").executed, 1);
  EXPECT_EQ(effects_of(n, "charge").executed, 1);
  n.crash();
  tree_opts o;
  o.steps = {"reserve", "charge"};
  ASSERT_FALSE(n.start(make_tree(o)));
  auto out = ask_saga(n, in);
  if (out) {
    for (int i = 0; i < out->steps_size(); ++i) {
      auto id = step_ids[static_cast<size_t>(i)];
      if (effects_of(n, id).executed == 1 && effects_of(n, id).compensated == 0)
        EXPECT_EQ(out->steps(i).status(), "executed")
          << "the outcome hides an effect that landed: " << outcome_text(*out);
    }
  } else {
    EXPECT_NE(describe(out.error()).find("sagas"), std::string::npos)
      << describe(out.error());
  }
  n.stop();
}

// -- the outcome outbox ------------------------------------------------------------

/// outcome_to is a journal agent: a crash at any point after the input
/// delivers the outcome to it exactly once (committed count 1).
TEST_F(saga_durable_review, outcome_reaches_a_journal_receiver_once) {
  size_t finished_at = 0;
  for (size_t jobs = 0; jobs < 3000; ++jobs) {
    std::string seed = "crash after " + std::to_string(jobs) + " jobs";
    saga_script::get() = saga_script{};
    temp_dir dir;
    det_node n{dir.path(), durable_types()};
    tree_opts o;
    o.saga.outcome_to = "root/done";
    o.siblings.push_back(
      worker("done", "sink").with_durability(durability_mode::journal));
    ASSERT_FALSE(n.start(make_tree(o))) << seed;
    auto in = order_input("o", 5, 555);
    auto t = n.call(det_node::answer::env, n.cell(saga_at), in);
    size_t ran = run_jobs(n, t, jobs);
    bool answered = n.result(t).done;
    n.crash();
    ASSERT_FALSE(n.start(make_tree(o))) << seed;
    auto out = ask_saga(n, in);
    ASSERT_TRUE(out) << seed << ": " << describe(out.error());
    n.advance(2000ms);
    records::Snapshot snap;
    bool found = false;
    ASSERT_FALSE(n.storage().snapshot("root/done", snap, found));
    Tally got;
    if (found)
      got.ParseFromString(snap.state());
    EXPECT_EQ(got.count(), 1) << seed << ": outcomes the receiver took";
    n.stop();
    if (::testing::Test::HasFailure())
      return;
    if ((ran < jobs || answered) && finished_at++ > 2)
      return;
  }
}

/// outcome_to names no agent at first: the outcome waits in the outbox
/// and reaches the receiver once it is started.
TEST_F(saga_durable_review, outcome_waits_for_a_missing_receiver) {
  temp_dir dir;
  det_node n{dir.path(), durable_types()};
  tree_opts o;
  o.saga.outcome_to = "root/late";
  ASSERT_FALSE(n.start(make_tree(o)));
  auto out = ask_saga(n, order_input("o", 5, 12));
  ASSERT_TRUE(out) << describe(out.error());
  n.advance(500ms);
  auto ci = n.ask<child_info>(
    "", start_child_atom::value,
    worker("late", "sink").with_durability(durability_mode::journal));
  ASSERT_TRUE(ci) << describe(ci.error());
  for (int i = 0; i < 100 && outcome_sink::handled == 0; ++i)
    n.advance(500ms);
  EXPECT_EQ(outcome_sink::handled, 1);
  n.stop();
}

// -- retention and compaction -------------------------------------------------------

/// Compaction drops a finished run after its retention, never an
/// unfinished one; a resend after compaction does not run any step again.
TEST_F(saga_durable_review, compaction_keeps_unfinished_runs_and_no_rerun) {
  temp_dir dir;
  det_node n{dir.path(), durable_types()};
  tree_opts o;
  o.saga.retention = milliseconds{1};
  ASSERT_FALSE(n.start(make_tree(o)));
  auto done = order_input("o", 5, 71);
  auto first = ask_saga(n, done);
  ASSERT_TRUE(first) << describe(first.error());
  // A second run, stuck at ship.
  n.freeze(n.cell(step_at("ship")));
  auto stuck = order_input("p", 7, 72);
  auto t = n.call(det_node::answer::env, n.cell(saga_at), stuck);
  for (int i = 0; i < 10; ++i)
    n.advance(10ms);
  std::this_thread::sleep_for(20ms); // retention is wall-clock time
  for (int i = 0; i < 10; ++i)
    n.advance(200ms);
  std::string raw;
  bool found = false;
  ASSERT_FALSE(n.storage().get(db::sagas, saga_run_key(saga_at, 0, 72), raw,
                               found));
  EXPECT_TRUE(found) << "compaction dropped an unfinished run";
  ASSERT_FALSE(n.storage().get(db::sagas, saga_run_key(saga_at, 0, 71), raw,
                               found));
  EXPECT_FALSE(found) << "a finished run outlived its retention";
  n.thaw_all();
  ASSERT_TRUE(run_until(n, t));
  // Restart the node (the in-memory cache is gone), then resend.
  n.stop();
  ASSERT_FALSE(n.start(make_tree(o)));
  auto again = ask_saga(n, done);
  ASSERT_TRUE(again) << describe(again.error());
  auto& s = saga_script::get();
  for (auto& id : step_ids)
    EXPECT_EQ(s.executed_of("o", step_at(id)), 1) << id;
  EXPECT_TRUE(again->completed()) << outcome_text(*again);
  n.stop();
}

// -- corrupt records -------------------------------------------------------------

/// A SagaRun record that does not decode: a resend of its input gets an
/// error naming the record, and the node starts.
TEST_F(saga_durable_review, a_corrupt_run_record_is_named) {
  temp_dir dir;
  det_node n{dir.path(), durable_types()};
  ASSERT_FALSE(n.start(make_tree({})));
  n.stop();
  {
    store_options so;
    so.dir = dir.path();
    std::unique_ptr<store> st;
    ASSERT_FALSE(store::open(so, st));
    write_item item;
    mutation m;
    m.what = mutation::op::put;
    m.where = db::sagas;
    m.key = saga_run_key(saga_at, 0, 81);
    m.value = "\x01garbage";
    item.muts.push_back(m);
    write_item* items[] = {&item};
    write_result res[1];
    ASSERT_FALSE(st->apply(items, 1, res));
  }
  ASSERT_FALSE(n.start(make_tree({})));
  auto out = ask_saga(n, order_input("o", 5, 81));
  ASSERT_FALSE(out) << "ran over a corrupt record: " << outcome_text(*out);
  EXPECT_NE(describe(out.error()).find("sagas"), std::string::npos)
    << describe(out.error());
  n.stop();
}

/// Puts `value` at `key` of `where` in the (closed) data dir `dir`.
void put_raw(const std::string& dir, db where, const std::string& key,
             const std::string& value) {
  store_options so;
  so.dir = dir;
  std::unique_ptr<store> st;
  ASSERT_FALSE(store::open(so, st));
  write_item item;
  mutation m;
  m.what = mutation::op::put;
  m.where = where;
  m.key = key;
  m.value = value;
  item.muts.push_back(m);
  write_item* items[] = {&item};
  write_result res[1];
  auto s = st->apply(items, 1, res);
  ASSERT_FALSE(s) << s.message();
}

/// A journal step's kept answer that does not decode: the resend after a
/// crash must not be taken for `duplicate` (which fails the saga at the
/// step as if it had not run, leaving its effect uncompensated and
/// unreported).
TEST_F(saga_durable_review, a_corrupt_kept_answer_does_not_hide_an_effect) {
  for (size_t jobs = 1; jobs < 3000; ++jobs) {
    saga_script::get() = saga_script{};
    temp_dir dir;
    det_node n{dir.path(), durable_types()};
    ASSERT_FALSE(n.start(make_tree({})));
    auto in = order_input("o", 5, 91);
    auto t = n.call(det_node::answer::env, n.cell(saga_at), in);
    run_jobs(n, t, jobs);
    n.crash();
    // Wanted: charge's execute consumed (its answer kept), and the run's
    // record still at the call to charge.
    {
      store_options so;
      so.dir = dir.path();
      std::unique_ptr<store> st;
      ASSERT_FALSE(store::open(so, st));
      records::Snapshot snap;
      bool found = false;
      ASSERT_FALSE(st->snapshot(step_at("charge"), snap, found));
      Tally tl;
      if (!found || !tl.ParseFromString(snap.state()) || tl.count() != 1)
        continue;
      std::string raw;
      ASSERT_FALSE(st->get(db::sagas, saga_run_key(saga_at, 0, 91), raw,
                           found));
      records::SagaRun rec;
      if (!found || decode_record(raw, rec) != record_fault::none
          || rec.call_step() != 1 || rec.call_kind() != 1)
        continue;
      std::vector<std::pair<std::string, std::string>> rows;
      std::string prefix = step_at("charge");
      prefix.push_back('\0');
      ASSERT_FALSE(st->scan_prefix(db::idempotency, prefix, rows));
      ASSERT_EQ(rows.size(), 1u);
      st.reset();
      put_raw(dir.path(), db::idempotency, rows[0].first,
              std::string("\x07not a record", 14));
    }
    ASSERT_FALSE(n.start(make_tree({})));
    auto out = ask_saga(n, in);
    auto e = effects_of(n, "charge");
    if (out && !out->completed()) {
      EXPECT_FALSE(e.executed == 1 && e.compensated == 0
                   && compensation_letters(n) == 0)
        << "after " << jobs << " jobs: charge's effect landed, is not "
        << "compensated, and nothing says so: " << outcome_text(*out);
    }
    n.stop();
    return;
  }
  FAIL() << "no crash point left charge consumed and the run before it";
}

/// A root saga (no child spec, so no durability) with outcome_to: its
/// outcomes would never be sent (only a durable saga has the outbox). The
/// check must say so, as it does for a saga child.
TEST_F(saga_durable_review, outcome_to_on_a_non_durable_root_saga_is_refused) {
  auto types = durable_types();
  supervisor_spec root;
  root.saga.enabled = true;
  root.saga.outcome_to = "done";
  for (auto& id : step_ids)
    root.children.push_back(worker(id, "ledger"));
  auto p = check_child_specs(root, &types);
  ASSERT_EQ(p.size(), 1u) << "outcome_to accepted on a saga that never "
                             "sends outcomes";
  EXPECT_EQ(p[0].field, "saga.outcome_to");
}

/// The saga supervisor is killed (shutdown brutal_kill) by its parent's
/// one_for_all restart while a run waits for a step: the killed
/// supervisor never tells its runs; the next instance resumes the same
/// run. The old run must not live on (a second live run of the input,
/// holding the node's runtime and store), and effects stay exact.
TEST_F(saga_durable_review, a_killed_saga_supervisor_leaves_no_live_run) {
  temp_dir dir;
  det_node n{dir.path(), durable_types()};
  tree_opts o;
  o.root_strategy = strategy::one_for_all;
  o.siblings.push_back(worker("bomb", "scripted"));
  o.saga_shutdown = shutdown_spec::brutal_kill();
  ASSERT_FALSE(n.start(make_tree(o)));
  auto in = order_input("o", 5, 61);
  n.freeze(n.cell(step_at("ship")));
  auto t = n.call(det_node::answer::env, n.cell(saga_at), in);
  for (int i = 0; i < 20; ++i)
    n.advance(10ms);
  ASSERT_FALSE(n.result(t).done);
  auto before = n.system().registry().running();
  ASSERT_TRUE(n.send("root/bomb", crash_input()));
  for (int i = 0; i < 20; ++i)
    n.advance(100ms);
  n.thaw_all();
  for (int i = 0; i < 40; ++i)
    n.advance(100ms);
  EXPECT_TRUE(n.result(t).done) << "the first requester got no answer";
  auto out = ask_saga(n, in);
  ASSERT_TRUE(out) << describe(out.error());
  expect_all_or_nothing(n, *out, "killed supervisor");
  for (int i = 0; i < 40; ++i)
    n.advance(100ms);
  auto after = n.system().registry().running();
  EXPECT_LE(after, before) << "actors alive before the kill: " << before
                           << ", after the run finished: " << after;
  n.stop();
}

/// The wire form keeps a durable saga's fields.
TEST_F(saga_durable_review, wire_form_keeps_durable_saga_fields) {
  tree_opts o;
  o.saga.outcome_to = "root/done";
  o.saga.retention = milliseconds{4321};
  auto tree = make_tree(o);
  supervisor_spec back;
  auto w = to_wire(tree);
  ASSERT_FALSE(from_wire(w, back));
  ASSERT_EQ(back.children.size(), 1u);
  auto& sg = back.children[0];
  EXPECT_EQ(sg.durability.mode, durability_mode::journal);
  ASSERT_TRUE(sg.sup);
  EXPECT_EQ(sg.sup->saga.outcome_to, "root/done");
  EXPECT_EQ(sg.sup->saga.retention, milliseconds{4321});
  EXPECT_TRUE(sg.sup->saga.enabled);
}

} // namespace
