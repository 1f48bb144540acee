// A node's metrics endpoint, health checks and supervisor reports, in
// process on CAF's real scheduler: the counts a scrape shows are the ones
// the test made happen, and reports come out as JSON lines.

#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>
#include <spdlog/sinks/ostream_sink.h>

#include "support/eventually.hpp"
#include "support/prom_text.hpp"
#include "support/test_agents.hpp"
#include "vigil/actors/detail/log.hpp"
#include "vigil/metrics/exporter.hpp"
#include "vigil/node/node.hpp"
#include "vigil/version.hpp"

using namespace std::chrono_literals;
using namespace vigil;
using namespace vigil::test;

namespace {

/// Every line vigil's logger writes while the test runs.
struct captured_log {
  std::mutex mtx;
  std::ostringstream out;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink
    = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
  captured_log() {
    detail::log().sinks().push_back(sink);
  }
  ~captured_log() {
    auto& s = detail::log().sinks();
    s.erase(std::remove(s.begin(), s.end(), sink), s.end());
    // Back to text for the tests that follow in this process.
    apply_log_settings(log_settings{});
  }
  std::vector<nlohmann::json> reports() {
    std::vector<nlohmann::json> xs;
    sink->flush();
    std::istringstream in{out.str()};
    std::string line;
    while (std::getline(in, line)) {
      auto j = nlohmann::json::parse(line); // every line is JSON
      if (j.contains("report"))
        xs.push_back(std::move(j));
    }
    return xs;
  }
};

node_config metered(std::string address = "127.0.0.1:0") {
  node_config nc;
  nc.threads = 2;
  nc.metrics = std::move(address);
  log_settings ls;
  ls.format = log_format::json;
  ls.level = spdlog::level::info;
  nc.log = ls;
  return nc;
}

supervisor_spec one_echo(uint32_t intensity) {
  supervisor_spec spec;
  spec.flags.intensity = intensity;
  spec.flags.period = 60s;
  spec.children.push_back(worker("w", "echo"));
  return spec;
}

struct reply_t {
  int status = 0;
  std::string body;
};

reply_t get(const node& n, const std::string& path) {
  auto addr = n.metrics_address();
  auto colon = addr.rfind(':');
  httplib::Client cli{addr.substr(0, colon),
                      std::stoi(addr.substr(colon + 1))};
  cli.set_connection_timeout(5, 0);
  cli.set_read_timeout(5, 0);
  auto res = cli.Get(path.c_str());
  if (!res)
    return {};
  return {res->status, res->body};
}

std::map<std::string, double> scrape(const node& n) {
  auto r = get(n, "/metrics");
  EXPECT_EQ(r.status, 200);
  return parse_samples(r.body);
}

Ping ping(int64_t x) {
  Ping p;
  p.set_n(x);
  return p;
}

Crash crash(std::string why) {
  Crash c;
  c.set_why(std::move(why));
  return c;
}

const std::string handled = "vigil_envelopes_handled_total";

} // namespace

