// The cascade example (examples/cascade) as a user runs it, as a real
// child process against its real local services: 100 naive instances
// duplicate records, while vigil's 100 workers do every document once at
// each service and lose no config update. Only what holds in every run is
// asserted: the figures that depend on thread timing (how many tasks the
// naive instances claim twice, how many config writes they lose) are
// printed, not checked.

#include <gtest/gtest.h>

#include <fstream>
#include <iostream>
#include <string>

#include <nlohmann/json.hpp>

#include "support/process.hpp"
#include "support/temp_dir.hpp"

using namespace std::chrono_literals;
using namespace vigil::test;
using nlohmann::json;

namespace {

constexpr int documents = 300;

int64_t at(const json& j, const char* a, const char* b) {
  return j.at(a).at(b).get<int64_t>();
}

} // namespace

TEST(cascade_test, vigil_does_each_document_once_where_the_naive_way_cascades) {
  temp_dir tmp;
  auto report = tmp.path() + "/report.json";
  auto r = run_process({CASCADE_BIN, "--documents", std::to_string(documents),
                        "--instances", "100", "--seed", "5", "--report",
                        report},
                       240s);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("duplicate records"), std::string::npos) << r.out;
  std::ifstream in{report};
  auto j = json::parse(in, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << report << " is not JSON";
  ASSERT_TRUE(j["runs"]["naive"].is_object()) << j.dump(2);
  ASSERT_TRUE(j["runs"]["vigil"].is_object()) << j.dump(2);
  auto& naive = j["runs"]["naive"];
  auto& vigil = j["runs"]["vigil"];
  std::cout << r.out; // the table, for whoever reads the test's log

  // The figures add up: duplicates are what a service stored beyond one
  // per document, and lost updates what was written beyond the count.
  for (auto* run : {&naive, &vigil}) {
    for (auto* svc : {"records", "hooks"})
      EXPECT_EQ(at(*run, svc, "duplicates"),
                at(*run, svc, "stored") - at(*run, svc, "distinct"))
        << j.dump(2);
    EXPECT_EQ((*run)["lost_config_updates"].get<int64_t>(),
              (*run)["config_increments"].get<int64_t>()
                - (*run)["config_final_count"].get<int64_t>())
      << j.dump(2);
  }

  // vigil: every document done once at each service (a retry, or a
  // second lease after a give-back, repeats the document's key, which the
  // service answers without storing again), and every compare-and-swap
  // that applied is in the count.
  EXPECT_EQ(vigil["documents_done"].get<int>(), documents) << j.dump(2);
  EXPECT_EQ(at(vigil, "records", "distinct"), documents) << j.dump(2);
  EXPECT_EQ(at(vigil, "records", "duplicates"), 0) << j.dump(2);
  EXPECT_EQ(at(vigil, "hooks", "distinct"), documents) << j.dump(2);
  EXPECT_EQ(at(vigil, "hooks", "duplicates"), 0) << j.dump(2);
  EXPECT_EQ(vigil["lost_config_updates"].get<int>(), 0) << j.dump(2);
  EXPECT_EQ(vigil["config_final_count"].get<int>(), documents) << j.dump(2);
  EXPECT_TRUE(vigil["config_parses"].get<bool>()) << j.dump(2);
  EXPECT_EQ(vigil["never_done"].get<int>(), 0) << j.dump(2);
  // With seed 5, 25 documents' first request to the records service is
  // stored and then answered with a 503 or too late (examples::draw, the
  // same in every run): each of them is done only after a later request,
  // with its key, was answered from that key.
  EXPECT_GT(at(vigil, "records", "by_key") + at(vigil, "hooks", "by_key"), 0)
    << j.dump(2);

  // naive: the same 25 first inserts are stored and their answers lost,
  // whatever the threads' timing; the retry that follows, with no key,
  // inserts again.
  EXPECT_GT(at(naive, "records", "duplicates"), 0) << j.dump(2);
  EXPECT_EQ(at(naive, "records", "by_key"), 0) << j.dump(2);
  // Every document is asked for at least once, and retries and second
  // claims come on top: more calls than documents at each service.
  EXPECT_GT(at(naive, "records", "requests"), documents) << j.dump(2);
  EXPECT_GT(at(naive, "hooks", "requests"), documents) << j.dump(2);
  EXPECT_GT(naive["task_calls"].get<int>(), documents) << j.dump(2);
}
