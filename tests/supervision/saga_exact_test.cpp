// Issue 14: sagas compensate every step that ran exactly once, and only
// steps that ran. One regression test per case the review demonstrated
// (each failed on main before), and the rules the fix rests on.

#include "support/saga_fixture.hpp"

using namespace std::chrono_literals;
using namespace vigil;
using namespace vigil::test;

namespace {

using exec = saga_script::exec;
using comp = saga_script::comp;

class saga_exact : public saga_fixture {};

// -- 1. degraded is not done ------------------------------------------------

// Case 1: a step with on_failure: degrade was accepted, and its stand-in's
// answer counted as executed. Degrade inside a saga is refused now.
TEST_F(saga_exact, degrade_inside_a_saga_is_refused) {
  supervisor_spec sg;
  sg.children = step_specs();
  sg.children[1] = degrading_as("charge", "scripted");
  sg.saga.enabled = true;
  auto problems = check_child_specs(sg, &rt->types(), "shop/checkout");
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_EQ(problems[0].where, "shop/checkout/charge");
  EXPECT_EQ(problems[0].field, "on_failure");
  EXPECT_EQ(problems[0].code, spec_errc::invalid_saga);
  // And the running supervisor refuses it as a new step.
  start_shop();
  auto r = ask<child_info>(handle(saga_path), start_child_atom::value,
                           degrading_as("refund", "scripted"));
  ASSERT_FALSE(r);
  EXPECT_TRUE(is(r.error(), errc::invalid_child_spec)) << describe(r.error());
}

// A stand-in's answer, wherever it comes from, fails the step: the saga
// never counts it as executed. (A step here relays its execute to a
// degraded agent and returns that answer unchanged.)
TEST_F(saga_exact, a_reply_marked_degraded_fails_the_step) {
  start_shop();
  // The silent actor stands in at charge's path: it answers every execute
  // with a degraded envelope.
  auto fake = sys.spawn([](caf::event_based_actor*) -> caf::behavior {
    return {[](envelope&) {
      envelope out;
      out.type = SagaStepOutput::descriptor()->full_name();
      SagaStepOutput{}.SerializeToString(&out.payload);
      out.flags |= envelope::degraded_flag;
      return out;
    }};
  });
  sups.push_back(fake);
  rt->bind(step_path("charge"), fake);
  auto out = run_saga("o-1");
  EXPECT_FALSE(out.completed());
  EXPECT_EQ(out.failed_step(), step_path("charge"));
  EXPECT_EQ(out.failure().rfind("degraded", 0), 0u) << out.failure();
  EXPECT_EQ(step_in(out, "charge").status(), "failed");
  EXPECT_EQ(step_in(out, "reserve").status(), "compensated");
  EXPECT_EQ(compensated("o-1", "reserve"), 1);
}

// -- 2. a step that times out but completes later ----------------------------

// Case 2: charge waits out a 60 s restart backoff; step_timeout is 1 s.
// Before, the saga gave up at 1 s, and when charge restarted it ran the
// buffered execute: a charge nothing compensated.
TEST_F(saga_exact, a_step_stuck_in_backoff_is_expired_not_run_later) {
  saga_spec opts;
  opts.step_timeout = 1s;
  start_shop(opts, 60s);
  crash(step_path("charge"));
  ASSERT_EQ(status_of(handle(saga_path), "charge"), "restarting");
  auto h = submit("o-1");
  run();
  EXPECT_TRUE(self->mailbox().empty()) << "answered before the deadline";
  advance(1001ms);
  // At its deadline the saga learns that charge did not start.
  auto out = outcome_of(h);
  EXPECT_FALSE(out.completed());
  EXPECT_EQ(out.failed_step(), step_path("charge"));
  EXPECT_EQ(out.failure().rfind("expired", 0), 0u) << out.failure();
  EXPECT_EQ(step_in(out, "charge").status(), "failed");
  EXPECT_EQ(step_in(out, "reserve").status(), "compensated");
  // charge restarts, and does not run what the saga gave up.
  advance(60s);
  ASSERT_EQ(status_of(handle(saga_path), "charge"), "running");
  EXPECT_EQ(executed("o-1", "charge"), 0);
  EXPECT_EQ(compensated("o-1", "reserve"), 1);
  EXPECT_EQ(compensated("o-1", "charge"), 0);
}

// Case 2, the other way: a step that simply runs longer than step_timeout.
// It ran, so the saga fails at it and compensates it too (before, the late
// step's envelope carried no step deadline and the saga went on as if in
// time... or, with a timeout, never compensated it).
TEST_F(saga_exact, a_step_that_finishes_late_ran_and_is_compensated) {
  saga_spec opts;
  opts.step_timeout = 1s;
  start_shop(opts);
  saga_script::get().slow_ms = 3000;
  script_exec("o-1", "charge", exec::slow);
  auto out = run_saga("o-1");
  EXPECT_FALSE(out.completed());
  EXPECT_EQ(out.failed_step(), step_path("charge"));
  EXPECT_EQ(out.failure().rfind("deadline_exceeded", 0), 0u) << out.failure();
  EXPECT_TRUE(step_in(out, "charge").late());
  EXPECT_EQ(step_in(out, "charge").status(), "compensated");
  EXPECT_EQ(step_in(out, "reserve").status(), "compensated");
  EXPECT_EQ(step_in(out, "ship").status(), "not_run");
  EXPECT_EQ(executed("o-1", "charge"), 1);
  EXPECT_EQ(compensated("o-1", "charge"), 1);
  EXPECT_EQ(compensated("o-1", "reserve"), 1);
  // Reverse order: charge is undone before reserve.
  auto& ev = saga_script::get().events;
  ASSERT_GE(ev.size(), 2u);
  EXPECT_EQ(ev[ev.size() - 2], "compensate o-1 " + step_path("charge"));
  EXPECT_EQ(ev.back(), "compensate o-1 " + step_path("reserve"));
  // The late reply did not fail the step's agent.
  EXPECT_EQ(restarts("charge"), 0u);
}

// The saga input's own deadline caps every step's.
TEST_F(saga_exact, the_saga_deadline_caps_the_step_deadline) {
  saga_spec opts;
  opts.step_timeout = 10s;
  start_shop(opts, 60s);
  crash(step_path("charge"));
  auto e = wrap(order("o-1"), ns_in(500ms));
  auto h = self->request(handle(saga_path), caf::infinite, std::move(e));
  run();
  advance(501ms);
  auto out = outcome_of(h);
  EXPECT_EQ(out.failed_step(), step_path("charge"));
  EXPECT_EQ(out.failure().rfind("expired", 0), 0u) << out.failure();
  advance(60s);
  EXPECT_EQ(executed("o-1", "charge"), 0);
}

// -- 3. compensations: no retry while an attempt may still run ---------------

// Case 3: charge's first compensate throws, and its cell waits out a long
// backoff. Before, the saga retried every step_timeout under fresh ids
// while the first attempts were still queued: the refund ran three times.
TEST_F(saga_exact, a_compensation_queued_in_backoff_runs_once) {
  saga_spec opts;
  opts.step_timeout = 1s;
  opts.retry_delay = 100ms;
  start_shop(opts, 60s);
  script_exec("o-1", "ship", exec::refuse);
  script_comps("o-1", "charge", {comp::crash});
  auto h = submit("o-1");
  run();
  // The failed attempt answered at once; the retry waits in charge's
  // buffer for the restart.
  for (int i = 0; i < 50; ++i)
    advance(1s);
  EXPECT_TRUE(self->mailbox().empty()) << "gave up on a queued attempt";
  advance(20s);
  auto out = outcome_of(h);
  EXPECT_EQ(step_in(out, "charge").status(), "compensated");
  EXPECT_EQ(step_in(out, "charge").compensation_attempts(), 1u);
  EXPECT_FALSE(out.compensation_failed());
  EXPECT_EQ(compensated("o-1", "charge"), 1) << "the refund ran twice";
  EXPECT_EQ(compensated("o-1", "reserve"), 1);
  EXPECT_EQ(compensate_calls("o-1", "charge"),
            2);
}

// A compensation that refuses is not retried: a refusal would refuse again.
TEST_F(saga_exact, a_refused_compensation_is_a_dead_letter_at_once) {
  start_shop();
  script_exec("o-1", "ship", exec::refuse);
  script_comps("o-1", "charge", {comp::refuse});
  auto out = run_saga("o-1");
  EXPECT_TRUE(out.compensation_failed());
  EXPECT_EQ(step_in(out, "charge").status(), "compensation_failed");
  EXPECT_EQ(step_in(out, "charge").compensation_attempts(), 0u);
  EXPECT_EQ(compensate_calls("o-1", "charge"),
            1);
  EXPECT_EQ(letters(step_path("charge"), "compensation_failed"), 1u);
  EXPECT_EQ(compensated("o-1", "reserve"), 1); // the rest still ran
}

// -- 4. business failures are outcomes, not crashes --------------------------

// Case 4: 11 declined cards escalated the saga supervisor, 22 ended the
// root. A refusing execute fails the saga at that step and restarts
// nothing.
TEST_F(saga_exact, refusals_spend_no_restart_budget) {
  auto shop = start_shop({}, {}, false, /*intensity*/ 1);
  for (int i = 0; i < 30; ++i) {
    auto id = "o-" + std::to_string(i);
    script_exec(id, "charge", exec::refuse);
    auto out = run_saga(id);
    ASSERT_EQ(out.failed_step(), step_path("charge")) << i;
    EXPECT_NE(out.failure().find("card declined"), std::string::npos);
    EXPECT_EQ(step_in(out, "reserve").status(), "compensated");
    EXPECT_EQ(step_in(out, "charge").status(), "failed");
  }
  EXPECT_EQ(restarts("charge"), 0u);
  EXPECT_EQ(restarts("reserve"), 0u);
  EXPECT_EQ(status_of(shop, "checkout"), "running");
}

// A thrown execute is a crash: it fails the saga at that step (not
// compensated) and restarts the step, spending the budget.
TEST_F(saga_exact, a_thrown_execute_is_a_crash_and_fails_the_saga) {
  start_shop();
  script_exec("o-1", "charge", exec::crash);
  auto out = run_saga("o-1");
  EXPECT_EQ(out.failed_step(), step_path("charge"));
  EXPECT_EQ(out.failure().rfind("handler_failed", 0), 0u) << out.failure();
  EXPECT_EQ(step_in(out, "charge").status(), "failed");
  EXPECT_EQ(compensated("o-1", "charge"), 0);
  EXPECT_EQ(compensated("o-1", "reserve"), 1);
  EXPECT_EQ(restarts("charge"), 1u);
}

// -- lifetimes ---------------------------------------------------------------

// A run whose supervisor stops gets an outcome at once; what it still owed
// is in the dead letters (before, its compensations went on to whatever was
// at the paths, or to not_found, and the requester waited).
TEST_F(saga_exact, stopping_the_tree_answers_every_run) {
  saga_spec opts;
  opts.retry_delay = 10s;
  auto shop = start_shop(opts);
  script_exec("o-1", "ship", exec::refuse);
  script_comps("o-1", "charge", {comp::crash});
  auto h = submit("o-1");
  run(); // charge's compensation failed once; its retry is 10 s away
  ASSERT_TRUE(self->mailbox().empty());
  ASSERT_FALSE(ask_void(shop, stop_cmd{}));
  run();
  auto out = outcome_of(h);
  EXPECT_TRUE(out.compensation_failed());
  EXPECT_EQ(step_in(out, "charge").status(), "compensation_failed");
  EXPECT_EQ(step_in(out, "reserve").status(), "compensation_failed");
  EXPECT_EQ(letters(step_path("charge"), "compensation_failed"), 1u);
  EXPECT_EQ(letters(step_path("reserve"), "compensation_failed"), 1u);
  advance(60s);
  EXPECT_EQ(compensated("o-1", "charge"), 0);
  EXPECT_EQ(compensated("o-1", "reserve"), 0);
}

// A restart of the saga supervisor ends its runs: no compensation goes to
// the fresh cells, which never executed anything.
TEST_F(saga_exact, a_restarted_saga_supervisor_sends_nothing_to_new_cells) {
  saga_spec opts;
  opts.retry_delay = 10s;
  auto shop = start_shop(opts);
  script_exec("o-1", "ship", exec::refuse);
  script_comps("o-1", "charge", {comp::crash});
  auto h = submit("o-1");
  run();
  ASSERT_FALSE(ask_void(shop, terminate_child_atom::value,
                        std::string{"checkout"}));
  auto r = ask<child_info>(shop, restart_child_atom::value,
                           std::string{"checkout"});
  ASSERT_TRUE(r) << describe(r.error());
  auto out = outcome_of(h);
  EXPECT_TRUE(out.compensation_failed());
  advance(60s);
  EXPECT_EQ(compensate_calls("o-1", "charge"),
            1);
  EXPECT_EQ(compensated("o-1", "reserve"), 0);
  // The new supervisor runs sagas as before.
  auto ok = run_saga("o-2");
  EXPECT_TRUE(ok.completed());
}

// A second request with the same message id while the first runs is
// refused: their steps' ids would be the same.
TEST_F(saga_exact, a_second_run_of_one_input_is_refused_while_it_runs) {
  saga_spec opts;
  opts.step_timeout = 1s;
  start_shop(opts, 60s);
  crash(step_path("charge"));
  auto e = wrap(order("o-1"));
  auto h1 = self->request(handle(saga_path), caf::infinite, e);
  run();
  auto h2 = self->request(handle(saga_path), caf::infinite, e);
  run();
  ASSERT_EQ(self->mailbox().size(), 1u);
  std::move(h2).receive([](envelope&) { ADD_FAILURE() << "ran twice"; },
                        [](caf::error& err) {
                          EXPECT_TRUE(is(err, errc::duplicate))
                            << describe(err);
                        });
  advance(1001ms);
  auto out = outcome_of(h1);
  EXPECT_EQ(out.failed_step(), step_path("charge"));
  EXPECT_EQ(executed("o-1", "reserve"), 1);
}

// -- validation --------------------------------------------------------------

TEST_F(saga_exact, saga_options_and_steps_are_validated) {
  supervisor_spec sg;
  sg.children = step_specs();
  sg.children.push_back(worker("echo", "echo")); // not a saga step
  supervisor_spec nested;
  nested.children.push_back(worker("x", "scripted"));
  sg.children.push_back(supervisor("inner", nested));
  sg.saga.enabled = true;
  sg.saga.step_timeout = 0ms;
  sg.saga.retry_delay = 0ms;
  std::vector<std::string> got;
  for (auto& p : check_child_specs(sg, &rt->types(), "s"))
    got.push_back(p.where + " " + p.field + " " + to_string(p.code));
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<std::string>{
                   "s saga.retry_delay invalid_saga",
                   "s saga.step_timeout invalid_saga",
                   "s/echo agent invalid_saga",
                   "s/inner kind invalid_saga",
                 }));
  // A saga of memory steps is valid, with a warning per step.
  supervisor_spec ok;
  ok.children = step_specs();
  ok.saga.enabled = true;
  EXPECT_TRUE(check_child_specs(ok, &rt->types(), "s").empty());
  auto warnings = saga_warnings(ok, "s");
  ASSERT_EQ(warnings.size(), 3u);
  EXPECT_EQ(warnings[0].where, "s/reserve");
  EXPECT_EQ(warnings[0].field, "durability");
  ok.children = step_specs(true);
  EXPECT_TRUE(saga_warnings(ok, "s").empty());
  // A saga of no steps.
  supervisor_spec none;
  none.saga.enabled = true;
  auto empty = check_child_specs(none, &rt->types(), "s");
  ASSERT_EQ(empty.size(), 1u);
  EXPECT_EQ(empty[0].field, "children");
  EXPECT_EQ(empty[0].code, spec_errc::invalid_saga);
}

