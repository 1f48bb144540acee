// Tests supervision/src/restart_plan.hpp: which children each strategy
// stops and starts, as a pure function (no actors).

#include <map>

#include <gtest/gtest.h>

#include "supervision/src/restart_plan.hpp"

using namespace vigil;
using vigil::detail::plan_restart;

namespace {

const std::map<uint64_t, int> five{{1, 0}, {2, 0}, {3, 0}, {4, 0}, {5, 0}};

using keys = std::vector<uint64_t>;

} // namespace

TEST(restart_plan_test, one_for_one_restarts_the_failed_child_alone) {
  for (auto s : {strategy::one_for_one, strategy::simple_one_for_one}) {
    auto p = plan_restart(s, five, 3);
    EXPECT_EQ(p.stop, keys{});
    EXPECT_EQ(p.start, keys{3});
  }
}

TEST(restart_plan_test, one_for_all_stops_the_others_in_reverse_order) {
  auto p = plan_restart(strategy::one_for_all, five, 3);
  EXPECT_EQ(p.stop, (keys{5, 4, 2, 1}));
  EXPECT_EQ(p.start, (keys{1, 2, 3, 4, 5}));
}

TEST(restart_plan_test, rest_for_one_takes_the_failed_child_and_later_ones) {
  auto p = plan_restart(strategy::rest_for_one, five, 3);
  EXPECT_EQ(p.stop, (keys{5, 4}));
  EXPECT_EQ(p.start, (keys{3, 4, 5}));
  auto last = plan_restart(strategy::rest_for_one, five, 5);
  EXPECT_EQ(last.stop, keys{});
  EXPECT_EQ(last.start, keys{5});
  auto first = plan_restart(strategy::rest_for_one, five, 1);
  EXPECT_EQ(first.stop, (keys{5, 4, 3, 2}));
  EXPECT_EQ(first.start, (keys{1, 2, 3, 4, 5}));
}

TEST(restart_plan_test, a_lone_child_is_its_own_group) {
  const std::map<uint64_t, int> one{{7, 0}};
  for (auto s : {strategy::one_for_all, strategy::rest_for_one}) {
    auto p = plan_restart(s, one, 7);
    EXPECT_EQ(p.stop, keys{});
    EXPECT_EQ(p.start, keys{7});
  }
}
