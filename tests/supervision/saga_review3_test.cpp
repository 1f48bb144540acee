// Third adversarial review of issue 14 (exact sagas). Each test asserts
// what the README's "Sagas" section promises ("When the supervisor stops or
// is restarted, its runs send nothing more ... No compensation goes to a
// step's next instance") and failed on the reviewed version. Fixed since:
// the supervisor sets a flag shared with its runs (runs_ended_) when it
// begins to end, before any step stops, and a run reads it before every
// send.
//
// A run learns that its supervisor ended only from saga_stop_atom, an
// ordinary message queued behind whatever the run already holds. A step's
// answer queued before it is handled with `stopping` still false, and the
// run's next request goes to whatever cell is bound at the step's path
// (runtime::lookup) by then: after a restart of the saga supervisor by its
// parent, the successor's fresh cells. The tests hold the run's job back
// (run_except) while the parent restarts the saga supervisor, as a busy
// scheduler may.
// Cause: supervision/src/saga.cpp resolves every request by path
// (execute_next: `st.rt->lookup(st.steps[k])`, compensate:
// `st.rt->lookup(step.path())`) and checks only `st.stopping`, which is set
// by a message (saga_stop_atom, sent by supervisor_actor::stop_runs,
// supervision/src/supervisor_actor.hpp) that can trail the answer it
// acts on. The run should capture its steps' cells at run start (a step's
// cell outlives its instances' restarts) or check that its supervisor is
// alive (monitor it) before each send.

#include <string>
#include <vector>

#include "support/saga_fixture.hpp"

using namespace std::chrono_literals;
using namespace vigil;
using namespace vigil::test;

namespace {

using exec = saga_script::exec;

class saga_review3 : public saga_fixture {
public:
  /// The saga run's job, if it is scheduled.
  caf::resumable* saga_job() {
    for (auto* j : sched.jobs)
      if (auto* a = dynamic_cast<caf::local_actor*>(j);
          a != nullptr && std::string{a->name()} == "vigil.saga")
        return j;
    return nullptr;
  }

  /// Runs single jobs until `pred` holds (bounded).
  template <class Pred>
  bool run_until(Pred pred, int max = 100000) {
    for (int i = 0; i < max && !pred(); ++i)
      if (!sched.try_run_once())
        return pred();
    return pred();
  }

  /// The parent restarts the saga supervisor (terminate_child, then
  /// restart_child) while `job` (the run) does not get to run.
  void restart_checkout_without(const caf::actor& shop, caf::resumable* job) {
    auto t = self->request(shop, caf::infinite, terminate_child_atom::value,
                           std::string{"checkout"});
    run_except(job);
    std::move(t).receive([] {},
                         [](caf::error& e) { ADD_FAILURE() << describe(e); });
    auto r = self->request(shop, caf::infinite, restart_child_atom::value,
                           std::string{"checkout"});
    run_except(job);
    std::move(r).receive([](child_info&) {},
                         [](caf::error& e) { ADD_FAILURE() << describe(e); });
  }
};

// -- 1. an execute to the successor's cell ----------------------------------
//
// reserve ran; its answer waits in the run's mailbox. The parent restarts
// the saga supervisor (stop_runs queues saga_stop behind the answer). The
// run then reads reserve's answer with `stopping` false and sends charge's
// execute to the new supervisor's fresh charge cell, which runs it (the
// run only afterwards reads saga_stop). Should: the run sends nothing more;
// charge never runs for o-1.
TEST_F(saga_review3, a_run_of_a_restarted_supervisor_executes_nothing_more) {
  auto shop = start_shop();
  auto h = submit("o-1");
  ASSERT_TRUE(run_until([&] { return executed("o-1", "reserve") == 1; }));
  auto* job = saga_job();
  ASSERT_NE(job, nullptr);
  // reserve's answer waits in the run's mailbox while the parent restarts
  // the saga supervisor.
  restart_checkout_without(shop, job);
  settle();
  auto out = outcome_of(h);
  EXPECT_EQ(executed("o-1", "charge"), 0)
    << "the run of a stopped supervisor executed charge at its "
       "successor's fresh cell";
  EXPECT_FALSE(out.completed());
}

// -- 2. a compensation to the successor's cell -------------------------------
//
// ship refused; charge's compensation ran; its answer waits in the run's
// mailbox while the parent restarts the saga supervisor. The run reads it,
// then sends reserve's compensation to the successor's fresh reserve
// instance, which runs it; the outcome says `compensated`, no dead letter.
// Should (README): no compensation goes to a step's next instance; the
// run puts reserve's compensation into the dead letters
// (compensation_failed) and says so.
TEST_F(saga_review3, a_run_of_a_restarted_supervisor_compensates_nothing_more) {
  auto shop = start_shop();
  script_exec("o-1", "ship", exec::refuse);
  auto h = submit("o-1");
  ASSERT_TRUE(run_until([&] { return compensated("o-1", "charge") == 1; }));
  auto* job = saga_job();
  ASSERT_NE(job, nullptr);
  restart_checkout_without(shop, job);
  settle();
  auto out = outcome_of(h);
  EXPECT_EQ(compensate_calls("o-1", "reserve"), 0)
    << "reserve's compensation went to the next supervisor's fresh cell";
  EXPECT_EQ(comp_letters("o-1", "reserve"), 1u);
  EXPECT_TRUE(out.compensation_failed());
}

} // namespace
