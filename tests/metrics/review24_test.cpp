// Adversarial review of issue 24 (metrics endpoint, health, meters,
// reports), in process on CAF's real scheduler with real sockets on
// 127.0.0.1. A test here that fails demonstrates a defect; its message says
// what was expected and what happened.

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>
#include <nlohmann/json.hpp>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/ostream_sink.h>

#include "support/eventually.hpp"
#include "support/gate.hpp"
#include "support/process.hpp"
#include "support/prom_text.hpp"
#include "support/temp_dir.hpp"
#include "support/test_agents.hpp"
#include "vigil/actors/detail/log.hpp"
#include "vigil/metrics/exporter.hpp"
#include "vigil/node/node.hpp"

using namespace std::chrono_literals;
using namespace vigil;
using namespace vigil::test;
using clk = std::chrono::steady_clock;

namespace {

// -- helpers ----------------------------------------------------------------

int64_t ms_since(clk::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clk::now()
                                                               - t0)
    .count();
}

node_config metered(std::string address = "127.0.0.1:0", size_t threads = 2) {
  node_config nc;
  nc.threads = threads;
  nc.metrics = std::move(address);
  return nc;
}

uint16_t port_of(const node& n) {
  auto a = n.metrics_address();
  return static_cast<uint16_t>(std::stoi(a.substr(a.rfind(':') + 1)));
}

struct reply_t {
  int status = 0; ///< 0: no answer (timeout, refused, reset)
  std::string body;
  int64_t ms = 0; ///< how long the request took
};

reply_t get(uint16_t port, const std::string& path,
            std::chrono::seconds read_timeout = 5s) {
  auto t0 = clk::now();
  httplib::Client cli{"127.0.0.1", port};
  cli.set_connection_timeout(2, 0);
  cli.set_read_timeout(read_timeout.count(), 0);
  auto res = cli.Get(path.c_str());
  reply_t r;
  r.ms = ms_since(t0);
  if (res) {
    r.status = res->status;
    r.body = res->body;
  }
  return r;
}

std::map<std::string, double> scrape(uint16_t port) {
  auto r = get(port, "/metrics");
  EXPECT_EQ(r.status, 200);
  return parse_samples(r.body);
}

int connect_to(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

/// A port free on 127.0.0.1 now (the kernel's pick, closed again).
uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0)
    return 0;
  socklen_t len = sizeof(a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

/// Whether a listening socket can be bound on 127.0.0.1:`port` now (as any
/// other program would, with SO_REUSEADDR).
bool can_listen(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0
            && ::listen(fd, 1) == 0;
  ::close(fd);
  return ok;
}

/// A client that sends an HTTP request one header line at a time, a line
/// every `every`, for at most `limit` (or until stopped): a slow client.
struct trickler {
  std::atomic<bool> stop{false};
  std::thread th;
  int fd = -1;
  trickler(uint16_t port, std::chrono::milliseconds every,
           std::chrono::milliseconds limit) {
    fd = connect_to(port);
    th = std::thread{[this, every, limit] {
      if (fd < 0)
        return;
      std::string first = "GET /metrics HTTP/1.1\r\n";
      ::send(fd, first.data(), first.size(), MSG_NOSIGNAL);
      auto until = clk::now() + limit;
      int i = 0;
      while (!stop && clk::now() < until) {
        auto line = "X-Slow-" + std::to_string(i++) + ": 1\r\n";
        if (::send(fd, line.data(), line.size(), MSG_NOSIGNAL) < 0)
          break;
        // Bounded wait for the next line, ended early by `stop`.
        auto next = clk::now() + every;
        while (!stop && clk::now() < next)
          std::this_thread::sleep_for(10ms);
      }
    }};
  }
  ~trickler() {
    stop = true;
    if (th.joinable())
      th.join();
    if (fd >= 0)
      ::close(fd);
  }
};

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

supervisor_spec one_echo(uint32_t intensity = 10) {
  supervisor_spec spec;
  spec.flags.intensity = intensity;
  spec.flags.period = 60s;
  spec.children.push_back(worker("w", "echo"));
  return spec;
}

/// Every line vigil's logger writes while the test runs.
struct captured_log {
  std::ostringstream out;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink
    = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
  captured_log() {
    detail::log().sinks().push_back(sink);
  }
  ~captured_log() {
    auto& s = detail::log().sinks();
    s.erase(std::remove(s.begin(), s.end(), sink), s.end());
    apply_log_settings(log_settings{});
  }
  std::string text() {
    sink->flush();
    return out.str();
  }
};

// A handler that holds its scheduler thread until the test opens the gate
// (bounded: 20 s at most).
gate& stuck_gate() {
  static gate g;
  return g;
}

class blocker : public agent<> {
public:
  static void define(handlers<blocker>& h) {
    h.on<Ping>(&blocker::hold);
  }
  Pong hold(context&, const Ping& p) {
    stuck_gate().pass(20s);
    Pong r;
    r.set_n(p.n());
    return r;
  }
};

registry review_registry() {
  auto r = test_registry();
  r.add<blocker>("blocker");
  return r;
}

/// `promtool check metrics` on `text`.
process_result promtool_check(const temp_dir& d, const std::string& text) {
  auto file = d.path() + "/scrape.txt";
  std::ofstream{file, std::ios::binary} << text;
  return run_process({"/bin/sh", "-c",
                      "exec /usr/bin/promtool check metrics < '" + file + "'"},
                     60s);
}

struct switches_reset {
  ~switches_reset() {
    switches::get().reset();
  }
};

/// Ends the tree `name` whatever node::stop did, so that ~node (whose
/// actor system waits for every actor) cannot hang the test.
void end_tree(node& n, const std::string& name) {
  if (auto root = n.rt()->lookup(name)) {
    caf::anon_send_exit(root, caf::exit_reason::user_shutdown);
    (void)eventually([&] { return !n.rt()->lookup(name); }, 10s);
  }
}

} // namespace

// -- 2. health under load ---------------------------------------------------

