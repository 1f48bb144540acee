// Third review of issue 13 ("Degrade keeps its promise"), aimed at the
// fixes of 949d1b1: left_down_ by failed member, a probe's benign stop,
// a saved envelope that fails for good, dead letters by reason.
// Deterministic on CAF's testing scheduler; no sleeps.
//
// Failing at 63c7f43 (defects, all fixed since; the failed-commit case
// now also checks the fix: the requester hears the real answer):
//  - stale_entry_restarts_transient_child_that_ended_normally
//  - failed_commit_of_bury_save_applies_a_request_told_it_failed
//  - saved_envelope_rejected_for_deadline_is_a_dead_letter_twice
// The others pass and pin what held up.

#include <atomic>
#include <string>

#include "support/degrade_fixture.hpp"
#include "vigil/actors/dead_letter_log.hpp"
#include "vigil/actors/writer.hpp"
#include "vigil/persistence/store.hpp"

using namespace std::chrono_literals;
using namespace vigil;
using namespace vigil::test;

namespace {

class degrade_review3 : public degrade_fixture {
public:
  /// The Tally of the snapshot child at `p`.
  Tally tally_of(const std::string& p) {
    Tally t;
    auto g = call(p, Get{});
    EXPECT_TRUE(g) << describe(g.error());
    if (g)
      EXPECT_TRUE(t.ParseFromString(g->payload));
    return t;
  }

