// The metrics endpoint as operators meet it, with real processes and the
// ecosystem's own tools:
// - the main job (invoice_demo, policies on) scraped while it runs, and the
//   scrape checked by `promtool check metrics`;
// - the observed job (chaos + tool calls, `vigil run`) scraped by a real
//   Prometheus server started here on 127.0.0.1, and PromQL through its
//   HTTP API returning the restarts, dead letters and tool calls the node
//   counted (the tool calls also as tools.yaml's arithmetic predicts);
// - its report lines (JSON) carrying OTP's fields and the trace id.
// Every wait is bounded; every process is stopped or killed.

#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "support/bg_process.hpp"
#include "support/eventually.hpp"
#include "support/process.hpp"
#include "support/prom_text.hpp"
#include "support/temp_dir.hpp"

using namespace std::chrono_literals;
using namespace vigil::test;
using json = nlohmann::json;

namespace {

/// A port free on 127.0.0.1 now (the kernel's pick; closed again).
int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0)
    return -1;
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

struct http_reply {
  int status = 0;
  std::string body;
};

http_reply get(int port, const std::string& path,
               const httplib::Params& params = {}) {
  httplib::Client cli{"127.0.0.1", port};
  cli.set_connection_timeout(2, 0);
  cli.set_read_timeout(10, 0);
  auto res = params.empty() ? cli.Get(path.c_str())
                            : cli.Get(path.c_str(), params, {});
  if (!res)
    return {};
  return {res->status, res->body};
}

/// `promtool check metrics` on `text`: its exit code and output.
process_result promtool_check(const temp_dir& d, const std::string& text) {
  auto file = d.path() + "/scrape.txt";
  std::ofstream{file} << text;
  return run_process({"/bin/sh", "-c",
                      "exec promtool check metrics < '" + file + "'"},
                     60s);
}

/// The samples of every series of `names` in a scrape.
std::map<std::string, double>
only(const std::map<std::string, double>& m, const std::set<std::string>& names) {
  std::map<std::string, double> out;
  for (auto& [k, v] : m)
    if (names.count(k.substr(0, k.find('{'))) != 0)
      out.emplace(k, v);
  return out;
}

/// Prometheus's instant query `q`: each series (labels but job and
/// instance, in the form prom_text.hpp uses) with its value.
std::map<std::string, double> query(int port, const std::string& q) {
  std::map<std::string, double> out;
  auto r = get(port, "/api/v1/query", {{"query", q}});
  if (r.status != 200)
    return out;
  auto j = json::parse(r.body);
  for (auto& s : j["data"]["result"]) {
    std::vector<std::pair<std::string, std::string>> labels;
    std::string name;
    for (auto& [k, v] : s["metric"].items()) {
      if (k == "__name__")
        name = v.get<std::string>();
      else if (k != "job" && k != "instance")
        labels.emplace_back(k, v.get<std::string>());
    }
    out[series(name.empty() ? q : name, labels)]
      = std::stod(s["value"][1].get<std::string>());
  }
  return out;
}

} // namespace

