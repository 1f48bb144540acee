// Ports of the behaviours that OTP's lib/stdlib/test/supervisor_SUITE.erl
// checks. Each test is named after the OTP case it mirrors.

#include <set>

#include "supervision/otp_support.hpp"

using namespace std::chrono_literals;
using namespace vigil;
using namespace vigil::test;

namespace {

using sup_test = otp_fixture;

// -- the restart type x exit reason matrix ------------------------------------

struct matrix_case {
  restart_type restart;
  int how; // 0 normal, 1 shutdown, 2 abnormal (ctx.stop), 3 crash (throw)
  const char* expected; // status afterwards
  bool restarted;
};

void run_matrix(sup_test& t, const matrix_case& mc) {
  auto spec = flags(strategy::one_for_one, 1, 5000);
  spec.children.push_back(worker("child1", "echo").with_restart(mc.restart));
  caf::actor sup;
  ASSERT_FALSE(t.start("sup", spec, &sup));
  if (mc.how == 3)
    t.crash("sup/child1");
  else
    t.exit_child("sup/child1", mc.how);
  EXPECT_EQ(t.status_of(sup, "child1"), mc.expected);
  EXPECT_EQ(switches::get().start_count("sup/child1"), mc.restarted ? 2 : 1);
  EXPECT_TRUE(t.alive(sup));
}

TEST_F(sup_test, permanent_normal) {
  run_matrix(*this, {restart_type::permanent, 0, "running", true});
}
TEST_F(sup_test, transient_normal) {
  run_matrix(*this, {restart_type::transient, 0, "stopped", false});
}
TEST_F(sup_test, temporary_normal) {
  run_matrix(*this, {restart_type::temporary, 0, "absent", false});
}
TEST_F(sup_test, permanent_shutdown) {
  run_matrix(*this, {restart_type::permanent, 1, "running", true});
}
TEST_F(sup_test, transient_shutdown) {
  run_matrix(*this, {restart_type::transient, 1, "stopped", false});
}
TEST_F(sup_test, temporary_shutdown) {
  run_matrix(*this, {restart_type::temporary, 1, "absent", false});
}
TEST_F(sup_test, permanent_abnormal) {
  run_matrix(*this, {restart_type::permanent, 2, "running", true});
}
TEST_F(sup_test, transient_abnormal) {
  run_matrix(*this, {restart_type::transient, 2, "running", true});
}
TEST_F(sup_test, temporary_abnormal) {
  run_matrix(*this, {restart_type::temporary, 2, "absent", false});
}
TEST_F(sup_test, permanent_crash_is_abnormal) {
  run_matrix(*this, {restart_type::permanent, 3, "running", true});
}
TEST_F(sup_test, transient_crash_is_abnormal) {
  run_matrix(*this, {restart_type::transient, 3, "running", true});
}


// -- restart strategies and escalation ----------------------------------------

// A temporary sibling that one_for_all / rest_for_one terminates is not
// restarted and its spec goes; the supervisor stays up.
TEST_F(sup_test, temporary_bystander) {
  for (auto s : {strategy::one_for_all, strategy::rest_for_one}) {
    std::string path = s == strategy::one_for_all ? "all" : "rest";
    SCOPED_TRACE(path);
    auto spec = flags(s, 2, 300);
    spec.children.push_back(worker("child1", "echo"));
    spec.children.push_back(worker("child2", "echo")
                              .with_restart(restart_type::temporary)
                              .with_shutdown(shutdown_spec::after(100ms)));
    caf::actor sup;
    ASSERT_FALSE(start(path, spec, &sup));
    exit_child(path + "/child1", 0); // normal: a permanent child restarts
    advance(350ms);
    EXPECT_TRUE(alive(sup));
    auto w = which(sup);
    ASSERT_EQ(w.size(), 1u);
    EXPECT_EQ(w[0].id, "child1");
    EXPECT_EQ(w[0].status, "running");
    EXPECT_EQ(starts(path + "/child1"), 2);
    EXPECT_EQ(starts(path + "/child2"), 1);
    EXPECT_EQ(stops(path + "/child2"), 1);
    EXPECT_EQ(counts(sup), cc(1, 1, 0, 1));
  }
}

// Restarts spaced further apart than the period never trip intensity 1.
TEST_F(sup_test, multiple_restarts) {
  auto spec = flags(strategy::one_for_one, 1, 1000);
  spec.children.push_back(worker("child1", "echo"));
  caf::actor sup;
  ASSERT_FALSE(start("sup", spec, &sup));
  auto w = watch(sup);
  crash("sup/child1");
  for (int i = 0; i < 3; ++i) {
    advance(2100ms);
    crash("sup/child1");
    ASSERT_TRUE(alive(sup)) << "after crash " << i + 2;
  }
  EXPECT_EQ(starts("sup/child1"), 5);
  EXPECT_EQ(status_of(sup, "child1"), "running");
  // Two within the period are one too many.
  crash("sup/child1");
  EXPECT_TRUE(w->exited);
  EXPECT_TRUE(has_code(w->reason, errc::reached_max_restart_intensity));
}

/// Starts `n` echo children child1..childn under `s` with {2, 3600 s}.
caf::actor start_n(sup_test& t, strategy s, int n, int intensity = 2) {
  auto spec = flags(s, intensity, 3600 * 1000);
  for (int i = 1; i <= n; ++i)
    spec.children.push_back(worker("child" + std::to_string(i), "echo"));
  caf::actor sup;
  EXPECT_FALSE(t.start("sup", spec, &sup));
  return sup;
}

void expect_escalated(const exit_watch& w, const std::string& child) {
  EXPECT_TRUE(w.exited);
  EXPECT_TRUE(has_code(w.reason, errc::reached_max_restart_intensity));
  EXPECT_NE(describe(w.reason).find(child), std::string::npos)
    << describe(w.reason);
}

TEST_F(sup_test, one_for_one) {
  auto sup = start_n(*this, strategy::one_for_one, 2);
  auto w = watch(sup);
  auto c2 = handle("sup/child2");
  crash("sup/child1");
  EXPECT_EQ(starts("sup/child1"), 2);
  EXPECT_EQ(starts("sup/child2"), 1);
  EXPECT_EQ(stops("sup/child2"), 0);
  EXPECT_EQ(handle("sup/child2"), c2);
  EXPECT_EQ(counts(sup), cc(2, 2, 0, 2));
  crash("sup/child1");
  EXPECT_TRUE(alive(sup));
  crash("sup/child1");
  expect_escalated(*w, "sup/child1");
  EXPECT_EQ(stops("sup/child2"), 1);
  EXPECT_EQ(handle("sup/child2"), caf::actor{});
}

TEST_F(sup_test, one_for_all) {
  auto sup = start_n(*this, strategy::one_for_all, 2);
  auto w = watch(sup);
  crash("sup/child1");
  EXPECT_EQ(starts("sup/child1"), 2);
  EXPECT_EQ(starts("sup/child2"), 2);
  EXPECT_EQ(stops("sup/child2"), 1);
  EXPECT_EQ(counts(sup), cc(2, 2, 0, 2));
  crash("sup/child2");
  EXPECT_EQ(starts("sup/child1"), 3);
  EXPECT_TRUE(alive(sup));
  crash("sup/child1");
  expect_escalated(*w, "sup/child1");
}

TEST_F(sup_test, rest_for_one) {
  auto sup = start_n(*this, strategy::rest_for_one, 3);
  auto w = watch(sup);
  auto c1 = handle("sup/child1");
  crash("sup/child2");
  EXPECT_EQ(starts("sup/child1"), 1);
  EXPECT_EQ(starts("sup/child2"), 2);
  EXPECT_EQ(starts("sup/child3"), 2);
  EXPECT_EQ(stops("sup/child3"), 1);
  EXPECT_EQ(handle("sup/child1"), c1);
  EXPECT_EQ(counts(sup), cc(3, 3, 0, 3));
  crash("sup/child3");
  EXPECT_EQ(starts("sup/child2"), 2);
  EXPECT_EQ(starts("sup/child3"), 3);
  crash("sup/child2");
  expect_escalated(*w, "sup/child2");
  EXPECT_EQ(stops("sup/child1"), 1);
}

TEST_F(sup_test, simple_one_for_one) {
  auto spec = flags(strategy::simple_one_for_one, 2, 3600 * 1000);
  spec.children.push_back(worker("child", "echo"));
  caf::actor sup;
  ASSERT_FALSE(start("sup", spec, &sup));
  auto w = watch(sup);
  ASSERT_TRUE(start_simple(sup, "a"));
  ASSERT_TRUE(start_simple(sup, "b"));
  crash("sup/a");
  EXPECT_EQ(starts("sup/a"), 2);
  EXPECT_EQ(starts("sup/b"), 1);
  EXPECT_EQ(counts(sup), cc(1, 2, 0, 2));
  crash("sup/b");
  EXPECT_TRUE(alive(sup));
  crash("sup/a");
  expect_escalated(*w, "sup/a");
  EXPECT_EQ(stops("sup/b"), 1);
}

// The restart of child1 keeps failing: every retry counts, the supervisor
// exits, and the other children are stopped.
TEST_F(sup_test, one_for_one_escalation) {
  auto sup = start_n(*this, strategy::one_for_one, 2, 4);
  auto w = watch(sup);
  switches::get().set_fail("sup/child1", true);
  crash("sup/child1");
  expect_escalated(*w, "sup/child1");
  EXPECT_EQ(starts("sup/child1"), 5); // the first start and 4 restarts
  EXPECT_EQ(starts("sup/child2"), 1);
  EXPECT_EQ(stops("sup/child2"), 1);
}

TEST_F(sup_test, one_for_all_escalation) {
  auto sup = start_n(*this, strategy::one_for_all, 2, 4);
  auto w = watch(sup);
  switches::get().set_fail("sup/child2", true);
  crash("sup/child1");
  expect_escalated(*w, "sup/child2");
  // Every retry repeats the whole strategy: child1 restarts each time.
  EXPECT_EQ(starts("sup/child1"), 5);
  EXPECT_EQ(starts("sup/child2"), 5);
  EXPECT_EQ(stops("sup/child1"), 4); // 3 retries + the shutdown
}

TEST_F(sup_test, rest_for_one_escalation) {
  auto sup = start_n(*this, strategy::rest_for_one, 2, 4);
  auto w = watch(sup);
  switches::get().set_fail("sup/child2", true);
  crash("sup/child1");
  expect_escalated(*w, "sup/child2");
  // The retries restart child2 (and later children) only.
  EXPECT_EQ(starts("sup/child1"), 2);
  EXPECT_EQ(starts("sup/child2"), 5);
  EXPECT_EQ(stops("sup/child1"), 1);
}

TEST_F(sup_test, simple_one_for_one_escalation) {
  auto spec = flags(strategy::simple_one_for_one, 4, 3600 * 1000);
  spec.children.push_back(worker("child", "echo"));
  caf::actor sup;
  ASSERT_FALSE(start("sup", spec, &sup));
  auto w = watch(sup);
  ASSERT_TRUE(start_simple(sup, "a"));
  ASSERT_TRUE(start_simple(sup, "b"));
  switches::get().set_fail("sup/a", true);
  crash("sup/a");
  expect_escalated(*w, "sup/a");
  EXPECT_EQ(starts("sup/a"), 5);
  EXPECT_EQ(stops("sup/b"), 1);
}

// one_for_all: child2's restart fails. The retry repeats the strategy: the
// child1 started by the failed attempt is terminated before anything starts
// again, then child1 and child2 start.
TEST_F(sup_test, one_for_all_other_child_fails_restart) {
  auto spec = slow_flags(strategy::one_for_all, 3, 3600 * 1000);
  spec.children.push_back(worker("child1", "echo"));
  spec.children.push_back(worker("child2", "echo"));
  caf::actor sup;
  ASSERT_FALSE(start("sup", spec, &sup));
  // Starts of (child1, child2) at each on_stop; shared, as the fixture may
  // still stop children after the test body returns.
  auto log = std::make_shared<std::vector<std::pair<int, int>>>();
  switches::get().on_stop_hook = [log] {
    log->emplace_back(starts("sup/child1"), starts("sup/child2"));
  };
  auto& at_stop = *log;
  switches::get().set_fail("sup/child2", true);
  crash("sup/child1");
  advance(100ms); // the restart: child1 starts, child2 fails
  EXPECT_EQ(starts("sup/child1"), 2);
  EXPECT_EQ(starts("sup/child2"), 2);
  EXPECT_EQ(status_of(sup, "child1"), "running");
  EXPECT_EQ(status_of(sup, "child2"), "restarting");
  switches::get().set_fail("sup/child2", false);
  advance(100ms); // the retry
  EXPECT_EQ(starts("sup/child1"), 3);
  EXPECT_EQ(starts("sup/child2"), 3);
  EXPECT_EQ(status_of(sup, "child1"), "running");
  EXPECT_EQ(status_of(sup, "child2"), "running");
  // child2 stopped by the first restart; child1 by the retry, before it
  // started again.
  ASSERT_EQ(at_stop.size(), 2u);
  EXPECT_EQ(at_stop[0], std::make_pair(1, 1));
  EXPECT_EQ(at_stop[1], std::make_pair(2, 2));
  EXPECT_TRUE(alive(sup));
  switches::get().on_stop_hook = nullptr; // before the fixture stops `sup`
}

// rest_for_one: child2's restart fails. The retry restarts child2 and the
// children after it, never child1 again.
TEST_F(sup_test, rest_for_one_other_child_fails_restart) {
  auto spec = slow_flags(strategy::rest_for_one, 3, 3600 * 1000);
  for (auto id : {"child1", "child2", "child3"})
    spec.children.push_back(worker(id, "echo"));
  caf::actor sup;
  ASSERT_FALSE(start("sup", spec, &sup));
  switches::get().set_fail("sup/child2", true);
  crash("sup/child1");
  advance(100ms);
  EXPECT_EQ(starts("sup/child1"), 2);
  EXPECT_EQ(starts("sup/child2"), 2);
  EXPECT_EQ(starts("sup/child3"), 1); // stopped, not started again yet
  EXPECT_EQ(stops("sup/child3"), 1);
  EXPECT_EQ(status_of(sup, "child1"), "running");
  EXPECT_EQ(status_of(sup, "child2"), "restarting");
  EXPECT_EQ(counts(sup), cc(3, 1, 0, 3));
  advance(100ms); // a retry that fails again
  EXPECT_EQ(starts("sup/child1"), 2);
  EXPECT_EQ(starts("sup/child2"), 3);
  switches::get().set_fail("sup/child2", false);
  advance(100ms);
  EXPECT_EQ(starts("sup/child1"), 2);
  EXPECT_EQ(stops("sup/child1"), 0);
  EXPECT_EQ(starts("sup/child2"), 4);
  EXPECT_EQ(starts("sup/child3"), 2);
  EXPECT_EQ(counts(sup), cc(3, 3, 0, 3));
  EXPECT_TRUE(alive(sup));
}

// A cell holds its supervisor's handle and the supervisor holds the cell's:
// when the supervisor is killed, neither may keep the other alive (with a
// durable child, the leak kept the node's writer alive and hung its stop).
TEST_F(sup_test, a_killed_supervisor_and_its_cells_are_freed) {
  auto inner = flags(strategy::one_for_one, 10, 5000);
  inner.children.push_back(worker("echo", "echo"));
  auto spec = flags(strategy::one_for_one, 10, 5000);
  spec.children.push_back(supervisor("inner", inner));
  ASSERT_FALSE(start("app", spec));
  auto weak_cell
    = caf::actor_cast<caf::weak_actor_ptr>(handle("app/inner/echo"));
  auto weak_sup = caf::actor_cast<caf::weak_actor_ptr>(handle("app/inner"));
  ASSERT_TRUE(caf::actor_cast<caf::strong_actor_ptr>(weak_cell));
  caf::anon_send_exit(handle("app/inner"), caf::exit_reason::kill);
  run();
  ASSERT_TRUE(handle("app/inner/echo")) << "the supervisor was not restarted";
  EXPECT_FALSE(caf::actor_cast<caf::strong_actor_ptr>(weak_sup))
    << "the killed supervisor is still referenced";
  EXPECT_FALSE(caf::actor_cast<caf::strong_actor_ptr>(weak_cell))
    << "its cell is still referenced";
}

} // namespace