TEST(metrics_node, a_scrape_counts_what_happened) {
  captured_log log;
  node n{test_registry(), metered()};
  ASSERT_FALSE(n.start("root", one_echo(10)));
  ASSERT_FALSE(n.metrics_address().empty());
  for (int i = 0; i < 10; ++i)
    ASSERT_TRUE(n.call<Pong>("root/w", ping(i), 5s));
  for (int i = 0; i < 3; ++i) {
    EXPECT_FALSE(n.call<Pong>("root/w", crash("boom " + std::to_string(i)),
                              5s));
    // The next call waits for the restart (the cell buffers meanwhile).
    ASSERT_TRUE(n.call<Pong>("root/w", ping(100 + i), 5s));
  }
  std::map<std::string, double> m;
  ASSERT_TRUE(eventually([&] {
    m = scrape(n);
    return value_of(m, series("vigil_restarts_total",
                              {{"supervisor", "root"}}))
           == 3;
  }));
  EXPECT_EQ(value_of(m, series(handled, {{"agent_type", "echo"},
                                         {"outcome", "replied"}})),
            13);
  EXPECT_EQ(value_of(m, series(handled, {{"agent_type", "echo"},
                                         {"outcome", "failed"}})),
            3);
  EXPECT_EQ(value_of(m, series(handled, {{"agent_type", "echo"},
                                         {"outcome", "rejected"}})),
            0);
  EXPECT_EQ(value_of(m, series("vigil_envelope_handling_seconds_count",
                               {{"agent_type", "echo"}})),
            16);
  EXPECT_EQ(value_of(m, series("vigil_envelope_handling_seconds_bucket",
                               {{"agent_type", "echo"}, {"le", "+Inf"}})),
            16);
  EXPECT_EQ(value_of(m, series("vigil_agents_running",
                               {{"agent_type", "echo"}})),
            1);
  EXPECT_EQ(value_of(m, series("vigil_escalations_total",
                               {{"supervisor", "root"}})),
            0);
  EXPECT_EQ(value_of(m, series("vigil_degraded_children",
                               {{"supervisor", "root"}})),
            0);
  EXPECT_EQ(value_of(m, series("vigil_build_info",
                               {{"data_format", "2"},
                                {"version", VIGIL_VERSION}})),
            1);
  EXPECT_EQ(value_of(m, "vigil_handled_total"), 13);
  // Health: the scheduler answers and the tree runs.
  auto live = get(n, "/healthz");
  EXPECT_EQ(live.status, 200);
  EXPECT_EQ(live.body, "ok\n");
  EXPECT_EQ(get(n, "/readyz").status, 200);
  EXPECT_EQ(get(n, "/nothing").status, 404);
  // The reports: one crash (with the envelope's trace) and one restart
  // per failure, with OTP's fields.
  auto reports = log.reports();
  std::vector<nlohmann::json> crashes, restarts;
  for (auto& r : reports) {
    for (auto* f : {"ts", "level", "supervisor", "context", "reason",
                    "offender", "attempt"})
      EXPECT_TRUE(r.contains(f)) << f << " missing in " << r.dump();
    if (r["report"] == "crash")
      crashes.push_back(r);
    if (r["report"] == "restart")
      restarts.push_back(r);
  }
  ASSERT_EQ(crashes.size(), 3u) << log.out.str();
  ASSERT_EQ(restarts.size(), 3u) << log.out.str();
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(crashes[i]["supervisor"], "root");
    EXPECT_EQ(crashes[i]["offender"], "root/w");
    EXPECT_EQ(crashes[i]["context"], "child_terminated");
    EXPECT_EQ(crashes[i]["level"], "error");
    EXPECT_NE(crashes[i]["reason"].get<std::string>().find(
                "boom " + std::to_string(i)),
              std::string::npos);
    auto trace = crashes[i]["trace_id"].get<std::string>();
    EXPECT_EQ(trace.size(), 32u);
    EXPECT_EQ(trace.find_first_not_of("0123456789abcdef"), std::string::npos);
    EXPECT_EQ(restarts[i]["supervisor"], "root");
    EXPECT_EQ(restarts[i]["offender"], "root/w");
    EXPECT_EQ(restarts[i]["attempt"], i + 1);
    EXPECT_EQ(restarts[i]["level"], "warning");
  }
  // Three crashes, three different envelopes: three traces.
  EXPECT_NE(crashes[0]["trace_id"], crashes[1]["trace_id"]);
  ASSERT_FALSE(n.stop());
  auto ready = get(n, "/readyz");
  EXPECT_EQ(ready.status, 503);
  EXPECT_NE(ready.body.find("not started"), std::string::npos) << ready.body;
}

TEST(metrics_node, an_escalation_makes_the_node_not_ready) {
  captured_log log;
  node n{test_registry(), metered()};
  ASSERT_FALSE(n.start("root", one_echo(1)));
  EXPECT_EQ(get(n, "/readyz").status, 200);
  (void)n.call<Pong>("root/w", crash("one"), 5s);
  ASSERT_TRUE(n.call<Pong>("root/w", ping(1), 5s));
  (void)n.call<Pong>("root/w", crash("two"), 5s);
  caf::error reason;
  ASSERT_TRUE(n.wait_for_exit(10s, reason));
  auto ready = get(n, "/readyz");
  EXPECT_EQ(ready.status, 503) << ready.body;
  // The process still answers: it is alive, only not ready.
  EXPECT_EQ(get(n, "/healthz").status, 200);
  auto m = scrape(n);
  EXPECT_EQ(value_of(m, series("vigil_escalations_total",
                               {{"supervisor", "root"}})),
            1);
  bool escalation = false;
  for (auto& r : log.reports())
    if (r["report"] == "escalation") {
      escalation = true;
      EXPECT_EQ(r["supervisor"], "root");
      EXPECT_EQ(r["context"], "shutdown");
      EXPECT_NE(r["reason"].get<std::string>().find(
                  "reached_max_restart_intensity"),
                std::string::npos)
        << r.dump();
    }
  EXPECT_TRUE(escalation) << log.out.str();
}

TEST(metrics_node, a_bad_address_is_refused_with_its_name) {
  for (auto bad : {"nonsense", "127.0.0.1:99999", "127.0.0.1:", ":9464",
                   "[::1:9464"}) {
    node n{test_registry(), metered(bad)};
    auto err = n.start("root", one_echo(1));
    ASSERT_TRUE(err) << bad;
    EXPECT_NE(describe(err).find(bad), std::string::npos) << describe(err);
  }
}

