// Regression tests for the lifecycle edges of cells and supervisors: every
// waiter gets an answer, and nothing from an old instance or cell leaks into
// a newer one.

#include "support/fixture.hpp"

using namespace std::chrono_literals;
using namespace vigil;
using namespace vigil::test;

namespace {

using lifecycle_test = runtime_fixture;

supervisor_spec slow_restarts(int intensity = 10) {
  auto spec = flags(strategy::one_for_one, intensity, 5000);
  spec.flags.backoff.min = 1000ms;
  spec.flags.backoff.max = 1000ms;
  return spec;
}

TEST_F(lifecycle_test, every_stop_request_is_answered) {
  // simple_one_for_one stops its children concurrently and keeps reading
  // its mailbox meanwhile, so the second stop arrives while it is stopping.
  auto spec = flags(strategy::simple_one_for_one);
  spec.children.push_back(worker("w", "echo"));
  caf::actor sup;
  ASSERT_FALSE(start("sup", spec, &sup));
  for (auto* name : {"w1", "w2"})
    ASSERT_TRUE(ask<child_info>(sup, start_child_atom::value, params{},
                                std::string{name}));
  auto h1 = self->request(sup, caf::infinite, stop_cmd{});
  auto h2 = self->request(sup, caf::infinite, stop_cmd{});
  run();
  int answered = 0;
  std::move(h1).receive([&] { ++answered; },
                        [&](caf::error& e) { ADD_FAILURE() << describe(e); });
  std::move(h2).receive([&] { ++answered; },
                        [&](caf::error& e) { ADD_FAILURE() << describe(e); });
  EXPECT_EQ(answered, 2);
  EXPECT_FALSE(alive(sup));
}

TEST_F(lifecycle_test, exit_report_from_another_sender_is_ignored) {
  auto spec = flags(strategy::one_for_one);
  spec.children.push_back(worker("a", "echo"));
  caf::actor sup;
  ASSERT_FALSE(start("sup", spec, &sup));
  // Key 1, generation 1 are the child's real ones; only the sender is
  // wrong, as for a report from a killed and replaced cell.
  self->send(sup, exit_report{1, 1, make_error(errc::handler_failed,
                                               "forged")});
  run();
  EXPECT_EQ(switches::get().start_count("sup/a"), 1);
  EXPECT_EQ(status_of(sup, "a"), "running");
  EXPECT_TRUE(alive(sup));
}

TEST_F(lifecycle_test, stop_then_throw_does_not_stop_the_next_instance) {
  auto spec = flags(strategy::one_for_one);
  spec.children.push_back(
    worker("a", "echo").with_restart(restart_type::transient));
  caf::actor sup;
  ASSERT_FALSE(start("sup", spec, &sup));
  exit_child("sup/a", 3); // ctx.stop() then throw
  EXPECT_EQ(switches::get().start_count("sup/a"), 2);
  Ping p;
  auto rep = call("sup/a", p);
  ASSERT_TRUE(rep) << describe(rep.error());
  EXPECT_EQ(status_of(sup, "a"), "running");
  EXPECT_EQ(switches::get().stop_count("sup/a"), 0);
}

TEST_F(lifecycle_test, callback_of_a_restarted_instance_is_dropped) {
  auto spec = slow_restarts();
  spec.children.push_back(worker("relay", "relay"));
  spec.children.push_back(worker("echo", "echo"));
  ASSERT_FALSE(start("app", spec));
  crash("app/echo"); // echo waits 1 s before it restarts
  Relay m;
  m.set_to("app/echo");
  m.set_n(1);
  m.set_timeout_ms(5000);
  auto h = self->request(handle("app/relay"), caf::infinite, wrap(m));
  run();
  crash("app/relay"); // the instance that asked is gone before the reply
  advance(1000ms);    // both restart; echo answers the buffered Ping
  advance(1000ms);
  caf::error err;
  std::move(h).receive([&](envelope&) { ADD_FAILURE() << "got a reply"; },
                       [&](caf::error& e) { err = e; });
  // The relay's handler ran (it deferred its reply): reply_dropped, not
  // "not delivered".
  EXPECT_TRUE(is(err, errc::reply_dropped)) << describe(err);
  EXPECT_EQ(switches::get().start_count("app/echo"), 2);
}

TEST_F(lifecycle_test, killed_cell_answers_its_buffered_requests) {
  auto spec = slow_restarts();
  spec.children.push_back(worker("a", "echo"));
  ASSERT_FALSE(start("sup", spec));
  crash("sup/a");
  auto cell = handle("sup/a");
  Ping p;
  auto h1 = self->request(cell, caf::infinite, wrap(p));
  auto h2 = self->request(cell, caf::infinite, wrap(p));
  run();
  caf::anon_send_exit(cell, caf::exit_reason::kill);
  run();
  int told = 0;
  for (auto* h : {&h1, &h2})
    std::move(*h).receive(
      [&](envelope&) { ADD_FAILURE() << "got a reply"; },
      [&](caf::error& e) {
        EXPECT_TRUE(is(e, errc::not_running)) << describe(e);
        ++told;
      });
  EXPECT_EQ(told, 2);
}

TEST_F(lifecycle_test, killed_supervisor_takes_its_cells_along) {
  auto inner = flags(strategy::one_for_one);
  inner.children.push_back(worker("a", "echo"));
  inner.children.push_back(worker("b", "echo"));
  auto spec = flags(strategy::one_for_one, 10, 5000);
  spec.children.push_back(supervisor("inner", inner));
  ASSERT_FALSE(start("top", spec));
  auto a = handle("top/inner/a");
  auto b = handle("top/inner/b");
  caf::anon_send_exit(handle("top/inner"), caf::exit_reason::kill);
  run();
  EXPECT_FALSE(alive(a));
  EXPECT_FALSE(alive(b));
  // ... and the parent restarted the subtree with new cells.
  EXPECT_TRUE(handle("top/inner/a"));
  EXPECT_NE(handle("top/inner/a"), a);
}

TEST_F(lifecycle_test, long_buffer_drains_in_order_without_blocking_start) {
  auto spec = slow_restarts();
  spec.children.push_back(worker("a", "echo"));
  ASSERT_FALSE(start("sup", spec));
  crash("sup/a");
  std::vector<decltype(self->request(handle("sup/a"), caf::infinite,
                                     envelope{}))>
    hs;
  for (int i = 1; i <= 200; ++i) { // more than one drain chunk (64)
    Ping p;
    p.set_n(i);
    hs.push_back(self->request(handle("sup/a"), caf::infinite, wrap(p)));
  }
  run();
  advance(1000ms);
  int64_t expect = 1;
  for (auto& h : hs)
    std::move(h).receive(
      [&](envelope& e) {
        Pong pong;
        ASSERT_TRUE(pong.ParseFromString(e.payload));
        EXPECT_EQ(pong.n(), expect);
        EXPECT_EQ(pong.seen(), expect) << "order broken at " << expect;
        ++expect;
      },
      [&](caf::error& e) { ADD_FAILURE() << describe(e); });
  EXPECT_EQ(expect, 201);
}

// A deleted child's path is unbound at once, and envelopes that still
// reach its cell after the delete (it had not got to the retire yet) are
// answered, not dropped with the cell. Found by the randomized lifecycle
// test (seed 4401).
TEST_F(lifecycle_test, a_deleted_cell_answers_what_reaches_it_late) {
  auto spec = flags(strategy::one_for_one);
  spec.children.push_back(worker("a", "echo"));
  caf::actor sup;
  ASSERT_FALSE(start("sup", spec, &sup));
  ASSERT_FALSE(ask_void(sup, terminate_child_atom::value, std::string{"a"}));
  auto cell = handle("sup/a");
  ASSERT_TRUE(cell);
  auto* slow = caf::actor_cast<caf::abstract_actor*>(cell);
  auto others = [slow](caf::resumable* r) {
    return dynamic_cast<caf::abstract_actor*>(r) != slow;
  };
  // The supervisor answers the delete while the cell has not run yet.
  auto del = self->request(sup, caf::infinite, delete_child_atom::value,
                           std::string{"a"});
  sched.run_jobs_filtered(others);
  bool deleted = false;
  std::move(del).receive([&] { deleted = true; },
                         [&](caf::error& e) { ADD_FAILURE() << describe(e); });
  ASSERT_TRUE(deleted);
  EXPECT_FALSE(handle("sup/a")) << "the path still names the deleted cell";
  // A send that found the cell before: behind the retire in its mailbox.
  caf::anon_send(cell, wrap(ping(1)));
  cell = nullptr;
  run();
  auto dls = rt->dead_letters();
  ASSERT_EQ(dls.size(), 1u) << "the late envelope vanished";
  EXPECT_EQ(dls[0].reason.rfind("not_running", 0), 0u) << dls[0].reason;
}

} // namespace
