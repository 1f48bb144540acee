// Review: `durable_bench recovery vigil` must measure recovery of valid
// records, not the quarantine of records it wrote in a format the store no
// longer reads.

#include <gtest/gtest.h>

#include <stdio.h>
#include <sys/wait.h>

#include <filesystem>
#include <string>

#include "support/temp_dir.hpp"

TEST(durable_bench_review, recovery_seed_is_readable_by_the_store) {
  // The bench makes its data dirs under build/bench-data of its cwd.
  vigil::test::temp_dir cwd;
  std::string cmd = "cd " + cwd.path() + " && " + DURABLE_BENCH
                    + " recovery vigil 5 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  for (size_t n; (n = fread(buf, 1, sizeof(buf), p)) > 0;)
    out.append(buf, n);
  int ws = ::pclose(p);
  ASSERT_TRUE(WIFEXITED(ws)) << out;
  EXPECT_EQ(WEXITSTATUS(ws), 0) << out;
  EXPECT_NE(out.find("\"name\":\"recovery\""), std::string::npos) << out;
  EXPECT_EQ(out.find("quarantined"), std::string::npos) << out;
}
