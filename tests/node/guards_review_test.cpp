// Review of issue 17's guards (fallbacks, dry runs, approvals of calls,
// effects and envelopes) on a real node with a data dir, people deciding
// with the real `vigil approvals` binary: each test states an invariant
// that an attack on the new code broke, or one that held. (More in
// guards_review2_test.cpp; the fixture is support/guards_review.hpp.)

#include "support/guards_review.hpp"

// -- effects ------------------------------------------------------------------

// Defect: an effect whose tool ran (and failed) and whose fallback then met
// an open breaker is taken for "refused before any attempt" (circuit_open)
// and dispatched again without counting, for ever: the write runs again
// every 250 ms and the effect never becomes a dead letter.
TEST_F(guards_review_test, an_effect_that_ran_then_met_an_open_breaker_counts) {
  auto& w = world::get();
  auto cfg = base_config(dir_);
  auto main = quick("main", side_effect::idempotent_write);
  main.policy.retry.max_attempts = 1;
  main.fallback.tools = {"backup"};
  auto backup = quick("backup", side_effect::idempotent_write);
  backup.policy.retry.max_attempts = 1;
  backup.policy.breaker.enabled = true;
  backup.policy.breaker.consecutive_failures = 1;
  backup.policy.breaker.open_for = 600s;
  cfg.tools = {main, backup};
  node n{review_types(), cfg};
  ASSERT_FALSE(n.start(
    "root", tree_of({prober_child("trip", {{"tool", "backup"}}),
                     prober_child("fx", {{"tool", "main"}, {"effect", ""}},
                                  durability_mode::journal)})));
  // The backup's breaker opens.
  w.set("backup", world::mode::transient);
  ASSERT_FALSE(n.call<Pong>("root/trip", ping(1), 5s));
  ASSERT_EQ(w.count("backup"), 1);
  // The effect: main runs and fails, its fallback's breaker is open.
  w.set("main", world::mode::transient);
  ASSERT_TRUE(n.call<Pong>("root/fx", ping(2), 5s));
  ASSERT_TRUE(eventually(
    [&] { return n.rt()->dead_letter_count() >= 1 || w.count("main") > 5; },
    20s));
  EXPECT_LE(w.count("main"), 5)
    << "the write ran again and again: dispatches after an execution were "
       "not counted";
  EXPECT_EQ(n.rt()->dead_letter_count(), 1u);
}

// -- fallbacks ------------------------------------------------------------------

// Defect: a fallback whose tool needs a person's approval (or a dry run)
// runs without it: fall_back starts it below its guards.
TEST_F(guards_review_test, a_fallback_never_runs_without_its_own_approval) {
  auto& w = world::get();
  auto cfg = base_config(dir_);
  auto main = quick("main", side_effect::idempotent_write);
  main.fallback.tools = {"pay"};
  auto pay = quick("pay", side_effect::irreversible);
  pay.approval.required = true;
  cfg.tools = {main, pay};
  node n{review_types(), cfg};
  auto err = n.start("root", tree_of({prober_child("c", {{"tool", "main"}})}));
  if (err) { // refused: as good as never running it
    EXPECT_NE(describe(err).find("fallback.tools"), std::string::npos)
      << describe(err);
    return;
  }
  w.set("main", world::mode::transient);
  auto r = n.call<Pong>("root/c", ping(3), 5s);
  EXPECT_EQ(w.count("pay"), 0)
    << "an irreversible fallback that needs approval ran unapproved";
  EXPECT_FALSE(r && r->value.from() == "pay");
}

