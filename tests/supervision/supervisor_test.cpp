// Ports of the behaviours that OTP's lib/stdlib/test/supervisor_SUITE.erl
// checks. Each test is named after the OTP case it mirrors.

#include "support/fixture.hpp"

using namespace std::chrono_literals;
using namespace vigil;
using namespace vigil::test;

namespace {

using sup_test = runtime_fixture;

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

} // namespace
