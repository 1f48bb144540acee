// End-to-end tests of tools in the `vigil` command: `vigil check` on a
// policy's tools, examples/policies/tools.yaml run as the README runs it
// (its report's exact figures, and its breaker kept in the data dir), and
// `vigil inspect tools` on breakers written with the store's API.

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "support/cli_run.hpp"
#include "support/process.hpp"
#include "support/temp_dir.hpp"
#include "vigil/persistence/store.hpp"

using namespace std::chrono_literals;
using nlohmann::json;
using vigil::test::process_result;
using vigil::test::run_process;
using vigil::test::temp_dir;
using vigil::test::parse;
using vigil::test::vigil_cmd;
using vigil::test::write;

namespace {

int64_t unix_ms_now() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

/// Writes `states` as the node does (meta "breaker/<tool>") into a new
/// data dir at `dir`; with `garbage`, also a record that does not parse.
void write_breakers(const std::string& dir,
                    const std::vector<vigil::records::BreakerState>& states,
                    bool garbage = false) {
  vigil::store_options so;
  so.dir = dir;
  std::unique_ptr<vigil::store> st;
  ASSERT_FALSE(vigil::store::open(so, st)) << dir;
  vigil::write_item item;
  for (auto& b : states)
    item.muts.push_back({vigil::mutation::op::put, vigil::db::meta,
                         "breaker/" + b.tool(), vigil::encode_record(b)});
  if (garbage)
    item.muts.push_back({vigil::mutation::op::put, vigil::db::meta,
                         "breaker/broken", "\xff\xfe not a record"});
  vigil::write_item* items[] = {&item};
  vigil::write_result res[1];
  ASSERT_FALSE(st->apply(items, 1, res));
}

} // namespace

TEST(tools_cli_test, check_names_the_place_of_every_tool_problem) {
  temp_dir d;
  auto f = write(d, "bad.yaml", R"(node:
  tools:
    search:
      type: flaky_tool
      class: read_only
      retry: {max_attempts: 9}
    pay:
      type: nosuch
      class: irreversible
tree:
  children:
    - name: a
      agent: tool_caller
      params: {tool: search}
      tools:
        serch: {max_attempts: 2}
)");
  auto r = vigil_cmd({"check", f});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  for (auto* want :
       {":6:15: node.tools.search.retry.max_attempts: must be 1 to 5",
        ":8:7: node.tools.pay.type: no tool implementation is registered "
        "as \"nosuch\"",
        ":16:9: tools.serch: the node declares no tool \"serch\"; declared: "
        "search, pay"})
    EXPECT_NE(r.err.find(f + want), std::string::npos)
      << "missing \"" << want << "\" in:\n"
      << r.err;
  EXPECT_NE(r.err.find("vigil: 3 errors; nothing started"), std::string::npos)
    << r.err;
}

TEST(tools_cli_test, check_counts_the_tools_of_a_valid_policy) {
  auto r = vigil_cmd({"check", VIGIL_TOOLS_POLICY});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("OK (agents, 5 children, 2 tools)"), std::string::npos)
    << r.out;
}

