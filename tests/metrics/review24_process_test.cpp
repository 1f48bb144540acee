// Adversarial review of issue 24 with real processes: `vigil run` and
// `vigil check` with metrics and log settings, real sockets on 127.0.0.1.
// A failing test here demonstrates a defect.

#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "support/bg_process.hpp"
#include "support/eventually.hpp"
#include "support/process.hpp"
#include "support/temp_dir.hpp"

using namespace std::chrono_literals;
using namespace vigil::test;
using clk = std::chrono::steady_clock;

namespace {

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

int status_of(int port, const std::string& path) {
  httplib::Client cli{"127.0.0.1", port};
  cli.set_connection_timeout(1, 0);
  cli.set_read_timeout(3, 0);
  auto res = cli.Get(path.c_str());
  return res ? res->status : 0;
}

/// A policy of one memory-only counter (no data dir needed), with `node`
/// lines added under `node:`.
std::string write_policy(const temp_dir& d, const std::string& node_lines,
                         const std::string& name = "p.yaml") {
  auto file = d.path() + "/" + name;
  std::ofstream{file} << "node:\n  name: p\n"
                      << node_lines
                      << "tree:\n  strategy: one_for_one\n  children:\n"
                         "    - name: c\n      agent: counter\n";
  return file;
}

process_result run_vigil(std::vector<std::string> args,
                     std::chrono::milliseconds limit = 30s) {
  args.insert(args.begin(), VIGIL_BIN);
  return run_process(args, limit);
}

} // namespace

// Policy errors name FILE:LINE:COL and what is wrong (held up; kept as a
// regression check).
TEST(review24_process, policy_errors_name_the_place) {
  temp_dir d;
  auto f = write_policy(d, "  metrics: \"nonsense\"\n"
                           "  log: {format: xml, level: loud}\n");
  auto r = run_vigil({"check", f});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_NE(r.err.find(f + ":3:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(f + ":4:9: node.log.format"), std::string::npos)
    << r.err;
  EXPECT_NE(r.err.find(f + ":4:22: node.log.level"), std::string::npos)
    << r.err;
}

// "[::1]" (an IPv6 host, no port) is told that "an IPv6 host needs
// [brackets]" -- it has them; what is missing is the port
// (endpoint.cpp parse_address: rfind(':') lands inside the brackets).
TEST(review24_process, an_ipv6_host_without_port_is_told_the_port_is_missing) {
  temp_dir d;
  auto f = write_policy(d, "  metrics: \"[::1]\"\n");
  auto r = run_vigil({"check", f});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(r.err.find("needs [brackets]"), std::string::npos)
    << "misleading: " << r.err;
  EXPECT_NE(r.err.find("port"), std::string::npos) << r.err;
}

// `vigil check` passes a node.metrics that `vigil run` can never listen on
// (a host with a space): the check does not check what run needs.
TEST(review24_process, check_refuses_a_metrics_host_that_cannot_be) {
  temp_dir d;
  auto f = write_policy(d, "  metrics: \"a b:9464\"\n");
  auto r = run_vigil({"check", f});
  EXPECT_EQ(r.exit_code, 2) << "vigil check accepted node.metrics \"a "
                               "b:9464\": "
                            << r.out << r.err;
}

// `vigil run --metrics garbage`: exit 64 with the reason (held up).
TEST(review24_process, run_metrics_garbage_exits_64) {
  temp_dir d;
  auto f = write_policy(d, "");
  for (auto bad : {"garbage", "127.0.0.1:99999", ":80", "h:-1", "h:0x10"}) {
    auto r = run_vigil({"run", f, "--metrics", bad, "--for", "1s", "--progress",
                    "0"});
    EXPECT_EQ(r.exit_code, 64) << bad << ": " << r.err;
    EXPECT_NE(r.err.find(bad), std::string::npos) << r.err;
  }
}

// A port in use: a clear error naming the address, and nothing runs.
TEST(review24_process, run_on_a_port_in_use_fails_clearly) {
  temp_dir d;
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  auto taken = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));
  auto f = write_policy(d, "");
  auto r = run_vigil({"run", f, "--metrics", taken, "--for", "2s", "--progress",
                  "0"});
  ::close(fd);
  EXPECT_NE(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find(taken), std::string::npos) << r.err;
}

// In --log-format json every line vigil writes to stderr should be a JSON
// object (what a log shipper reading JSON lines expects). The command's
// own lines ("vigil: starting ...", "vigil: metrics on ...", "vigil:
// stopping ...") stay plain text on the same stream.
TEST(review24_process, json_log_format_writes_only_json_lines) {
  temp_dir d;
  auto f = write_policy(d, "");
  auto r = run_vigil({"run", f, "--metrics", "127.0.0.1:0", "--log-format",
                  "json", "--for", "1s", "--progress", "0"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::istringstream in{r.err};
  std::string line;
  int bad = 0;
  std::string first_bad;
  while (std::getline(in, line)) {
    if (line.empty())
      continue;
    try {
      auto j = nlohmann::json::parse(line);
      (void)j;
    } catch (const std::exception&) {
      if (bad++ == 0)
        first_bad = line;
    }
  }
  EXPECT_EQ(bad, 0) << bad << " plain lines on stderr in json mode, e.g. \""
                    << first_bad << "\"";
}

// SIGINT right after a scrape that kept its connection open (Prometheus
// does): the endpoint's teardown waits for the idle connection, and the
// exit watchdog kills the process claiming that "a given-up handler is
// still stuck" -- a wrong diagnosis, after a 2 s stall.
TEST(review24_process, sigint_after_a_keep_alive_scrape_exits_cleanly) {
  temp_dir d;
  int port = free_port();
  ASSERT_GT(port, 0);
  auto f = write_policy(d, "");
  bg_process node{{VIGIL_BIN, "run", f, "--metrics",
                   "127.0.0.1:" + std::to_string(port), "--progress", "0",
                   "--for", "60s"},
                  d.path() + "/out", d.path() + "/err"};
  ASSERT_TRUE(node.started());
  ASSERT_TRUE(eventually([&] { return status_of(port, "/readyz") == 200; },
                         30s))
    << node.err();
  // A slow client: one header line every 300 ms (bounded: 15 s).
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  std::atomic<bool> stop{false};
  std::thread slow{[&] {
    std::string first = "GET /metrics HTTP/1.1\r\n";
    ::send(fd, first.data(), first.size(), MSG_NOSIGNAL);
    auto until = clk::now() + 15s;
    for (int i = 0; !stop && clk::now() < until; ++i) {
      auto line = "X-" + std::to_string(i) + ": 1\r\n";
      if (::send(fd, line.data(), line.size(), MSG_NOSIGNAL) < 0)
        break;
      auto next = clk::now() + 300ms;
      while (!stop && clk::now() < next)
        std::this_thread::sleep_for(10ms);
    }
  }};
  ASSERT_EQ(status_of(port, "/healthz"), 200);
  auto t0 = clk::now();
  node.signal(SIGINT);
  int rc = node.wait(30s);
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
                clk::now() - t0)
                .count();
  stop = true;
  slow.join();
  ::close(fd);
  EXPECT_EQ(rc, 0) << node.err();
  EXPECT_EQ(node.err().find("given-up handler is still stuck"),
            std::string::npos)
    << "after " << took << " ms: " << node.err();
  EXPECT_LT(took, 3000) << node.err();
}
