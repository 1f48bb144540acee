// Tests context::call_tool (actors/src/cell_tools.cpp and
// detail/tool_runtime): every rule of the stack on CAF's test clock,
// against a counting service that records each real execution, so that
// "never more than the budget" is asserted from its records.

#include <chrono>

#include "support/tool_fixture.hpp"

using namespace vigil;
using namespace vigil::test;
using namespace std::chrono_literals;

namespace {

class tool_call_test : public tool_fixture {};

} // namespace

TEST_F(tool_call_test, a_call_that_succeeds_runs_once) {
  auto& tool = declare(decl_of("svc"));
  ASSERT_FALSE(start_one("c", "tool_caller"));
  ask_ping("t/c", 7);
  run();
  ASSERT_TRUE(answered(7));
  EXPECT_TRUE(answers[7].ok) << describe(answers[7].err);
  EXPECT_EQ(answers[7].pong.n(), 7);
  EXPECT_EQ(answers[7].pong.attempt(), 1u);
  EXPECT_EQ(service::get().count(), 1u);
  EXPECT_EQ(tool.stats().succeeded_without_retry.load(), 1u);
  EXPECT_EQ(tool.in_use(), 0u);
}

TEST_F(tool_call_test, transient_errors_are_retried_with_backoff) {
  auto& tool = declare(decl_of("svc"));
  service::get().script[1] = {svc_mode::transient, svc_mode::transient};
  ASSERT_FALSE(start_one("c", "tool_caller"));
  ask_ping("t/c", 1);
  run();
  // The retries wait their backoff: nothing more before the clock moves.
  EXPECT_EQ(service::get().count(), 1u);
  ASSERT_TRUE(advance_until([&] { return answered(1); }, 10ms, 5s));
  EXPECT_TRUE(answers[1].ok);
  EXPECT_EQ(answers[1].pong.attempt(), 3u);
  EXPECT_EQ(service::get().count(), 3u);
  EXPECT_EQ(tool.stats().retries.load(), 2u);
  EXPECT_EQ(tool.stats().succeeded_with_retry.load(), 1u);
}

TEST_F(tool_call_test, attempts_end_with_the_last_error) {
  auto d = decl_of("svc");
  d.policy.breaker.enabled = false;
  auto& tool = declare(d);
  service::get().mode = svc_mode::transient;
  ASSERT_FALSE(start_one("c", "tool_caller"));
  ask_ping("t/c", 1);
  ASSERT_TRUE(advance_until([&] { return answered(1); }, 10ms, 5s));
  EXPECT_TRUE(is(answers[1].err, errc::tool_unavailable))
    << describe(answers[1].err);
  EXPECT_NE(describe(answers[1].err).find("after 3 attempts"),
            std::string::npos)
    << describe(answers[1].err);
  EXPECT_NE(describe(answers[1].err).find("503"), std::string::npos);
  EXPECT_EQ(service::get().count(), 3u);
  EXPECT_EQ(tool.stats().failed_with_retry.load(), 1u);
}

TEST_F(tool_call_test, a_permanent_error_fails_at_once_and_trips_nothing) {
  auto& tool = declare(decl_of("svc"));
  service::get().mode = svc_mode::permanent;
  ASSERT_FALSE(start_one("c", "tool_caller"));
  for (int i = 1; i <= 10; ++i)
    ask_ping("t/c", i);
  run();
  for (int i = 1; i <= 10; ++i)
    EXPECT_TRUE(is(answers[i].err, errc::tool_rejected)) << i;
  EXPECT_EQ(service::get().count(), 10u);
  EXPECT_EQ(tool.look().state, resilience::breaker_state::closed);
}

TEST_F(tool_call_test, invalid_output_is_retried_and_counts_as_a_failure) {
  auto d = decl_of("svc");
  d.policy.retry.max_attempts = 2;
  declare(d);
  service::get().mode = svc_mode::invalid;
  ASSERT_FALSE(start_one("c", "tool_caller"));
  ask_ping("t/c", 1);
  ASSERT_TRUE(advance_until([&] { return answered(1); }, 10ms, 5s));
  EXPECT_TRUE(is(answers[1].err, errc::invalid_output))
    << describe(answers[1].err);
  EXPECT_NE(describe(answers[1].err).find("from is garbage"),
            std::string::npos);
  EXPECT_EQ(service::get().count(), 2u);
}