// examples/policies/tools.yaml, as its header runs it. Its tool fails by
// the number and the attempt alone, and each caller makes one call at a
// time, so every figure is exact (see the example's comments).
TEST(tools_cli_test, the_example_retries_opens_its_breaker_and_keeps_it) {
  temp_dir d;
  auto r = vigil_cmd({"run", VIGIL_TOOLS_POLICY, "--data-dir", d.path(),
                      "--for", "4s", "--progress", "500ms", "--report",
                      "json"},
                     60s);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto rep = parse(r.out);
  auto& search = rep["tools"]["search"];
  EXPECT_EQ(search["type"], "flaky_tool");
  EXPECT_EQ(search["class"], "read_only");
  EXPECT_EQ(search["calls"], 100) << search.dump();
  EXPECT_EQ(search["executions"], 69) << search.dump();
  EXPECT_EQ(search["retries"], 8) << search.dump();
  EXPECT_EQ(search["succeeded"], 60) << search.dump();
  EXPECT_EQ(search["succeeded_after_retry"], 6) << search.dump();
  EXPECT_EQ(search["failed"], 1) << search.dump();
  EXPECT_EQ(search["circuit_open"], 39) << search.dump();
  EXPECT_EQ(search["budget_refusals"], 0) << search.dump();
  EXPECT_EQ(search["breaker"], "open") << search.dump();
  EXPECT_EQ(search["breaker_openings"], 1) << search.dump();
  EXPECT_GT(search["next_probe_ms"].get<int64_t>(), 50 * 60 * 1000);
  auto& ocr = rep["tools"]["ocr"];
  EXPECT_EQ(ocr["class"], "idempotent_write");
  EXPECT_EQ(ocr["calls"], 50) << ocr.dump();
  EXPECT_EQ(ocr["executions"], 55) << ocr.dump();
  EXPECT_EQ(ocr["retries"], 5) << ocr.dump();
  EXPECT_EQ(ocr["budget_refusals"], 20) << ocr.dump();
  EXPECT_EQ(ocr["succeeded"], 30) << ocr.dump();
  EXPECT_EQ(ocr["failed"], 20) << ocr.dump();
  EXPECT_EQ(ocr["circuit_open"], 0) << ocr.dump();
  EXPECT_EQ(ocr["breaker"], "closed") << ocr.dump();
  for (auto* k : {"bulkhead_full", "rate_limited", "cost_exceeded",
                  "deadline_exceeded", "abandoned"}) {
    EXPECT_EQ(search[k], 0) << k;
    EXPECT_EQ(ocr[k], 0) << k;
  }
  EXPECT_EQ(rep["open_breakers"], json::array({"search"}));
  // The report's other fields are still there.
  EXPECT_EQ(rep["outcome"], "completed");
  EXPECT_EQ(rep["dead_letters"]["count"], 0);
  // The progress lines sum the tools.
  EXPECT_NE(r.err.find("tool_calls=150  tool_retries=13"), std::string::npos)
    << r.err;
  EXPECT_NE(r.err.find("open_breakers=search"), std::string::npos) << r.err;
  // The answered numbers reached the journal counter: 1..60.
  auto a = vigil_cmd({"inspect", "--data-dir", d.path(), "agents", "--json"});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  auto agents = parse(a.out);
  ASSERT_EQ(agents.size(), 1u) << a.out;
  EXPECT_EQ(agents[0]["state"]["count"], "60");
  EXPECT_EQ(agents[0]["state"]["sum"], "1830");
  // The open breaker is in the data dir, for about an hour.
  auto i = vigil_cmd({"inspect", "--data-dir", d.path(), "tools", "--json"});
  ASSERT_EQ(i.exit_code, 0) << i.err;
  auto bs = parse(i.out);
  ASSERT_EQ(bs.size(), 1u) << i.out;
  EXPECT_EQ(bs[0]["tool"], "search");
  EXPECT_EQ(bs[0]["state"], "open");
  EXPECT_EQ(bs[0]["trips"], 1);
  auto left = bs[0]["open_left_ms"].get<int64_t>();
  EXPECT_GT(left, 50 * 60 * 1000);
  EXPECT_LE(left, 60 * 60 * 1000);
  auto t = vigil_cmd({"inspect", "--data-dir", d.path(), "tools"});
  ASSERT_EQ(t.exit_code, 0) << t.err;
  EXPECT_NE(t.out.find("search  open  until "), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("1 breakers (1 open)"), std::string::npos) << t.out;
  // A second run starts with the breaker open: no call reaches search.
  auto again = vigil_cmd({"run", VIGIL_TOOLS_POLICY, "--data-dir", d.path(),
                          "--for", "2s", "--progress", "0"},
                         60s);
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find("tool search (flaky_tool, read_only): 100 calls, "
                           "0 executions, 0 retries; 0 succeeded (0 after a "
                           "retry), 0 failed; refused: circuit_open 100"),
            std::string::npos)
    << again.out;
  EXPECT_NE(again.out.find("tool ocr (flaky_tool, idempotent_write): 50 "
                           "calls, 55 executions, 5 retries"),
            std::string::npos)
    << again.out;
  EXPECT_NE(again.err.find("its breaker was open when the node stopped"),
            std::string::npos)
    << again.err;
}