TEST(metrics_live, the_main_job_scrape_passes_promtool) {
  temp_dir d;
  int port = free_port();
  ASSERT_GT(port, 0);
  bg_process job{{VIGIL_INVOICE_DEMO, "run", "--mode", "on", "--invoices",
                  "1500", "--data-dir", d.path() + "/data", "--policy-dir",
                  VIGIL_POLICY_DIR, "--metrics",
                  "127.0.0.1:" + std::to_string(port)},
                 d.path() + "/out", d.path() + "/err"};
  ASSERT_TRUE(job.started());
  // Live and ready while it runs; a scrape once tools were called.
  ASSERT_TRUE(eventually([&] { return get(port, "/readyz").status == 200; },
                         60s))
    << job.err();
  EXPECT_EQ(get(port, "/healthz").status, 200);
  std::string text;
  ASSERT_TRUE(eventually(
    [&] {
      auto r = get(port, "/metrics");
      if (r.status != 200)
        return false;
      text = r.body;
      double calls = 0;
      for (auto& [k, v] : parse_samples(text))
        if (k.rfind("vigil_tool_calls_total{", 0) == 0)
          calls += v;
      return calls >= 50;
    },
    60s))
    << job.err();
  auto check = promtool_check(d, text);
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
  // What promtool reads: HELP and TYPE for every family, and the families
  // this issue names.
  for (auto* name :
       {"vigil_build_info", "vigil_envelopes_handled_total",
        "vigil_envelope_handling_seconds", "vigil_envelopes_queued",
        "vigil_agents_running", "vigil_restarts_total",
        "vigil_escalations_total", "vigil_degraded_children",
        "vigil_stand_in_answers_total", "vigil_dead_letters_total",
        "vigil_dead_letters", "vigil_envelopes_shed_total",
        "vigil_tool_calls_total", "vigil_tool_call_seconds",
        "vigil_tool_retries_total", "vigil_tool_budget_refusals_total",
        "vigil_tool_breaker_state", "vigil_tool_not_permitted_total",
        "vigil_tool_abandoned_total", "vigil_writer_commit_items",
        "vigil_writer_commit_seconds", "vigil_lmdb_map_size_bytes",
        "vigil_lmdb_used_bytes"})
    EXPECT_NE(text.find(std::string{"# TYPE "} + name + " "),
              std::string::npos)
      << name;
  EXPECT_EQ(job.wait(120s), 0) << job.err();
}

