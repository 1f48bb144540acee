// Ports of OTP's supervisor_SUITE child administration cases and the
// hanging restart loop cases. Each test is named after the OTP case it
// mirrors.

#include <string>
#include <vector>

#include "supervision/otp_support.hpp"

using namespace std::chrono_literals;
using namespace vigil;
using namespace vigil::test;

namespace {

using sup_test = otp_fixture;

// -- child administration -----------------------------------------------------

TEST_F(sup_test, child_adm) {
  auto spec = flags(strategy::one_for_one, 2, 3600 * 1000);
  spec.children.push_back(worker("child1", "echo"));
  caf::actor sup;
  ASSERT_FALSE(start("sup", spec, &sup));
  auto c1 = worker("child1", "echo");
  // A running id.
  EXPECT_TRUE(has_code(start_child(sup, c1), errc::already_started));
  auto w = which(sup);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].id, "child1");
  EXPECT_EQ(w[0].path, "sup/child1");
  EXPECT_EQ(w[0].status, "running");
  EXPECT_EQ(w[0].kind, child_kind::worker);
  EXPECT_EQ(w[0].handle, handle("sup/child1"));
  EXPECT_EQ(counts(sup), cc(1, 1, 0, 1));
  // Unknown ids.
  EXPECT_TRUE(has_code(terminate_child(sup, "nope"), errc::not_found));
  EXPECT_TRUE(has_code(restart_child(sup, "nope"), errc::not_found));
  EXPECT_TRUE(has_code(delete_child(sup, "nope"), errc::not_found));
  // A running child can be neither restarted nor deleted.
  EXPECT_TRUE(has_code(restart_child(sup, "child1"), errc::running));
  EXPECT_TRUE(has_code(delete_child(sup, "child1"), errc::running));
  // terminate_child keeps the spec (OTP: {child1,undefined,worker,[]}).
  EXPECT_FALSE(terminate_child(sup, "child1"));
  EXPECT_EQ(stops("sup/child1"), 1);
  EXPECT_EQ(status_of(sup, "child1"), "stopped");
  EXPECT_EQ(counts(sup), cc(1, 0, 0, 1));
  EXPECT_FALSE(terminate_child(sup, "child1")); // again: ok
  EXPECT_TRUE(has_code(start_child(sup, c1), errc::already_present));
  // restart_child starts it again; a second one finds it running.
  auto r = restart_child(sup, "child1");
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_EQ(r->status, "running");
  EXPECT_EQ(starts("sup/child1"), 2);
  EXPECT_TRUE(has_code(restart_child(sup, "child1"), errc::running));
  EXPECT_EQ(counts(sup), cc(1, 1, 0, 1));
  // delete_child after terminate_child drops the spec.
  EXPECT_FALSE(terminate_child(sup, "child1"));
  EXPECT_FALSE(delete_child(sup, "child1"));
  EXPECT_TRUE(which(sup).empty());
  EXPECT_EQ(counts(sup), cc(0, 0, 0, 0));
  EXPECT_EQ(handle("sup/child1"), caf::actor{});
  EXPECT_TRUE(has_code(restart_child(sup, "child1"), errc::not_found));
  EXPECT_TRUE(has_code(delete_child(sup, "child1"), errc::not_found));
  // ...so start_child may use the id again.
  auto s = start_child(sup, c1);
  ASSERT_TRUE(s) << describe(s.error());
  EXPECT_EQ(s->status, "running");
  EXPECT_EQ(counts(sup), cc(1, 1, 0, 1));
  // Calls to a supervisor that is gone fail.
  EXPECT_FALSE(stop_sup(sup));
  EXPECT_FALSE(alive(sup));
  EXPECT_FALSE(ask<child_counts>(sup, count_children_atom::value));
}