// Defect: a fallback refused at its start (its bulkhead full) after the
// call failed asynchronously answers outside the instance's callback
// context: a throw in the callback escapes the cell (the actor dies)
// instead of failing the envelope.
TEST_F(guards_review_test, a_refused_fallbacks_answer_runs_as_a_callback) {
  auto& w = world::get();
  auto cfg = base_config(dir_);
  auto main = quick("main");
  main.policy.retry.max_attempts = 1;
  main.fallback.tools = {"backup"};
  auto backup = quick("backup");
  backup.policy.bulkhead.max_concurrent = 1;
  backup.policy.bulkhead.queue = 0;
  cfg.tools = {main, backup};
  node n{review_types(), cfg};
  ASSERT_FALSE(n.start(
    "root", tree_of({prober_child("busy", {{"tool", "backup"}}),
                     prober_child("c", {{"tool", "main"},
                                        {"throw_on_error", ""}})})));
  auto cell_before = n.rt()->lookup("root/c");
  ASSERT_TRUE(cell_before);
  // The backup's one place is taken.
  w.set("backup", world::mode::hang);
  ASSERT_FALSE(n.send("root/busy", ping(1)));
  ASSERT_TRUE(eventually([&] { return w.count("backup") == 1; }, 10s));
  w.set("main", world::mode::transient);
  auto r = n.call<Pong>("root/c", ping(2), 5s);
  ASSERT_FALSE(r);
  EXPECT_TRUE(eventually(
    [&] { return w.noted() == std::vector<std::string>{"error:bulkhead_full"}; },
    5s));
  // The throw failed the envelope (a restart of the instance), not the
  // cell: the same cell runs the next call.
  w.set("main", world::mode::ok);
  auto ok = n.call<Pong>("root/c", ping(4), 5s);
  EXPECT_TRUE(ok) << describe(ok.error());
  EXPECT_EQ(n.rt()->lookup("root/c"), cell_before)
    << "the cell died of a callback's throw";
}

// Defect (same place): the late refusal's callback runs with no origin, so
// a call made in it has no idempotency key (and, for a journal agent, is
// not counted in the held envelope's chain).
TEST_F(guards_review_test, a_call_made_in_a_refused_fallbacks_callback_is_keyed) {
  auto& w = world::get();
  auto cfg = base_config(dir_);
  auto main = quick("main", side_effect::idempotent_write);
  main.policy.retry.max_attempts = 1;
  main.fallback.tools = {"backup"};
  auto backup = quick("backup", side_effect::idempotent_write);
  backup.policy.bulkhead.max_concurrent = 1;
  backup.policy.bulkhead.queue = 0;
  cfg.tools = {main, backup};
  node n{review_types(), cfg};
  ASSERT_FALSE(n.start(
    "root", tree_of({prober_child("busy", {{"tool", "backup"}}),
                     prober_child("c", {{"tool", "main"}, {"again", ""}})})));
  w.set("backup", world::mode::hang);
  ASSERT_FALSE(n.send("root/busy", ping(1)));
  ASSERT_TRUE(eventually([&] { return w.count("backup") == 1; }, 10s));
  w.set("main", world::mode::transient);
  (void) n.call<Pong>("root/c", ping(2), 5s);
  ASSERT_TRUE(eventually([&] { return w.count("main") == 2; }, 5s));
  auto keys = w.keys_of("main");
  ASSERT_EQ(keys.size(), 2u);
  EXPECT_FALSE(keys[1].empty())
    << "a call made in a call's callback (on behalf of the envelope) had no "
       "idempotency key";
  EXPECT_EQ(keys[1].rfind(keys[0] + ".", 0), 0u) << keys[0] << " " << keys[1];
}

// -- dry runs -------------------------------------------------------------------

