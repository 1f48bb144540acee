// Adversarial review of issue 16 (tool calls): lifecycle interleavings of
// the calling agent and the shared parts of the tool (breaker, cost
// limits, budgets), on CAF's deterministic testing scheduler.

#include <chrono>

#include "support/tool_fixture.hpp"

using namespace vigil;
using namespace vigil::test;
using namespace std::chrono_literals;

namespace {

/// On Ping: calls tool "svc" and replies with its answer. With param
/// `crash_after_call`, the handler throws right after call_tool returned
/// (the call is in flight, its execution real); with `attempts`, the
/// call's attempts. On Crash: throws (a restart of the instance).
class review_caller : public agent<> {
public:
  explicit review_caller(const params& ps) {
    crash_after_call_ = ps.count("crash_after_call") > 0;
    if (auto i = ps.find("attempts"); i != ps.end())
      opts_.max_attempts = static_cast<uint32_t>(std::stoul(i->second));
  }

  static void define(handlers<review_caller>& h) {
    h.on<Ping>(&review_caller::ping);
    h.on<Crash>([](review_caller&, context&, const Crash& m) {
      throw std::runtime_error(m.why());
    });
  }

  void ping(context& ctx, const Ping& req) {
    auto rp = ctx.defer();
    ctx.call_tool<Pong>(
      "svc", req, opts_, [rp](Pong p) mutable { rp.deliver(p); },
      [rp](const caf::error& e) mutable { rp.fail(e); });
    if (crash_after_call_)
      throw std::runtime_error("crashed after its call went out");
  }

private:
  bool crash_after_call_ = false;
  tool_options opts_;
};

class tool_review_test : public tool_fixture {
public:
  tool_review_test() {
    // The fixture's runtime, with review_caller added to its registry.
    registry types = rt->types();
    types.add<review_caller>("review_caller");
    rt = std::make_shared<runtime>(std::move(types));
  }

  caf::error start_caller(params ps) {
    return tool_fixture::start_caller(std::move(ps), "review_caller");
  }
};

} // namespace

// A half-open probe whose caller was restarted before its execution
// returned: the execution succeeds, but its outcome is never reported to
// the breaker, so the probe slot stays taken and the breaker refuses every
// call of every agent, for ever (no timer ever frees the slot).
TEST_F(tool_review_test, a_probe_whose_caller_restarted_frees_the_breaker) {
  auto& tool = declare(decl_of("svc"));
  ASSERT_FALSE(start_caller({{"attempts", "1"}}));
  // The probe goes out; the dependency is healthy again but slow.
  hold_a_probe(tool, "t/c");
  if (HasFatalFailure())
    return;
  // The caller is restarted while its probe runs, then the probe returns.
  crash("t/c");
  ASSERT_EQ(status_of(sups.back(), "c"), "running");
  executors["svc"]->inline_run = true;
  executors["svc"]->run_all();
  run();
  EXPECT_EQ(service::get().count(), 4u);
  EXPECT_EQ(tool.in_use(), 0u);
  // Whatever the breaker made of the probe, it must recover in time.
  advance(10min);
  ask_ping("t/c", 5);
  run();
  ASSERT_TRUE(answered(5));
  EXPECT_TRUE(answers[5].ok) << describe(answers[5].err)
                             << "; breaker state "
                             << to_string(tool.look().state);
}

// The node's cost limit: executions made for an instance that was
// restarted before they returned are never charged (on_tool_done drops the
// result before charging), so an agent that crashes after each call spends
// without limit.
TEST_F(tool_review_test, executions_of_a_restarted_caller_are_charged) {
  auto d = decl_of("svc");
  d.policy.cost.limit = 25;
  d.policy.cost.per = 1h;
  auto& tool = declare(d);
  service::get().cost = 10;
  ASSERT_FALSE(start_caller({{"crash_after_call", "1"}}));
  for (int i = 1; i <= 5; ++i) {
    ask_ping("t/c", i);
    run();
  }
  // Every call went out (cost 10 each: 50 spent against a limit of 25).
  // The limit refuses calls once 25 are spent: at most 3 executions.
  EXPECT_LE(service::get().count(), 3u)
    << "cost still available: " << tool.look().cost_available;
  EXPECT_LE(tool.look().cost_available, 0.0);
}

// The same lost outcome for the breaker: a dependency that fails every
// call of a caller that restarts after calling never opens the breaker.
TEST_F(tool_review_test, failures_seen_by_a_restarted_caller_open_the_breaker) {
  auto d = decl_of("svc");
  d.policy.retry.max_attempts = 1;
  auto& tool = declare(d);
  service::get().mode = svc_mode::transient;
  ASSERT_FALSE(start_caller({{"crash_after_call", "1"}}));
  for (int i = 1; i <= 6; ++i) {
    ask_ping("t/c", i);
    run();
  }
  EXPECT_STREQ(to_string(tool.look().state), "open")
    << service::get().count() << " executions, all failed; "
    << tool.look().consecutive_failures << " failures counted";
  EXPECT_LE(service::get().count(), 3u);
}

