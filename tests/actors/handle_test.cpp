// Agents talking to agents: request with a deadline, deferred replies, and
// stable handles that survive restarts (and fall back to the path when the
// cell behind them was replaced).

#include "support/fixture.hpp"

using namespace std::chrono_literals;
using namespace vigil;
using namespace vigil::test;

namespace {

using handle_test = runtime_fixture;

supervisor_spec relay_tree() {
  auto spec = flags(strategy::one_for_one, 10, 5000);
  spec.children.push_back(worker("relay", "relay"));
  spec.children.push_back(worker("echo", "echo"));
  return spec;
}

caf::expected<Pong> relay_to(handle_test& t, const std::string& to,
                             int64_t n, int64_t timeout_ms = 1000) {
  Relay m;
  m.set_to(to);
  m.set_n(n);
  m.set_timeout_ms(timeout_ms);
  auto rep = t.call("app/relay", m);
  if (!rep)
    return std::move(rep.error());
  Pong p;
  if (!p.ParseFromString(rep->payload))
    return make_error(errc::bad_payload);
  return p;
}

TEST_F(handle_test, request_and_deferred_reply_round_trip) {
  ASSERT_FALSE(start("app", relay_tree()));
  auto p = relay_to(*this, "app/echo", 7);
  ASSERT_TRUE(p) << describe(p.error());
  EXPECT_EQ(p->n(), 7);
  EXPECT_EQ(p->from(), "app/echo");
}

TEST_F(handle_test, cached_handle_survives_a_restart_of_its_target) {
  ASSERT_FALSE(start("app", relay_tree()));
  auto cell = handle("app/echo");
  ASSERT_TRUE(relay_to(*this, "app/echo", 1));
  crash("app/echo");
  EXPECT_EQ(switches::get().start_count("app/echo"), 2);
  EXPECT_EQ(handle("app/echo"), cell) << "a restart must keep the cell";
  auto p = relay_to(*this, "app/echo", 2);
  ASSERT_TRUE(p) << describe(p.error());
  EXPECT_EQ(p->seen(), 1) << "the new instance starts from fresh state";
}

TEST_F(handle_test, unknown_path_reaches_the_original_requester) {
  ASSERT_FALSE(start("app", relay_tree()));
  auto p = relay_to(*this, "app/nobody", 1);
  ASSERT_FALSE(p);
  EXPECT_TRUE(is(p.error(), errc::not_found)) << describe(p.error());
  EXPECT_NE(describe(p.error()).find("app/nobody"), std::string::npos);
}

TEST_F(handle_test, deadline_of_an_inner_request_reaches_the_requester) {
  auto spec = relay_tree();
  spec.flags.backoff.min = 1000ms; // echo stays down for 1 s after a crash
  spec.flags.backoff.max = 1000ms;
  ASSERT_FALSE(start("app", spec));
  crash("app/echo");
  Relay m;
  m.set_to("app/echo");
  m.set_n(3);
  m.set_timeout_ms(100);
  auto h = self->request(handle("app/relay"), caf::infinite, wrap(m));
  run();
  advance(150ms); // the inner request's deadline passes; echo still down
  caf::error err;
  std::move(h).receive([&](envelope&) { ADD_FAILURE() << "got a reply"; },
                       [&](caf::error& e) { err = e; });
  EXPECT_TRUE(is(err, errc::deadline_exceeded)) << describe(err);
}

TEST_F(handle_test, stale_handle_falls_back_to_the_path) {
  auto inner = flags(strategy::one_for_one, 10, 5000);
  inner.children.push_back(worker("echo", "echo"));
  auto spec = flags(strategy::one_for_one, 10, 5000);
  spec.children.push_back(worker("relay", "relay"));
  spec.children.push_back(supervisor("inner", inner));
  ASSERT_FALSE(start("app", spec));
  ASSERT_TRUE(relay_to(*this, "app/inner/echo", 1)); // caches the handle
  auto old_cell = handle("app/inner/echo");
  // Restarting the nested supervisor replaces the cells below it.
  caf::anon_send_exit(handle("app/inner"), caf::exit_reason::kill);
  run();
  ASSERT_NE(handle("app/inner/echo"), old_cell);
  ASSERT_FALSE(alive(old_cell));
  auto p = relay_to(*this, "app/inner/echo", 2);
  ASSERT_TRUE(p) << describe(p.error());
  EXPECT_EQ(p->n(), 2);
}

} // namespace