// -- message ids -------------------------------------------------------------

// Every execute and compensation of one saga input has an id derived from
// it, so a journal step recognizes a redelivery: a compensation that a
// stopped journal step kept is applied once, and the saga's retry of it is
// answered `duplicate`, not run again.
TEST_F(saga_exact, a_journal_step_recognizes_a_retried_compensation) {
  saga_spec opts;
  opts.retry_delay = 100ms;
  start_shop(opts, 1s, /*journal*/ true);
  auto sg = handle(saga_path);
  script_exec("o-1", "ship", exec::refuse);
  script_comps("o-1", "charge", {comp::crash});
  auto h = submit("o-1");
  run(); // charge's compensation threw; charge restarts in 1 s
  advance(100ms); // the retry: charge's journal accepts it, waiting
  ASSERT_EQ(status_of(sg, "charge"), "restarting");
  ASSERT_FALSE(ask_void(sg, terminate_child_atom::value,
                        std::string{"charge"}));
  // Stopped: the saga hears not_running, the journal keeps the envelope.
  auto r = ask<child_info>(sg, restart_child_atom::value,
                           std::string{"charge"});
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_EQ(compensated("o-1", "charge"), 1) << "the kept one ran";
  for (int i = 0; i < 20 && self->mailbox().empty(); ++i)
    advance(1s);
  auto out = outcome_of(h);
  auto& charge = step_in(out, "charge");
  EXPECT_EQ(charge.status(), "accepted") << charge.error();
  EXPECT_EQ(charge.error().rfind("duplicate", 0), 0u) << charge.error();
  EXPECT_EQ(compensated("o-1", "charge"), 1) << "the retry ran again";
  EXPECT_EQ(compensated("o-1", "reserve"), 1);
}

} // namespace
