// Ports of OTP's supervisor_SUITE `tree` case and its `significant` group
// (auto_shutdown). Each test is named after the OTP case it mirrors.

#include <string>

#include "supervision/otp_support.hpp"

using namespace std::chrono_literals;
using namespace vigil;
using namespace vigil::test;

namespace {

using sup_test = otp_fixture;

constexpr int hour = 3600 * 1000;

bool is_shutdown_reason(const exit_watch& w) {
  return w.exited && w.reason == caf::exit_reason::user_shutdown;
}

// -- tree ---------------------------------------------------------------------

supervisor_spec tree_spec() {
  auto sup1 = flags(strategy::one_for_one, 4, hour);
  sup1.children.push_back(worker("child1", "echo"));
  sup1.children.push_back(worker("child2", "echo"));
  auto top = flags(strategy::one_for_all, 4, hour);
  top.children.push_back(supervisor("supchild1", sup1));
  top.children.push_back(
    supervisor("supchild2", flags(strategy::one_for_one, 4, hour)));
  top.children.push_back(
    supervisor("supchild3", flags(strategy::one_for_one, 4, hour))
      .with_restart(restart_type::transient));
  return top;
}

// Nested supervisors: a sub-supervisor whose child keeps failing to restart
// exhausts its budget and exits; the top one_for_all supervisor restarts the
// subtree, and children added at run time are gone.
TEST_F(sup_test, tree) {
  caf::actor top;
  ASSERT_FALSE(start("top", tree_spec(), &top));
  auto wtop = watch(top);
  EXPECT_EQ(counts(top), cc(3, 3, 3, 0));
  EXPECT_FALSE(terminate_child(top, "supchild3"));
  EXPECT_EQ(counts(top), cc(3, 2, 3, 0));
  auto sup1 = child_handle(top, "supchild1");
  auto sup2 = child_handle(top, "supchild2");
  ASSERT_TRUE(sup1 && sup2);
  EXPECT_EQ(handle("top/supchild2"), sup2);
  EXPECT_EQ(counts(sup1), cc(2, 2, 0, 2));
  EXPECT_EQ(counts(sup2), cc(0, 0, 0, 0));
  ASSERT_TRUE(start_child(sup2, worker("child3", "echo")));
  ASSERT_TRUE(start_child(sup2, worker("child4", "echo")));
  EXPECT_EQ(counts(sup2), cc(2, 2, 0, 2));
  // child4 restarts on its own.
  crash("top/supchild2/child4");
  EXPECT_EQ(starts("top/supchild2/child4"), 2);
  EXPECT_EQ(starts("top/supchild2/child3"), 1);
  EXPECT_EQ(child_handle(top, "supchild2"), sup2);
  // child3 cannot restart: supchild2 gives up and the top restarts all.
  auto w2 = watch(sup2);
  switches::get().set_fail("top/supchild2/child3", true);
  crash("top/supchild2/child3");
  EXPECT_TRUE(w2->exited);
  EXPECT_TRUE(has_code(w2->reason, errc::reached_max_restart_intensity));
  EXPECT_NE(describe(w2->reason).find("top/supchild2/child3"),
            std::string::npos)
    << describe(w2->reason);
  EXPECT_FALSE(alive(sup1));
  EXPECT_FALSE(wtop->exited);
  EXPECT_TRUE(alive(top));
  auto new1 = child_handle(top, "supchild1");
  auto new2 = child_handle(top, "supchild2");
  ASSERT_TRUE(new1 && new2);
  EXPECT_NE(new1, sup1);
  EXPECT_NE(new2, sup2);
  EXPECT_EQ(handle("top/supchild2"), new2);
  EXPECT_EQ(status_of(top, "supchild1"), "running");
  EXPECT_EQ(status_of(top, "supchild2"), "running");
  // The static children are back; the dynamic ones are gone.
  EXPECT_EQ(counts(new1), cc(2, 2, 0, 2));
  EXPECT_EQ(stops("top/supchild1/child1"), 1);
  EXPECT_EQ(starts("top/supchild1/child1"), 2);
  EXPECT_EQ(starts("top/supchild1/child2"), 2);
  EXPECT_EQ(counts(new2), cc(0, 0, 0, 0));
  EXPECT_EQ(handle("top/supchild2/child3"), caf::actor{});
  EXPECT_EQ(handle("top/supchild2/child4"), caf::actor{});
}

// OTP's one_for_all also restarts children that were terminated by
// terminate_child (start_children/2 starts every child in the list), so
// `tree` ends with [3,3,3,0] there.
TEST_F(sup_test, tree_restarts_terminated_supchild3) {
  caf::actor top;
  ASSERT_FALSE(start("top", tree_spec(), &top));
  EXPECT_FALSE(terminate_child(top, "supchild3"));
  crash("top/supchild1/child1"); // within supchild1's budget: no effect
  auto sup2 = child_handle(top, "supchild2");
  caf::anon_send_exit(sup2, caf::exit_reason::kill);
  run();
  EXPECT_EQ(counts(top), cc(3, 3, 3, 0));
}

// -- significant children and auto_shutdown ------------------------------------

enum how { by_supervisor, crash_it, abnormal, normal };

const char* name(how h) {
  switch (h) {
    case by_supervisor: return "terminate_child";
    case crash_it: return "crash";
    case abnormal: return "abnormal";
    case normal: return "normal";
  }
  return "?";
}

void end_child(sup_test& t, const caf::actor& sup, const std::string& path,
               const std::string& id, how h) {
  switch (h) {
    case by_supervisor: EXPECT_FALSE(t.terminate_child(sup, id)); break;
    case crash_it: t.crash(path + "/" + id); break;
    case abnormal: t.exit_child(path + "/" + id, 2); break;
    case normal: t.exit_child(path + "/" + id, 0); break;
  }
}

/// child1 and child2 significant, child3 not; all of restart type `r`.
supervisor_spec significant_spec(strategy s, auto_shutdown a, restart_type r) {
  auto spec = flags(s, 10, hour);
  spec.flags.auto_shutdown = a;
  spec.children.push_back(
    worker("child1", "echo").with_restart(r).with_significant());
  spec.children.push_back(
    worker("child2", "echo").with_restart(r).with_significant());
  spec.children.push_back(worker("child3", "echo").with_restart(r));
  return spec;
}

TEST_F(sup_test, significant_temporary) {
  int n = 0;
  // any_significant: terminate_child does not shut down; any other end does,
  // and takes the other children with it.
  for (auto h : {crash_it, abnormal, normal}) {
    SCOPED_TRACE(name(h));
    auto path = "any" + std::to_string(n++);
    caf::actor sup;
    ASSERT_FALSE(start(path,
                       significant_spec(strategy::one_for_one,
                                        auto_shutdown::any_significant,
                                        restart_type::temporary),
                       &sup));
    auto w = watch(sup);
    end_child(*this, sup, path, "child1", by_supervisor);
    EXPECT_TRUE(alive(sup));
    end_child(*this, sup, path, "child2", h);
    EXPECT_TRUE(is_shutdown_reason(*w)) << describe(w->reason);
    EXPECT_EQ(stops(path + "/child3"), 1);
  }
  // all_significant: only when the last significant child ends.
  caf::actor sup;
  ASSERT_FALSE(start("all",
                     significant_spec(strategy::one_for_one,
                                      auto_shutdown::all_significant,
                                      restart_type::temporary),
                     &sup));
  auto w = watch(sup);
  exit_child("all/child1", 0);
  EXPECT_TRUE(alive(sup));
  EXPECT_EQ(status_of(sup, "child1"), "absent");
  exit_child("all/child2", 0);
  EXPECT_TRUE(is_shutdown_reason(*w)) << describe(w->reason);
  EXPECT_EQ(stops("all/child3"), 1);
}

TEST_F(sup_test, significant_transient) {
  // any_significant: terminate_child, crash and abnormal exits do not shut
  // down (the latter two restart); a normal exit does.
  caf::actor sup;
  ASSERT_FALSE(start("any",
                     significant_spec(strategy::one_for_one,
                                      auto_shutdown::any_significant,
                                      restart_type::transient),
                     &sup));
  auto w = watch(sup);
  end_child(*this, sup, "any", "child1", by_supervisor);
  for (auto h : {crash_it, abnormal})
    end_child(*this, sup, "any", "child2", h);
  EXPECT_TRUE(alive(sup));
  EXPECT_EQ(starts("any/child2"), 3);
  EXPECT_EQ(status_of(sup, "child2"), "running");
  exit_child("any/child2", 0);
  EXPECT_TRUE(is_shutdown_reason(*w)) << describe(w->reason);
  EXPECT_EQ(stops("any/child3"), 1);
  // all_significant: when the last significant child exits normally.
  caf::actor all;
  ASSERT_FALSE(start("all",
                     significant_spec(strategy::one_for_one,
                                      auto_shutdown::all_significant,
                                      restart_type::transient),
                     &all));
  auto wa = watch(all);
  exit_child("all/child1", 0);
  EXPECT_TRUE(alive(all));
  EXPECT_EQ(status_of(all, "child1"), "stopped");
  crash("all/child2");
  exit_child("all/child2", 2);
  EXPECT_TRUE(alive(all));
  EXPECT_EQ(starts("all/child2"), 3);
  exit_child("all/child2", 0);
  EXPECT_TRUE(is_shutdown_reason(*wa)) << describe(wa->reason);
  EXPECT_EQ(stops("all/child3"), 1);
}

// A simple_one_for_one supervisor cannot shut down automatically.
TEST_F(sup_test, significant_simple) {
  int n = 0;
  for (auto a : {auto_shutdown::any_significant,
                 auto_shutdown::all_significant, auto_shutdown::never}) {
    SCOPED_TRACE(to_string(a));
    auto spec = flags(strategy::simple_one_for_one);
    spec.flags.auto_shutdown = a;
    spec.children.push_back(
      worker("child", "echo").with_restart(restart_type::transient));
    auto problems = check_child_specs(spec, &rt->types(), "sup");
    caf::actor sup;
    auto err = start("sup" + std::to_string(n++), spec, &sup);
    if (a == auto_shutdown::never) {
      EXPECT_TRUE(problems.empty());
      EXPECT_FALSE(err) << describe(err);
      continue;
    }
    ASSERT_EQ(problems.size(), 1u);
    EXPECT_EQ(problems[0].code, spec_errc::bad_combination);
    EXPECT_EQ(problems[0].field, "auto_shutdown");
    EXPECT_TRUE(has_code(err, errc::invalid_child_spec));
  }
}

// Siblings that the supervisor itself stops for a restart do not count as
// significant children ending.
TEST_F(sup_test, significant_bystander) {
  int n = 0;
  for (auto s : {strategy::one_for_one, strategy::one_for_all,
                 strategy::rest_for_one})
    for (auto a :
         {auto_shutdown::any_significant, auto_shutdown::all_significant}) {
      auto path = "sup" + std::to_string(n++);
      SCOPED_TRACE(path + " " + to_string(s) + " " + to_string(a));
      auto spec = flags(s, 10, hour);
      spec.flags.auto_shutdown = a;
      for (auto id : {"child1", "child2", "child3"})
        spec.children.push_back(
          worker(id, "echo").with_restart(restart_type::transient));
      spec.children[0].with_significant();
      spec.children[2].with_significant();
      caf::actor sup;
      ASSERT_FALSE(start(path, spec, &sup));
      crash(path + "/child2");
      EXPECT_TRUE(alive(sup));
      int all = s == strategy::one_for_all ? 2 : 1;
      int rest = s == strategy::one_for_one ? 1 : 2;
      EXPECT_EQ(starts(path + "/child1"), all);
      EXPECT_EQ(starts(path + "/child2"), 2);
      EXPECT_EQ(starts(path + "/child3"), rest);
      EXPECT_EQ(stops(path + "/child3"), rest - 1);
      EXPECT_EQ(counts(sup), cc(3, 3, 0, 3));
    }
}

// A significant sub-supervisor that shuts down automatically is a
// significant child ending: its parent shuts down too, unless the
// sub-supervisor is not significant there.
TEST_F(sup_test, significant_escalation) {
  for (bool significant : {true, false}) {
    SCOPED_TRACE(significant ? "B significant" : "B not significant");
    auto path = std::string{significant ? "a1" : "a2"};
    auto b = flags(strategy::one_for_one, 10, hour);
    b.flags.auto_shutdown = auto_shutdown::any_significant;
    b.children.push_back(worker("c", "echo")
                           .with_restart(restart_type::transient)
                           .with_significant());
    auto a = flags(strategy::one_for_one, 10, hour);
    a.flags.auto_shutdown = auto_shutdown::any_significant;
    a.children.push_back(supervisor("b", b)
                           .with_restart(restart_type::transient)
                           .with_significant(significant));
    a.children.push_back(worker("other", "echo"));
    caf::actor sup;
    ASSERT_FALSE(start(path, a, &sup));
    auto bh = child_handle(sup, "b");
    auto wa = watch(sup);
    auto wb = watch(bh);
    exit_child(path + "/b/c", 0);
    EXPECT_TRUE(is_shutdown_reason(*wb)) << describe(wb->reason);
    if (significant) {
      EXPECT_TRUE(is_shutdown_reason(*wa)) << describe(wa->reason);
      EXPECT_EQ(stops(path + "/other"), 1);
    } else {
      EXPECT_FALSE(wa->exited);
      EXPECT_EQ(status_of(sup, "b"), "stopped");
      EXPECT_EQ(status_of(sup, "other"), "running");
    }
  }
}

/// Ends a non-significant child in every way under every auto_shutdown mode:
/// the supervisor never shuts down.
void nonsignificant(sup_test& t, restart_type r) {
  int n = 0;
  for (auto a : {auto_shutdown::never, auto_shutdown::any_significant,
                 auto_shutdown::all_significant})
    for (auto h : {by_supervisor, crash_it, abnormal, normal}) {
      auto path = "sup" + std::to_string(n++);
      SCOPED_TRACE(path + " " + to_string(a) + " " + name(h));
      auto spec = flags(strategy::one_for_one, 10, hour);
      spec.flags.auto_shutdown = a;
      spec.children.push_back(worker("child1", "echo").with_restart(r));
      caf::actor sup;
      ASSERT_FALSE(t.start(path, spec, &sup));
      end_child(t, sup, path, "child1", h);
      EXPECT_TRUE(t.alive(sup));
      bool restarted = r == restart_type::transient
                       && (h == crash_it || h == abnormal);
      EXPECT_EQ(t.starts(path + "/child1"), restarted ? 2 : 1);
      auto st = t.status_of(sup, "child1");
      if (r == restart_type::temporary)
        EXPECT_EQ(st, "absent");
      else
        EXPECT_EQ(st, restarted ? "running" : "stopped");
    }
}

TEST_F(sup_test, nonsignificant_temporary) {
  nonsignificant(*this, restart_type::temporary);
}

TEST_F(sup_test, nonsignificant_transient) {
  nonsignificant(*this, restart_type::transient);
}

// terminate_child of every significant child never shuts down, under either
// mode, and the supervisor keeps working.
TEST_F(sup_test, significant_terminate_child) {
  int n = 0;
  for (auto a :
       {auto_shutdown::any_significant, auto_shutdown::all_significant})
    for (auto r : {restart_type::transient, restart_type::temporary}) {
      auto path = "sup" + std::to_string(n++);
      SCOPED_TRACE(path);
      caf::actor sup;
      ASSERT_FALSE(
        start(path, significant_spec(strategy::one_for_one, a, r), &sup));
      EXPECT_FALSE(terminate_child(sup, "child1"));
      EXPECT_FALSE(terminate_child(sup, "child2"));
      EXPECT_TRUE(alive(sup));
      EXPECT_EQ(status_of(sup, "child3"), "running");
      EXPECT_EQ(stops(path + "/child3"), 0);
    }
}

} // namespace