// Defect: the dry run is made with the dry-run tool's own timeout, not the
// call's: a call with a 300 ms timeout whose dry run hangs answers after the
// dry-run tool's attempt timeout (10 s), far past its own deadline.
TEST_F(guards_review_test, a_dry_run_stays_within_the_calls_timeout) {
  auto& w = world::get();
  auto cfg = base_config(dir_);
  auto pay = quick("pay", side_effect::irreversible);
  pay.dry_run = {"check", true};
  cfg.tools = {pay, quick("check")};
  node n{review_types(), cfg};
  ASSERT_FALSE(n.start("root", tree_of({prober_child(
                                 "c", {{"tool", "pay"}, {"timeout_ms", "300"}})})));
  w.set("check", world::mode::hang);
  auto reply = std::async(std::launch::async,
                          [&] { return n.call<Pong>("root/c", ping(1), 30s); });
  ASSERT_EQ(reply.wait_for(5s), std::future_status::ready)
    << "the call's 300 ms timeout did not bound its dry run";
  auto r = reply.get();
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), "deadline_exceeded") << describe(r.error());
  EXPECT_EQ(w.count("pay"), 0);
}

// -- approvals of calls -----------------------------------------------------------

// Defect: a read_only tool that needs approval, called from a handler of a
// non-journal agent (on behalf of an envelope, so with a key by the README),
// fails at once with approval_unavailable: no key is made for read_only
// calls that are not recorded.
TEST_F(guards_review_test, a_read_only_call_from_a_handler_can_wait_for_approval) {
  auto& w = world::get();
  auto cfg = base_config(dir_);
  auto peek = quick("peek");
  peek.approval.required = true;
  cfg.tools = {peek};
  node n{review_types(), cfg};
  ASSERT_FALSE(
    n.start("root", tree_of({prober_child("c", {{"tool", "peek"}})})));
  auto reply = std::async(std::launch::async,
                          [&] { return n.call<Pong>("root/c", ping(5), 30s); });
  std::vector<std::string> ids;
  bool asked = eventually(
    [&] {
      return (ids = pending_ids(dir_)).size() == 1
             || reply.wait_for(0s) == std::future_status::ready;
    },
    10s);
  ASSERT_TRUE(asked);
  if (ids.size() != 1u) {
    auto r = reply.get();
    FAIL() << "no approval was asked; the call answered "
           << (r ? std::string{"a reply"} : describe(r.error()));
  }
  auto ok = vigil_cmd(dir_, {"approvals", "approve", ids[0], "--by", "hal"});
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  auto r = reply.get();
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_EQ(w.count("peek"), 1);
}

// -- approvals of envelopes -------------------------------------------------------


// Defect: an envelope whose deadline passes while it waits for approval
// keeps the child's later envelopes waiting for the whole approval timeout
// (120 s here), though it can no longer run (run refuses it as expired).
TEST_F(guards_review_test, an_expired_envelope_stops_holding_the_line) {
  auto cfg = base_config(dir_);
  cfg.tools = {quick("main")};
  node n{review_types(), cfg};
  ASSERT_FALSE(n.start("root", tree_of({gated()})));
  auto first = std::async(std::launch::async,
                          [&] { return n.call<Pong>("root/g", ping(1), 300ms); });
  ASSERT_TRUE(eventually([&] { return pending_ids(dir_).size() == 1; }, 10s));
  auto r1 = first.get();
  ASSERT_FALSE(r1);
  // Behind it, an Order (no approval needed) runs once the Ping is past
  // its deadline.
  auto r2 = n.call<Receipt>("root/g", order("o1"), 10s);
  EXPECT_TRUE(r2) << describe(r2.error())
                  << ": a dead envelope holds the line for its approval";
  // And nobody is asked to approve what can no longer run.
  EXPECT_TRUE(eventually([&] { return pending_ids(dir_).empty(); }, 10s));
}

// Defect: terminate_child drops the waiting envelope (a non-journal child)
// but the cell still waits for its approval: after restart_child the
// child's envelopes wait behind one that is gone, until someone decides on
// it or it expires.
TEST_F(guards_review_test, a_restarted_child_does_not_wait_for_a_dropped_envelope) {
  auto cfg = base_config(dir_);
  cfg.tools = {quick("main")};
  node n{review_types(), cfg};
  ASSERT_FALSE(n.start("root", tree_of({gated()})));
  ASSERT_FALSE(n.send("root/g", ping(1)));
  ASSERT_TRUE(eventually([&] { return pending_ids(dir_).size() == 1; }, 10s));
  ASSERT_FALSE(n.terminate_child("root", "g"));
  ASSERT_TRUE(n.restart_child("root", "g"));
  auto r = n.call<Receipt>("root/g", order("o2"), 10s);
  EXPECT_TRUE(r) << describe(r.error())
                 << ": the restarted child waits for a dropped envelope's "
                    "approval";
}