// /healthz exists for a liveness probe with a short timeout (kubelet's
// default is 1 s). The endpoint serves from a small fixed pool of threads
// (endpoint.cpp), and cpp-httplib keeps a thread on a connection while it
// waits for the first byte of a request, up to its keep-alive timeout. N
// idle TCP connections (a port scanner, a load balancer's pre-opened
// connections, stalled clients) delay a probe by N / pool * timeout.
// DISABLED, open: the same thread per connection; each idle connection
// holds a thread for up to 1 s, so 64 of them delay a probe by ~4-8 s.
TEST(review24, DISABLED_healthz_answers_while_a_few_idle_connections_are_open) {
  node n{review_registry(), metered()};
  ASSERT_FALSE(n.start("root", one_echo()));
  auto port = port_of(n);
  std::vector<int> idle;
  for (int i = 0; i < 64; ++i) {
    int fd = connect_to(port);
    ASSERT_GE(fd, 0);
    idle.push_back(fd);
  }
  auto r = get(port, "/healthz", 10s);
  for (int fd : idle)
    ::close(fd);
  EXPECT_EQ(r.status, 200) << "no answer within " << r.ms << " ms";
  EXPECT_LT(r.ms, 1000) << "/healthz took " << r.ms
                        << " ms while 64 idle connections were open (each holds a server "
                           "thread until the keep-alive timeout)";
}

// A client that connects and sends nothing is dropped within 2 s (the
// first request of a connection is awaited with cpp-httplib's keep-alive
// timeout, not the read timeout; it failed at 5 s before endpoint.cpp set
// set_keep_alive_timeout(1)).
TEST(review24, a_client_that_sends_nothing_is_dropped_within_2s) {
  node n{review_registry(), metered()};
  ASSERT_FALSE(n.start("root", one_echo()));
  int fd = connect_to(port_of(n));
  ASSERT_GE(fd, 0);
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  auto t0 = clk::now();
  char buf[16];
  auto k = ::recv(fd, buf, sizeof(buf), 0);
  auto took = ms_since(t0);
  ::close(fd);
  EXPECT_EQ(k, 0) << "the server did not close the idle connection within "
                     "10 s";
  EXPECT_LT(took, 2500) << "an idle connection was dropped after " << took
                        << " ms";
}

// A slow client (slowloris) that sends a header line every 400 ms never
// trips the read timeout, which is per read: as many of them as the pool
// has threads hold the endpoint for as long as they like. Here 16 trickle
// for 9 s and a probe with an 8 s timeout gets no answer at all.
// DISABLED, open: cpp-httplib 0.11 has a thread per connection and no
// deadline for a whole request; more slow clients than the endpoint has
// threads (8) hold every one. README: Metrics, "What it does not do".
TEST(review24, DISABLED_slow_clients_cannot_hold_the_endpoint) {
  node n{review_registry(), metered()};
  ASSERT_FALSE(n.start("root", one_echo()));
  auto port = port_of(n);
  std::vector<std::unique_ptr<trickler>> slow;
  for (int i = 0; i < 16; ++i)
    slow.push_back(std::make_unique<trickler>(port, 400ms, 9000ms));
  auto r = get(port, "/healthz", 8s);
  slow.clear();
  EXPECT_EQ(r.status, 200) << "/healthz: no answer within " << r.ms
                           << " ms while 16 slow clients trickled headers";
  EXPECT_LT(r.ms, 2000);
}

// All scheduler threads stuck in long handlers: /healthz must say 503
// within about its 1 s budget, not hang.
TEST(review24, healthz_is_503_quickly_when_every_scheduler_thread_is_stuck) {
  stuck_gate().close();
  node n{review_registry(), metered("127.0.0.1:0", 2)};
  supervisor_spec spec;
  spec.flags.intensity = 10;
  spec.children.push_back(worker("b1", "blocker"));
  spec.children.push_back(worker("b2", "blocker"));
  ASSERT_FALSE(n.start("root", std::move(spec)));
  auto port = port_of(n);
  ASSERT_EQ(get(port, "/healthz").status, 200);
  ASSERT_FALSE(n.send("root/b1", ping(1)));
  ASSERT_FALSE(n.send("root/b2", ping(2)));
  ASSERT_TRUE(stuck_gate().arrived(2, 10s));
  auto r = get(port, "/healthz", 10s);
  auto m = get(port, "/metrics", 10s);
  stuck_gate().open();
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_LT(r.ms, 2500) << "/healthz took " << r.ms << " ms";
  EXPECT_EQ(m.status, 200) << "a scrape must not need the scheduler";
  EXPECT_LT(m.ms, 1000);
  // And live again once the threads are free.
  EXPECT_TRUE(eventually([&] { return get(port, "/healthz").status == 200; },
                         10s));
}

// -- 1. lifecycle -----------------------------------------------------------

// A node stopped (destroyed) right after Prometheus scraped it with a
// keep-alive connection: ~node must not wait for that idle connection.
TEST(review24, destroying_a_node_is_not_held_by_an_idle_scraper) {
  auto n = std::make_unique<node>(review_registry(), metered());
  ASSERT_FALSE(n->start("root", one_echo()));
  auto port = port_of(*n);
  httplib::Client prom{"127.0.0.1", port};
  prom.set_keep_alive(true);
  auto res = prom.Get("/metrics");
  ASSERT_TRUE(res);
  auto t0 = clk::now();
  n.reset();
  auto took = ms_since(t0);
  prom.stop();
  EXPECT_LT(took, 2000) << "~node took " << took
                        << " ms with one idle keep-alive scrape connection";
}

// A trickling client must not keep ~node from returning (it took 9.9 s,
// as long as the client trickled, before endpoint.cpp detached the
// server thread after 500 ms).
TEST(review24, destroying_a_node_is_not_held_by_a_slow_client) {
  auto n = std::make_unique<node>(review_registry(), metered());
  ASSERT_FALSE(n->start("root", one_echo()));
  auto port = port_of(*n);
  trickler slow{port, 300ms, 8000ms};
  // The endpoint has taken the connection up once it serves another one.
  ASSERT_EQ(get(port, "/healthz").status, 200);
  auto t0 = clk::now();
  n.reset();
  auto took = ms_since(t0);
  EXPECT_LT(took, 2000) << "~node took " << took
                        << " ms while a client trickled a request";
}

