// A restart period at the longest allowed duration
// (max_duration, 876000h) still enforces the restart intensity.
#include <gtest/gtest.h>

#include "supervision/otp_support.hpp"

using namespace std::chrono_literals;
using namespace vigil;
using namespace vigil::test;

using intensity_period_test = otp_fixture;

TEST_F(intensity_period_test, a_period_of_max_duration_still_escalates) {
  auto spec = flags(strategy::one_for_one, 1, 1000);
  spec.flags.period = max_duration;
  spec.children.push_back(worker("child1", "echo"));
  caf::actor sup;
  ASSERT_FALSE(start("sup", spec, &sup));
  auto w = watch(sup);
  crash("sup/child1");
  advance(std::chrono::hours{500000});
  ASSERT_TRUE(alive(sup));
  crash("sup/child1"); // two restarts within 876000h: one too many
  EXPECT_TRUE(w->exited);
  EXPECT_TRUE(has_code(w->reason, errc::reached_max_restart_intensity));
}

TEST_F(intensity_period_test, restarts_further_apart_than_max_duration_do_not) {
  auto spec = flags(strategy::one_for_one, 1, 1000);
  spec.flags.period = max_duration;
  spec.children.push_back(worker("child1", "echo"));
  caf::actor sup;
  ASSERT_FALSE(start("sup", spec, &sup));
  auto w = watch(sup);
  crash("sup/child1");
  advance(max_duration + 1ms);
  crash("sup/child1");
  EXPECT_FALSE(w->exited) << describe(w->reason);
}