TEST_F(tool_call_test, the_breaker_opens_probes_and_doubles_its_open_time) {
  auto& tool = declare(decl_of("svc"));
  service::get().mode = svc_mode::transient;
  ASSERT_FALSE(start_one("c", "tool_caller", {{"attempts", "1"}}));
  for (int i = 1; i <= 3; ++i)
    ask_ping("t/c", i);
  run();
  EXPECT_EQ(service::get().count(), 3u);
  EXPECT_EQ(tool.look().state, resilience::breaker_state::open);
  // Open: a call fails at once, without an execution.
  ask_ping("t/c", 4);
  run();
  EXPECT_TRUE(is(answers[4].err, errc::circuit_open))
    << describe(answers[4].err);
  EXPECT_EQ(service::get().count(), 3u);
  EXPECT_EQ(tool.stats().not_permitted.load(), 1u);
  // After 30 s, one probe; it fails: open again for 60 s.
  advance(30s);
  ask_ping("t/c", 5);
  ask_ping("t/c", 6); // no second probe at once
  run();
  EXPECT_EQ(service::get().count(), 4u);
  EXPECT_TRUE(is(answers[6].err, errc::circuit_open));
  EXPECT_EQ(tool.look().state, resilience::breaker_state::open);
  advance(30s);
  ask_ping("t/c", 7);
  run();
  EXPECT_TRUE(is(answers[7].err, errc::circuit_open)) << "doubled: 60 s";
  advance(30s);
  service::get().mode = svc_mode::ok;
  ask_ping("t/c", 8);
  run();
  EXPECT_TRUE(answers[8].ok);
  EXPECT_EQ(tool.look().state, resilience::breaker_state::closed);
  // Closed resets the open time: the next trip waits 30 s again.
  service::get().mode = svc_mode::transient;
  for (int i = 9; i <= 11; ++i)
    ask_ping("t/c", i);
  run();
  EXPECT_EQ(tool.look().state, resilience::breaker_state::open);
  advance(30s);
  EXPECT_EQ(tool.look().state, resilience::breaker_state::half_open);
}

TEST_F(tool_call_test, a_handler_that_throws_circuit_open_is_not_restarted) {
  declare(decl_of("svc"));
  service::get().mode = svc_mode::transient;
  ASSERT_FALSE(
    start_one("c", "tool_caller", {{"attempts", "1"}, {"throw", "1"}}));
  for (int i = 1; i <= 3; ++i)
    ask_ping("t/c", i);
  run();
  for (int i = 4; i <= 20; ++i)
    ask_ping("t/c", i);
  run();
  for (int i = 4; i <= 20; ++i)
    EXPECT_TRUE(is(answers[i].err, errc::circuit_open))
      << i << ": " << describe(answers[i].err);
  EXPECT_EQ(rt->restarts(), 0u);
  EXPECT_EQ(status_of(sups.back(), "c"), "running");
}

TEST_F(tool_call_test, the_deadline_of_the_request_caps_the_call) {
  auto& tool = declare(decl_of("svc"));
  service::get().mode = svc_mode::transient;
  service::get().retry_after = 400ms; // the next attempt cannot fit
  ASSERT_FALSE(start_one("c", "tool_caller"));
  ask_ping("t/c", 1, deadline_in(300ms));
  run();
  ASSERT_TRUE(answered(1));
  EXPECT_TRUE(is(answers[1].err, errc::deadline_exceeded))
    << describe(answers[1].err);
  auto text = describe(answers[1].err);
  EXPECT_NE(text.find("no time for attempt 2"), std::string::npos) << text;
  EXPECT_NE(text.find("503"), std::string::npos) << text;
  EXPECT_EQ(service::get().count(), 1u);
  EXPECT_EQ(tool.stats().retries.load(), 0u);
}