TEST_F(sup_test, child_adm_simple) {
  auto spec = flags(strategy::simple_one_for_one, 2, 3600 * 1000);
  spec.children.push_back(worker("child", "echo"));
  caf::actor sup;
  ASSERT_FALSE(start("sup", spec, &sup));
  EXPECT_TRUE(which(sup).empty());
  EXPECT_EQ(counts(sup), cc(1, 0, 0, 0));
  auto a = start_simple(sup, "a");
  ASSERT_TRUE(a) << describe(a.error());
  EXPECT_EQ(a->path, "sup/a");
  ASSERT_TRUE(start_simple(sup, "b"));
  EXPECT_EQ(counts(sup), cc(1, 2, 0, 2));
  EXPECT_TRUE(has_code(start_simple(sup, "a"), errc::already_started));
  // Unnamed children get distinct ids.
  auto u1 = start_simple(sup, "");
  auto u2 = start_simple(sup, "");
  ASSERT_TRUE(u1 && u2);
  EXPECT_NE(u1->id, u2->id);
  EXPECT_EQ(counts(sup), cc(1, 4, 0, 4));
  EXPECT_FALSE(terminate_child(sup, u1->id));
  EXPECT_FALSE(terminate_child(sup, u2->id));
  // Operations on specs are refused.
  EXPECT_TRUE(has_code(start_child(sup, worker("c", "echo")),
                       errc::simple_one_for_one));
  EXPECT_TRUE(has_code(restart_child(sup, "a"), errc::simple_one_for_one));
  EXPECT_TRUE(has_code(delete_child(sup, "a"), errc::simple_one_for_one));
  // terminate_child by child (OTP: by pid) removes it.
  EXPECT_FALSE(terminate_child(sup, "a"));
  EXPECT_EQ(stops("sup/a"), 1);
  auto w = which(sup);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].id, "b");
  EXPECT_EQ(counts(sup), cc(1, 1, 0, 1));
  // A child that is gone, or never was ours: not_found. (OTP answers ok for
  // a dead pid, as it can tell a dead pid from a foreign one; an id cannot.)
  EXPECT_TRUE(has_code(terminate_child(sup, "a"), errc::not_found));
  EXPECT_TRUE(has_code(terminate_child(sup, "child"), errc::not_found));
  EXPECT_EQ(counts(sup), cc(1, 1, 0, 1));
  // Only simple_one_for_one supervisors take start arguments.
  caf::actor other;
  auto ospec = flags(strategy::one_for_one);
  ASSERT_FALSE(start("other", ospec, &other));
  EXPECT_TRUE(has_code(start_simple(other, "x"), errc::invalid_child_spec));
}

// An unnamed child gets the template's id and a number; a child named like
// that before does not make the unnamed start fail.
// Issue 11, case 3: terminate_child that arrives while a simple_one_for_one
// supervisor stops all its children removed a child whose stop
// acknowledgement the shutdown then waited for for ever.
TEST_F(sup_test, terminate_child_during_a_simple_shutdown) {
  auto spec = flags(strategy::simple_one_for_one, 2, 3600 * 1000);
  spec.children.push_back(
    worker("child", "echo").with_shutdown(shutdown_spec::infinity()));
  caf::actor sup;
  ASSERT_FALSE(start("sup", spec, &sup));
  ASSERT_TRUE(start_simple(sup, "a"));
  ASSERT_TRUE(start_simple(sup, "b"));
  auto stopped = self->request(sup, caf::infinite, stop_cmd{});
  auto terminated = self->request(sup, caf::infinite,
                                  terminate_child_atom::value,
                                  std::string{"a"});
  run();
  bool stop_answered = false;
  caf::error term_err;
  std::move(terminated).receive(
    [&] { ADD_FAILURE() << "terminate_child ran during the shutdown"; },
    [&](caf::error& e) { term_err = e; });
  EXPECT_TRUE(has_code(term_err, errc::shutting_down)) << describe(term_err);
  ASSERT_FALSE(self->mailbox().empty()) << "the stop was never answered";
  std::move(stopped).receive([&] { stop_answered = true; },
                             [&](caf::error& e) { ADD_FAILURE() << describe(e); });
  EXPECT_TRUE(stop_answered);
  EXPECT_FALSE(alive(sup));
}

TEST_F(sup_test, unnamed_child_skips_ids_taken_by_named_ones) {
  auto spec = flags(strategy::simple_one_for_one, 2, 3600 * 1000);
  spec.children.push_back(worker("child", "echo"));
  caf::actor sup;
  ASSERT_FALSE(start("sup", spec, &sup));
  auto first = start_simple(sup, "");
  ASSERT_TRUE(first) << describe(first.error());
  // The named child takes the next key (n + 1), so the counter would give
  // the next unnamed child the id it was named with.
  auto n = std::stoul(first->id.substr(first->id.rfind('-') + 1));
  auto taken = "child-" + std::to_string(n + 2);
  ASSERT_TRUE(start_simple(sup, taken));
  auto next = start_simple(sup, "");
  ASSERT_TRUE(next) << describe(next.error());
  EXPECT_EQ(next->id.rfind("child-", 0), 0u);
  EXPECT_NE(next->id, taken);
  EXPECT_EQ(counts(sup), cc(1, 3, 0, 3));
}