// node::start failing after the endpoint started (here a child whose
// on_start throws) leaves the endpoint listening: the port stays taken by
// a node that never ran, and a second node cannot have it.
TEST(review24, a_failed_start_releases_the_metrics_port) {
  switches_reset cleanup;
  auto port = free_port();
  ASSERT_GT(port, 0);
  auto address = "127.0.0.1:" + std::to_string(port);
  switches::get().set_fail("root/bad", true);
  node n{review_registry(), metered(address)};
  supervisor_spec spec;
  spec.children.push_back(worker("ok", "echo"));
  spec.children.push_back(worker("bad", "echo"));
  auto err = n.start("root", std::move(spec));
  ASSERT_TRUE(err);
  auto live = get(port, "/healthz", 3s);
  EXPECT_EQ(live.status, 0)
    << "the node did not start, yet its endpoint answers /healthz with "
    << live.status << " " << live.body;
  EXPECT_TRUE(can_listen(port))
    << address << " stays bound after start failed: " << describe(err);
  node other{review_registry(), metered(address)};
  auto err2 = other.start("other", one_echo());
  EXPECT_FALSE(err2) << "a second node cannot take " << address
                     << " after the first one's start failed: "
                     << describe(err2);
}

// Retrying node::start after a failed start: the failed first root ends
// later (its started children stop after the error was delivered) and its
// exit hook marks the node stopping and exited. The running second tree
// then reads as not ready for good, and wait_for_exit reports an exit that
// did not happen.
TEST(review24, a_retried_start_is_ready_after_the_failed_root_ends) {
  switches_reset cleanup;
  gate slow_stop;
  switches::get().on_stop_hook = [&] { slow_stop.pass(10s); };
  switches::get().set_fail("root/c2", true);
  node n{review_registry(), metered("127.0.0.1:0", 4)};
  supervisor_spec spec;
  spec.flags.intensity = 10;
  spec.children.push_back(worker("c1", "echo"));
  spec.children.push_back(worker("c2", "echo"));
  ASSERT_TRUE(n.start("root", spec));
  // root/c1 is stopping (its on_stop waits at the gate).
  ASSERT_TRUE(slow_stop.arrived(1, 5s));
  ASSERT_FALSE(n.start("again", spec));
  auto port = port_of(n);
  EXPECT_EQ(get(port, "/readyz").status, 200);
  slow_stop.open(); // the first root finishes its shutdown now
  caf::error reason;
  bool exited = n.wait_for_exit(3s, reason);
  EXPECT_FALSE(exited) << "wait_for_exit says the running tree 'again' "
                          "exited: "
                       << describe(reason);
  auto ready = get(port, "/readyz");
  EXPECT_EQ(ready.status, 200) << "/readyz with 'again' running: "
                               << ready.body;
  EXPECT_TRUE(n.call<Pong>("again/c1", ping(1), 5s));
  // And stop() stops it (it read the stale exit and skipped the stop, and
  // ~node then waited for ever on the running tree).
  auto err = n.stop();
  bool gone = eventually([&] { return !n.rt()->lookup("again"); }, 3s);
  EXPECT_TRUE(gone) << "node::stop() returned \"" << describe(err)
                    << "\" and left the tree 'again' running";
  end_tree(n, "again");
}

// start/stop/start of one node object: ready after each start.
TEST(review24, stop_then_start_again_is_ready_each_time) {
  node n{review_registry(), metered()};
  for (int i = 0; i < 5; ++i) {
    ASSERT_FALSE(n.start("root", one_echo())) << "round " << i;
    auto port = port_of(n);
    reply_t r;
    EXPECT_TRUE(eventually(
      [&] { return (r = get(port, "/readyz")).status == 200; }, 3s))
      << "round " << i << ": " << r.status << " " << r.body;
    auto err = n.stop();
    bool gone = eventually([&] { return !n.rt()->lookup("root"); }, 3s);
    if (!gone) {
      end_tree(n, "root");
      FAIL() << "round " << i << ": node::stop() returned \""
             << describe(err) << "\" and left the tree running (/readyz "
             << "said " << r.status << ")";
    }
    EXPECT_FALSE(err) << "round " << i << ": " << describe(err);
    EXPECT_EQ(get(port, "/readyz").status, 503);
  }
}

// Scrapes and probes in flight while the node is destroyed: no crash, and
// ~node returns.
TEST(review24, requests_in_flight_while_the_node_is_destroyed) {
  auto n = std::make_unique<node>(review_registry(), metered());
  ASSERT_FALSE(n->start("root", one_echo()));
  auto port = port_of(*n);
  std::atomic<bool> stop{false};
  std::atomic<int> answered{0};
  std::vector<std::thread> ts;
  for (auto* path : {"/metrics", "/healthz", "/readyz"})
    ts.emplace_back([&, path] {
      for (int i = 0; i < 2000 && !stop; ++i) {
        httplib::Client c{"127.0.0.1", port};
        c.set_connection_timeout(1, 0);
        c.set_read_timeout(3, 0);
        if (auto res = c.Get(path))
          ++answered;
      }
    });
  ASSERT_TRUE(eventually([&] { return answered.load() > 30; }, 10s));
  auto t0 = clk::now();
  n.reset();
  auto took = ms_since(t0);
  stop = true;
  for (auto& t : ts)
    t.join();
  EXPECT_LT(took, 3000);
}

// Two nodes in one process keep their own counts.
TEST(review24, two_nodes_in_one_process_count_apart) {
  node a{review_registry(), metered()};
  node b{review_registry(), metered()};
  ASSERT_FALSE(a.start("a", one_echo()));
  ASSERT_FALSE(b.start("b", one_echo()));
  for (int i = 0; i < 5; ++i)
    ASSERT_TRUE(a.call<Pong>("a/w", ping(i), 5s));
  ASSERT_TRUE(b.call<Pong>("b/w", ping(1), 5s));
  auto key = series("vigil_envelopes_handled_total",
                    {{"agent_type", "echo"}, {"outcome", "replied"}});
  EXPECT_EQ(value_of(scrape(port_of(a)), key), 5);
  EXPECT_EQ(value_of(scrape(port_of(b)), key), 1);
}

// -- 3. counter correctness -------------------------------------------------