TEST_F(tool_call_test, an_attempt_that_hangs_is_abandoned_and_keeps_its_place) {
  auto d = decl_of("svc");
  d.policy.attempt_timeout = 100ms;
  d.policy.timeout = 1s;
  d.policy.retry.initial = 10ms;
  d.policy.retry.max = 10ms;
  auto& tool = declare(d);
  executors["svc"]->inline_run = false; // nothing runs: a hung dependency
  ASSERT_FALSE(start_one("c", "tool_caller"));
  ask_ping("t/c", 1);
  run();
  EXPECT_EQ(tool.in_use(), 1u);
  ASSERT_TRUE(advance_until([&] { return answered(1); }, 10ms, 2s));
  auto text = describe(answers[1].err);
  // Attempts 1 and 2 timed out (and were retried); the budget of 3
  // attempts then ended the call with the last timeout.
  EXPECT_TRUE(is(answers[1].err, errc::tool_unavailable)) << text;
  EXPECT_NE(text.find("timed out after 100ms"), std::string::npos) << text;
  EXPECT_EQ(tool.stats().abandoned.load(), 3u);
  EXPECT_EQ(tool.stats().abandoned_running.load(), 3u);
  // The call is answered, but its executions hold the bulkhead place until
  // they return.
  EXPECT_EQ(tool.in_use(), 1u);
  EXPECT_EQ(executors["svc"]->run_all(), 3u);
  EXPECT_EQ(tool.in_use(), 0u);
  EXPECT_EQ(tool.stats().abandoned_running.load(), 0u);
  // They saw their cancellation and did not run.
  EXPECT_EQ(service::get().count(), 0u);
  EXPECT_EQ(tool.look().state, resilience::breaker_state::open);
}

TEST_F(tool_call_test, a_full_bulkhead_refuses_at_once) {
  auto d = decl_of("svc");
  d.policy.bulkhead.max_concurrent = 1;
  d.policy.bulkhead.queue = 1;
  auto& tool = declare(d);
  executors["svc"]->inline_run = false;
  ASSERT_FALSE(start_one("c", "tool_caller"));
  for (int i = 1; i <= 3; ++i)
    ask_ping("t/c", i);
  run();
  ASSERT_TRUE(answered(3));
  EXPECT_TRUE(is(answers[3].err, errc::bulkhead_full))
    << describe(answers[3].err);
  EXPECT_EQ(tool.stats().bulkhead_full.load(), 1u);
  executors["svc"]->run_all();
  run();
  EXPECT_TRUE(answers[1].ok);
  EXPECT_TRUE(answers[2].ok);
  EXPECT_EQ(tool.in_use(), 0u);
}

TEST_F(tool_call_test, the_rate_limit_sheds_calls_beyond_it) {
  auto d = decl_of("svc");
  d.policy.rate.per_second = 1;
  d.policy.rate.burst = 2;
  auto& tool = declare(d);
  ASSERT_FALSE(start_one("c", "tool_caller"));
  for (int i = 1; i <= 3; ++i)
    ask_ping("t/c", i);
  run();
  EXPECT_TRUE(answers[1].ok);
  EXPECT_TRUE(answers[2].ok);
  EXPECT_TRUE(is(answers[3].err, errc::rate_limited));
  advance(1s);
  ask_ping("t/c", 4);
  run();
  EXPECT_TRUE(answers[4].ok);
  EXPECT_EQ(service::get().count(), 3u);
  EXPECT_EQ(tool.stats().rate_limited.load(), 1u);
}

TEST_F(tool_call_test, cost_budgets_stop_a_runaway_agent) {
  auto d = decl_of("svc");
  d.policy.cost.limit = 100;
  d.policy.cost.per_agent = 25;
  d.policy.cost.per = 1h;
  auto& tool = declare(d);
  service::get().cost = 10;
  child_spec a;
  a.id = "a";
  a.agent = "tool_caller";
  child_spec b = a;
  b.id = "b";
  supervisor_spec spec;
  spec.children = {a, b};
  ASSERT_FALSE(start("t", spec));
  // Agent a: 10 + 10 + 10 (its budget of 25 was not spent before the
  // third), then refused.
  for (int i = 1; i <= 4; ++i) {
    ask_ping("t/a", i);
    run();
  }
  EXPECT_TRUE(answers[3].ok);
  EXPECT_TRUE(is(answers[4].err, errc::cost_exceeded))
    << describe(answers[4].err);
  // Agent b has a budget of its own.
  ask_ping("t/b", 5);
  run();
  EXPECT_TRUE(answers[5].ok);
  EXPECT_EQ(service::get().count(), 4u);
  EXPECT_EQ(tool.stats().cost_exceeded.load(), 1u);
}

TEST_F(tool_call_test, the_node_cost_limit_is_shared) {
  auto d = decl_of("svc");
  d.policy.cost.limit = 15;
  declare(d);
  service::get().cost = 10;
  ASSERT_FALSE(start_one("c", "tool_caller"));
  for (int i = 1; i <= 3; ++i) {
    ask_ping("t/c", i);
    run();
  }
  EXPECT_TRUE(answers[1].ok);
  EXPECT_TRUE(answers[2].ok); // 5 left before it: allowed, then empty
  EXPECT_TRUE(is(answers[3].err, errc::cost_exceeded));
}

