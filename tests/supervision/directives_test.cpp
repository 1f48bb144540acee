// vigil's supervisor directives beyond OTP: degrade (stand-in + probes),
// restart backoff and escalation. Deterministic on CAF's testing scheduler.

#include <string>

#include "support/fixture.hpp"

using namespace std::chrono_literals;
using namespace vigil;
using namespace vigil::test;

namespace {

class directives_test : public runtime_fixture {
public:
  static constexpr const char* path = "sup/w";

  /// A worker that degrades, with the stand-in reply Pong(from: "fallback").
  static child_spec degrading() {
    auto c = worker("w", "echo").with_failure(on_failure::degrade);
    Pong fb;
    fb.set_from("fallback");
    c.degrade.set_fallback(fb);
    c.degrade.probe_min = 100ms;
    c.degrade.probe_max = 400ms;
    return c;
  }

  /// Starts "sup" (one_for_one, intensity 1) with a degrading "w" and
  /// spends its restart budget: the second crash degrades the child.
  caf::actor start_degraded() {
    auto spec = flags(strategy::one_for_one, 1, 5000);
    spec.children.push_back(degrading());
    caf::actor sup;
    auto err = start("sup", spec, &sup);
    EXPECT_FALSE(err) << describe(err);
    crash(path);
    EXPECT_EQ(status_of(sup, "w"), "running");
    EXPECT_EQ(switches::get().start_count(path), 2);
    crash(path);
    EXPECT_EQ(status_of(sup, "w"), "degraded");
    return sup;
  }

  int starts() {
    return switches::get().start_count(path);
  }

  std::string cell_state() {
    auto r = ask<std::string>(handle(path), state_atom::value);
    return r ? *r : "error: " + describe(r.error());
  }

  /// Asserts that the stand-in answers `m` with the fallback.
  void expect_fallback(const google::protobuf::Message& m) {
    auto r = call(path, m);
    ASSERT_TRUE(r) << describe(r.error());
    EXPECT_TRUE(r->degraded());
    EXPECT_EQ(pong_of(*r).from(), "fallback");
  }

  /// Asserts that the first start after now happens after exactly `d`.
  void expect_start_after(std::chrono::milliseconds d) {
    auto before = starts();
    advance(d - 1ms);
    EXPECT_EQ(starts(), before) << "started before " << d.count() << "ms";
    advance(1ms);
    EXPECT_EQ(starts(), before + 1) << "not started after " << d.count()
                                    << "ms";
  }