// vigil_agents_running is "live agents (cells) now". A cell counts until
// its C++ object is destroyed, and a caf::actor handle anywhere keeps it:
// the child_info that start_child returns (its `handle`), a handle an
// agent cached from ctx.resolve. A terminated child then counts as
// running for as long as someone holds that handle.
TEST(review24, agents_running_drops_when_a_child_is_terminated) {
  node n{review_registry(), metered()};
  supervisor_spec pool;
  pool.flags.strategy = strategy::simple_one_for_one;
  pool.flags.intensity = 10;
  pool.children.push_back(worker("t", "echo"));
  supervisor_spec root;
  root.flags.intensity = 10;
  root.children.push_back(supervisor("pool", pool));
  ASSERT_FALSE(n.start("root", std::move(root)));
  auto port = port_of(n);
  auto running = [&] {
    return value_of(scrape(port), series("vigil_agents_running",
                                         {{"agent_type", "echo"}}));
  };
  // Control: a child whose info the caller dropped.
  {
    auto info = n.start_child("root/pool", params{}, "dropped");
    ASSERT_TRUE(info) << describe(info.error());
  }
  ASSERT_TRUE(n.call<Pong>("root/pool/dropped", ping(1), 5s));
  ASSERT_TRUE(eventually([&] { return running() == 1; }, 5s));
  ASSERT_FALSE(n.terminate_child("root/pool", "dropped"));
  ASSERT_TRUE(eventually([&] { return running() == 0; }, 5s))
    << "control: " << running();
  // The same, but the caller keeps the child_info start_child returned.
  auto kept = n.start_child("root/pool", params{}, "kept");
  ASSERT_TRUE(kept) << describe(kept.error());
  ASSERT_TRUE(n.call<Pong>("root/pool/kept", ping(1), 5s));
  ASSERT_FALSE(n.terminate_child("root/pool", "kept"));
  ASSERT_TRUE(eventually(
    [&] {
      auto c = n.count_children("root/pool");
      return c && c->active == 0;
    },
    5s));
  double now = -2;
  EXPECT_TRUE(eventually([&] { return (now = running()) == 0; }, 3s))
    << "vigil_agents_running{agent_type=\"echo\"} = " << now
    << " with no echo child running (the terminated child's cell is kept "
       "alive by the caller's child_info::handle)";
}

// The same through an agent: relay caches a handle to root/sub/w; after
// root/sub is terminated, no echo runs, yet the old cell counts.
TEST(review24, agents_running_ignores_cells_held_by_cached_handles) {
  node n{review_registry(), metered()};
  supervisor_spec sub;
  sub.flags.intensity = 10;
  sub.children.push_back(worker("w", "echo"));
  supervisor_spec root;
  root.flags.intensity = 10;
  root.children.push_back(supervisor("sub", sub));
  root.children.push_back(worker("r", "relay"));
  ASSERT_FALSE(n.start("root", std::move(root)));
  auto port = port_of(n);
  Relay rl;
  rl.set_to("root/sub/w");
  rl.set_n(7);
  rl.set_timeout_ms(3000);
  ASSERT_TRUE(n.call<Pong>("root/r", rl, 5s));
  ASSERT_FALSE(n.terminate_child("root", "sub"));
  double now = -2;
  EXPECT_TRUE(eventually(
    [&] {
      now = value_of(scrape(port), series("vigil_agents_running",
                                          {{"agent_type", "echo"}}));
      return now == 0;
    },
    3s))
    << "vigil_agents_running{agent_type=\"echo\"} = " << now
    << " after root/sub (the only echo's supervisor) was terminated";
}

// Counters never go down across scrapes while cells come and go
// (simple_one_for_one churn of nested supervisors, crashes and restarts);
// gauges come back to 0; dynamic ids never become supervisor labels.
TEST(review24, counters_are_monotonic_and_labels_bounded_under_churn) {
  node n{review_registry(), metered("127.0.0.1:0", 4)};
  supervisor_spec inner;
  inner.flags.intensity = 100;
  inner.children.push_back(worker("w", "echo"));
  supervisor_spec pool;
  pool.flags.strategy = strategy::simple_one_for_one;
  pool.flags.intensity = 1000;
  pool.children.push_back(supervisor("t", inner));
  supervisor_spec root;
  root.flags.intensity = 10;
  root.children.push_back(supervisor("pool", pool));
  ASSERT_FALSE(n.start("root", std::move(root)));
  auto port = port_of(n);
  std::atomic<bool> done{false};
  std::vector<std::string> problems;
  std::set<std::string> sup_labels;
  int scrapes = 0;
  std::thread scraper{[&] {
    std::map<std::string, double> last;
    for (int i = 0; i < 5000 && !done; ++i) {
      auto r = get(port, "/metrics");
      if (r.status != 200)
        continue;
      auto m = parse_samples(r.body);
      ++scrapes;
      for (auto& [k, v] : m) {
        auto name = k.substr(0, k.find('{'));
        bool mono = name.size() > 6
                      && (name.compare(name.size() - 6, 6, "_total") == 0
                          || name.compare(name.size() - 6, 6, "_count") == 0
                          || name.compare(name.size() - 7, 7, "_bucket") == 0
                          || name.compare(name.size() - 4, 4, "_sum") == 0);
        auto i2 = last.find(k);
        if (mono && i2 != last.end() && v < i2->second
            && problems.size() < 20)
          problems.push_back(k + " went from " + std::to_string(i2->second)
                             + " to " + std::to_string(v));
        auto s = k.find("supervisor=\"");
        if (s != std::string::npos)
          sup_labels.insert(k.substr(s + 12, k.find('"', s + 12) - s - 12));
      }
      last = std::move(m);
    }
  }};
  auto churn = [&]() -> std::string {
    for (int i = 0; i < 120; ++i) {
      auto id = "c" + std::to_string(i);
      auto info = n.start_child("root/pool", params{}, id);
      if (!info)
        return "start_child: " + describe(info.error());
      auto path = "root/pool/" + id + "/w";
      if (!n.call<Pong>(path, ping(i), 5s))
        return "call " + path;
      if (i % 3 == 0) {
        (void)n.call<Pong>(path, crash("churn"), 5s);
        if (!n.call<Pong>(path, ping(i), 5s))
          return "call after crash " + path;
      }
      if (auto err = n.terminate_child("root/pool", id))
        return "terminate_child: " + describe(err);
    }
    return {};
  };
  auto failed = churn();
  done = true;
  scraper.join();
  ASSERT_TRUE(failed.empty()) << failed;
  EXPECT_GT(scrapes, 5);
  for (auto& p : problems)
    ADD_FAILURE() << p;
  for (auto& l : sup_labels)
    EXPECT_TRUE(l == "root" || l == "root/pool" || l == "root/pool/*")
      << "supervisor label \"" << l << "\"";
  std::map<std::string, double> m;
  EXPECT_TRUE(eventually(
    [&] {
      m = scrape(port);
      return value_of(m, series("vigil_agents_running",
                                {{"agent_type", "echo"}}))
               == 0
             && value_of(m, series("vigil_envelopes_queued",
                                   {{"agent_type", "echo"}}))
                  == 0;
    },
    5s))
    << value_of(m, series("vigil_agents_running", {{"agent_type", "echo"}}));
  EXPECT_EQ(value_of(m, series("vigil_restarts_total",
                               {{"supervisor", "root/pool/*"}})),
            40);
  EXPECT_EQ(value_of(m, series("vigil_envelopes_handled_total",
                               {{"agent_type", "echo"},
                                {"outcome", "replied"}})),
            160);
  EXPECT_EQ(value_of(m, series("vigil_envelopes_handled_total",
                               {{"agent_type", "echo"},
                                {"outcome", "failed"}})),
            40);
}

