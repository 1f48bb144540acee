// Second review of issue 13 ("Degrade keeps its promise"), aimed at the
// fixes of 36107e1: a degrade that ends a failed group restart, a probe
// handler's stop, requesters of kept envelopes, dead letters by reason.
// Deterministic on CAF's testing scheduler; no sleeps.
//
// Failing at 218a225 (defects, all fixed since):
//  - degrade_starts_only_members_its_own_group_left_down
//  - degrade_whose_rest_start_fails_strands_the_later_members
//  - stale_left_down_flag_starts_a_child_the_user_terminated
//  - transient_probe_stopping_with_shutdown_reason_ends_the_child
//  - saved_request_failing_in_half_open_gets_stand_in_and_is_applied
//  - dead_letters_by_reason_use_the_code_not_free_text (minor)
// The others pass and pin what held up.

#include <atomic>
#include <string>

#include "support/durable_agents.hpp"
#include "support/degrade_fixture.hpp"
#include "support/temp_dir.hpp"
#include "vigil/actors/dead_letter_log.hpp"
#include "vigil/actors/writer.hpp"
#include "vigil/persistence/store.hpp"

using namespace std::chrono_literals;
using namespace vigil;
using namespace vigil::test;

namespace {

using degrade_review2 = degrade_fixture;

// -- 1. a degrade ends a failed group restart --------------------------------

// rest_for_one [a (degrades), b, c]. b crashes; its restart stops c and
// fails to start b, so c is left down for b's retry (pending, 100 ms).
// Meanwhile a crashed too and its restart finds the budget spent: a
// degrades. degrade(a) starts every child flagged left_down, although
// c was left down by b's failed restart, not a's: c now runs while b,
// which rest_for_one starts before it, is still down waiting for its
// retry (supervisor_engine.cpp degrade(): the loop over children_ takes
// every left_down flag, not the members after the degrading child).
TEST_F(degrade_review2, degrade_starts_only_members_its_own_group_left_down) {
  auto sup = start_group(strategy::rest_for_one,
                         {degrading_as("a"), worker("b", "echo"),
                          worker("c", "echo")},
                         1, 100ms);
  switches::get().set_fail("sup/b", true);
  crash("sup/b");   // t=0: b's restart at 100 ms
  advance(50ms);
  crash("sup/a");   // t=50: a's restart at 150 ms
  advance(50ms);    // t=100: the group restart [b, c] fails at b
  ASSERT_EQ(status_of(sup, "b"), "restarting");
  ASSERT_EQ(status_of(sup, "c"), "stopped");
  auto c_starts = starts("sup/c");
  advance(50ms);    // t=150: a's restart: budget spent, a degrades
  ASSERT_EQ(status_of(sup, "a"), "degraded");
  EXPECT_EQ(status_of(sup, "b"), "restarting");
  EXPECT_EQ(status_of(sup, "c"), "stopped")
    << "a's degrade started c, left down by b's failed restart, while b "
       "(before c in rest_for_one) is still down";
  EXPECT_EQ(starts("sup/c"), c_starts);
}

// rest_for_one [w (degrades), p1 (degrades), p2]. The group restart of w
// fails at w, leaving p1 and p2 down; w's retry degrades it, and
// degrade(w) starts p1, p2. p1 fails to start: its retry degrades p1
// (budget spent). p2 never failed, yet degrade() set it to restarting
// and, after p1's failure, no retry and no left_down flag brings it back:
// it stays "restarting" for good, and restart_child/delete_child refuse
// it (restarting). (supervisor_engine.cpp degrade(): the failure
// continuation of its start_seq does not mark the members after the
// failed one left down, as restart()'s does.)
TEST_F(degrade_review2, degrade_whose_rest_start_fails_strands_the_later_members) {
  auto sup = start_group(strategy::rest_for_one,
                         {degrading_as("w"), degrading_as("p1"),
                          worker("p2", "echo")},
                         1, 0ms);
  switches::get().set_fail("sup/w", true);
  switches::get().set_fail("sup/p1", true);
  crash("sup/w");
  advance(1ms);
  ASSERT_EQ(status_of(sup, "w"), "degraded");
  ASSERT_EQ(status_of(sup, "p1"), "degraded");
  advance(1000ms);
  EXPECT_EQ(status_of(sup, "p2"), "running")
    << "p2 never failed, yet it is left " << status_of(sup, "p2");
  auto r = ask<child_info>(sup, restart_child_atom::value, std::string{"p2"});
  if (status_of(sup, "p2") != "running")
    EXPECT_TRUE(r) << "and cannot be restarted: " << describe(r.error());
}

// A left_down flag outlives its group restart. rest_for_one [b, c, a
// (degrades)]: the group restart of b fails at b and leaves c and a down.
// The operator ends that restart: terminate_child(b) (cancels the retry),
// terminate_child(c) (c is to stay down), restart_child(b) and
// restart_child(a). Seconds later a fails twice and degrades: degrade(a)
// starts c, whose flag was never cleared, against the operator's
// terminate_child and with no group restart under way
// (supervisor_engine.cpp degrade(); terminate_child, restart_child and
// start_api leave child::left_down as it was).
TEST_F(degrade_review2, stale_left_down_flag_starts_a_child_the_user_terminated) {
  auto sup = start_group(strategy::rest_for_one,
                         {worker("b", "echo"), worker("c", "echo"),
                          degrading_as("a")},
                         1, 100ms);
  switches::get().set_fail("sup/b", true);
  crash("sup/b");
  advance(100ms); // the group restart [b, c, a] fails at b
  ASSERT_EQ(status_of(sup, "b"), "restarting");
  ASSERT_EQ(status_of(sup, "c"), "stopped");
  ASSERT_EQ(status_of(sup, "a"), "stopped");
  EXPECT_FALSE(ask_void(sup, terminate_child_atom::value, std::string{"b"}));
  EXPECT_FALSE(ask_void(sup, terminate_child_atom::value, std::string{"c"}));
  switches::get().set_fail("sup/b", false);
  ASSERT_TRUE(ask<child_info>(sup, restart_child_atom::value,
                              std::string{"b"}));
  ASSERT_TRUE(ask<child_info>(sup, restart_child_atom::value,
                              std::string{"a"}));
  ASSERT_EQ(status_of(sup, "c"), "stopped");
  advance(6000ms); // the budget is back
  auto c_starts = starts("sup/c");
  crash("sup/a");
  advance(1000ms); // restarted (the budget allows one)
  ASSERT_EQ(status_of(sup, "a"), "running");
  crash("sup/a");
  advance(1000ms); // budget spent: a degrades
  ASSERT_EQ(status_of(sup, "a"), "degraded");
  EXPECT_EQ(status_of(sup, "c"), "stopped")
    << "a's degrade started c, which the operator terminated";
  EXPECT_EQ(starts("sup/c"), c_starts);
}

// -- 2. a probe handler's stop -------------------------------------------------

// A transient child that stops with user_shutdown (a benign reason: the
// supervisor's is_shutdown) is not restarted when it runs. Its probe
// instance in half-open doing the same is taken for a failed probe
// (cell.cpp end_instance: only `normal` counts as a normal stop): the
// child stays degraded and probes for ever, each probe stopping again.
TEST_F(degrade_review2, transient_probe_stopping_with_shutdown_reason_ends_the_child) {
  // Control: while running, stop(user_shutdown) ends a transient child.
  auto spec = flags(strategy::one_for_one, 1, 5000);
  spec.children.push_back(
    degrading_as("w").with_restart(restart_type::transient));
  spec.children.push_back(
    degrading_as("x").with_restart(restart_type::transient));
  caf::actor sup;
  ASSERT_FALSE(start("sup", spec, &sup));
  exit_child("sup/x", 1);
  ASSERT_EQ(status_of(sup, "x"), "stopped");
  crash("sup/w");
  crash("sup/w"); // budget spent: degraded
  ASSERT_EQ(status_of(sup, "w"), "degraded");
  advance(100ms);
  ASSERT_EQ(cell_state("sup/w"), "half_open");
  exit_child("sup/w", 1); // the probe's first envelope: stop(user_shutdown)
  EXPECT_EQ(status_of(sup, "w"), "stopped");
  EXPECT_EQ(cell_state("sup/w"), "stopped");
  auto before = starts("sup/w");
  advance(2000ms);
  EXPECT_EQ(starts("sup/w"), before) << "it keeps probing";
}

// -- 3. requesters of kept envelopes ----------------------------------------

// A snapshot agent's request listed in its last save, kept across the
// switch to degraded with its requester waiting (the fix of 36107e1),
// fails in the probe's half-open. after_failure gets only the journal seq
// from drain (p.saved is dropped), so the requester hears the stand-in
// (degraded: "not applied") and the envelope leaves memory, but it is
// still listed in the save on disk: nothing saves while degraded, so the
// path's next owner applies it. The requester was told the fallback for
// an envelope that is applied (cell.cpp drain -> after_failure: a saved
// envelope is treated as a memory one, unlike in enter_degraded).
TEST_F(degrade_review2, saved_request_failing_in_half_open_gets_stand_in_and_is_applied) {
  with_writer();
  auto w = degrading_as("w", "flaky_tally").with_durability(durability_mode::snapshot);
  w.durability.every_messages = 1;
  auto spec = flags(strategy::one_for_one, 1, 5000);
  spec.flags.backoff.min = 100ms;
  spec.flags.backoff.max = 100ms;
  spec.children.push_back(w);
  caf::actor sup;
  ASSERT_FALSE(start("sup", spec, &sup));
  const std::string path = "sup/w";
  cast(path, add(-1)); // fails: restart after 100 ms
  ASSERT_EQ(status_of(sup, "w"), "restarting");
  cast(path, add(1));
  cast(path, add(-2));
  auto h = self->request(handle(path), caf::infinite, wrap(add(7)));
  run();
  ASSERT_TRUE(self->mailbox().empty());
  // The restart drains: Add(1) is handled and saved with [Add(-2), Add(7)]
  // listed; Add(-2) fails, the budget is spent, w degrades.
  advance(100ms);
  advance(100ms);
  ASSERT_EQ(status_of(sup, "w"), "degraded");
  ASSERT_TRUE(self->mailbox().empty()) << "Add(7) waits for its real answer";
  flaky_tally::fail_all = true;
  advance(100ms); // the probe: Add(7) fails in half-open
  ASSERT_EQ(cell_state(path), "degraded");
  ASSERT_FALSE(self->mailbox().empty());
  bool fallback = false;
  bool failed = false;
  std::move(h).receive([&](envelope& e) { fallback = e.degraded(); },
                       [&](caf::error&) { failed = true; });
  // Fixed: as in running mode, its requester hears the failure, and the
  // save that listed it is written again without it.
  EXPECT_TRUE(failed);
  EXPECT_FALSE(fallback);
  flaky_tally::fail_all = false;
  // The node goes on with a new owner of the path (as after a restart of
  // the node): stop the tree, start it again on the same data dir.
  ASSERT_FALSE(ask_void(sup, stop_cmd{}));
  run();
  caf::actor sup2;
  auto spec2 = flags(strategy::one_for_one, 5, 5000);
  spec2.children.push_back(w);
  ASSERT_FALSE(start("sup", spec2, &sup2));
  advance(1000ms);
  auto g = call(path, Get{});
  ASSERT_TRUE(g) << describe(g.error());
  Tally t;
  ASSERT_TRUE(t.ParseFromString(g->payload));
  bool applied = t.sum() >= 7;
  EXPECT_FALSE(applied) << "told it failed, and applied after all";
  EXPECT_FALSE(fallback && applied)
    << "the requester got the stand-in (degraded) and its Add(7) was "
       "applied; sum "
    << t.sum();
}

// -- 4. dead letters by reason -------------------------------------------------

// The reason code is the text before the first ':', so a reason whose code
// is followed by free text before its ':' gets a code of its own for each
// variant: a saga's "compensation_failed after N attempts: ..." (saga.cpp)
// counts under "compensation_failed after 3 attempts", another saga's under
// "... after 5 attempts", and each such variant takes one of the 64 slots
// (dead_letter_log.cpp add: code = reason up to ':').
TEST_F(degrade_review2, dead_letters_by_reason_use_the_code_not_free_text) {
  envelope e;
  rt->add_dead_letter("s1/step", e,
                      "compensation_failed after 3 attempts: boom", false);
  rt->add_dead_letter("s2/step", e,
                      "compensation_failed after 5 attempts: boom", false);
  auto by = rt->dead_log().by_reason();
  std::string codes;
  for (auto& kvp : by)
    codes += "[" + kvp.first + "] ";
  EXPECT_EQ(by.size(), 1u) << codes;
  auto i = by.find("compensation_failed");
  EXPECT_TRUE(i != by.end() && i->second == 2u) << codes;
}

// -- held up (pinned) -----------------------------------------------------------

// A journal request accepted while the child restarts, kept across the
// switch to degraded with its requester waiting: terminate_child answers
// that requester (not_running, kept in the journal), it does not hang.
TEST_F(degrade_review2, kept_journal_requester_is_answered_on_terminate) {
  with_writer();
  auto w = degrading_as("w", "tally").with_durability(durability_mode::journal);
  auto spec = flags(strategy::one_for_one, 0, 5000);
  spec.flags.backoff.min = 100ms;
  spec.flags.backoff.max = 100ms;
  spec.children.push_back(w);
  caf::actor sup;
  ASSERT_FALSE(start("sup", spec, &sup));
  cast("sup/w", add(-1));
  auto h = self->request(handle("sup/w"), caf::infinite, wrap(add(5)));
  run();
  advance(100ms);
  ASSERT_EQ(status_of(sup, "w"), "degraded");
  ASSERT_TRUE(self->mailbox().empty());
  EXPECT_FALSE(ask_void(sup, terminate_child_atom::value, std::string{"w"}));
  ASSERT_FALSE(self->mailbox().empty()) << "the requester hangs";
  caf::error err;
  std::move(h).receive([&](envelope&) {}, [&](caf::error& e) { err = e; });
  EXPECT_TRUE(is(err, errc::not_running)) << describe(err);
  EXPECT_EQ(rt->stand_in_answers(), 0u);
}

// A transient child whose probe handler stops normally (after a failed
// probe on a kept redelivery): recovery, exit, stopped; every envelope is
// one dead letter (degraded, poison_message), nothing lost or doubled.
TEST_F(degrade_review2, transient_probe_normal_stop_accounts_for_every_envelope) {
  auto w = degrading_as("w").with_restart(restart_type::transient);
  w.max_deliveries = 3;
  auto spec = flags(strategy::one_for_one, 1, 5000);
  spec.children.push_back(w);
  caf::actor sup;
  ASSERT_FALSE(start("sup", spec, &sup));
  Exit ex;
  ex.set_how(0);
  crash("sup/w", "always"); // kept for its third delivery when w degrades
  ASSERT_EQ(status_of(sup, "w"), "degraded");
  cast("sup/w", ex); // degraded: a dead letter
  EXPECT_EQ(letters("sup/w", "degraded"), 1u);
  advance(100ms); // the probe: the kept Crash fails a third time: poison
  EXPECT_EQ(letters("sup/w", "poison_message"), 1u);
  ASSERT_EQ(cell_state("sup/w"), "degraded");
  advance(200ms);
  ASSERT_EQ(cell_state("sup/w"), "half_open");
  cast("sup/w", ex); // a normal stop decides the probe
  EXPECT_EQ(status_of(sup, "w"), "stopped");
  EXPECT_EQ(cell_state("sup/w"), "stopped");
  EXPECT_EQ(rt->dead_letters().size(), 2u);
  EXPECT_EQ(rt->stand_in_answers(), 0u);
}

} // namespace