TEST(metrics_live, prometheus_scrapes_the_observed_job) {
  temp_dir d;
  int port = free_port();
  int prom_port = free_port();
  ASSERT_GT(port, 0);
  ASSERT_GT(prom_port, 0);
  bg_process node{{VIGIL_BIN, "run", VIGIL_OBSERVED_POLICY, "--data-dir",
                   d.path() + "/data", "--metrics",
                   "127.0.0.1:" + std::to_string(port), "--log-format",
                   "json", "--progress", "0", "--for", "120s"},
                  d.path() + "/node.out", d.path() + "/node.err"};
  ASSERT_TRUE(node.started());
  std::ofstream{d.path() + "/prometheus.yml"}
    << "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
       "scrape_configs:\n  - job_name: vigil\n    static_configs:\n"
       "      - targets: ['127.0.0.1:"
    << port << "']\n";
  bg_process prom{{"/usr/bin/prometheus",
                   "--config.file=" + d.path() + "/prometheus.yml",
                   "--storage.tsdb.path=" + d.path() + "/tsdb",
                   "--web.listen-address=127.0.0.1:"
                     + std::to_string(prom_port),
                   "--web.enable-lifecycle"},
                  d.path() + "/prom.out", d.path() + "/prom.err"};
  ASSERT_TRUE(prom.started());
  ASSERT_TRUE(eventually([&] { return get(port, "/readyz").status == 200; },
                         60s))
    << node.err();
  ASSERT_TRUE(
    eventually([&] { return get(prom_port, "/-/ready").status == 200; }, 60s))
    << prom.err();
  // The job ends on its own (both sources send a fixed count): wait until
  // its counts stop moving, every tool call done (150 calls, of which the
  // 39 that search's open breaker refused are not_permitted, not calls).
  const std::set<std::string> compared
    = {"vigil_restarts_total", "vigil_dead_letters_total",
       "vigil_tool_calls_total", "vigil_envelopes_handled_total"};
  std::map<std::string, double> truth, last;
  ASSERT_TRUE(eventually(
    [&] {
      auto r = get(port, "/metrics");
      if (r.status != 200)
        return false;
      auto now = only(parse_samples(r.body), compared);
      double calls = 0;
      for (auto& [k, v] : now)
        if (k.rfind("vigil_tool_calls_total{", 0) == 0)
          calls += v;
      bool still = calls == 111 && now == last;
      last = now;
      if (still)
        truth = now;
      else
        std::this_thread::sleep_for(1500ms);
      return still;
    },
    90s))
    << node.err();
  // tools.yaml's arithmetic, from the node itself.
  auto kind = [&](const char* tool, const char* k) {
    return value_of(truth, series("vigil_tool_calls_total",
                                  {{"kind", k}, {"tool", tool}}));
  };
  EXPECT_EQ(kind("search", "successful_without_retry"), 54);
  EXPECT_EQ(kind("search", "successful_with_retry"), 6);
  EXPECT_EQ(kind("search", "failed_with_retry"), 1);
  EXPECT_EQ(kind("search", "failed_without_retry"), 0);
  EXPECT_EQ(kind("ocr", "successful_without_retry"), 25);
  EXPECT_EQ(kind("ocr", "successful_with_retry"), 5);
  EXPECT_EQ(kind("ocr", "failed_without_retry"), 20);
  EXPECT_EQ(kind("ocr", "failed_with_retry"), 0);
  // The relay crashes on every 100th of its 3000 numbers.
  EXPECT_GE(value_of(truth, series("vigil_restarts_total",
                                   {{"supervisor", "observed/chaos"}})),
            30);
  // poisoned crashes on every 50th of its 500, each crashed message a dead
  // letter at once (one delivery).
  double dead = 0;
  for (auto& [k, v] : truth)
    if (k.rfind("vigil_dead_letters_total{", 0) == 0)
      dead += v;
  EXPECT_GE(dead, 9);
  EXPECT_GE(value_of(truth, series("vigil_envelopes_handled_total",
                                   {{"agent_type", "flaky"},
                                    {"outcome", "failed"}})),
            39);
  // Prometheus, through PromQL, sees what the node counted.
  std::map<std::string, double> seen;
  for (auto& name : compared) {
    std::map<std::string, double> want, got;
    for (auto& [k, v] : truth)
      if (k.rfind(name + "{", 0) == 0)
        want.emplace(k, v);
    ASSERT_FALSE(want.empty()) << name;
    EXPECT_TRUE(eventually([&] { return (got = query(prom_port, name)) == want; },
                           30s))
      << name << ": Prometheus has " << json(got).dump() << ", the node "
      << json(want).dump();
  }
  auto refused = query(prom_port, "vigil_tool_not_permitted_total");
  EXPECT_EQ(value_of(refused, series("vigil_tool_not_permitted_total",
                                     {{"tool", "search"}})),
            39);
  auto open = query(prom_port, "vigil_tool_breaker_state{state=\"open\"}");
  EXPECT_EQ(value_of(open, series("vigil_tool_breaker_state",
                                  {{"state", "open"}, {"tool", "search"}})),
            1);
  auto retries = query(prom_port, "sum(vigil_tool_retries_total)");
  EXPECT_EQ(value_of(retries, "sum(vigil_tool_retries_total)"), 13); // 8 + 5
  auto refusals = query(prom_port, "vigil_tool_budget_refusals_total{tool=\"ocr\"}");
  EXPECT_EQ(value_of(refusals, series("vigil_tool_budget_refusals_total",
                                      {{"tool", "ocr"}})),
            20);
  // Stop both; the node as `vigil run` does on SIGINT.
  node.signal(SIGINT);
  EXPECT_EQ(node.wait(60s), 0) << node.err();
  httplib::Client{"127.0.0.1", prom_port}.Post("/-/quit");
  EXPECT_EQ(prom.wait(60s), 0) << prom.err();
  // Every line through vigil's logger is a JSON object; the reports carry
  // OTP's fields and, where an envelope was involved, its trace id.
  std::istringstream err{node.err()};
  std::string line;
  std::map<std::string, int> kinds;
  while (std::getline(err, line)) {
    if (line.empty() || line[0] != '{')
      continue; // the command's own lines (starting, stopped, ...)
    json j;
    ASSERT_NO_THROW(j = json::parse(line)) << line;
    ASSERT_TRUE(j.contains("ts") && j.contains("level")) << line;
    if (!j.contains("report"))
      continue;
    ++kinds[j["report"].get<std::string>()];
    for (auto* f : {"supervisor", "context", "reason", "offender", "attempt"})
      EXPECT_TRUE(j.contains(f)) << f << " missing: " << line;
    if (j["report"] == "crash") {
      ASSERT_TRUE(j.contains("trace_id")) << line;
      EXPECT_EQ(j["trace_id"].get<std::string>().size(), 32u) << line;
    }
  }
  EXPECT_GE(kinds["crash"], 30) << json(kinds).dump();
  EXPECT_GE(kinds["restart"], 30) << json(kinds).dump();
  EXPECT_GE(kinds["dead_letter"], 9) << json(kinds).dump();
}