// -- 7. races ---------------------------------------------------------------

// Scrapes (store::usage under the resize lock) while the LMDB map fills and
// grows many times (each crashed 512 KiB message is a dead letter written
// to the data dir): no deadlock, the map size never goes down, the bytes
// used never exceed it.
TEST(review24, lmdb_gauges_while_the_map_grows) {
  temp_dir d;
  auto nc = metered("127.0.0.1:0", 2);
  nc.data_dir = d.path() + "/data";
  nc.map_size = size_t{1} << 20;
  nc.max_map_size = size_t{512} << 20;
  nc.sync = sync_mode::nosync;
  node n{review_registry(), nc};
  ASSERT_FALSE(n.start("root", one_echo(1000)));
  auto port = port_of(n);
  std::atomic<bool> done{false};
  std::vector<std::string> problems;
  int scrapes = 0;
  double first = -1;
  std::atomic<double> last_map{0};
  std::thread scraper{[&] {
    for (int i = 0; i < 20000 && !done; ++i) {
      auto r = get(port, "/metrics");
      if (r.status != 200) {
        if (problems.size() < 5)
          problems.push_back("scrape " + std::to_string(r.status) + " after "
                             + std::to_string(r.ms) + " ms");
        continue;
      }
      auto m = parse_samples(r.body);
      ++scrapes;
      auto map = value_of(m, "vigil_lmdb_map_size_bytes");
      auto used = value_of(m, "vigil_lmdb_used_bytes");
      if (first < 0)
        first = map;
      if (map < last_map && problems.size() < 20)
        problems.push_back("map size went from "
                           + std::to_string(last_map.load())
                           + " to " + std::to_string(map));
      if (used > map && problems.size() < 20)
        problems.push_back("used " + std::to_string(used) + " > map "
                           + std::to_string(map));
      last_map = map;
    }
  }};
  std::string big(512 * 1024, 'x');
  // Sent, not called: a crash nobody waits for becomes a dead letter.
  for (int i = 0; i < 96; ++i)
    ASSERT_FALSE(n.send("root/w", crash(big + std::to_string(i))));
  // Until the writer has committed them (the map grew past 32 MiB).
  bool grew = eventually([&] { return last_map >= (32 << 20); }, 10s);
  done = true;
  scraper.join();
  auto ws = n.writer_stats();
  EXPECT_TRUE(grew) << "map size " << last_map.load() << ", "
                    << n.dead_letters().size() << " dead letters, writer "
                    << "items " << (ws ? (*ws)[0] : 0) << " commits "
                    << (ws ? (*ws)[1] : 0) << " failures "
                    << (ws ? (*ws)[2] : 0);
  EXPECT_GT(scrapes, 3);
  for (auto& p : problems)
    ADD_FAILURE() << p;
  EXPECT_EQ(first, double(1 << 20));
}

// Tool-call style counters with concurrent writers: the shared histogram
// loses nothing (8 threads x 20000 observations).
TEST(review24, a_shared_histogram_counts_every_concurrent_observation) {
  detail::histogram<detail::duration_bounds.size(), true> h;
  std::vector<std::thread> ts;
  for (int t = 0; t < 8; ++t)
    ts.emplace_back([&h, t] {
      for (int i = 0; i < 20000; ++i)
        h.observe(static_cast<uint64_t>((i * 7919 + t) % 20'000'000'000ULL),
                  detail::duration_bounds);
    });
  for (auto& t : ts)
    t.join();
  auto c = h.read();
  uint64_t total = 0;
  for (auto x : c.buckets)
    total += x;
  EXPECT_EQ(total, 160000u);
}

// The board's enroll/retire against by_type from other threads: the totals
// never go down and end right.
TEST(review24, meter_board_totals_are_monotonic_under_enroll_and_retire) {
  detail::meter_board b;
  b.enable();
  static const std::string type = "t";
  std::atomic<bool> done{false};
  std::vector<std::string> problems;
  std::thread reader{[&] {
    uint64_t last = 0;
    for (int i = 0; i < 200000 && !done; ++i) {
      auto all = b.by_type();
      auto it = all.find(type);
      uint64_t now = it == all.end() ? 0 : it->second.handled[0];
      if (now < last && problems.size() < 10)
        problems.push_back(std::to_string(last) + " -> "
                           + std::to_string(now));
      last = now;
    }
  }};
  std::vector<std::thread> cells;
  for (int t = 0; t < 4; ++t)
    cells.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) {
        auto m = std::make_unique<detail::cell_meter>();
        detail::queue_gauge q{10, overflow_policy::shed};
        b.enroll(&type, m.get(), &q);
        for (int k = 0; k < 5; ++k)
          m->observe(detail::handling::replied, std::chrono::microseconds{k});
        b.retire(m.get());
      }
    });
  for (auto& c : cells)
    c.join();
  done = true;
  reader.join();
  for (auto& p : problems)
    ADD_FAILURE() << "handled went " << p;
  auto all = b.by_type();
  EXPECT_EQ(all[type].handled[0], 4u * 2000u * 5u);
  EXPECT_EQ(all[type].running, 0u);
}

