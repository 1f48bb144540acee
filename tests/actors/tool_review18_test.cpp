// Adversarial review of commit 7798530 (closed inbox, outcomes no caller
// takes, deadline first): costs and breaker reports of executions that
// return after their caller gave up on them, on CAF's deterministic
// testing scheduler.

#include <chrono>
#include <functional>
#include <string>

#include "support/tool_fixture.hpp"

using namespace vigil;
using namespace vigil::test;
using namespace std::chrono_literals;

namespace {

/// Called inside each execution of tool implementation "hooked" (if set),
/// which then succeeds with cost `hooked_cost`.
std::function<void()> hook;
double hooked_cost = 0.0;

class tool_review18_test : public tool_fixture {
public:
  tool_review18_test() {
    registry types = rt->types();
    types.add_tool<Ping, Pong>("hooked", [](const Ping& req, tool_call& c) {
      service::get().call(req, c); // counted
      if (hook)
        hook();
      Pong p;
      p.set_n(req.n());
      return tool_result<Pong>{p, hooked_cost};
    });
    rt = std::make_shared<runtime>(std::move(types));
  }

  ~tool_review18_test() override {
    hook = nullptr;
    hooked_cost = 0.0;
  }
};

} // namespace

// tool.hpp: "A call's cost is charged when it returns". An execution given
// up at its attempt timeout still runs to its end and reports its cost
// (the LLM tokens were spent), but the task drops it: phase is abandoned,
// so it returns before the inbox (cell_tools.cpp:274-279) and nobody
// charges the node's budget. Calls that always time out spend without
// limit.
TEST_F(tool_review18_test, an_execution_given_up_at_its_timeout_is_charged_its_cost) {
  auto d = decl_of("svc");
  d.type = "hooked";
  d.policy.timeout = 1s;
  d.policy.attempt_timeout = 100ms;
  d.policy.retry.max_attempts = 1;
  d.policy.breaker.enabled = false;
  d.policy.cost.limit = 10;
  d.policy.cost.per = 1h;
  auto& svc = declare(d);
  hooked_cost = 4;
  // While the execution runs, its attempt times out.
  hook = [this] { advance(100ms); };
  ASSERT_FALSE(start_caller());
  executors["svc"]->inline_run = false;
  // 4, 8, then 12 of 10: the third is admitted (2 were left), the
  // fourth is not.
  for (int i = 1; i <= 3; ++i) {
    ask_ping("t/c", i);
    run();
    ASSERT_EQ(executors["svc"]->pending(), 1u) << "call " << i;
    ASSERT_TRUE(executors["svc"]->run_nth(i - 1)); // spends 4, too late
    run();
    ASSERT_TRUE(answered(i));
    EXPECT_FALSE(answers[i].ok);
  }
  hook = nullptr;
  EXPECT_EQ(service::get().count(), 3u);
  EXPECT_EQ(svc.stats().abandoned.load(), 3u);
  EXPECT_EQ(svc.stats().executions.load(), 3u);
  EXPECT_LT(svc.look().cost_available, 1.0)
    << "the cost of executions abandoned at their timeout was never charged";
  ask_ping("t/c", 6);
  run();
  EXPECT_EQ(executors["svc"]->submitted(), 3u)
    << "a 4th execution was admitted after 12 of 10 were spent";
  ASSERT_TRUE(answered(6));
  EXPECT_TRUE(answers[6].err && is(answers[6].err, errc::cost_exceeded))
    << (answers[6].ok ? std::string{"answered ok"} : describe(answers[6].err));
  executors["svc"]->inline_run = true;
  executors["svc"]->run_all();
  advance(2s);
}