  /// A snapshot child `id` of type flaky_tally that saves after every envelope.
  static child_spec snap_child(const std::string& id) {
    auto w = degrading_as(id, "flaky_tally")
               .with_durability(durability_mode::snapshot);
    w.durability.every_messages = 1;
    return w;
  }
};

// -- 1. left_down_ ---------------------------------------------------------------

// one_for_all [a, w (degrades), b (transient)], exponential backoff
// 100..800 ms. a's group restart fails at w: left_down_[w] = [b], w's
// retry in 400 ms. Before it, a crashes again and its group restart
// (which cancels w's retry) starts a, w and b: all run. left_down_[w]
// is not touched (restart() erases only the entry of the child that
// restarts, a). Then b, transient, ends normally: stopped for good, as
// OTP does. Later w crashes with the budget spent and degrades:
// degrade(w) finds the stale [b], sees b "stopped" and starts it, a
// transient child that ended normally, with no group restart under way
// (supervisor_engine.cpp restart(): `left_down_.erase(key)` forgets only
// the restarting child's own entry, not those its group restart covers;
// degrade() then takes any stopped member as left down).
TEST_F(degrade_review3, stale_entry_restarts_transient_child_that_ended_normally) {
  auto spec = flags(strategy::one_for_all, 2, 5000);
  spec.flags.backoff.min = 100ms;
  spec.flags.backoff.max = 800ms;
  spec.children.push_back(worker("a", "echo"));
  spec.children.push_back(degrading_as("w"));
  spec.children.push_back(
    worker("b", "echo").with_restart(restart_type::transient));
  caf::actor sup;
  ASSERT_FALSE(start("sup", spec, &sup));
  // Two earlier failures of w, to lengthen its backoff (100, then 200 ms).
  crash("sup/w");
  advance(100ms);
  crash("sup/w");
  advance(200ms);
  ASSERT_EQ(status_of(sup, "w"), "running");
  advance(6000ms); // the budget is back; w's next delay is 400 ms
  // a's group restart (t+100) fails at w: b is left down under w.
  switches::get().set_fail("sup/w", true);
  crash("sup/a");
  advance(100ms);
  ASSERT_EQ(status_of(sup, "w"), "restarting");
  ASSERT_EQ(status_of(sup, "b"), "stopped");
  advance(50ms);
  switches::get().set_fail("sup/w", false);
  crash("sup/a"); // its group restart at +200 ms, before w's retry
  advance(200ms);
  ASSERT_EQ(status_of(sup, "a"), "running");
  ASSERT_EQ(status_of(sup, "w"), "running");
  ASSERT_EQ(status_of(sup, "b"), "running");
  // b, transient, ends normally: it stays stopped.
  exit_child("sup/b", 0);
  ASSERT_EQ(status_of(sup, "b"), "stopped");
  auto b_starts = starts("sup/b");
  // w crashes; its restart finds the budget spent: w degrades.
  crash("sup/w");
  advance(1000ms);
  ASSERT_EQ(status_of(sup, "w"), "degraded");
  EXPECT_EQ(status_of(sup, "b"), "stopped")
    << "w's degrade restarted b, a transient child that had ended normally";
  EXPECT_EQ(starts("sup/b"), b_starts);
}

// -- 3. a saved envelope that fails for good ---------------------------------

// A snapshot child saves after every envelope. The request Add(7) is
// listed in the last save when it fails for good (max_deliveries 1): the
// save that writes it out (settle -> bury -> save_snapshot) fails to
// commit. Its requester was told handler_failed at once (answer(), seq 0:
// no wait for the commit, unlike a journal agent's consume_failed). The
// cell reloads the last good save, which still lists Add(7), and the
// restarted instance applies it (README: "after a failed save it goes
// back to the last good one, with that save's waiting envelopes"): told
// it failed, and applied after all (cell.cpp settle: the requester is
// answered before the save that buries its envelope is committed).
TEST_F(degrade_review3, failed_commit_of_bury_save_applies_a_request_told_it_failed) {
  with_writer();
  auto spec = flags(strategy::one_for_one, 10, 5000);
  spec.flags.backoff.min = 100ms;
  spec.flags.backoff.max = 100ms;
  spec.children.push_back(snap_child("w"));
  caf::actor sup;
  ASSERT_FALSE(start("sup", spec, &sup));
  const std::string p = path;
  cast(p, add(-1)); // fails: restarts in 100 ms; the rest waits
  ASSERT_EQ(status_of(sup, "w"), "restarting");
  cast(p, add(1));
  cast(p, add(-2));
  auto h = self->request(handle(p), caf::infinite, wrap(add(7)));
  run();
  ASSERT_TRUE(self->mailbox().empty());
  // The restart: Add(1) is saved with [Add(-2), Add(7)] listed; Add(-2)
  // fails for good and is saved away (listing [Add(7)]).
  advance(100ms);
  ASSERT_EQ(status_of(sup, "w"), "restarting");
  run();
  // The next commit fails: it is the save that writes Add(7) out.
  flaky_tally::fail_sevens = 1;
  rt->storage()->fail_apply_after(0);
  advance(100ms); // the restart: Add(7) fails for good
  ASSERT_EQ(flaky_tally::fail_sevens.load(), 0) << "Add(7) did not run";
  // Fixed: the answer waits for the save that writes Add(7) out; that
  // commit fails, the cell reloads the last good save (which lists it)
  // and gives it its requester back, and the next instance applies it.
  EXPECT_TRUE(self->mailbox().empty()) << "answered before the commit";
  advance(1000ms);
  ASSERT_FALSE(self->mailbox().empty()) << "the requester never heard";
  caf::error told;
  bool replied = false;
  std::move(h).receive([&](envelope&) { replied = true; },
                       [&](caf::error& e) { told = e; });
  auto t = tally_of(p);
  bool applied = false;
  for (auto n : t.seen())
    applied = applied || n == 7;
  EXPECT_FALSE(told && applied)
    << "the requester was told " << describe(told)
    << ", and Add(7) was applied after all; seen " << t.ShortDebugString();
  EXPECT_TRUE(replied || told);
  EXPECT_TRUE(replied && applied) << describe(told);
}

// A snapshot child's saved async envelope whose deadline passes while it
// waits (the child restarts) is rejected when drained: a dead letter, but
// no save writes it out (drain's `rejected` case records the letter on
// its own, unlike settle's bury), and the rejection counts as no change,
// so no later save happens before the node stops. The next start of the
// node loads the save, which still lists it: rejected again, a second
// dead letter for the same envelope (cell.cpp drain, outcome::rejected:
// a `saved` envelope is not saved away).
TEST_F(degrade_review3, saved_envelope_rejected_for_deadline_is_a_dead_letter_twice) {
  with_writer();
  auto w = snap_child("w");
  auto spec = flags(strategy::one_for_one, 10, 5000);
  spec.flags.backoff.min = 100ms;
  spec.flags.backoff.max = 100ms;
  spec.children.push_back(w);
  caf::actor sup;
  ASSERT_FALSE(start("sup", spec, &sup));
  const std::string p = path;
  cast(p, add(-1)); // fails: restarts in 100 ms
  cast(p, add(1));
  cast(p, add(-2));
  caf::anon_send(handle(p), wrap(add(5), ns_in(150ms)));
  run();
  // The restart (t=100): Add(1) saved with [Add(-2), Add(5)]; Add(-2)
  // fails for good, saved away: the save lists [Add(5)].
  advance(100ms);
  // The next restart (t=200): Add(5)'s deadline (t=150) has passed.
  advance(100ms);
  ASSERT_EQ(status_of(sup, "w"), "running");
  EXPECT_EQ(letters(p, "expired"), 1u);
  // The node stops and starts again on the same data dir.
  ASSERT_FALSE(ask_void(sup, stop_cmd{}));
  run();
  caf::actor sup2;
  auto spec2 = flags(strategy::one_for_one, 10, 5000);
  spec2.children.push_back(w);
  ASSERT_FALSE(start("sup", spec2, &sup2));
  advance(1000ms);
  auto t = tally_of(p);
  EXPECT_EQ(t.sum(), 1);
  EXPECT_EQ(letters(p, "expired"), 1u)
    << "the same envelope is a dead letter once per start of the node";
}

// -- held up (pinned) -----------------------------------------------------------

// A saved async envelope that fails for good (max_deliveries 1) is saved
// away with its dead letter: one letter, not applied, also after the
// node starts again on the same data dir; the envelopes buffered behind
// it are still listed and applied once.
TEST_F(degrade_review3, saved_async_failure_is_buried_once_across_node_restart) {
  with_writer();
  auto w = snap_child("w");
  auto spec = flags(strategy::one_for_one, 10, 5000);
  spec.flags.backoff.min = 100ms;
  spec.flags.backoff.max = 100ms;
  spec.children.push_back(w);
  caf::actor sup;
  ASSERT_FALSE(start("sup", spec, &sup));
  const std::string p = path;
  cast(p, add(-1)); // a memory envelope: its own dead letter
  cast(p, add(1));
  cast(p, add(-2)); // listed in the save after Add(1), then fails
  cast(p, add(3));
  advance(100ms);
  advance(100ms);
  ASSERT_EQ(status_of(sup, "w"), "running");
  EXPECT_EQ(letters(p, "handler_failed"), 2u);
  EXPECT_EQ(tally_of(p).sum(), 4);
  ASSERT_FALSE(ask_void(sup, stop_cmd{}));
  run();
  caf::actor sup2;
  auto spec2 = flags(strategy::one_for_one, 10, 5000);
  spec2.children.push_back(w);
  ASSERT_FALSE(start("sup", spec2, &sup2));
  advance(1000ms);
  EXPECT_EQ(tally_of(p).sum(), 4);
  EXPECT_EQ(letters(p, "handler_failed"), 2u);
}

// Dead letters by reason: the leading code, "other" when there is none.
TEST_F(degrade_review3, dead_letters_by_reason_take_the_leading_code) {
  envelope e;
  rt->add_dead_letter("x", e, "compensation_failed after 3 attempts: a",
                      false);
  rt->add_dead_letter("x", e, "handler_failed: x: boom", false);
  rt->add_dead_letter("x", e, "Boom", false);
  rt->add_dead_letter("x", e, "", false);
  auto by = rt->dead_log().by_reason();
  EXPECT_EQ(by["compensation_failed"], 1u);
  EXPECT_EQ(by["handler_failed"], 1u);
  EXPECT_EQ(by["other"], 2u);
  EXPECT_EQ(by.size(), 3u);
}

} // namespace