// A child supervisor that escalates, restarted by its parent: ready again.
TEST(review24, ready_again_after_an_escalation_the_parent_handles) {
  node n{review_registry(), metered()};
  supervisor_spec sub = one_echo(1);
  supervisor_spec root;
  root.flags.intensity = 10;
  root.flags.period = 60s;
  root.children.push_back(supervisor("sub", sub));
  ASSERT_FALSE(n.start("root", std::move(root)));
  auto port = port_of(n);
  (void)n.call<Pong>("root/sub/w", crash("one"), 5s);
  ASSERT_TRUE(n.call<Pong>("root/sub/w", ping(1), 5s));
  (void)n.call<Pong>("root/sub/w", crash("two"), 5s);
  std::map<std::string, double> m;
  ASSERT_TRUE(eventually(
    [&] {
      m = scrape(port);
      return value_of(m, series("vigil_escalations_total",
                                {{"supervisor", "root/sub"}}))
             == 1;
    },
    5s));
  reply_t r;
  EXPECT_TRUE(eventually(
    [&] { return (r = get(port, "/readyz")).status == 200; }, 5s))
    << r.body;
  EXPECT_TRUE(n.call<Pong>("root/sub/w", ping(2), 5s));
  EXPECT_EQ(value_of(scrape(port), series("vigil_restarts_total",
                                          {{"supervisor", "root"}})),
            1);
}

// Degraded children of a supervisor that is then restarted: the gauge
// comes back to 0.
TEST(review24, degraded_gauge_returns_to_zero_after_its_supervisor_restarts) {
  node n{review_registry(), metered()};
  supervisor_spec sub;
  sub.flags.intensity = 1;
  sub.flags.period = 60s;
  auto c = worker("w", "echo").with_failure(on_failure::degrade);
  Pong fb;
  fb.set_from("fallback");
  c.degrade.set_fallback(fb);
  c.degrade.probe_min = 60s;
  c.degrade.probe_max = 60s;
  sub.children.push_back(std::move(c));
  supervisor_spec root;
  root.flags.intensity = 10;
  root.children.push_back(supervisor("sub", sub));
  ASSERT_FALSE(n.start("root", std::move(root)));
  auto port = port_of(n);
  (void)n.call<Pong>("root/sub/w", crash("one"), 5s);
  ASSERT_TRUE(n.call<Pong>("root/sub/w", ping(1), 5s));
  (void)n.call<Pong>("root/sub/w", crash("two"), 5s);
  auto degraded = [&] {
    return value_of(scrape(port), series("vigil_degraded_children",
                                         {{"supervisor", "root/sub"}}));
  };
  ASSERT_TRUE(eventually([&] { return degraded() == 1; }, 5s));
  ASSERT_FALSE(n.terminate_child("root", "sub"));
  EXPECT_TRUE(eventually([&] { return degraded() == 0; }, 3s))
    << degraded();
  ASSERT_TRUE(n.restart_child("root", "sub"));
  EXPECT_EQ(degraded(), 0);
  auto r = n.call<Pong>("root/sub/w", ping(3), 5s);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->degraded);
}

// -- 4. labels --------------------------------------------------------------

// Quotes, backslashes, newlines and non-ASCII in an agent type name and a
// supervisor id: the scrape is still valid text format.
TEST(review24, odd_label_values_pass_promtool) {
  temp_dir d;
  auto types = review_registry();
  const std::string odd_type = "ty\"pe\\x\nü";
  types.add<echo>(odd_type);
  node n{std::move(types), metered()};
  supervisor_spec inner;
  inner.flags.intensity = 10;
  inner.children.push_back(worker("w", odd_type));
  supervisor_spec root;
  root.flags.intensity = 10;
  root.children.push_back(supervisor("s\"q\\b\nü", inner));
  ASSERT_FALSE(n.start("root", std::move(root)));
  auto path = std::string{"root/s\"q\\b\nü/w"};
  (void)n.call<Pong>(path, crash("x"), 5s);
  ASSERT_TRUE(n.call<Pong>(path, ping(1), 5s));
  auto r = get(port_of(n), "/metrics");
  ASSERT_EQ(r.status, 200);
  auto check = promtool_check(d, r.body);
  EXPECT_EQ(check.exit_code, 0) << check.out << check.err;
}

// A child id is any string without '/' (check.cpp), so it may hold bytes
// that are not UTF-8. As a supervisor label it makes the whole scrape
// invalid: promtool (and Prometheus) reject it, and every series of the
// node is lost, not just that one.
TEST(review24, a_non_utf8_supervisor_id_does_not_break_the_scrape) {
  temp_dir d;
  node n{review_registry(), metered()};
  supervisor_spec inner;
  inner.flags.intensity = 10;
  inner.children.push_back(worker("w", "echo"));
  supervisor_spec root;
  root.flags.intensity = 10;
  root.children.push_back(supervisor("bad\xff", inner));
  ASSERT_FALSE(n.start("root", std::move(root)));
  auto r = get(port_of(n), "/metrics");
  ASSERT_EQ(r.status, 200);
  auto check = promtool_check(d, r.body);
  EXPECT_EQ(check.exit_code, 0)
    << "promtool rejects the scrape: " << check.out << check.err;
}

// -- 5. reports -------------------------------------------------------------

// JSON lines parse whatever the reason holds: quotes, newlines,
// backslashes, bytes that are not UTF-8, text that looks like a report.
TEST(review24, json_reports_parse_for_hostile_reasons) {
  captured_log log;
  auto nc = metered();
  log_settings ls;
  ls.format = log_format::json;
  nc.log = ls;
  node n{review_registry(), nc};
  ASSERT_FALSE(n.start("root", one_echo(100)));
  std::vector<std::string> whys = {
    "quote \" and \\ backslash", "new\nline\r\n",
    "{\"report\":\"fake\"}", "tab\tand\x01control", "ünï\u2028code"};
  for (auto& w : whys) {
    (void)n.call<Pong>("root/w", crash(w), 5s);
    ASSERT_TRUE(n.call<Pong>("root/w", ping(1), 5s));
  }
  ASSERT_FALSE(n.stop());
  std::istringstream in{log.text()};
  std::string line;
  int crashes = 0, restarts = 0;
  while (std::getline(in, line)) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "not JSON: " << line << " (" << e.what() << ")";
      continue;
    }
    if (!j.contains("report"))
      continue;
    crashes += j["report"] == "crash";
    restarts += j["report"] == "restart";
    for (auto* f : {"supervisor", "context", "reason", "offender", "attempt"})
      EXPECT_TRUE(j.contains(f)) << f << ": " << line;
  }
  EXPECT_EQ(crashes, 5);
  EXPECT_EQ(restarts, 5);
}