  uint64_t restarts_of(const caf::actor& sup, const std::string& id) {
    for (auto& ci : which(sup))
      if (ci.id == id)
        return ci.restarts;
    ADD_FAILURE() << "no child " << id;
    return 0;
  }
};

// -- degrade ----------------------------------------------------------------------

TEST_F(directives_test, degrade_when_budget_spent_answers_with_fallback) {
  auto sup = start_degraded();
  // The supervisor does not escalate: it and the cell stay alive.
  EXPECT_TRUE(alive(sup));
  EXPECT_TRUE(alive(handle(path)));
  EXPECT_EQ(cell_state(), "degraded");
  // No instance was started for the stand-in.
  EXPECT_EQ(starts(), 2);
  // Every envelope, whatever its type, gets the fallback marked degraded.
  expect_fallback(ping(1));
  Crash c;
  expect_fallback(c);
  EXPECT_EQ(status_of(sup, "w"), "degraded");
  auto n = counts(sup);
  EXPECT_EQ(n.specs, 1u);
  EXPECT_EQ(n.workers, 1u);
}

TEST_F(directives_test, failing_probe_stays_degraded_and_delay_doubles) {
  auto sup = start_degraded();
  switches::get().set_fail(path, true);
  expect_start_after(100ms); // probe_min
  EXPECT_EQ(status_of(sup, "w"), "degraded");
  EXPECT_EQ(cell_state(), "degraded");
  expect_fallback(ping(1));
  expect_start_after(200ms);
  expect_fallback(ping(2));
  expect_start_after(400ms);
  expect_start_after(400ms); // capped at probe_max
  EXPECT_EQ(status_of(sup, "w"), "degraded");
  EXPECT_TRUE(alive(sup));
  expect_fallback(ping(3));
}

TEST_F(directives_test, successful_probe_returns_to_running) {
  auto sup = start_degraded();
  expect_start_after(100ms);
  // Half-open: a fresh instance waits for the next envelope.
  EXPECT_EQ(cell_state(), "half_open");
  auto r = call(path, ping(1));
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_FALSE(r->degraded());
  EXPECT_EQ(pong_of(*r).from(), path);
  EXPECT_EQ(pong_of(*r).seen(), 1);
  EXPECT_EQ(status_of(sup, "w"), "running");
  EXPECT_EQ(cell_state(), "running");
  auto r2 = call(path, ping(2));
  ASSERT_TRUE(r2) << describe(r2.error());
  EXPECT_FALSE(r2->degraded());
  EXPECT_EQ(pong_of(*r2).seen(), 2);
  // No more probes once running.
  auto before = starts();
  advance(1000ms);
  EXPECT_EQ(starts(), before);
  EXPECT_EQ(counts(sup).active, 1u);
}

TEST_F(directives_test, failing_first_envelope_after_probe_stays_degraded) {
  auto sup = start_degraded();
  expect_start_after(100ms);
  ASSERT_EQ(cell_state(), "half_open");
  // The probe's envelope fails: the stand-in answers it.
  Crash c;
  c.set_why("still broken");
  expect_fallback(c);
  EXPECT_EQ(status_of(sup, "w"), "degraded");
  EXPECT_EQ(cell_state(), "degraded");
  EXPECT_TRUE(alive(sup));
  // And the next probe comes after twice the delay.
  expect_start_after(200ms);
  auto r = call(path, ping(1));
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_FALSE(r->degraded());
  EXPECT_EQ(status_of(sup, "w"), "running");
}

// -- backoff ----------------------------------------------------------------------

TEST_F(directives_test, backoff_doubles_to_max_and_resets) {
  auto spec = flags(strategy::one_for_one, 10, 60000);
  spec.flags.backoff.min = 100ms;
  spec.flags.backoff.max = 400ms;
  spec.flags.backoff.reset_after = 1000ms;
  spec.children.push_back(worker("w", "echo"));
  caf::actor sup;
  ASSERT_FALSE(start("sup", spec, &sup));
  EXPECT_EQ(starts(), 1);
  crash(path);
  EXPECT_EQ(status_of(sup, "w"), "restarting");
  expect_start_after(100ms);
  EXPECT_EQ(status_of(sup, "w"), "running");
  crash(path);
  expect_start_after(200ms);
  crash(path);
  expect_start_after(400ms);
  crash(path);
  expect_start_after(400ms); // min * 8 capped at max
  // After reset_after without a failure, the delay is back to min.
  advance(1000ms);
  crash(path);
  expect_start_after(100ms);
  EXPECT_EQ(restarts_of(sup, "w"), 5u);
  EXPECT_EQ(status_of(sup, "w"), "running");
  auto r = call(path, ping(1));
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_EQ(pong_of(*r).seen(), 1);
}

TEST_F(directives_test, backoff_jitter_stays_within_bounds) {
  auto spec = flags(strategy::one_for_one, 10, 60000);
  spec.flags.backoff.min = 100ms;
  spec.flags.backoff.max = 100ms;
  spec.flags.backoff.jitter = 0.5;
  spec.flags.seed = 42;
  spec.children.push_back(worker("w", "echo"));
  caf::actor sup;
  ASSERT_FALSE(start("sup", spec, &sup));
  for (int i = 0; i < 4; ++i) {
    auto before = starts();
    crash(path);
    advance(49ms);
    EXPECT_EQ(starts(), before) << "restart earlier than min*(1-jitter)";
    advance(101ms);
    EXPECT_EQ(starts(), before + 1) << "restart later than min*(1+jitter)";
  }
}

// While the supervisor awaits the (high-priority) answer of a restarting
// child, ordinary messages that reach it are set aside; they must be handled
// once the answer came, even if nothing else arrives afterwards.
TEST_F(directives_test, api_call_during_a_restart_is_answered) {
  auto spec = flags(strategy::one_for_one, 10, 60000);
  spec.flags.backoff.min = 100ms;
  spec.flags.backoff.max = 100ms;
  spec.children.push_back(worker("w", "echo"));
  caf::actor sup;
  ASSERT_FALSE(start("sup", spec, &sup));
  crash(path);
  ASSERT_EQ(status_of(sup, "w"), "restarting");
  // The backoff timer fires; the supervisor alone runs: it asks the cell to
  // start the new instance and awaits its answer.
  sched.advance_time(100ms);
  ASSERT_TRUE(sched.prioritize(sup));
  sched.run_once();
  // An API call reaches the supervisor before the cell has answered.
  auto h = self->request(sup, caf::infinite, which_children_atom::value);
  ASSERT_TRUE(sched.prioritize(sup));
  sched.run_once();
  // Now the cell answers; nothing else is sent to the supervisor.
  run();
  EXPECT_EQ(starts(), 2);
  ASSERT_FALSE(self->mailbox().empty()) << "which_children got no answer";
  std::vector<child_info> kids;
  std::move(h).receive(
    [&](std::vector<child_info>& xs) { kids = std::move(xs); },
    [&](caf::error& err) { ADD_FAILURE() << describe(err); });
  ASSERT_EQ(kids.size(), 1u);
  EXPECT_EQ(kids[0].status, "running");
  EXPECT_EQ(kids[0].restarts, 1u);
}

// -- escalate ---------------------------------------------------------------------

TEST_F(directives_test, escalate_fails_supervisor_at_first_failure) {
  auto spec = flags(strategy::one_for_one, 10, 60000);
  spec.children.push_back(
    worker("w", "echo").with_failure(on_failure::escalate));
  spec.children.push_back(worker("other", "echo"));
  caf::actor sup;
  ASSERT_FALSE(start("sup", spec, &sup));
  caf::error reason;
  bool exited = false;
  sup->attach_functor([&](const caf::error& r) {
    exited = true;
    reason = r;
  });
  crash(path, "fatal");
  ASSERT_TRUE(exited);
  EXPECT_FALSE(alive(sup));
  EXPECT_TRUE(is(reason, errc::escalated)) << describe(reason);
  auto text = describe(reason);
  EXPECT_NE(text.find(path), std::string::npos) << text;
  EXPECT_NE(text.find("fatal"), std::string::npos) << text;
  // Not restarted; the sibling was stopped in order (on_stop ran).
  EXPECT_EQ(starts(), 1);
  EXPECT_EQ(switches::get().stop_count("sup/other"), 1);
}

TEST_F(directives_test, restart_directive_with_same_budget_does_not_escalate) {
  auto spec = flags(strategy::one_for_one, 10, 60000);
  spec.children.push_back(worker("w", "echo"));
  caf::actor sup;
  ASSERT_FALSE(start("sup", spec, &sup));
  crash(path);
  EXPECT_TRUE(alive(sup));
  EXPECT_EQ(status_of(sup, "w"), "running");
  EXPECT_EQ(starts(), 2);
}

} // namespace
