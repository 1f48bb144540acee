// The document pipeline example (examples/pipeline) as a user runs it, as a
// real child process against its real local services: with validation
// slow on a share of the documents, the plain synchronous pipeline backs
// up behind the slow ones, while vigil's agents leave validation out of
// those documents' reports, say why, and keep every report on time.

#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "support/process.hpp"
#include "support/temp_dir.hpp"

using namespace std::chrono_literals;
using namespace vigil::test;
using nlohmann::json;

TEST(pipeline_test, a_slow_validation_leaves_parts_missing_instead_of_a_cascade) {
  temp_dir tmp;
  auto report = tmp.path() + "/report.json";
  auto r = run_process({PIPELINE_BIN, "--documents", "120", "--rate", "60",
                        "--seed", "5", "--report", report},
                       180s);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("plain sync calls"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("p99 time to report"), std::string::npos) << r.out;
  std::ifstream in{report};
  auto j = json::parse(in, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << report << " is not JSON";
  auto& plain = j["runs"]["plain"];
  auto& vigil = j["runs"]["vigil"];
  ASSERT_TRUE(plain["p99_ms"].is_number()) << j.dump(2);
  ASSERT_TRUE(vigil["p99_ms"].is_number()) << j.dump(2);
  for (auto* run : {&plain, &vigil})
    EXPECT_EQ((*run)["complete"].get<int>() + (*run)["partial"].get<int>()
                + (*run)["failed"].get<int>(),
              120)
      << j.dump(2);
  // Plain: no report lacks a part (a document fails or waits), and the
  // slow validations (2 s at least, on about 15%) set its p99.
  EXPECT_EQ(plain["partial"].get<int>(), 0) << j.dump(2);
  EXPECT_GT(plain["p99_ms"].get<double>(), 2000.0) << j.dump(2);
  // vigil: every document reported; those whose validation did not come
  // within the tool's 500 ms deadline are reported without it, and none
  // waited for a slow validation.
  EXPECT_EQ(vigil["failed"].get<int>(), 0) << j.dump(2);
  EXPECT_GT(vigil["partial"].get<int>(), 0) << j.dump(2);
  ASSERT_TRUE(vigil["missing"].is_object()) << j.dump(2);
  for (auto& [what, n] : vigil["missing"].items())
    EXPECT_EQ(what, "missing validate") << j.dump(2);
  EXPECT_EQ(vigil["missing"]["missing validate"].get<int>(),
            vigil["partial"].get<int>())
    << j.dump(2);
  EXPECT_LT(vigil["p99_ms"].get<double>(), 2000.0) << j.dump(2);
  // Each delivered report stored once: a retried store carried its key.
  EXPECT_EQ(vigil["stored"].get<int>(),
            vigil["complete"].get<int>() + vigil["partial"].get<int>())
    << j.dump(2);
  EXPECT_LT(vigil["p99_ms"].get<double>(), plain["p99_ms"].get<double>());
}