TEST_F(tool_call_test, writes_are_retried_only_when_safe) {
  declare(decl_of("svc", side_effect::non_idempotent_write));
  declare(decl_of("pay", side_effect::irreversible));
  service::get().mode = svc_mode::transient;
  child_spec a;
  a.id = "w";
  a.agent = "tool_caller";
  child_spec b = a;
  b.id = "p";
  b.params = {{"tool", "pay"}};
  supervisor_spec spec;
  spec.children = {a, b};
  ASSERT_FALSE(start("t", spec));
  ask_ping("t/w", 1);
  ask_ping("t/p", 2);
  ASSERT_TRUE(advance_until(
    [&] { return answered(1) && answered(2); }, 10ms, 5s));
  EXPECT_EQ(service::get().count_of(1), 1u) << "a timeout-like error may "
                                               "have written";
  EXPECT_EQ(service::get().count_of(2), 1u);
  // Refused before sending: safe to retry a non-idempotent write.
  service::get().mode = svc_mode::not_sent;
  service::get().script[3] = {svc_mode::not_sent, svc_mode::ok};
  ask_ping("t/w", 3);
  ASSERT_TRUE(advance_until([&] { return answered(3); }, 10ms, 5s));
  EXPECT_TRUE(answers[3].ok);
  EXPECT_EQ(service::get().count_of(3), 2u);
  // Never for an irreversible one.
  service::get().script[4] = {svc_mode::not_sent, svc_mode::ok};
  ask_ping("t/p", 4);
  ASSERT_TRUE(advance_until([&] { return answered(4); }, 10ms, 5s));
  EXPECT_FALSE(answers[4].ok);
  EXPECT_EQ(service::get().count_of(4), 1u);
}

TEST_F(tool_call_test, an_unknown_tool_or_wrong_types_fail_at_once) {
  declare(decl_of("svc"));
  ASSERT_FALSE(start_one("c", "tool_caller", {{"tool", "nope"}}));
  ask_ping("t/c", 1);
  run();
  EXPECT_TRUE(is(answers[1].err, errc::unknown_tool))
    << describe(answers[1].err);
  EXPECT_NE(describe(answers[1].err).find("nope"), std::string::npos);
  EXPECT_EQ(service::get().count(), 0u);
}

TEST_F(tool_call_test, the_shared_retry_budget_bounds_retries_of_all_agents) {
  // A service that is 100% down, the breaker off: N requests at R per
  // second over T seconds make at most N + max(0.1 N, floor (T + 1 s))
  // calls (a new budget holds one second of the floor).
  auto d = decl_of("svc");
  d.policy.breaker.enabled = false;
  d.policy.budget.min_per_second = 1;
  d.policy.retry.initial = 1ms;
  d.policy.retry.max = 1ms;
  auto& tool = declare(d);
  service::get().mode = svc_mode::transient;
  child_spec a;
  a.agent = "tool_caller";
  supervisor_spec spec;
  for (int k = 0; k < 4; ++k) {
    a.id = "c" + std::to_string(k);
    spec.children.push_back(a);
  }
  ASSERT_FALSE(start("t", spec));
  int n = 0;
  constexpr int per_second = 50;
  constexpr int seconds = 20;
  for (int s = 0; s < seconds * per_second; ++s) {
    ++n;
    ask_ping("t/c" + std::to_string(n % 4), n);
    advance(std::chrono::milliseconds{1000 / per_second});
  }
  advance(1s);
  EXPECT_EQ(answers.size(), static_cast<size_t>(n));
  double bound = n + std::max(0.1 * n, 1.0 * (seconds + 1 + 1));
  EXPECT_LE(service::get().count(), bound);
  // And the budget was used, not just refused: retries happened.
  EXPECT_GE(tool.stats().retries.load(), 0.08 * n);
  EXPECT_GT(tool.stats().budget_refusals.load(), 0u);
}

