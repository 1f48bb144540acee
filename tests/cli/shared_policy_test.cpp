// Shared state from a policy file (examples/policies/shared.yaml), with the
// built-in enqueuer, task_worker and cas_counter, run by the real `vigil`
// binary: every task of the queue is done and counted once despite failed,
// crashed and stalled leases, three compare-and-swap counters add every
// increment exactly once, and `vigil inspect shared` shows it. Bad params of the new
// agents are named by `vigil check`.

#include <gtest/gtest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "support/process.hpp"
#include "support/temp_dir.hpp"

using namespace std::chrono_literals;
using nlohmann::json;
using vigil::test::run_process;
using vigil::test::temp_dir;

namespace {

vigil::test::process_result vigil_cmd(std::vector<std::string> args,
                                      std::chrono::milliseconds limit = 60s) {
  args.insert(args.begin(), VIGIL_BIN);
  return run_process(args, limit);
}

TEST(shared_policy_test, queue_and_cas_counters_from_a_policy_file) {
  temp_dir d;
  auto data = d.path() + "/data";
  auto r = vigil_cmd({"run", SHARED_POLICY, "--data-dir", data, "--for", "8s",
                      "--report", "json", "--progress", "0"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto in = vigil_cmd({"inspect", "--data-dir", data, "shared", "--json"});
  ASSERT_EQ(in.exit_code, 0) << in.err << in.out;
  auto j = json::parse(in.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << in.out;
  ASSERT_EQ(j["queues"].size(), 1u) << in.out;
  auto& q = j["queues"][0];
  EXPECT_EQ(q["queue"], "jobs");
  EXPECT_EQ(q["done"], 500) << in.out;
  EXPECT_EQ(q["ready"], 0);
  EXPECT_EQ(q["leased"], 0);
  EXPECT_EQ(q["dead"], 0);
  bool found = false;
  for (auto& k : j["stores"])
    if (k["store"] == "counters" && k["key"] == "total") {
      found = true;
      EXPECT_EQ(k["value"], "60300") << k.dump(); // 3 × (1 + ... + 200)
      // One version per successful write; a write may carry several
      // increments (those pending while a put was in flight).
      EXPECT_GE(k["version"].get<int64_t>(), 3);
      EXPECT_LE(k["version"].get<int64_t>(), 600);
      EXPECT_EQ(k["writer"].get<std::string>().rfind("jobs/tally/c", 0), 0u);
    }
  EXPECT_TRUE(found) << in.out;
  // The counter got each task's number once: count 500, sum 1+...+500.
  auto ag = vigil_cmd({"inspect", "--data-dir", data, "--json"});
  ASSERT_EQ(ag.exit_code, 0) << ag.err;
  auto agents = json::parse(ag.out, nullptr, false);
  bool counted = false;
  for (auto& a : agents)
    if (a["path"] == "jobs/counter") {
      counted = true;
      EXPECT_EQ(a["state"]["count"], "500") << a.dump();
      EXPECT_EQ(a["state"]["sum"], "125250") << a.dump();
    }
  EXPECT_TRUE(counted);
  // The text form names the key's history with its writers.
  auto text = vigil_cmd({"inspect", "--data-dir", data, "shared", "counters"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("store counters  key total  v"), std::string::npos)
    << text.out;
  EXPECT_NE(text.out.find("value=\"60300\""), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("  by jobs/tally/c"), std::string::npos)
    << text.out;
}

TEST(shared_policy_test, check_names_bad_params_of_the_shared_agents) {
  temp_dir d;
  auto f = d.path() + "/bad.yaml";
  std::ofstream{f} << R"(node:
  name: bad
tree:
  children:
    - name: e
      agent: enqueuer
      params: {max_attempts: 0}
    - name: w
      agent: task_worker
      params: {queue: jobs, lease: soon, colour: red}
)";
  auto r = vigil_cmd({"check", f});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("enqueuer: param 'queue'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("max_attempts"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("'lease'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("unknown param 'colour'"), std::string::npos) << r.err;
}

} // namespace
