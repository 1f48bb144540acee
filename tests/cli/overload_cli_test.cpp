// The saturation case of issue 21, as a user runs it: `vigil run` with a
// built-in source sending as fast as it can (rate 0, batch 1000) to a flaky
// relay that takes 1 ms an envelope. Before queues were bounded the node's
// RSS grew by about 350 MB/s until the OOM killer would end it, and the
// first progress line came after 5 s. Now the relay's queue holds at most
// its queue_cap, the source waits for room (flow control), progress keeps
// its cadence, and the stop is clean.
// - peak RSS (the child's ru_maxrss) stays under 512 MiB;
// - a progress line every 500 ms, the first within 1.5 s;
// - nothing is shed: the source waited (what the relay still held at the
//   stop is dead letters `not_running`, at most its queue);
// - the relay worked the whole time (about 1 envelope a ms);
// - the run ends by --for with exit 0, and its report shows the queue.
// A producer that does not wait (its sends shed, every one accounted for:
// handled + shed = sent) is tested in-process in
// tests/node/overload_test.cpp, where the count sent is known exactly.

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "support/cli_run.hpp"
#include "support/process.hpp"
#include "support/temp_dir.hpp"

using namespace std::chrono_literals;
using nlohmann::json;
using vigil::test::run_process;
using vigil::test::temp_dir;
using vigil::test::child;
using vigil::test::write;

namespace {

const char* flood = R"(node:
  name: job
tree:
  strategy: one_for_one
  intensity: 100
  children:
    - name: relay
      agent: flaky
      params: {delay: 1ms}
    - name: source
      agent: source
      params: {to: job/relay, count: 1000000000, rate: 0, batch: 1000}
)";

} // namespace

TEST(overload_cli_test, a_source_at_full_speed_never_exhausts_memory) {
  temp_dir d;
  auto f = write(d, "flood.yaml", flood);
  auto r = run_process({VIGIL_BIN, "run", f, "--for", "6s", "--progress",
                        "500ms", "--report", "json"},
                       60s);
  ASSERT_FALSE(r.timed_out) << r.err;
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_LT(r.max_rss_kib, 512L * 1024) << "peak RSS " << r.max_rss_kib
                                        << " KiB";
  // Progress lines: "vigil:    0.5s  handled=..." every 500 ms.
  std::istringstream lines{r.err};
  std::string line;
  std::vector<double> at;
  while (std::getline(lines, line))
    if (line.rfind("vigil: ", 0) == 0 && line.find("handled=") != line.npos)
      at.push_back(std::stod(line.substr(7)));
  ASSERT_GE(at.size(), 8u) << r.err;
  EXPECT_LE(at.front(), 1.5) << r.err;
  for (size_t i = 1; i < at.size(); ++i)
    EXPECT_LE(at[i] - at[i - 1], 1.5) << "a progress line was late:\n"
                                      << r.err;
  auto j = json::parse(r.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  // Nothing was shed: the source waited. What still waited in the relay's
  // queue at the stop became dead letters `not_running`, as for any
  // stopped non-durable agent (a journal agent would keep them).
  for (auto& [code, count] : j["dead_letters"]["by_reason"].items())
    EXPECT_EQ(code, "not_running") << r.out;
  EXPECT_LE(j["dead_letters"]["count"].get<uint64_t>(), 10000u) << r.out;
  auto* relay = child(j["tree"], "relay");
  ASSERT_NE(relay, nullptr) << r.out;
  auto& q = (*relay)["queue"];
  EXPECT_EQ(q["shed"], 0) << r.out;
  EXPECT_EQ(q["cap"], 10000) << r.out;
  EXPECT_LE(q["queued"].get<uint64_t>(), 10000u) << r.out;
  // 1 ms an envelope on one of two threads, for 6 s.
  EXPECT_GE(q["taken"].get<uint64_t>(), 2000u) << r.out;
}