TEST_F(tool_call_test, three_layers_of_three_attempts_make_three_calls) {
  // a -> b -> c -> tool, each layer retrying up to 3 times, the tool 3
  // attempts too: 27 calls if each layer had a budget of its own.
  auto d = decl_of("svc");
  d.policy.breaker.enabled = false;
  d.policy.budget.min_per_second = 1000; // only the request's budget binds
  d.policy.budget.max_savings = 1e6;
  declare(d);
  service::get().mode = svc_mode::transient;
  child_spec a;
  a.agent = "layer";
  supervisor_spec spec;
  a.id = "a";
  a.params = {{"next", "t/b"}};
  spec.children.push_back(a);
  a.id = "b";
  a.params = {{"next", "t/c"}};
  spec.children.push_back(a);
  a.id = "c";
  a.params = {};
  spec.children.push_back(a);
  ASSERT_FALSE(start("t", spec));
  constexpr int requests = 20;
  for (int i = 1; i <= requests; ++i) {
    Relay r;
    r.set_n(i);
    ask_msg("t/a", r, i);
  }
  ASSERT_TRUE(advance_until([&] { return answers.size() == requests; }, 50ms,
                            60s));
  for (int i = 1; i <= requests; ++i) {
    EXPECT_EQ(service::get().count_of(i), 3u) << "request " << i;
    EXPECT_FALSE(answers[i].ok);
  }
}

TEST_F(tool_call_test, naive_layers_multiply_to_twenty_seven) {
  // The same stack without the shared budget (each layer retries 3 times
  // on its own, and the tool's request budget is raised out of the way):
  // the amplification the budget prevents, counted by the same service.
  auto d = decl_of("svc");
  d.policy.breaker.enabled = false;
  d.policy.budget.min_per_second = 1000;
  d.policy.budget.max_savings = 1e6;
  declare(d);
  service::get().mode = svc_mode::transient;
  child_spec a;
  a.agent = "layer";
  supervisor_spec spec;
  a.id = "a";
  a.params = {{"next", "t/b"}, {"naive", "1"}};
  spec.children.push_back(a);
  a.id = "b";
  a.params = {{"next", "t/c"}, {"naive", "1"}};
  spec.children.push_back(a);
  a.id = "c";
  a.params = {{"naive", "1"}};
  spec.children.push_back(a);
  ASSERT_FALSE(start("t", spec));
  Relay r;
  r.set_n(1);
  auto e = wrap(r);
  e.attempt_budget = 1000; // every layer's retries allowed
  auto dest = rt->lookup("t/a");
  sys.spawn([this, dest, e](caf::event_based_actor* me) mutable {
    me->request(dest, caf::infinite, std::move(e))
      .then([this](envelope&) { ++answers[1].count; },
            [this](caf::error&) { ++answers[1].count; });
  });
  ASSERT_TRUE(advance_until([&] { return answers.size() == 1; }, 50ms, 120s));
  EXPECT_EQ(service::get().count_of(1), 27u);
}

TEST_F(tool_call_test, a_probe_whose_caller_restarted_still_decides) {
  // The breaker's one probe is in flight when the agent that made it
  // crashes and restarts: its outcome must still reach the breaker, or the
  // half-open breaker would refuse every call for ever.
  auto& tool = declare(decl_of("svc"));
  ASSERT_FALSE(start_one("c", "tool_caller", {{"attempts", "1"}}));
  hold_a_probe(tool, "t/c");
  if (HasFatalFailure())
    return;
  Crash c;
  c.set_why("boom");
  cast("t/c", c);
  run();
  EXPECT_EQ(rt->restarts(), 1u);
  EXPECT_EQ(executors["svc"]->run_all(), 1u);
  run();
  EXPECT_EQ(tool.look().state, resilience::breaker_state::closed)
    << describe(answers[4].err) << " executions " << service::get().count();
  EXPECT_EQ(answers[4].count, 1) << "the probe's requester is answered";
  executors["svc"]->inline_run = true;
  ask_ping("t/c", 5);
  run();
  EXPECT_TRUE(answers[5].ok) << describe(answers[5].err);
  EXPECT_EQ(tool.in_use(), 0u);
}

TEST_F(tool_call_test, a_call_whose_caller_restarted_is_not_retried) {
  auto d = decl_of("svc");
  d.policy.breaker.enabled = false;
  auto& tool = declare(d);
  service::get().mode = svc_mode::transient;
  ASSERT_FALSE(start_one("c", "tool_caller"));
  ask_ping("t/c", 1);
  run();
  EXPECT_EQ(service::get().count(), 1u); // waiting for its first retry
  Crash c;
  c.set_why("boom");
  cast("t/c", c);
  advance(30s);
  EXPECT_EQ(service::get().count(), 1u) << "nobody waits for the answer";
  EXPECT_EQ(tool.in_use(), 0u);
  EXPECT_EQ(tool.stats().retries.load(), 1u);
}