// Stopping an agent (its tree shutting down) while its calls to a healthy
// dependency are in flight: end_tool_calls abandons each attempt as a
// *failure* of the dependency (abandon_attempt reports on_outcome(failure,
// slow)), so three calls in flight open the breaker of a healthy tool (and
// a node with a data dir keeps it open in LMDB for its next start).
TEST_F(tool_review_test, shutting_down_callers_does_not_open_the_breaker) {
  auto& tool = declare(decl_of("svc"));
  executors["svc"]->inline_run = false; // healthy, still running
  ASSERT_FALSE(start_caller({}));
  for (int i = 1; i <= 3; ++i)
    ask_ping("t/c", i);
  run();
  ASSERT_EQ(executors["svc"]->pending(), 3u);
  for (auto& s : sups)
    caf::anon_send_exit(s, caf::exit_reason::user_shutdown);
  run();
  EXPECT_STREQ(to_string(tool.look().state), "closed")
    << "openings: " << tool.look().openings;
  EXPECT_EQ(tool.look().consecutive_failures, 0u);
}

// The request's attempt budget is drawn before the tool's own retry budget
// is asked: when the tool's budget refuses, the request's account has paid
// for a retry that was never made, and the layer above that retries with
// take_retry() is refused too early. With a budget of 3 attempts, a tool
// that never retries (its budget is 0) and a layer that retries, the
// request makes 2 real calls instead of 3.
TEST_F(tool_review_test, a_retry_refused_by_the_tool_budget_costs_the_request_nothing) {
  auto d = decl_of("svc");
  d.policy.breaker.enabled = false;
  d.policy.budget.ratio = 0.0;
  d.policy.budget.min_per_second = 0.0; // the tool never retries
  auto& tool = declare(d);
  service::get().mode = svc_mode::transient;
  child_spec a;
  a.agent = "layer";
  supervisor_spec spec;
  a.id = "b";
  a.params = {{"next", "t/c"}};
  spec.children.push_back(a);
  a.id = "c";
  a.params = {};
  spec.children.push_back(a);
  ASSERT_FALSE(start("t", spec));
  Relay r;
  r.set_n(1);
  ask_msg("t/b", r, 1);
  ASSERT_TRUE(advance_until([&] { return answered(1); }, 50ms, 60s));
  EXPECT_FALSE(answers[1].ok);
  EXPECT_EQ(tool.stats().retries.load(), 0u);
  // 3 attempts in all for the request: the tool made no retry, so the
  // layer's own retries may use both.
  EXPECT_EQ(service::get().count_of(1), 3u);
}

// The per-agent cost budget is asked only before a call's first attempt
// (call_tool_raw); the retries of that call are charged to it but never
// checked (start_attempt asks only the node's cost budget). An LLM-like
// tool that returns invalid output at 10 units an attempt, retried up to 5
// times, spends 50 units of an agent whose budget is 25 in one call.
TEST_F(tool_review_test, retries_stop_at_the_agents_cost_budget) {
  auto d = decl_of("svc");
  d.policy.cost.per_agent = 25;
  d.policy.cost.per = 1h;
  d.policy.retry.max_attempts = 5;
  d.policy.retry.initial = 1ms;
  d.policy.retry.max = 1ms;
  d.policy.breaker.enabled = false;
  d.policy.budget.min_per_second = 1000; // only the cost budget binds
  d.policy.budget.max_savings = 1e6;
  auto& tool = declare(d);
  service::get().mode = svc_mode::invalid;
  service::get().cost = 10;
  child_spec c;
  c.id = "c";
  c.agent = "review_caller";
  supervisor_spec spec;
  spec.children.push_back(c);
  ASSERT_FALSE(start("t", spec));
  auto e = wrap(ping(1));
  e.attempt_budget = 10; // the request allows 5 attempts and more
  auto dest = rt->lookup("t/c");
  sys.spawn([this, dest, e](caf::event_based_actor* me) mutable {
    me->request(dest, caf::infinite, std::move(e))
      .then([this](envelope&) { ++answers[1].count; },
            [this](caf::error& err) {
              ++answers[1].count;
              answers[1].err = err;
            });
  });
  ASSERT_TRUE(advance_until([&] { return answered(1); }, 10ms, 10s));
  // 10 + 10 + 10: the budget of 25 was not spent before the third attempt
  // (as for calls, see cost_budgets_stop_a_runaway_agent), then spent.
  EXPECT_LE(service::get().count(), 3u)
    << describe(answers[1].err) << "; retries " << tool.stats().retries.load();
}

// An execution returns into its cell's inbox, and the cell is killed before
// it takes it (the kill is ahead of the bell in its mailbox): the outcome
// must still reach the breaker, or a half-open probe's slot stays taken
// and the breaker refuses every call for ever.
TEST_F(tool_review_test, a_probe_left_in_the_inbox_of_a_killed_cell_decides) {
  auto& tool = declare(decl_of("svc"));
  ASSERT_FALSE(start_caller({{"attempts", "1"}}));
  hold_a_probe(tool, "t/c");
  if (HasFatalFailure())
    return;
  auto cell = handle("t/c");
  ASSERT_TRUE(cell);
  caf::anon_send_exit(cell, caf::exit_reason::kill);
  ASSERT_TRUE(executors["svc"]->run_nth(0)); // returns after the kill
  run();
  EXPECT_FALSE(alive(cell));
  EXPECT_EQ(service::get().count(), 4u);
  EXPECT_EQ(tool.in_use(), 0u);
  // The probe succeeded: one probe closes the breaker.
  EXPECT_STREQ(to_string(tool.look().state), "closed");
}