// -- more attacks -------------------------------------------------------------------

// Defect: a call whose tool failed after the call's deadline passed (its
// answer was in the cell's inbox when the deadline's timer came) still
// falls back: the fallback gets at least 1 ns and runs, past the caller's
// deadline.
TEST_F(guards_review_test, no_fallback_runs_past_the_calls_deadline) {
  auto& w = world::get();
  auto cfg = base_config(dir_);
  auto main = quick("main");
  main.policy.retry.max_attempts = 1;
  main.fallback.tools = {"backup"};
  cfg.tools = {main, quick("backup")};
  node n{review_types(), cfg};
  ASSERT_FALSE(n.start("root", tree_of({prober_child(
                                 "c", {{"tool", "main"}, {"timeout_ms", "200"}})})));
  w.set("main", world::mode::late_transient);
  auto reply = std::async(std::launch::async,
                          [&] { return n.call<Pong>("root/c", ping(1), 10s); });
  ASSERT_TRUE(eventually([&] { return w.count("main") == 1; }, 5s));
  // The cell is busy past the deadline (200 ms) and past main's answer
  // (250 ms): it sees both when it is free.
  Slow slow;
  slow.set_ms(600);
  ASSERT_TRUE(n.call<Pong>("root/c", slow, 10s));
  auto r = reply.get();
  EXPECT_FALSE(r);
  EXPECT_EQ(w.count("backup"), 0) << "the fallback ran after the deadline";
}


// Held: a journal agent's instance restarts while its call waits for
// approval; the replayed call finds the same approval (no second one, no
// in_use) and runs once when it is approved.
TEST_F(guards_review_test, a_restarted_journal_call_finds_its_approval) {
  auto& w = world::get();
  auto cfg = base_config(dir_);
  auto pay = quick("pay", side_effect::irreversible);
  pay.approval.required = true;
  cfg.tools = {pay};
  node n{review_types(), cfg};
  ASSERT_FALSE(n.start("root", pay_tree(durability_mode::journal)));
  ASSERT_FALSE(n.send("root/c", ping(7)));
  std::vector<std::string> ids;
  ASSERT_TRUE(eventually([&] { return (ids = pending_ids(dir_)).size() == 1; },
                         10s));
  ASSERT_FALSE(n.send("root/k", crash("sibling fails")));
  ASSERT_TRUE(eventually(
    [&] {
      return n.rt()->find_tool("pay")->stats().approvals_asked.load() == 2;
    },
    10s)); // the replayed call asked again
  EXPECT_EQ(pending_ids(dir_), ids);
  ASSERT_EQ(vigil_cmd(dir_, {"approvals", "approve", ids[0]}).exit_code, 0);
  ASSERT_TRUE(eventually([&] { return w.count("pay") == 1; }, 10s));
  size_t left = 1;
  ASSERT_TRUE(eventually([&] {
    return !n.rt()->storage()->count(db::journal, left) && left == 0;
  }, 10s));
  EXPECT_EQ(w.count("pay"), 1);
}