TEST_F(tool_call_test, the_stack_runs_in_its_stated_order) {
  // total deadline -> bulkhead -> retry -> breaker -> rate/cost -> attempt
  auto d = decl_of("svc");
  d.policy.bulkhead.max_concurrent = 1;
  d.policy.bulkhead.queue = 0;
  d.policy.rate.per_second = 1;
  d.policy.rate.burst = 1;
  d.policy.retry.initial = 100ms;
  d.policy.retry.max = 100ms;
  auto& tool = declare(d);
  ASSERT_FALSE(start_one("c", "tool_caller"));
  // 1. The deadline before the bulkhead: a call with no time left is
  //    refused for its deadline, not counted against the bulkhead.
  executors["svc"]->inline_run = false;
  ask_ping("t/c", 1); // holds the only place
  run();
  ask_ping("t/c", 2, deadline_in(0ms));
  run();
  EXPECT_TRUE(is(answers[2].err, errc::deadline_exceeded))
    << describe(answers[2].err);
  EXPECT_EQ(tool.stats().bulkhead_full.load(), 0u);
  // 2. The bulkhead before everything inside it: a full one refuses
  //    without spending a rate token.
  ask_ping("t/c", 3);
  run();
  EXPECT_TRUE(is(answers[3].err, errc::bulkhead_full));
  executors["svc"]->inline_run = true;
  executors["svc"]->run_all();
  run();
  EXPECT_TRUE(answers[1].ok);
  // 3. The bulkhead outside the retries: a call waiting out its backoff
  //    keeps its place.
  advance(1s); // a rate token again
  service::get().script[4] = {svc_mode::transient};
  ask_ping("t/c", 4);
  run();
  EXPECT_EQ(service::get().count_of(4), 1u);
  EXPECT_EQ(tool.in_use(), 1u) << "in backoff, still inside the bulkhead";
  // 4. Retries outside the rate limit: the retry is refused by the rate
  //    limit (its token was spent by the first attempt), not run.
  advance(200ms);
  EXPECT_TRUE(is(answers[4].err, errc::rate_limited))
    << describe(answers[4].err);
  EXPECT_EQ(service::get().count_of(4), 1u);
  EXPECT_EQ(tool.in_use(), 0u);
  // 5. The breaker before the rate limit: an open breaker refuses without
  //    spending the rate token.
  service::get().mode = svc_mode::transient;
  for (int i = 5; i <= 7; ++i) {
    advance(1s);
    ask_ping("t/c", i);
    run();
    advance(300ms); // its retry: rate_limited
  }
  ASSERT_EQ(tool.look().state, resilience::breaker_state::open)
    << describe(answers[7].err);
  advance(1s); // a rate token is there
  auto limited = tool.stats().rate_limited.load();
  ask_ping("t/c", 8);
  ask_ping("t/c", 9);
  run();
  EXPECT_TRUE(is(answers[8].err, errc::circuit_open));
  EXPECT_TRUE(is(answers[9].err, errc::circuit_open));
  EXPECT_EQ(tool.stats().rate_limited.load(), limited);
}

TEST_F(tool_call_test, a_requests_deadline_reaches_the_tool_through_agents) {
  // client -(300 ms)-> a -(request, 60 s)-> c -> tool (30 s by default):
  // the tool call ends at the client's deadline, not at any of the others.
  auto& tool = declare(decl_of("svc"));
  executors["svc"]->inline_run = false; // the dependency hangs
  child_spec a;
  a.agent = "layer";
  supervisor_spec spec;
  a.id = "a";
  a.params = {{"next", "t/c"}};
  spec.children.push_back(a);
  a.id = "c";
  a.params = {};
  spec.children.push_back(a);
  ASSERT_FALSE(start("t", spec));
  Relay r;
  r.set_n(1);
  ask_msg("t/a", r, 1, deadline_in(300ms));
  run();
  advance(299ms);
  EXPECT_EQ(answers.count(1), 0u);
  EXPECT_EQ(tool.stats().abandoned.load(), 0u);
  advance(2ms);
  // The tool call was given up at 300 ms (its deadline came from the
  // client's envelope, through a's request to c).
  EXPECT_EQ(tool.stats().abandoned.load(), 1u);
  EXPECT_EQ(tool.stats().deadline_exceeded.load(), 1u);
  ASSERT_TRUE(advance_until([&] { return answers.count(1) > 0; }, 1ms, 50ms));
  EXPECT_FALSE(answers[1].ok);
}