TEST(metrics_node, a_port_in_use_is_refused) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t len = sizeof(a);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  auto taken = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));
  {
    node n{test_registry(), metered(taken)};
    auto err = n.start("root", one_echo(1));
    ASSERT_TRUE(err);
    EXPECT_NE(describe(err).find(taken), std::string::npos) << describe(err);
  }
  ::close(fd);
}

TEST(metrics_node, without_an_address_there_is_no_endpoint) {
  node_config nc;
  nc.threads = 2;
  node n{test_registry(), nc};
  ASSERT_FALSE(n.start("root", one_echo(1)));
  EXPECT_TRUE(n.metrics_address().empty());
  EXPECT_FALSE(n.rt()->meters().on());
}

TEST(metrics_node, parse_address_names_what_is_wrong) {
  std::string host, why;
  uint16_t port = 1;
  EXPECT_TRUE(metrics::parse_address("127.0.0.1:9464", host, port, why));
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, 9464);
  EXPECT_TRUE(metrics::parse_address("[::1]:0", host, port, why));
  EXPECT_EQ(host, "::1");
  EXPECT_EQ(port, 0);
  EXPECT_FALSE(metrics::parse_address("localhost", host, port, why));
  EXPECT_NE(why.find("localhost"), std::string::npos);
  EXPECT_FALSE(metrics::parse_address("h:-1", host, port, why));
  EXPECT_FALSE(metrics::parse_address("h:65536", host, port, why));
}

TEST(metrics_node, supervisor_labels_stay_bounded) {
  detail::meter_board b;
  b.dynamic("root/pool");
  auto& a = b.supervisor("root/pool/7");
  EXPECT_EQ(&a, &b.supervisor("root/pool/8"));
  EXPECT_EQ(&b.supervisor("root/pool/7/sub"), &b.supervisor("root/pool/9/sub"));
  EXPECT_NE(&a, &b.supervisor("root/pool/7/sub"));
  EXPECT_NE(&a, &b.supervisor("root/other_static"));
  auto names = b.supervisors();
  EXPECT_EQ(names.count("root/pool/*"), 1u);
  EXPECT_EQ(names.count("root/pool/*/sub"), 1u);
  EXPECT_EQ(names.count("root/pool/7"), 0u);
  // Past the cap, new paths count together.
  for (size_t i = 0; i < detail::meter_board::max_supervisors + 10; ++i)
    (void)b.supervisor("root/s" + std::to_string(i));
  names = b.supervisors();
  EXPECT_LE(names.size(), detail::meter_board::max_supervisors + 1);
  EXPECT_EQ(names.count("other"), 1u);
}

TEST(metrics_node, a_degraded_child_is_counted_and_reported) {
  captured_log log;
  node n{test_registry(), metered()};
  supervisor_spec spec;
  spec.flags.intensity = 1;
  spec.flags.period = 60s;
  auto c = worker("w", "echo").with_failure(on_failure::degrade);
  Pong fb;
  fb.set_from("fallback");
  c.degrade.set_fallback(fb);
  c.degrade.probe_min = 60s; // no probe within the test
  c.degrade.probe_max = 60s;
  spec.children.push_back(std::move(c));
  ASSERT_FALSE(n.start("root", std::move(spec)));
  (void)n.call<Pong>("root/w", crash("one"), 5s);
  ASSERT_TRUE(n.call<Pong>("root/w", ping(1), 5s));
  (void)n.call<Pong>("root/w", crash("two"), 5s);
  // The stand-in answers, marked degraded.
  caf::expected<reply<Pong>> r = make_error(errc::not_running);
  ASSERT_TRUE(eventually([&] {
    r = n.call<Pong>("root/w", ping(2), 5s);
    return r && r->degraded;
  }));
  std::map<std::string, double> m;
  ASSERT_TRUE(eventually([&] {
    m = scrape(n);
    return value_of(m, series("vigil_degraded_children",
                              {{"supervisor", "root"}}))
           == 1;
  }));
  EXPECT_GE(value_of(m, "vigil_stand_in_answers_total"), 1);
  EXPECT_EQ(value_of(m, series("vigil_escalations_total",
                               {{"supervisor", "root"}})),
            0);
  EXPECT_EQ(get(n, "/readyz").status, 200);
  bool degrade = false;
  for (auto& x : log.reports())
    if (x["report"] == "degrade") {
      degrade = true;
      EXPECT_EQ(x["supervisor"], "root");
      EXPECT_EQ(x["offender"], "root/w");
      EXPECT_EQ(x["context"], "degraded");
    }
  EXPECT_TRUE(degrade) << log.out.str();
}