// Defect: a non-journal agent's instance restarts while its call waits for
// approval: the call is dropped for good (its envelope is not replayed),
// but its approval stays pending; a person who approves it is told it is
// approved, and nothing runs.
TEST_F(guards_review_test, a_dropped_calls_approval_is_not_left_pending) {
  auto& w = world::get();
  auto cfg = base_config(dir_);
  auto pay = quick("pay", side_effect::irreversible);
  pay.approval.required = true;
  cfg.tools = {pay};
  node n{review_types(), cfg};
  ASSERT_FALSE(n.start("root", pay_tree(durability_mode::none)));
  auto reply = std::async(std::launch::async,
                          [&] { return n.call<Pong>("root/c", ping(8), 30s); });
  ASSERT_TRUE(eventually([&] { return pending_ids(dir_).size() == 1; }, 10s));
  ASSERT_FALSE(n.send("root/k", crash("sibling fails")));
  auto r = reply.get(); // its caller hears (the deferred reply is dropped)
  EXPECT_FALSE(r);
  EXPECT_TRUE(eventually([&] { return pending_ids(dir_).empty(); }, 10s))
    << "an approval nobody waits for is still offered to people";
  EXPECT_EQ(w.count("pay"), 0);
}

// Held: a journal child's envelope that a person rejected is consumed once
// (a dead letter) and not delivered again after the node restarts.
TEST_F(guards_review_test, a_rejected_journal_envelope_is_consumed_once) {
  auto cfg = base_config(dir_);
  cfg.tools = {quick("main")};
  {
    node n{review_types(), cfg};
    ASSERT_FALSE(n.start("root", tree_of({gated(durability_mode::journal)})));
    ASSERT_FALSE(n.send("root/g", ping(3)));
    std::vector<std::string> ids;
    ASSERT_TRUE(
      eventually([&] { return (ids = pending_ids(dir_)).size() == 1; }, 10s));
    ASSERT_EQ(
      vigil_cmd(dir_, {"approvals", "reject", ids[0], "--reason", "no"})
        .exit_code,
      0);
    size_t left = 1;
    ASSERT_TRUE(eventually([&] {
      return !n.rt()->storage()->count(db::journal, left) && left == 0;
    }, 10s));
    EXPECT_EQ(n.rt()->dead_letter_count(), 1u);
    n.stop();
  }
  node n{review_types(), cfg};
  ASSERT_FALSE(n.start("root", tree_of({gated(durability_mode::journal)})));
  auto r = n.call<Receipt>("root/g", order("after"), 10s);
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_TRUE(pending_ids(dir_).empty());
  EXPECT_EQ(world::get().count("main"), 0);
}

// Held: an effect whose approval is rejected is a dead letter naming the
// rejection, dispatched once (not again), and the tool never runs.
TEST_F(guards_review_test, a_rejected_effect_is_a_dead_letter_with_the_reason) {
  auto& w = world::get();
  auto cfg = base_config(dir_);
  auto pay = quick("pay", side_effect::idempotent_write);
  pay.approval.required = true;
  cfg.tools = {pay};
  node n{review_types(), cfg};
  ASSERT_FALSE(n.start("root", tree_of({prober_child(
                                 "c", {{"tool", "pay"}, {"effect", ""}},
                                 durability_mode::journal)})));
  ASSERT_TRUE(n.call<Pong>("root/c", ping(9), 10s));
  std::vector<std::string> ids;
  ASSERT_TRUE(eventually([&] { return (ids = pending_ids(dir_)).size() == 1; },
                         10s));
  ASSERT_EQ(vigil_cmd(dir_, {"approvals", "reject", ids[0], "--by", "eve",
                             "--reason", "wrong payee"})
              .exit_code,
            0);
  ASSERT_TRUE(eventually([&] { return n.rt()->dead_letter_count() == 1; }, 10s));
  auto letters = n.rt()->dead_letters();
  ASSERT_EQ(letters.size(), 1u);
  EXPECT_NE(letters[0].reason.find("wrong payee"), std::string::npos)
    << letters[0].reason;
  EXPECT_NE(letters[0].reason.find("1 dispatch"), std::string::npos)
    << letters[0].reason;
  size_t outbox = 1;
  ASSERT_TRUE(eventually([&] {
    return !n.rt()->storage()->count(db::outbox, outbox) && outbox == 0;
  }, 10s));
  EXPECT_EQ(w.count("pay"), 0);
}