// Temporary children leave nothing behind once they end: a terminated
// temporary child's spec is dropped (start_child with the same id works),
// where a permanent or transient child keeps its spec.
TEST_F(sup_test, do_not_save_start_parameters_for_temporary_children) {
  int n = 0;
  for (auto s : {strategy::one_for_one, strategy::one_for_all,
                 strategy::rest_for_one}) {
    SCOPED_TRACE(to_string(s));
    auto path = "sup" + std::to_string(n++);
    caf::actor sup;
    ASSERT_FALSE(start(path, flags(s, 10, 3600 * 1000), &sup));
    auto perm = worker("perm", "echo").with_param("args", "1 2 3");
    auto tran = worker("tran", "echo").with_restart(restart_type::transient);
    auto temp = worker("temp", "echo").with_restart(restart_type::temporary);
    for (auto& cs : {perm, tran, temp})
      ASSERT_TRUE(start_child(sup, cs));
    EXPECT_EQ(counts(sup), cc(3, 3, 0, 3));
    for (auto id : {"perm", "tran", "temp"})
      EXPECT_FALSE(terminate_child(sup, id));
    EXPECT_EQ(status_of(sup, "perm"), "stopped");
    EXPECT_EQ(status_of(sup, "tran"), "stopped");
    EXPECT_EQ(status_of(sup, "temp"), "absent");
    EXPECT_EQ(counts(sup), cc(2, 0, 0, 2));
    EXPECT_EQ(handle(path + "/temp"), caf::actor{});
    EXPECT_TRUE(has_code(start_child(sup, perm), errc::already_present));
    EXPECT_TRUE(has_code(start_child(sup, tran), errc::already_present));
    EXPECT_TRUE(start_child(sup, temp));
    EXPECT_EQ(counts(sup), cc(3, 1, 0, 3));
  }
  // simple_one_for_one: terminated temporary children are gone.
  auto spec = flags(strategy::simple_one_for_one, 10, 3600 * 1000);
  spec.children.push_back(
    worker("child", "echo").with_restart(restart_type::temporary));
  caf::actor sup;
  ASSERT_FALSE(start("simple", spec, &sup));
  for (int i = 0; i < 10; ++i)
    ASSERT_TRUE(start_simple(sup, "c" + std::to_string(i)));
  EXPECT_EQ(counts(sup), cc(1, 10, 0, 10));
  for (int i = 0; i < 10; ++i)
    EXPECT_FALSE(terminate_child(sup, "c" + std::to_string(i)));
  EXPECT_TRUE(which(sup).empty());
  EXPECT_EQ(counts(sup), cc(1, 0, 0, 0));
  EXPECT_TRUE(start_simple(sup, "c0"));
}

// For each strategy, restart type and way of ending: what start_child of
// the same spec answers afterwards.
TEST_F(sup_test, do_not_save_child_specs_for_temporary_children) {
  enum how { crash_it, normal, abnormal, by_supervisor };
  int n = 0;
  for (auto s : {strategy::one_for_one, strategy::one_for_all,
                 strategy::rest_for_one})
    for (auto r : {restart_type::permanent, restart_type::transient,
                   restart_type::temporary})
      for (auto h : {crash_it, normal, abnormal, by_supervisor}) {
        auto path = "sup" + std::to_string(n++);
        SCOPED_TRACE(path + " " + to_string(s) + " " + to_string(r) + " "
                     + std::to_string(h));
        caf::actor sup;
        ASSERT_FALSE(start(path, flags(s, 10, 3600 * 1000), &sup));
        auto cs = worker("child1", "echo").with_restart(r);
        ASSERT_TRUE(start_child(sup, cs));
        switch (h) {
          case crash_it: crash(path + "/child1"); break;
          case normal: exit_child(path + "/child1", 0); break;
          case abnormal: exit_child(path + "/child1", 2); break;
          case by_supervisor:
            ASSERT_FALSE(terminate_child(sup, "child1"));
            break;
        }
        auto again = start_child(sup, cs);
        if (r == restart_type::temporary) {
          EXPECT_TRUE(again);
        } else if (h == by_supervisor
                   || (r == restart_type::transient && h == normal)) {
          EXPECT_TRUE(has_code(again, errc::already_present));
          EXPECT_TRUE(restart_child(sup, "child1"));
        } else {
          EXPECT_TRUE(has_code(again, errc::already_started));
        }
        EXPECT_EQ(status_of(sup, "child1"), "running");
        EXPECT_TRUE(alive(sup));
      }
}