// Bytes that are not UTF-8 in a path (an id may hold any byte but '/')
// end up in the offender, supervisor and reason of crash, restart and
// escalation reports: still one JSON object per line. The child crashes
// by itself: its on_start asks root/peer and its reply callback throws.
TEST(review24, json_reports_parse_for_non_utf8_paths) {
  switches_reset cleanup;
  captured_log log;
  auto nc = metered();
  nc.log = log_settings{log_format::json, spdlog::level::info};
  const std::string bad = "bad\xff\xfe";
  switches::start_call sc;
  sc.to = "root/peer";
  sc.timeout_ms = 2000;
  sc.how = switches::start_call::throw_on_reply;
  {
    std::lock_guard<std::mutex> g{switches::get().mtx};
    switches::get().start_calls["root/" + bad + "/w"] = sc;
  }
  node n{review_registry(), nc};
  supervisor_spec inner = one_echo(1);
  supervisor_spec root;
  root.flags.intensity = 1;
  root.flags.period = 60s;
  root.children.push_back(worker("peer", "echo"));
  root.children.push_back(supervisor(bad, inner));
  (void)n.start("root", std::move(root));
  caf::error reason;
  (void)n.wait_for_exit(10s, reason);
  (void)n.stop();
  std::istringstream in{log.text()};
  std::string line;
  std::set<std::string> kinds;
  while (std::getline(in, line)) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "not JSON: " << line << " (" << e.what() << ")";
      continue;
    }
    if (j.contains("report"))
      kinds.insert(j["report"].get<std::string>());
  }
  EXPECT_EQ(kinds.count("restart"), 1u) << log.text();
  EXPECT_EQ(kinds.count("escalation"), 1u) << log.text();
}

// OTP writes a crash report for every process that exits abnormally; the
// supervisor's restart report follows. vigil emits "crash" only from
// cell::after_failure (a handler that threw or ran past its deadline).
// A child that fails anywhere else -- a request's reply callback that
// throws, ctx.stop(error) -- is restarted with a restart report but no
// crash report (cell::end_instance sends exit_report without one).
TEST(review24, every_failed_child_gets_a_crash_report) {
  switches_reset cleanup;
  captured_log log;
  auto nc = metered();
  nc.log = log_settings{log_format::json, spdlog::level::info};
  switches::start_call sc;
  sc.to = "root/peer";
  sc.timeout_ms = 2000;
  sc.how = switches::start_call::throw_on_reply;
  {
    std::lock_guard<std::mutex> g{switches::get().mtx};
    switches::get().start_calls["root/cb"] = sc;
  }
  node n{review_registry(), nc};
  supervisor_spec root;
  root.flags.intensity = 100;
  root.flags.period = 60s;
  root.children.push_back(worker("peer", "echo"));
  root.children.push_back(worker("cb", "echo"));
  root.children.push_back(worker("stops", "echo"));
  ASSERT_FALSE(n.start("root", std::move(root)));
  Exit ex;
  ex.set_how(2); // ctx.stop(handler_failed)
  (void)n.call<Pong>("root/stops", ex, 5s);
  auto reports = [&] {
    std::map<std::string, std::set<std::string>> by_offender;
    std::istringstream in{log.text()};
    std::string line;
    while (std::getline(in, line)) {
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (!j.is_discarded() && j.contains("report"))
        by_offender[j["offender"].get<std::string>()].insert(
          j["report"].get<std::string>());
    }
    return by_offender;
  };
  std::map<std::string, std::set<std::string>> seen;
  ASSERT_TRUE(eventually(
    [&] {
      seen = reports();
      return seen["root/cb"].count("restart") && seen["root/stops"].count(
                                                   "restart");
    },
    10s))
    << log.text();
  {
    std::lock_guard<std::mutex> g{switches::get().mtx};
    switches::get().start_calls.clear(); // no more restarts
  }
  EXPECT_EQ(seen["root/cb"].count("crash"), 1u)
    << "root/cb (its reply callback threw) was restarted without a crash "
       "report:\n"
    << log.text();
  EXPECT_EQ(seen["root/stops"].count("crash"), 1u)
    << "root/stops (ctx.stop with an error) was restarted without a crash "
       "report";
}

// A node destroyed while a slow client holds a connection leaves the
// endpoint's server thread behind (detached), owning the endpoint's state:
// the health checks, which hold a caf::actor of the node's actor system.
// That thread ends once the client goes, after the actor system is gone;
// the process must survive it and the thread must end.
TEST(review24, a_slow_client_outliving_its_node_is_harmless) {
  auto tasks = [] {
    size_t k = 0;
    for (auto& e : std::filesystem::directory_iterator{"/proc/self/task"}) {
      (void)e;
      ++k;
    }
    return k;
  };
  auto before = tasks();
  {
    auto n = std::make_unique<node>(review_registry(), metered());
    ASSERT_FALSE(n->start("root", one_echo()));
    auto port = port_of(*n);
    auto slow = std::make_unique<trickler>(port, 300ms, 2500ms);
    ASSERT_EQ(get(port, "/healthz").status, 200);
    n.reset(); // returns after 500 ms, leaving the server thread
    slow.reset(); // the client goes; the server thread ends on its own
  }
  size_t now = 0;
  EXPECT_TRUE(eventually([&] { return (now = tasks()) <= before; }, 10s))
    << now << " threads, " << before << " before the node";
  // Still a working process: another node runs and serves.
  node m{review_registry(), metered()};
  ASSERT_FALSE(m.start("root", one_echo()));
  EXPECT_EQ(get(port_of(m), "/healthz").status, 200);
}

// log_settings' text "keeps the logger's formatter, so a program's own
// pattern stays" (report.hpp). After json and back to text, the program's
// pattern is gone: spdlog's default pattern replaces it.
// DISABLED, documented (report.hpp): spdlog sinks do not hand back their
// formatter, so text after json is spdlog's default pattern.
TEST(review24, DISABLED_text_after_json_keeps_the_programs_pattern) {
  captured_log log;
  detail::log().set_pattern("%v");
  apply_log_settings(log_settings{log_format::json, spdlog::level::info});
  apply_log_settings(log_settings{log_format::text, spdlog::level::info});
  emit(report{"restart", "root", "child_terminated", "why", "root/w", 1,
              nullptr});
  auto out = log.text();
  detail::log().set_formatter(std::make_unique<spdlog::pattern_formatter>());
  EXPECT_EQ(out.rfind("vigil: report restart", 0), 0u)
    << "the line under the program's pattern \"%v\": " << out;
}