TEST(tools_cli_test, inspect_tools_lists_each_stored_breaker) {
  temp_dir d;
  auto now = unix_ms_now();
  vigil::records::BreakerState open, over, closed;
  open.set_tool("llm");
  open.set_state(1);
  open.set_open_until_unix_ms(now + 90 * 1000);
  open.set_trips(3);
  open.set_updated_unix_ms(now - 1000);
  over.set_tool("ocr");
  over.set_state(1);
  over.set_open_until_unix_ms(now - 5000);
  over.set_trips(1);
  over.set_updated_unix_ms(now - 35000);
  closed.set_tool("pay");
  closed.set_state(0);
  closed.set_updated_unix_ms(now - 2000);
  write_breakers(d.path(), {open, over, closed});
  auto j = vigil_cmd({"inspect", "--data-dir", d.path(), "tools", "--json"});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  std::map<std::string, json> by_tool;
  for (auto& b : parse(j.out))
    by_tool[b["tool"].get<std::string>()] = b;
  ASSERT_EQ(by_tool.size(), 3u) << j.out;
  auto& l = by_tool["llm"];
  EXPECT_EQ(l["state"], "open");
  EXPECT_EQ(l["trips"], 3);
  EXPECT_EQ(l["open_until_unix_ms"], now + 90 * 1000);
  EXPECT_GT(l["open_left_ms"].get<int64_t>(), 0);
  EXPECT_LE(l["open_left_ms"].get<int64_t>(), 90 * 1000);
  EXPECT_EQ(l["updated_unix_ms"], now - 1000);
  EXPECT_EQ(by_tool["ocr"]["state"], "open");
  EXPECT_EQ(by_tool["ocr"]["open_left_ms"], 0); // its period is over
  EXPECT_EQ(by_tool["pay"]["state"], "closed");
  EXPECT_EQ(by_tool["pay"]["open_until_unix_ms"], 0);
  auto t = vigil_cmd({"inspect", "--data-dir", d.path(), "tools"});
  ASSERT_EQ(t.exit_code, 0) << t.err;
  EXPECT_NE(t.out.find("llm  open  until "), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("s left)  trips=3"), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("ocr  open  until "), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("(over: the next call is a probe)  trips=1"),
            std::string::npos)
    << t.out;
  EXPECT_NE(t.out.find("pay  closed  trips=0"), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("3 breakers (2 open)"), std::string::npos) << t.out;
}

TEST(tools_cli_test, inspect_tools_names_a_record_that_does_not_parse) {
  temp_dir d;
  vigil::records::BreakerState ok;
  ok.set_tool("llm");
  ok.set_state(0);
  write_breakers(d.path(), {ok}, true);
  auto t = vigil_cmd({"inspect", "--data-dir", d.path(), "tools"});
  EXPECT_EQ(t.exit_code, 1) << t.err;
  EXPECT_NE(t.err.find("[meta] \"breaker/broken\": "), std::string::npos)
    << t.err;
  EXPECT_NE(t.out.find("llm  closed"), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("1 breakers (0 open)"), std::string::npos) << t.out;
}

TEST(tools_cli_test, inspect_tools_on_a_data_dir_without_tools) {
  temp_dir d;
  write_breakers(d.path(), {});
  auto t = vigil_cmd({"inspect", "--data-dir", d.path(), "tools"});
  ASSERT_EQ(t.exit_code, 0) << t.err;
  EXPECT_NE(t.out.find("0 breakers (0 open)"), std::string::npos) << t.out;
}