// -- hanging restart loops ----------------------------------------------------
// The restart of child1 keeps failing, one attempt per 100 ms of backoff,
// never reaching the intensity. The supervisor must keep serving calls.

TEST_F(sup_test, hanging_restart_loop) {
  auto spec = slow_flags(strategy::one_for_one, 8, 500);
  auto c1 = worker("child1", "echo").with_shutdown(
    shutdown_spec::brutal_kill());
  spec.children.push_back(c1);
  caf::actor sup;
  ASSERT_FALSE(start("sup", spec, &sup));
  auto w = watch(sup);
  switches::get().set_fail("sup/child1", true);
  crash("sup/child1");
  for (int i = 1; i <= 5; ++i) {
    advance(100ms);
    EXPECT_EQ(starts("sup/child1"), 1 + i); // one attempt per backoff
  }
  EXPECT_TRUE(has_code(start_child(sup, c1), errc::already_present));
  EXPECT_TRUE(has_code(restart_child(sup, "child1"), errc::restarting));
  EXPECT_TRUE(has_code(delete_child(sup, "child1"), errc::restarting));
  auto wc = which(sup);
  ASSERT_EQ(wc.size(), 1u);
  EXPECT_EQ(wc[0].status, "restarting");
  EXPECT_EQ(counts(sup), cc(1, 0, 0, 1));
  // terminate_child ends the loop; the pending retry does nothing.
  EXPECT_FALSE(terminate_child(sup, "child1"));
  EXPECT_EQ(status_of(sup, "child1"), "stopped");
  advance(1000ms);
  EXPECT_EQ(starts("sup/child1"), 6);
  EXPECT_EQ(status_of(sup, "child1"), "stopped");
  // restart_child works once the start does.
  switches::get().set_fail("sup/child1", false);
  ASSERT_TRUE(restart_child(sup, "child1"));
  EXPECT_EQ(status_of(sup, "child1"), "running");
  // Into the loop again, then stop the supervisor in the middle of it.
  switches::get().set_fail("sup/child1", true);
  crash("sup/child1");
  advance(100ms);
  advance(100ms);
  EXPECT_EQ(starts("sup/child1"), 9);
  EXPECT_EQ(status_of(sup, "child1"), "restarting");
  EXPECT_FALSE(stop_sup(sup));
  EXPECT_FALSE(alive(sup));
  EXPECT_TRUE(w->exited);
  EXPECT_FALSE(has_code(w->reason, errc::reached_max_restart_intensity));
  advance(1000ms);
  EXPECT_EQ(starts("sup/child1"), 9);
  EXPECT_EQ(handle("sup/child1"), caf::actor{});
}

TEST_F(sup_test, hanging_restart_loop_rest_for_one) {
  auto spec = slow_flags(strategy::rest_for_one, 8, 500);
  for (auto id : {"child1", "child2", "child3"})
    spec.children.push_back(worker(id, "echo"));
  caf::actor sup;
  ASSERT_FALSE(start("sup", spec, &sup));
  auto c1 = handle("sup/child1");
  switches::get().set_fail("sup/child2", true);
  crash("sup/child2");
  advance(100ms);
  advance(100ms);
  EXPECT_EQ(starts("sup/child2"), 3);
  EXPECT_EQ(starts("sup/child3"), 1);
  EXPECT_EQ(status_of(sup, "child1"), "running");
  EXPECT_EQ(status_of(sup, "child2"), "restarting");
  // OTP shows child3 as undefined: stopped until child2 is back.
  EXPECT_EQ(status_of(sup, "child3"), "stopped");
  EXPECT_EQ(counts(sup), cc(3, 1, 0, 3));
  EXPECT_EQ(handle("sup/child1"), c1);
  EXPECT_TRUE(has_code(start_child(sup, worker("child2", "echo")),
                       errc::already_present));
  EXPECT_TRUE(has_code(restart_child(sup, "child2"), errc::restarting));
  EXPECT_TRUE(has_code(delete_child(sup, "child2"), errc::restarting));
  // terminate_child(child2) ends the loop; child3 stays down, and either can
  // be restarted by hand.
  EXPECT_FALSE(terminate_child(sup, "child2"));
  EXPECT_EQ(status_of(sup, "child2"), "stopped");
  advance(1000ms);
  EXPECT_EQ(starts("sup/child2"), 3);
  EXPECT_EQ(starts("sup/child3"), 1);
  EXPECT_EQ(status_of(sup, "child3"), "stopped");
  EXPECT_TRUE(restart_child(sup, "child3"));
  switches::get().set_fail("sup/child2", false);
  EXPECT_TRUE(restart_child(sup, "child2"));
  EXPECT_EQ(counts(sup), cc(3, 3, 0, 3));
  // Into the loop again; stopping the supervisor there does not hang.
  switches::get().set_fail("sup/child2", true);
  crash("sup/child2");
  advance(100ms);
  EXPECT_EQ(status_of(sup, "child2"), "restarting");
  EXPECT_FALSE(stop_sup(sup));
  EXPECT_FALSE(alive(sup));
}