// In json, "one JSON object per line" (report.hpp) holds only for the
// sinks the logger had when the node applied its settings: spdlog's
// set_formatter sets each current sink's formatter, and a sink added later
// (a program adding a file sink after making its node) writes spdlog's
// text pattern, reports included.
// DISABLED, documented (report.hpp): spdlog applies a logger's formatter
// to the sinks it has; a sink added later keeps its own.
TEST(review24, DISABLED_a_sink_added_after_json_writes_json) {
  node n{review_registry(), [] {
           auto nc = metered();
           nc.log = log_settings{log_format::json, spdlog::level::info};
           return nc;
         }()};
  captured_log log; // added after the node applied json
  emit(report{"restart", "root", "child_terminated", "why", "root/w", 1,
              nullptr});
  auto out = log.text();
  auto j = nlohmann::json::parse(out, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << "not JSON: " << out;
}

// Text reports put the supervisor and offender paths in unquoted: an id
// with a newline (allowed: only '/' is refused) splits a report in two
// lines, the second of which forges the start of another line.
TEST(review24, a_text_report_stays_on_one_line) {
  captured_log log;
  auto nc = metered();
  nc.log = log_settings{log_format::text, spdlog::level::info};
  node n{review_registry(), nc};
  supervisor_spec inner = one_echo(10);
  supervisor_spec root;
  root.flags.intensity = 10;
  root.children.push_back(
    supervisor("x\n[2030-01-01 00:00:00.000] [vigil] [info] forged", inner));
  ASSERT_FALSE(n.start("root", std::move(root)));
  auto path = std::string{"root/x\n[2030-01-01 00:00:00.000] [vigil] [info] "
                          "forged/w"};
  (void)n.call<Pong>(path, crash("boom"), 5s);
  ASSERT_TRUE(n.call<Pong>(path, ping(1), 5s));
  auto out = log.text();
  std::istringstream in{out};
  std::string line;
  bool crash_seen = false;
  while (std::getline(in, line)) {
    if (line.find("vigil: report crash") != std::string::npos) {
      crash_seen = true;
      EXPECT_NE(line.find("reason="), std::string::npos)
        << "a crash report split over lines: " << line;
    }
    EXPECT_NE(line.rfind("[2030-01-01", 0), 0u)
      << "a forged log line: " << line;
  }
  EXPECT_TRUE(crash_seen) << out;
}

// -- 6. bad input -----------------------------------------------------------

long rss_kib() {
  std::ifstream in{"/proc/self/status"};
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0)
      return std::stol(line.substr(6));
  return -1;
}

// Nothing on the endpoint takes a body, and set_payload_max_length(64 KiB)
// is meant to refuse one "before it is read" (endpoint.cpp). A chunked
// body has no Content-Length, and cpp-httplib 0.11 checks the limit only
// against Content-Length: a POST with chunked transfer encoding is read
// into memory whole. Here 128 MiB of chunks grow the node's RSS by about
// that much (one client; a few make the process run out of memory).
TEST(review24, a_chunked_request_body_is_not_buffered_in_memory) {
  node n{review_registry(), metered()};
  ASSERT_FALSE(n.start("root", one_echo()));
  auto port = port_of(n);
  int fd = connect_to(port);
  ASSERT_GE(fd, 0);
  timeval tv{0, 500000};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  std::string head = "POST /metrics HTTP/1.1\r\nHost: x\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n";
  ASSERT_GT(::send(fd, head.data(), head.size(), MSG_NOSIGNAL), 0);
  auto before = rss_kib();
  char hex[32];
  std::snprintf(hex, sizeof(hex), "%x\r\n", 1 << 20);
  std::string chunk = std::string{hex} + std::string(1 << 20, 'x') + "\r\n";
  size_t sent = 0;
  auto t0 = clk::now();
  // Up to 128 chunks of 1 MiB (bounded in bytes and in time).
  for (int i = 0; i < 128 && ms_since(t0) < 20000; ++i) {
    size_t off = 0;
    while (off < chunk.size() && ms_since(t0) < 20000) {
      auto k = ::send(fd, chunk.data() + off, chunk.size() - off,
                      MSG_NOSIGNAL);
      if (k <= 0)
        break;
      off += static_cast<size_t>(k);
    }
    if (off < chunk.size())
      break;
    sent += off;
  }
  // Let the server take in what is in flight, then look at the RSS.
  long grown = 0;
  (void)eventually(
    [&] {
      grown = rss_kib() - before;
      return grown > 100 * 1024;
    },
    2s);
  ::close(fd);
  EXPECT_LT(grown, 32 * 1024)
    << "the node's RSS grew by " << grown / 1024 << " MiB while a client "
    << "sent " << (sent >> 20) << " MiB of a chunked body to POST /metrics";
  EXPECT_EQ(get(port, "/healthz").status, 200);
}

TEST(review24, other_methods_and_garbage_get_an_error) {
  node n{review_registry(), metered()};
  ASSERT_FALSE(n.start("root", one_echo()));
  auto port = port_of(n);
  httplib::Client c{"127.0.0.1", port};
  c.set_read_timeout(5, 0);
  auto post = c.Post("/metrics", "x", "text/plain");
  ASSERT_TRUE(post);
  EXPECT_GE(post->status, 400);
  auto del = c.Delete("/healthz");
  ASSERT_TRUE(del);
  EXPECT_GE(del->status, 400);
  int fd = connect_to(port);
  ASSERT_GE(fd, 0);
  std::string junk = "\x16\x03\x01\x02\x00garbage\r\n\r\n";
  ::send(fd, junk.data(), junk.size(), MSG_NOSIGNAL);
  ::shutdown(fd, SHUT_WR);
  char buf[256];
  timeval tv{3, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  (void)::recv(fd, buf, sizeof(buf), 0);
  ::close(fd);
  EXPECT_EQ(get(port, "/healthz").status, 200);
}
