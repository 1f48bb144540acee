// The invoice example (examples/invoices) as a user runs it, as real child
// processes: a small batch with the policies off and on against its real
// local services, its figures checked against what the fault model
// allows; then one invoice in manual review approved with `vigil approvals
// approve`, and `invoices resume` posting it at the ledger service.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/process.hpp"
#include "support/temp_dir.hpp"

using namespace std::chrono_literals;
using namespace vigil::test;
using nlohmann::json;

namespace {

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

json read_json(const std::string& path) {
  std::ifstream in{path};
  auto j = json::parse(in, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << path << " is not JSON";
  return j;
}

} // namespace

TEST(invoices_test, policies_on_beat_off_and_an_approved_review_is_posted) {
  temp_dir tmp;
  auto dir = tmp.path() + "/inv";
  auto report = tmp.path() + "/report.json";
  auto r = run_process({INVOICES_BIN, "run", "--invoices", "300", "--seed",
                        "11", "--in-flight", "32", "--data-dir", dir,
                        "--report", report},
                       120s);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  // The side-by-side table, and progress on stderr.
  EXPECT_TRUE(has(r.out, "end-to-end success")) << r.out;
  EXPECT_TRUE(has(r.out, "policies off")) << r.out;
  EXPECT_TRUE(has(r.out, "policies on")) << r.out;
  EXPECT_TRUE(has(r.err, "invoices: policies on")) << r.err;

  auto j = read_json(report);
  auto& off = j["runs"]["off"];
  auto& on = j["runs"]["on"];
  for (auto* k : {"done", "review", "failed"}) {
    ASSERT_TRUE(off[k].is_number()) << j.dump(2);
    ASSERT_TRUE(on[k].is_number()) << j.dump(2);
  }
  EXPECT_EQ(off["done"].get<int>() + off["review"].get<int>()
              + off["failed"].get<int>(),
            300);
  EXPECT_EQ(on["done"].get<int>() + on["review"].get<int>()
              + on["failed"].get<int>(),
            300);
  // Off: nothing routed to a person; each failure fails its invoice.
  // With 8% poor scans (all past the 1 s timeout), 10% inexact PO
  // references and 2-3% transient errors per service, off cannot reach 85%.
  EXPECT_EQ(off["review"].get<int>(), 0);
  EXPECT_LT(off["success_pct"].get<double>(), 85.0) << j.dump(2);
  // On: retries, the breaker, the careful OCR and suggestions leave the
  // invoices a person must see (unreadable scans, amounts that differ,
  // references with no confident suggestion) and very few failures.
  EXPECT_GT(on["success_pct"].get<double>(), off["success_pct"].get<double>())
    << j.dump(2);
  EXPECT_GT(on["success_pct"].get<double>(), 88.0) << j.dump(2);
  EXPECT_GT(on["review"].get<int>(), 0) << j.dump(2);
  EXPECT_LE(on["failed"].get<int>(), 6) << j.dump(2);
  // Every entry posted once: a retry after a lost answer carried the same
  // Idempotency-Key and was answered from the ledger's store.
  EXPECT_EQ(on["double_postings"].get<int>(), 0);
  EXPECT_EQ(off["double_postings"].get<int>(), 0);
  EXPECT_GE(on["entries"].get<int>(), on["done"].get<int>());

  // One invoice in manual review, approved by a person.
  auto list = run_process({VIGIL_BIN, "approvals", "list", "--data-dir",
                           dir + "/on", "--json"},
                          30s);
  ASSERT_EQ(list.exit_code, 0) << list.err;
  auto pending = json::parse(list.out, nullptr, false);
  ASSERT_TRUE(pending.is_array()) << list.out;
  ASSERT_EQ(static_cast<int>(pending.size()), on["review"].get<int>())
    << list.out;
  auto& first = pending.at(0);
  EXPECT_EQ(first["kind"], "tool_call") << first.dump(2);
  EXPECT_EQ(first["tool"], "post_reviewed") << first.dump(2);
  EXPECT_EQ(first["request_type"], "invoices.EntryRequest") << first.dump(2);
  EXPECT_FALSE(first["request"]["review"].get<std::string>().empty())
    << first.dump(2);
  auto invoice = first["request"]["id"].get<std::string>();
  auto id = first["id"].get<std::string>();
  auto ok = run_process({VIGIL_BIN, "approvals", "approve", id, "--by",
                         "tester", "--data-dir", dir + "/on"},
                        30s);
  ASSERT_EQ(ok.exit_code, 0) << ok.out << ok.err;

  auto res = run_process({INVOICES_BIN, "resume", "--invoices", "300",
                          "--seed", "11", "--data-dir", dir, "--wait", "30",
                          "--expect", "1"},
                         60s);
  ASSERT_EQ(res.exit_code, 0) << res.out << res.err;
  // The approved one, and no other: the others still wait.
  std::vector<std::string> posted;
  std::istringstream lines{res.out};
  for (std::string line; std::getline(lines, line);)
    if (line.rfind("posted after review: ", 0) == 0)
      posted.push_back(line.substr(21));
  EXPECT_EQ(posted, std::vector<std::string>{invoice}) << res.out << res.err;
  auto after = run_process({VIGIL_BIN, "approvals", "list", "--data-dir",
                            dir + "/on", "--json"},
                           30s);
  ASSERT_EQ(after.exit_code, 0) << after.err;
  auto left = json::parse(after.out, nullptr, false);
  ASSERT_TRUE(left.is_array()) << after.out;
  EXPECT_EQ(left.size() + 1, pending.size()) << after.out;

  // A second resume posts nothing again: an effect sent again (its answer
  // lost before the first resume stopped) is answered by its key from the
  // ledger, which keeps its entries as a real one does.
  auto again = run_process({INVOICES_BIN, "resume", "--data-dir", dir,
                            "--wait", "3", "--expect", "1"},
                           60s);
  EXPECT_EQ(again.exit_code, 1) << again.out << again.err;
  EXPECT_EQ(again.out.find("posted after review: "), std::string::npos)
    << again.out;
  EXPECT_NE(again.err.find("ledger.txt"), std::string::npos) << again.err;

  // A second run does not wipe the invoices waiting for a person.
  auto rerun = run_process({INVOICES_BIN, "run", "--invoices", "10",
                            "--data-dir", dir},
                           60s);
  EXPECT_EQ(rerun.exit_code, 1) << rerun.out << rerun.err;
  EXPECT_NE(rerun.err.find("--replace"), std::string::npos) << rerun.err;
  auto still = run_process({VIGIL_BIN, "approvals", "list", "--data-dir",
                            dir + "/on", "--json"},
                           30s);
  ASSERT_EQ(still.exit_code, 0) << still.err;
  EXPECT_EQ(json::parse(still.out, nullptr, false).size(), left.size());
}

TEST(invoices_test, resume_needs_a_run_and_bad_policies_fail_before_any_run) {
  temp_dir tmp;
  auto none = run_process({INVOICES_BIN, "resume", "--data-dir",
                           tmp.path() + "/typo", "--wait", "1"},
                          30s);
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_NE(none.err.find("holds no run"), std::string::npos) << none.err;
  // A policy dir whose invoices.yaml is broken: refused, naming file and
  // line, before the off run starts.
  auto pol = tmp.path() + "/policies";
  std::filesystem::create_directories(pol);
  std::filesystem::copy_file(std::string{INVOICES_POLICY_DIR}
                               + "/invoices_off.yaml",
                             pol + "/invoices_off.yaml");
  {
    std::ifstream in{std::string{INVOICES_POLICY_DIR} + "/invoices.yaml"};
    std::stringstream ss;
    ss << in.rdbuf();
    auto text = ss.str();
    auto at = text.find("attempt_timeout: 1s");
    ASSERT_NE(at, std::string::npos);
    text.replace(at, 19, "attempt_timeout: 1qs");
    std::ofstream out{pol + "/invoices.yaml"};
    out << text;
  }
  auto bad = run_process({INVOICES_BIN, "run", "--invoices", "50",
                          "--data-dir", tmp.path() + "/d", "--policy-dir",
                          pol},
                         60s);
  EXPECT_EQ(bad.exit_code, 2) << bad.out << bad.err;
  EXPECT_NE(bad.err.find(pol + "/invoices.yaml:"), std::string::npos)
    << bad.err;
  EXPECT_EQ(bad.err.find("policies off"), std::string::npos) << bad.err;
}