TEST_F(sup_test, hanging_restart_loop_simple) {
  auto spec = slow_flags(strategy::simple_one_for_one, 8, 500);
  spec.children.push_back(worker("child", "echo"));
  caf::actor sup;
  ASSERT_FALSE(start("sup", spec, &sup));
  ASSERT_TRUE(start_simple(sup, "a"));
  switches::get().set_fail("sup/a", true);
  crash("sup/a");
  advance(100ms);
  advance(100ms);
  EXPECT_EQ(starts("sup/a"), 3);
  EXPECT_TRUE(has_code(restart_child(sup, "a"), errc::simple_one_for_one));
  EXPECT_TRUE(has_code(delete_child(sup, "a"), errc::simple_one_for_one));
  auto w = which(sup);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0].status, "restarting");
  EXPECT_EQ(counts(sup), cc(1, 0, 0, 1));
  // terminate_child finds the restarting child and drops it.
  EXPECT_FALSE(terminate_child(sup, "a"));
  EXPECT_TRUE(which(sup).empty());
  EXPECT_EQ(counts(sup), cc(1, 0, 0, 0));
  advance(1000ms);
  EXPECT_EQ(starts("sup/a"), 3);
  // A new child works; stopping the supervisor in its loop does not hang.
  ASSERT_TRUE(start_simple(sup, "b"));
  switches::get().set_fail("sup/b", true);
  crash("sup/b");
  advance(100ms);
  EXPECT_EQ(status_of(sup, "b"), "restarting");
  EXPECT_FALSE(stop_sup(sup));
  EXPECT_FALSE(alive(sup));
}

// count_children while simple children are in a restart loop: restarting
// children count as workers but not as active.
TEST_F(sup_test, count_restarting_children) {
  auto spec = slow_flags(strategy::simple_one_for_one, 20, 1000);
  spec.children.push_back(worker("child", "echo"));
  caf::actor sup;
  ASSERT_FALSE(start("sup", spec, &sup));
  std::vector<std::string> ids{"a", "b", "c"};
  for (size_t i = 0; i < ids.size(); ++i) {
    ASSERT_TRUE(start_simple(sup, ids[i]));
    EXPECT_EQ(counts(sup), cc(1, i + 1, 0, i + 1));
  }
  for (auto& id : ids)
    crash("sup/" + id);
  EXPECT_EQ(counts(sup), cc(1, 0, 0, 3)); // all waiting for the backoff
  advance(100ms);
  EXPECT_EQ(counts(sup), cc(1, 3, 0, 3));
  switches::get().set_fail("sup/a", true);
  switches::get().set_fail("sup/b", true);
  crash("sup/a");
  crash("sup/b");
  for (int i = 0; i < 4; ++i)
    advance(100ms);
  EXPECT_EQ(starts("sup/a"), 6); // 1 + the first restart + 4 attempts
  EXPECT_EQ(status_of(sup, "a"), "restarting");
  EXPECT_EQ(status_of(sup, "b"), "restarting");
  EXPECT_EQ(counts(sup), cc(1, 1, 0, 3));
  switches::get().set_fail("sup/a", false);
  switches::get().set_fail("sup/b", false);
  advance(100ms);
  EXPECT_EQ(counts(sup), cc(1, 3, 0, 3));
  // Terminating one in the loop takes it out of the counts too.
  switches::get().set_fail("sup/a", true);
  crash("sup/a");
  advance(100ms);
  EXPECT_EQ(counts(sup), cc(1, 2, 0, 3));
  EXPECT_FALSE(terminate_child(sup, "a"));
  EXPECT_EQ(counts(sup), cc(1, 2, 0, 2));
  EXPECT_FALSE(terminate_child(sup, "b"));
  EXPECT_EQ(counts(sup), cc(1, 1, 0, 1));
  EXPECT_FALSE(terminate_child(sup, "c"));
  EXPECT_EQ(counts(sup), cc(1, 0, 0, 0));
  EXPECT_TRUE(alive(sup));
}

} // namespace
