// Adversarial review of issue 14 (exact sagas). Every test here asserts
// what the saga promises, and each failed on the first version of the fix;
// the comment on each test says what happened then and why. The fixes: a
// lost answer (a deferred reply whose instance ended, a replaced cell) is
// `reply_dropped` and the saga reports the step `in_doubt` with a dead
// letter; the saga waits a grace period after a step's cell ends, for the
// answer of a request the cell passed on; a handler's refusal with one of
// the runtime's verdict codes is `refused`; a step's own letter of a
// failed compensation attempt is not replayed; a resent input gets the
// outcome of its finished run.

#include <algorithm>
#include <vector>

#include "support/saga_fixture.hpp"

using namespace std::chrono_literals;
using namespace vigil;
using namespace vigil::test;

namespace {

using exec = saga_script::exec;
using comp = saga_script::comp;

/// What the deferring step did: executes that started (their effect is
/// made when the handler runs: it called an external service), and
/// compensations that ran.
struct defer_box {
  static inline int executed = 0;
  static inline int compensated = 0;
};

/// A saga step whose execute calls a (slow) external service and answers
/// from its callback: it takes ctx.defer() and keeps the reply until the
/// test sends it a Ping (the service's answer). Crash crashes it.
class deferring_step : public agent<> {
public:
  static void define(handlers<deferring_step>& h) {
    h.on<SagaExecute>([](deferring_step& self, context& ctx,
                         const SagaExecute&)
                        -> caf::expected<SagaStepOutput> {
      ++defer_box::executed; // the service call went out: it took effect
      self.pending_ = ctx.defer();
      return SagaStepOutput{};
    });
    h.on<SagaCompensate>([](deferring_step&, context&, const SagaCompensate&)
                           -> caf::expected<SagaStepOutput> {
      ++defer_box::compensated;
      return SagaStepOutput{};
    });
    h.on<Ping>([](deferring_step& self, context&, const Ping&) {
      // The service answered: the step answers the saga.
      SagaStepOutput out;
      Receipt r;
      r.set_step("charge");
      out.set_output_type(Receipt::descriptor()->full_name());
      r.SerializeToString(out.mutable_output());
      self.pending_.deliver(out);
      Pong p;
      return p;
    });
    h.on<Crash>([](deferring_step&, context&, const Crash& c) {
      throw std::runtime_error(c.why());
    });
  }

private:
  deferred_reply pending_;
};

class saga_review : public saga_fixture {
public:
  saga_review() {
    registry r = degrade_registry();
    r.add<scripted_step>("scripted");
    r.add<erring_step>("erring");
    r.add<deferring_step>("deferring");
    rt = std::make_shared<runtime>(std::move(r));
    defer_box::executed = 0;
    defer_box::compensated = 0;
  }
};

// -- 1. a deferred execute that is dropped ran ------------------------------
//
// charge's execute called its service (took effect) and deferred its reply;
// before the service answered, charge crashed. The deferred reply is
// dropped: its destructor answers not_running ("the agent dropped this
// reply"), and the saga reads not_running as "did not run": it marks charge
// failed and compensates only reserve. charge's effect is never undone nor
// dead-lettered.
// Cause: supervision/src/saga.cpp execute_next's error handler
// (`fail(self, k, describe(err), false)`) treats every error as "did not
// run"; actors/vigil/actors/context.hpp deferred_reply::state::~state
// answers a started handler with the same not_running as a step that never
// started.
TEST_F(saga_review, a_dropped_deferred_execute_ran_and_is_compensated) {
  std::vector<child_spec> kids;
  kids.push_back(worker("reserve", "scripted"));
  kids.push_back(worker("charge", "deferring"));
  start_custom(std::move(kids));
  auto h = submit("o-1");
  run();
  ASSERT_EQ(executed("o-1", "reserve"), 1);
  ASSERT_EQ(defer_box::executed, 1) << "charge's execute did not start";
  ASSERT_TRUE(self->mailbox().empty());
  crash(step_path("charge"), "service client blew up");
  settle();
  auto out = outcome_of(h);
  EXPECT_FALSE(out.completed());
  // charge ran (its execute started and called the service): it must be
  // compensated, or its compensation must be a dead letter.
  EXPECT_EQ(defer_box::compensated + static_cast<int>(
                                       comp_letters("o-1", "charge")),
            1)
    << "charge ran but is neither compensated nor dead-lettered; outcome "
       "says charge is '"
    << step_in(out, "charge").status() << "': "
    << step_in(out, "charge").error();
  EXPECT_NE(step_in(out, "charge").status(), "failed")
    << "the outcome says charge did not run, but it did";
}

// The same with the saga supervisor stopping (terminate_child) while the
// deferring step holds the reply: the steps stop, the deferred reply is
// dropped, and the run answers as though charge never ran.
TEST_F(saga_review, a_deferred_execute_dropped_by_a_stop_ran) {
  std::vector<child_spec> kids;
  kids.push_back(worker("reserve", "scripted"));
  kids.push_back(worker("charge", "deferring"));
  auto shop = start_custom(std::move(kids));
  auto h = submit("o-1");
  run();
  ASSERT_EQ(defer_box::executed, 1);
  ASSERT_FALSE(ask_void(shop, terminate_child_atom::value,
                        std::string{"checkout"}));
  settle();
  auto out = outcome_of(h);
  EXPECT_FALSE(out.completed());
  EXPECT_EQ(defer_box::compensated + static_cast<int>(
                                       comp_letters("o-1", "charge")),
            1)
    << "charge ran but is neither compensated nor dead-lettered; outcome "
       "says charge is '"
    << step_in(out, "charge").status() << "': "
    << step_in(out, "charge").error();
}

// -- 2. an abandoned journal step applies the execute the saga gave up ------
//
// charge (a journal step) waits out a 60 s restart backoff; the saga's
// execute is accepted into its journal and buffered. The saga supervisor is
// killed (OTP: brutal end); its cells abandon their paths and answer what
// they buffered `not_running` ("the envelope is in its journal and the
// next instance applies it"), including the start-deadline execute. The
// saga reads not_running as "did not run" and answers; the root restarts
// checkout, the new charge cell applies the journal's execute well within
// its start deadline: charge ran, nothing compensates it, the outcome says
// it failed.
// Cause: actors/src/cell_control.cpp cell::abandon() (and
// cell_durable.cpp cell::accepted() in mode abandoned) keeps a journaled
// start-deadline envelope for the next owner instead of burying it, as
// reject_buffer (cell.cpp) does for a stop.
TEST_F(saga_review, an_abandoned_journal_step_does_not_run_a_given_up_execute) {
  saga_spec opts;
  opts.step_timeout = 10s;
  start_shop(opts, 60s, /*journal*/ true);
  crash(step_path("charge"));
  ASSERT_EQ(status_of(handle(saga_path), "charge"), "restarting");
  auto h = submit("o-1");
  run();
  ASSERT_EQ(executed("o-1", "reserve"), 1);
  ASSERT_TRUE(self->mailbox().empty());
  caf::anon_send_exit(handle(saga_path), caf::exit_reason::kill);
  run();
  advance(100ms); // the root restarts checkout; well within 10 s
  settle();
  ASSERT_FALSE(self->mailbox().empty()) << "no outcome";
  auto out = outcome_of(h);
  EXPECT_FALSE(out.completed());
  int ex = executed("o-1", "charge");
  int co = compensated("o-1", "charge");
  auto dl = comp_letters("o-1", "charge");
  EXPECT_TRUE(ex == 0 || co + static_cast<int>(dl) >= 1)
    << "charge executed " << ex << " time(s) after the saga answered ("
    << step_in(out, "charge").status() << ": "
    << step_in(out, "charge").error()
    << "), and is neither compensated nor dead-lettered";
}

// -- 2b. the same for a memory step given up on (stuck past its shutdown) ---
//
// charge's cell is stuck (the test does not let it run) with the saga's
// execute queued behind the stuck handler. charge is terminated: after its
// 1 s shutdown timeout the supervisor gives up on the cell (abandon) and
// restart_child gives charge a new cell. When the stuck handler returns,
// the old cell forwards the execute to the new cell (rp.delegate) and
// ends; the saga, which monitors the old cell, hears its down_msg first:
// "charge ended before it answered", so it fails at charge as not run and
// compensates reserve. The new cell then runs the forwarded execute, well
// within its start deadline: charge ran, nothing compensates it, and the
// outcome says it failed.
// Cause: supervision/src/saga.cpp saga_run's down handler concludes "did
// not run" when the cell it sent to ends, though actors/src/cell_control.cpp
// cell::abandon()/forward() hands the request (and its promise) to the
// next cell at the path; a start-deadline envelope should be refused
// (not_running) there instead of forwarded, or the saga should wait for the
// answer of the request it delegated.
TEST_F(saga_review, a_given_up_step_does_not_run_an_execute_the_saga_gave_up) {
  saga_spec opts;
  opts.step_timeout = 10s;
  auto kids = step_specs();
  kids[1].with_shutdown(shutdown_spec::after(1s));
  start_custom(std::move(kids), opts);
  auto old = handle(step_path("charge"));
  auto* stuck = job_of(old);
  auto h = submit("o-1");
  run_except(stuck); // reserve ran; charge's execute waits at the old cell
  ASSERT_EQ(executed("o-1", "reserve"), 1);
  ASSERT_EQ(executed("o-1", "charge"), 0);
  // charge's stop times out (1 s): its supervisor gives up on the old cell
  // and starts charge in a new one.
  auto fresh = replace_stuck("charge", stuck, 1s);
  ASSERT_TRUE(fresh);
  ASSERT_NE(fresh, old) << "no new cell at charge's path";
  ASSERT_EQ(executed("o-1", "charge"), 0);
  // The stuck handler returns: the old cell acts on what queued at it.
  run_except(job_of(fresh));
  run();
  advance(100ms);
  settle();
  ASSERT_FALSE(self->mailbox().empty()) << "no outcome";
  auto out = outcome_of(h);
  int ex = executed("o-1", "charge");
  int co = compensated("o-1", "charge");
  auto dl = comp_letters("o-1", "charge");
  // Since the fix: the saga waits for the forwarded request's answer (a
  // grace period after the old cell's down), so charge's run is part of a
  // completed saga.
  EXPECT_TRUE(ex == 0 || out.completed() || co + static_cast<int>(dl) == 1)
    << "charge executed " << ex << " time(s) (at its new cell) after the saga "
    << "answered (" << step_in(out, "charge").status() << ": "
    << step_in(out, "charge").error()
    << "), and is neither compensated nor dead-lettered";
  EXPECT_TRUE(out.completed()) << out.failure();
  EXPECT_EQ(ex, 1);
}

// The compensation side of 2b: charge ran; ship refused; charge's
// compensation queues behind charge's stuck handler. The supervisor gives
// up on the cell and charge gets a new one. The old cell forwards the
// compensation to the new cell and ends; the saga hears the down_msg
// first, reads it as "not delivered" and retries under the same id after
// retry_delay. A memory step cannot recognize the id: the new cell runs the
// forwarded compensation and the retry, and the refund runs twice.
// Cause: as 2b, supervision/src/saga.cpp down handler ->
// compensation_failed(..., ran=false) while actors/src/cell_control.cpp
// cell::forward() delivered the request elsewhere.
TEST_F(saga_review, a_given_up_step_does_not_run_a_compensation_twice) {
  saga_spec opts;
  opts.retry_delay = 100ms;
  auto kids = step_specs();
  kids[1].with_shutdown(shutdown_spec::after(1s));
  start_custom(std::move(kids), opts);
  script_exec("o-1", "ship", exec::refuse);
  auto old = handle(step_path("charge"));
  auto* stuck = job_of(old);
  auto h = submit("o-1");
  for (int i = 0; i < 1000 && executed("o-1", "charge") == 0; ++i)
    if (!sched.try_run_once())
      break;
  ASSERT_EQ(executed("o-1", "charge"), 1);
  run_except(stuck); // ship refuses; charge's compensation waits at it
  ASSERT_EQ(compensate_calls("o-1", "charge"), 0);
  ASSERT_TRUE(self->mailbox().empty());
  // charge's stop times out (1 s): its supervisor gives up on the old cell
  // and starts charge in a new one.
  auto fresh = replace_stuck("charge", stuck, 1s);
  ASSERT_TRUE(fresh);
  ASSERT_NE(fresh, old);
  run_except(job_of(fresh)); // the stuck handler returns
  run();
  settle();
  ASSERT_FALSE(self->mailbox().empty()) << "no outcome";
  auto out = outcome_of(h);
  EXPECT_EQ(compensated("o-1", "charge"), 1)
    << "the refund ran " << compensated("o-1", "charge")
    << " times; outcome: " << step_in(out, "charge").status() << " after "
    << step_in(out, "charge").compensation_attempts() << " failed attempts";
}

// -- 3. a failed compensation attempt of a journal step stays replayable ----
//
// charge's first compensation throws; the saga retries it under the next
// (salted) id, and it succeeds: the outcome says compensated, attempts 1.
// But charge's journal kept the failed attempt as a dead letter (a journal
// agent keeps every envelope it accepted that failed). An operator who
// replays the dead letters (vigil replay --all) gets the refund a second
// time: the replay takes it back (its guard names the entry that consumed
// it) and charge applies it at its next start.
// Cause: supervision/src/saga.cpp compensation_failed() retries under a
// new id after "ran and failed" while actors/src/cell.cpp settle()/bury()
// leave the old attempt as a replayable dead letter, and
// persistence/src/replay.cpp refuses only start-deadline letters, not a
// saga compensation that the saga itself retried.
TEST_F(saga_review, replaying_a_retried_compensation_does_not_refund_twice) {
  saga_spec opts;
  opts.retry_delay = 100ms;
  auto shop = start_shop(opts, 0ms, /*journal*/ true);
  script_exec("o-1", "ship", exec::refuse);
  script_comps("o-1", "charge", {comp::crash});
  auto out = run_saga("o-1");
  ASSERT_EQ(step_in(out, "charge").status(), "compensated");
  ASSERT_FALSE(out.compensation_failed());
  ASSERT_EQ(compensated("o-1", "charge"), 1);
  // The operator replays every dead letter, and charge runs again.
  std::vector<std::string> problems;
  size_t replayed = 0;
  ASSERT_TRUE(rt->storage());
  ASSERT_FALSE(rt->storage()->replay_dead_letters({}, true, problems,
                                                  replayed));
  // (Its next run: a new cell of charge, which reads its journal, as at the
  // next start of the node.)
  ASSERT_FALSE(ask_void(shop, terminate_child_atom::value,
                        std::string{"checkout"}));
  ASSERT_TRUE(ask<child_info>(shop, restart_child_atom::value,
                              std::string{"checkout"}));
  advance(1s);
  EXPECT_EQ(compensated("o-1", "charge"), 1)
    << "the refund ran twice (replayed " << replayed
    << " letters): the saga said compensated";
}

// -- 4. a second run of a finished input ------------------------------------
//
// A requester that did not get the outcome (a lost reply, an outbox that
// redelivers) resends the saga input with the same message id after the
// first run ended. Only a concurrent duplicate is refused
// (supervisor.cpp handle_envelope, run_inputs_ is erased when the run
// ends), so a second run starts: its journal steps answer its executes
// `duplicate`, which the saga reads as "did not run", and the outcome says
// the saga failed at reserve, whose status is "failed", while the first run
// completed every step.
TEST_F(saga_review, a_resent_input_after_completion_does_not_lie) {
  start_shop({}, {}, /*journal*/ true);
  auto e = wrap(order("o-1"));
  auto h1 = self->request(handle(saga_path), caf::infinite, e);
  settle();
  auto first = outcome_of(h1);
  ASSERT_TRUE(first.completed());
  auto h2 = self->request(handle(saga_path), caf::infinite, e);
  settle();
  ASSERT_FALSE(self->mailbox().empty());
  bool refused = false;
  SagaOutcome second;
  std::move(h2).receive(
    [&](envelope& r) { EXPECT_TRUE(second.ParseFromString(r.payload)); },
    [&](caf::error& err) {
      refused = true;
      EXPECT_TRUE(is(err, errc::duplicate)) << describe(err);
    });
  if (!refused) {
    EXPECT_TRUE(second.completed())
      << "the resent input's outcome says it failed at "
      << second.failed_step() << " (" << second.failure()
      << "), but every step of it ran";
    EXPECT_NE(step_in(second, "reserve").status(), "failed");
  }
  EXPECT_EQ(executed("o-1", "reserve"), 1);
  EXPECT_EQ(compensated("o-1", "reserve"), 0);
}

// The same with memory steps (the default): the resent input runs every
// step a second time.
TEST_F(saga_review, a_resent_input_after_completion_does_not_run_steps_twice) {
  start_shop();
  auto e = wrap(order("o-1"));
  auto h1 = self->request(handle(saga_path), caf::infinite, e);
  settle();
  ASSERT_TRUE(outcome_of(h1).completed());
  auto h2 = self->request(handle(saga_path), caf::infinite, e);
  settle();
  ASSERT_FALSE(self->mailbox().empty());
  std::move(h2).receive([](envelope&) {}, [](caf::error&) {});
  EXPECT_EQ(executed("o-1", "reserve"), 1) << "one input, charged twice";
  EXPECT_EQ(executed("o-1", "charge"), 1) << "one input, charged twice";
}

// -- 5. a refused compensation is a dead letter at once, whatever its code --
//
// charge's compensate refuses (returns an error): the contract
// (saga_step.hpp) says the compensation is a dead letter at once. With the
// code `duplicate` (say, what the refund service answered), the saga marks
// charge "accepted" ("its journal owns it") and goes on: a memory step owns
// nothing, no dead letter is kept, compensation_failed is false, and the
// charge is never undone.
// Cause: supervision/src/saga.cpp compensate()'s error handler reads
// errc::duplicate as the journal's redelivery answer without knowing
// whether the step's own handler refused with it; actors/src/cell.cpp
// run() rewrites only the "not delivered" codes of a refusal to `refused`.
TEST_F(saga_review, a_compensation_refused_as_duplicate_is_a_dead_letter) {
  erring_step::err = make_error(errc::duplicate, "refund service: no");
  std::vector<child_spec> kids;
  kids.push_back(worker("reserve", "scripted"));
  kids.push_back(worker("charge", "erring"));
  kids.push_back(worker("ship", "scripted"));
  start_custom(std::move(kids));
  script_exec("o-1", "ship", exec::refuse);
  auto out = run_saga("o-1");
  EXPECT_EQ(erring_step::calls, 1);
  EXPECT_EQ(step_in(out, "charge").status(), "compensation_failed")
    << step_in(out, "charge").error();
  EXPECT_TRUE(out.compensation_failed());
  EXPECT_EQ(comp_letters("o-1", "charge"), 1u)
    << "the refused compensation is lost: no dead letter";
}

// The same with `deadline_exceeded` (a compensate that returns the error of
// a downstream request that timed out): read as "ran and threw", it is
// retried under new ids, compensation_retries times, instead of being a
// dead letter at once.
TEST_F(saga_review, a_compensation_refused_as_deadline_exceeded_is_not_retried) {
  erring_step::err = make_error(errc::deadline_exceeded, "refund service: no");
  std::vector<child_spec> kids;
  kids.push_back(worker("reserve", "scripted"));
  kids.push_back(worker("charge", "erring"));
  kids.push_back(worker("ship", "scripted"));
  start_custom(std::move(kids));
  script_exec("o-1", "ship", exec::refuse);
  auto out = run_saga("o-1", 1s);
  EXPECT_EQ(erring_step::calls, 1) << "a refusal was retried";
  EXPECT_EQ(step_in(out, "charge").compensation_attempts(), 0u);
  EXPECT_EQ(step_in(out, "charge").status(), "compensation_failed");
  EXPECT_EQ(comp_letters("o-1", "charge"), 1u);
}

} // namespace
