// Degrade keeps its promise (issue 13): a degraded child is never stranded,
// whatever way its probe fails, and every envelope it receives is
// accounted for (a stand-in answer, a dead letter, or kept for its next
// delivery). Deterministic on CAF's testing scheduler; each case failed on
// main before the fix.

#include <string>

#include "support/degrade_fixture.hpp"

using namespace std::chrono_literals;
using namespace vigil;
using namespace vigil::test;

namespace {

using start_call = switches::start_call;

class degrade_test : public degrade_fixture {};

// -- a probe that fails in any way leads to the next probe --------------------

TEST_F(degrade_test, probe_whose_reply_callback_throws_probes_again) {
  auto sup = start_degraded();
  switches::get().start_calls[path] = {"sup/peer", 0,
                                       start_call::throw_on_reply};
  expect_start_after(100ms); // the probe's on_restart asks peer; it throws
  expect_agree(sup, "degraded");
  expect_fallback(ping(1));
  expect_start_after(200ms); // the next probe, on the doubled schedule
  expect_agree(sup, "degraded");
  expect_recovery(sup, 400ms);
}

TEST_F(degrade_test, probe_whose_request_times_out_and_throws_probes_again) {
  bind_silent();
  auto sup = start_degraded();
  switches::get().start_calls[path] = {"silent", 50,
                                       start_call::throw_on_error};
  expect_start_after(100ms);
  EXPECT_EQ(cell_state(), "half_open"); // waiting for its request
  advance(50ms);                         // the request times out
  expect_agree(sup, "degraded");
  expect_fallback(ping(1));
  expect_start_after(200ms);
  advance(50ms);
  expect_agree(sup, "degraded");
  expect_recovery(sup, 400ms); // counted from the failure
}

TEST_F(degrade_test, probe_that_stops_with_an_error_in_a_callback_probes_again) {
  auto sup = start_degraded();
  switches::get().start_calls[path] = {"sup/peer", 0, start_call::fail_stop};
  expect_start_after(100ms);
  expect_agree(sup, "degraded");
  expect_fallback(ping(1));
  expect_recovery(sup, 200ms);
}

TEST_F(degrade_test, probe_that_stops_normally_is_reported_and_not_stranded) {
  auto sup = start_degraded();
  auto restarts = rt->restarts();
  switches::get().start_calls[path] = {"sup/peer", 0,
                                       start_call::normal_stop};
  expect_start_after(100ms);
  // The probe's instance ran and ended on its own: the supervisor hears of
  // it (a permanent child is restarted, which its spent budget turns into
  // a degrade again), and both sides agree.
  expect_agree(sup, "degraded");
  EXPECT_EQ(rt->restarts(), restarts + 1);
  expect_fallback(ping(1));
  expect_recovery(sup, 100ms);
}

// -- every envelope a degrading child receives is accounted for ---------------

TEST_F(degrade_test, async_envelopes_to_a_degraded_child_are_dead_letters) {
  start_degraded();
  auto before = rt->dead_letter_count();
  for (int i = 0; i < 20; ++i)
    cast(path, ping(i));
  EXPECT_EQ(letters("degraded"), 20u);
  EXPECT_EQ(rt->dead_letter_count(), before + 20);
  EXPECT_EQ(rt->stand_in_answers(), 0u);
  // A requester hears the stand-in, and that is counted.
  for (int i = 0; i < 3; ++i)
    expect_fallback(ping(i));
  EXPECT_EQ(rt->stand_in_answers(), 3u);
  EXPECT_EQ(rt->dead_letter_count(), before + 20);
}

TEST_F(degrade_test, envelopes_buffered_at_the_switch_are_accounted_for) {
  // Intensity 0: the first crash degrades, after the 100 ms backoff; what
  // is sent meanwhile waits in the cell's buffer.
  auto sup = start_sup(degrading(), 0, 100ms);
  crash(path);
  ASSERT_EQ(status_of(sup, "w"), "restarting");
  for (int i = 0; i < 5; ++i)
    cast(path, ping(i));
  auto h = self->request(handle(path), caf::infinite, wrap(ping(9)));
  run();
  ASSERT_TRUE(self->mailbox().empty()); // buffered
  advance(100ms);
  expect_agree(sup, "degraded");
  EXPECT_EQ(letters("degraded"), 5u);
  ASSERT_FALSE(self->mailbox().empty()) << "the requester was not answered";
  bool fallback = false;
  std::move(h).receive([&](envelope& e) { fallback = e.degraded(); },
                       [&](caf::error& err) { FAIL() << describe(err); });
  EXPECT_TRUE(fallback);
  EXPECT_EQ(rt->stand_in_answers(), 1u);
}

TEST_F(degrade_test, a_redelivery_waiting_at_the_switch_survives_it) {
  // max_deliveries 3, intensity 1: an async Crash fails twice (the second
  // failure spends the budget) and waits for its third delivery when the
  // child degrades. The next probe's instance gets it; it fails a third
  // time and is a poison dead letter, and the child probes again.
  auto w = degrading();
  w.max_deliveries = 3;
  auto sup = start_sup(w);
  crash(path, "always");
  expect_agree(sup, "degraded");
  EXPECT_EQ(letters(""), 0u);
  expect_start_after(100ms);
  EXPECT_EQ(letters("poison_message"), 1u);
  EXPECT_EQ(letters(""), 1u);
  expect_agree(sup, "degraded");
  expect_recovery(sup, 200ms);
  EXPECT_EQ(letters(""), 1u);
}

TEST_F(degrade_test, an_async_envelope_that_fails_in_half_open_is_a_dead_letter) {
  auto sup = start_degraded();
  auto before = letters("handler_failed");
  expect_start_after(100ms);
  ASSERT_EQ(cell_state(), "half_open");
  crash(path, "still broken");
  EXPECT_EQ(letters("handler_failed"), before + 1);
  expect_agree(sup, "degraded");
  EXPECT_EQ(rt->stand_in_answers(), 0u);
}

TEST_F(degrade_test, a_request_that_fails_in_half_open_gets_the_stand_in) {
  auto sup = start_degraded();
  auto before = rt->dead_letter_count();
  expect_start_after(100ms);
  Crash c;
  c.set_why("still broken");
  expect_fallback(c);
  EXPECT_EQ(rt->stand_in_answers(), 1u);
  EXPECT_EQ(rt->dead_letter_count(), before); // the requester was told
  expect_agree(sup, "degraded");
}

} // namespace
