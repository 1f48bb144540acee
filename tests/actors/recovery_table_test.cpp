// vigil::recovery_table: what the start recovered, claimed once per path by
// its first owner; the rest named as orphans and dropped.

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "vigil/actors/recovery_table.hpp"

using namespace vigil;

namespace {

recovered_agent agent(const std::string& path, size_t journal) {
  recovered_agent r;
  r.path = path;
  r.has_snapshot = true;
  r.snapshot.set_path(path);
  r.journal.resize(journal);
  return r;
}

recovery_table three() {
  std::map<std::string, recovered_agent> found;
  found["root/b"] = agent("root/b", 2);
  found["root/a"] = agent("root/a", 1);
  found["root/a/x"] = agent("root/a/x", 3);
  return recovery_table{std::move(found)};
}

TEST(recovery_table_test, an_empty_table_has_nothing_to_claim) {
  recovery_table t;
  recovered_agent out;
  EXPECT_TRUE(t.empty());
  EXPECT_FALSE(t.claim("root", out));
  EXPECT_TRUE(t.take_unclaimed().empty());
}

TEST(recovery_table_test, holds_every_recovered_path) {
  auto t = three();
  EXPECT_EQ(t.size(), 3u);
  EXPECT_TRUE(t.contains("root/a"));
  EXPECT_TRUE(t.contains("root/a/x"));
  EXPECT_TRUE(t.contains("root/b"));
  EXPECT_FALSE(t.contains("root"));
}

TEST(recovery_table_test, a_claim_moves_the_records_out_once) {
  auto t = three();
  recovered_agent out;
  ASSERT_TRUE(t.claim("root/a/x", out));
  EXPECT_EQ(out.path, "root/a/x");
  EXPECT_TRUE(out.has_snapshot);
  EXPECT_EQ(out.journal.size(), 3u);
  EXPECT_FALSE(t.contains("root/a/x"));
  EXPECT_EQ(t.size(), 2u);
  auto before = agent("untouched", 7);
  out = before;
  EXPECT_FALSE(t.claim("root/a/x", out)) << "a path is claimed once";
  EXPECT_EQ(out.path, "untouched") << "a failed claim leaves out alone";
  EXPECT_EQ(out.journal.size(), 7u);
}

TEST(recovery_table_test, a_claim_matches_the_whole_path) {
  auto t = three();
  recovered_agent out;
  EXPECT_FALSE(t.claim("root/a/", out));
  EXPECT_FALSE(t.claim("root", out));
  ASSERT_TRUE(t.claim("root/a", out));
  EXPECT_EQ(out.journal.size(), 1u);
  EXPECT_TRUE(t.contains("root/a/x"));
}

TEST(recovery_table_test, the_unclaimed_are_named_sorted_and_dropped) {
  auto t = three();
  recovered_agent out;
  ASSERT_TRUE(t.claim("root/a", out));
  EXPECT_EQ(t.take_unclaimed(),
            (std::vector<std::string>{"root/a/x", "root/b"}));
  EXPECT_TRUE(t.empty());
  EXPECT_FALSE(t.claim("root/b", out)) << "an orphan's records are dropped";
  EXPECT_TRUE(t.take_unclaimed().empty()) << "named once";
}

} // namespace