// The same for the agent's own cost budget (per_agent), which "pays whether
// or not the caller still waits" (cell_tools.cpp:365).
TEST_F(tool_review18_test, an_agents_budget_pays_for_executions_given_up_at_their_timeout) {
  auto d = decl_of("svc");
  d.type = "hooked";
  d.policy.timeout = 1s;
  d.policy.attempt_timeout = 100ms;
  d.policy.retry.max_attempts = 1;
  d.policy.breaker.enabled = false;
  d.policy.cost.per_agent = 10;
  d.policy.cost.per = 1h;
  declare(d);
  hooked_cost = 6;
  hook = [this] { advance(100ms); };
  ASSERT_FALSE(start_caller());
  executors["svc"]->inline_run = false;
  for (int i = 1; i <= 2; ++i) {
    ask_ping("t/c", i);
    run();
    ASSERT_TRUE(executors["svc"]->run_nth(i - 1));
    run();
    ASSERT_TRUE(answered(i));
  }
  hook = nullptr;
  // 12 of the agent's 10 spent: its next call is refused.
  ask_ping("t/c", 3);
  run();
  EXPECT_EQ(executors["svc"]->submitted(), 2u)
    << "a 3rd execution was admitted after 12 of the agent's 10 were spent";
  executors["svc"]->inline_run = true;
  executors["svc"]->run_all();
  advance(2s);
  ASSERT_TRUE(answered(3));
  EXPECT_TRUE(answers[3].err && is(answers[3].err, errc::cost_exceeded))
    << (answers[3].ok ? std::string{"answered ok"} : describe(answers[3].err));
}

// A call of an instance that was restarted reaches its attempt timeout
// with its execution still running (a hung dependency). on_call_due checks
// the generation first and ends the call with finish_call, whose
// abandon_attempt(st, false) tells the breaker the attempt says nothing
// about the dependency (on_ignored) -- though it timed out, as any other
// caller's would have. A dependency that hangs for callers that restart
// never opens the breaker.
TEST_F(tool_review18_test, a_restarted_callers_attempt_that_times_out_counts_as_a_failure) {
  auto d = decl_of("svc");
  d.policy.timeout = 10s;
  d.policy.attempt_timeout = 100ms;
  d.policy.retry.max_attempts = 1;
  d.policy.breaker.consecutive_failures = 1;
  auto& svc = declare(d);
  ASSERT_FALSE(start_caller());
  executors["svc"]->inline_run = false;
  ask_ping("t/c", 1);
  run();
  ASSERT_EQ(executors["svc"]->pending(), 1u);
  crash("t/c");
  run();
  ASSERT_EQ(status_of(sups.back(), "c"), "running");
  advance(100ms); // the attempt times out, the dependency hangs
  EXPECT_EQ(svc.stats().abandoned.load(), 1u);
  // One failure opens it (consecutive_failures = 1; the count restarts
  // at the opening).
  EXPECT_EQ(svc.look().openings, 1u)
    << "an attempt that timed out was reported as saying nothing";
  EXPECT_STREQ(to_string(svc.look().state), "open");
}

// Deadline first: attempt 2 is still running when the deadline passes,
// and the answer says "the last failed: <attempt 1's error>", though the
// last (attempt 2) did not fail, it was given up while running
// (cell_tools.cpp:555-559 picks the text by last_error alone).
TEST_F(tool_review18_test, the_deadline_answer_says_the_last_attempt_was_still_running) {
  auto d = decl_of("svc");
  d.policy.timeout = 1s;
  d.policy.attempt_timeout = 10s;
  d.policy.retry.max_attempts = 3;
  d.policy.retry.initial = 0ms;
  d.policy.retry.max = 0ms;
  declare(d);
  service::get().script[1] = {svc_mode::transient, svc_mode::ok};
  ASSERT_FALSE(start_caller());
  executors["svc"]->inline_run = false;
  ask_ping("t/c", 1);
  run();
  ASSERT_TRUE(executors["svc"]->run_nth(0)); // attempt 1 fails
  run();
  ASSERT_EQ(executors["svc"]->pending(), 1u); // attempt 2 runs
  advance(1s);
  ASSERT_TRUE(answered(1));
  ASSERT_TRUE(answers[1].err);
  auto text = describe(answers[1].err);
  EXPECT_TRUE(is(answers[1].err, errc::deadline_exceeded)) << text;
  EXPECT_NE(text.find("still running"), std::string::npos) << text;
}
