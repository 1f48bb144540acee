// Degrade keeps its promise (issue 13): a degraded child is never stranded,
// whatever way its probe fails, and every envelope it receives is
// accounted for (a stand-in answer, a dead letter, or kept for its next
// delivery). Deterministic on CAF's testing scheduler; each case failed on
// main before the fix.

#include <string>

#include "support/fixture.hpp"

using namespace std::chrono_literals;
using namespace vigil;
using namespace vigil::test;

namespace {

using start_call = switches::start_call;

class degrade_test : public runtime_fixture {
public:
  static constexpr const char* path = "sup/w";

  /// A worker that degrades, with the stand-in reply Pong(from: "fallback");
  /// probes after 100 ms, doubling up to 400 ms.
  static child_spec degrading() {
    auto c = worker("w", "echo").with_failure(on_failure::degrade);
    Pong fb;
    fb.set_from("fallback");
    c.degrade.set_fallback(fb);
    c.degrade.probe_min = 100ms;
    c.degrade.probe_max = 400ms;
    return c;
  }

  /// "sup" (one_for_one, `intensity` in 5 s) with `w` and a sibling
  /// `peer` that answers Pings.
  caf::actor start_sup(child_spec w, int intensity = 1,
                       std::chrono::milliseconds backoff = 0ms) {
    auto spec = flags(strategy::one_for_one, intensity, 5000);
    spec.flags.backoff.min = backoff;
    spec.flags.backoff.max = backoff;
    spec.children.push_back(std::move(w));
    spec.children.push_back(worker("peer", "echo"));
    caf::actor sup;
    auto err = start("sup", spec, &sup);
    EXPECT_FALSE(err) << describe(err);
    return sup;
  }

  /// Starts `sup` and spends its budget: the second crash degrades `w`.
  caf::actor start_degraded() {
    auto sup = start_sup(degrading());
    crash(path);
    crash(path);
    EXPECT_EQ(status_of(sup, "w"), "degraded");
    EXPECT_EQ(cell_state(), "degraded");
    return sup;
  }

  int starts() {
    return switches::get().start_count(path);
  }

  std::string cell_state() {
    auto r = ask<std::string>(handle(path), state_atom::value);
    return r ? *r : "error: " + describe(r.error());
  }

  void expect_fallback(const google::protobuf::Message& m) {
    auto r = call(path, m);
    ASSERT_TRUE(r) << describe(r.error());
    EXPECT_TRUE(r->degraded());
    EXPECT_EQ(pong_of(*r).from(), "fallback");
  }

  /// Asserts that the next instance of `w` starts after exactly `d`.
  void expect_start_after(std::chrono::milliseconds d) {
    auto before = starts();
    advance(d - 1ms);
    EXPECT_EQ(starts(), before) << "started before " << d.count() << "ms";
    advance(1ms);
    EXPECT_EQ(starts(), before + 1)
      << "not started after " << d.count() << "ms";
  }

  /// The supervisor and the cell tell the same state.
  void expect_agree(const caf::actor& sup, const std::string& state) {
    EXPECT_EQ(status_of(sup, "w"), state);
    EXPECT_EQ(cell_state(), state);
  }

  /// Dead letters of `w` whose reason starts with `prefix`.
  size_t letters(const std::string& prefix) {
    size_t n = 0;
    for (auto& d : rt->dead_letters())
      if (d.path == path && d.reason.rfind(prefix, 0) == 0)
        ++n;
    return n;
  }

  /// Recovers: clears the start switches, waits for the probe at `after`
  /// and checks that the first call is answered by the agent.
  void expect_recovery(const caf::actor& sup,
                       std::chrono::milliseconds after) {
    switches::get().start_calls.clear();
    expect_start_after(after);
    EXPECT_EQ(cell_state(), "half_open");
    auto r = call(path, ping(7));
    ASSERT_TRUE(r) << describe(r.error());
    EXPECT_FALSE(r->degraded());
    EXPECT_EQ(pong_of(*r).from(), path);
    expect_agree(sup, "running");
  }

  /// An actor bound at "silent" that takes envelopes and never answers.
  void bind_silent() {
    auto held = std::make_shared<std::vector<caf::response_promise>>();
    auto a = sys.spawn([held](caf::event_based_actor* self) -> caf::behavior {
      return {[=](envelope&) -> caf::result<envelope> {
        held->push_back(self->make_response_promise());
        return caf::delegated<envelope>{};
      }};
    });
    sups.push_back(a); // ended with the fixture
    rt->bind("silent", a);
  }
};

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
