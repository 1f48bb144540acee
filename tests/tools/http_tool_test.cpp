// The `http` tool (tools/vigil/tools/http.hpp) on a real node, against the
// counting HTTP service on 127.0.0.1: the mapping of a 2xx body, each
// status class, Retry-After, the idempotency key across retries, refused
// connections, attempt timeouts, https with a CA made here, and secrets
// that arrive in their header and appear in no text.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include "support/counting_http_server.hpp"
#include "support/eventually.hpp"
#include "support/temp_dir.hpp"
#include "support/test_tls.hpp"
#include "support/tool_fixture.hpp"
#include "vigil/actors/detail/log.hpp"
#include "vigil/node/node.hpp"
#include "vigil/tools/http.hpp"

using namespace vigil;
using namespace vigil::test;
using namespace std::chrono_literals;

namespace {

/// Answers {"n": <the path's last segment>, "from": "server"}.
http_answer answer_n(const httplib::Request& r) {
  auto n = r.path.substr(r.path.rfind('/') + 1);
  return {200, R"({"n":")" + n + R"(","from":"server","extra":[1,2]})"};
}

http_spec ping_spec(const std::string& base, std::string method = "GET") {
  http_spec s;
  s.method = std::move(method);
  s.url = base + "/ping/{n}";
  s.request_type = "vigil.test.Ping";
  s.reply_type = "vigil.test.Pong";
  return s;
}

/// Tool "svc" made from `s`: 3 attempts 1-5 ms apart, no breaker.
tool_decl http_decl(const http_spec& s,
                    side_effect fx = side_effect::read_only) {
  tool_decl d;
  d.name = "svc";
  d.type = "http";
  d.effect = fx;
  d.policy.timeout = 5s;
  d.policy.attempt_timeout = 2s;
  d.policy.retry.initial = 1ms;
  d.policy.retry.max = 5ms;
  d.policy.breaker.enabled = false;
  std::vector<tool_problem> problems;
  d.impl = make_http_tool("svc", s, problems);
  for (auto& p : problems)
    ADD_FAILURE() << p.field << ": " << p.what;
  return d;
}

/// On Ping: calls tool "svc" and forgets the answer, except an error, which
/// it sends itself as Crash{describe(error)} and refuses (tool_failure): an
/// async envelope refused is a dead letter with the refusal's text.
class forwarder : public agent<> {
public:
  static void define(handlers<forwarder>& h) {
    h.on<Ping>(&forwarder::ping);
    h.on<Crash>(&forwarder::refuse);
  }

  void ping(context& ctx, const Ping& p) {
    ctx.call_tool<Pong>(
      "svc", p, tool_options{}, [](Pong) {},
      [&ctx](const caf::error& e) {
        Crash c;
        c.set_why(describe(e));
        ctx.send(ctx.path(), c);
      });
  }

  void refuse(context&, const Crash& c) {
    throw tool_failure(make_error(errc::tool_unavailable, c.why()));
  }
};

/// A node with tool `d`, a tool_caller "root/c" and a forwarder "root/f".
std::unique_ptr<node> start_node(tool_decl d) {
  registry types;
  types.add<tool_caller>("tool_caller");
  types.add<forwarder>("forwarder");
  node_config cfg;
  cfg.tools.push_back(std::move(d));
  auto n = std::make_unique<node>(std::move(types), cfg);
  child_spec c;
  c.id = "c";
  c.agent = "tool_caller";
  c.params = {{"tool", "svc"}};
  child_spec f;
  f.id = "f";
  f.agent = "forwarder";
  supervisor_spec spec;
  spec.flags.intensity = 1000;
  spec.children = {c, f};
  if (auto err = n->start("root", std::move(spec)))
    ADD_FAILURE() << describe(err);
  return n;
}

/// A port on 127.0.0.1 where nothing listens: bound, then closed.
int closed_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), len);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

} // namespace

TEST(http_tool_test, maps_a_2xx_body_onto_the_reply) {
  counting_http_server svc;
  svc.route("/ping/*", answer_n);
  auto n = start_node(http_decl(ping_spec(svc.url())));
  auto r = n->call<Pong>("root/c", ping(7), 5s);
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_EQ(r->value.n(), 7);
  EXPECT_EQ(r->value.from(), "server"); // and "extra" ignored
  auto reqs = svc.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].method, "GET");
  EXPECT_EQ(reqs[0].target, "/ping/7");
  EXPECT_EQ(reqs[0].body, "");
  EXPECT_EQ(reqs[0].header("Accept"), "application/json");
}

TEST(http_tool_test, posts_the_request_as_json_and_maps_a_sub_object) {
  counting_http_server svc;
  svc.route("/orders", [](const httplib::Request& r) {
    return http_answer{201, R"({"data":{"n":"42","from":)"
                              + nlohmann::json(r.body).dump() + R"(}})"};
  });
  auto s = ping_spec(svc.url(), "POST");
  s.url = svc.url("/orders");
  s.response.path = "data";
  auto n = start_node(http_decl(s, side_effect::idempotent_write));
  auto r = n->call<Pong>("root/c", ping(42), 5s);
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_EQ(r->value.n(), 42);
  // int64 is a string in Protobuf's JSON.
  EXPECT_EQ(r->value.from(), R"({"n":"42"})");
  auto reqs = svc.requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].method, "POST");
  EXPECT_EQ(reqs[0].body, R"({"n":"42"})");
  EXPECT_EQ(reqs[0].header("Content-Type"), "application/json");
}

TEST(http_tool_test, a_503_is_retried_under_the_same_idempotency_key) {
  counting_http_server svc;
  svc.route("/ping/*", answer_n);
  svc.script("/ping/*", {{503, R"({"error":"busy"})"}});
  auto n = start_node(http_decl(ping_spec(svc.url(), "PUT"),
                                side_effect::idempotent_write));
  auto r = n->call<Pong>("root/c", ping(3), 5s);
  ASSERT_TRUE(r) << describe(r.error());
  auto reqs = svc.requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[0].status, 503);
  EXPECT_EQ(reqs[1].status, 200);
  // Both attempts carry the call's key, derived from the caller's path and
  // the envelope it handled: one key, executed twice, applied once.
  EXPECT_FALSE(reqs[0].key.empty());
  EXPECT_EQ(reqs[0].key.rfind("root/c:", 0), 0u) << reqs[0].key;
  EXPECT_EQ(reqs[0].key, reqs[1].key);
  EXPECT_EQ(svc.executions(reqs[0].key), 2u);
  EXPECT_EQ(svc.applied(), 1u);
}

TEST(http_tool_test, the_idempotency_key_of_the_call_is_sent_on_each_attempt) {
  counting_http_server svc;
  svc.route("/ping/*", answer_n);
  svc.script("/ping/*", {{500, ""}});
  std::vector<tool_problem> problems;
  auto tool = make_http_tool("svc", ping_spec(svc.url(), "POST"), problems);
  ASSERT_TRUE(tool) << problems.front().what;
  // Its calls wait on the network: its pool's idle threads do not spin.
  EXPECT_TRUE(tool->waits_on_io);
  std::string key = "root/c:17:0";
  // On a thread of its own, as a tool's pool runs it: its connection
  // closes when the thread ends.
  std::thread pool_thread{[&] {
    std::atomic<bool> cancelled{false};
    std::string caller = "root/c";
    Ping p;
    p.set_n(5);
    for (uint32_t attempt = 1; attempt <= 2; ++attempt) {
      tool_call call{cancelled, std::chrono::steady_clock::now() + 2s,
                     attempt, caller, &key};
      auto out = tool->call(p, call);
      EXPECT_EQ(out.error.has_value(), attempt == 1);
    }
    tool_call keyless{cancelled, std::chrono::steady_clock::now() + 2s, 1,
                      caller};
    EXPECT_FALSE(tool->call(p, keyless).error);
  }};
  pool_thread.join();
  auto reqs = svc.requests();
  ASSERT_EQ(reqs.size(), 3u);
  EXPECT_EQ(reqs[0].key, key);
  EXPECT_EQ(reqs[1].key, key);
  EXPECT_EQ(reqs[2].headers.count("Idempotency-Key"), 0u);
  EXPECT_EQ(svc.executions(key), 2u);
  EXPECT_EQ(svc.applied(), 1u);
}

TEST(http_tool_test, a_seeded_flaky_service_fails_the_same_calls_each_run) {
  // Each call retries on its own thread until it succeeds (3 attempts at
  // most), under its own key: the service's records say how many times
  // each key was executed, and the seed makes the same run twice.
  auto run = [](std::vector<int>& statuses) {
    counting_http_server svc;
    svc.route("/ping/*", answer_n);
    svc.failures("/ping/*", 0.4, 7);
    std::vector<tool_problem> problems;
    auto tool = make_http_tool("svc", ping_spec(svc.url(), "PUT"), problems);
    ASSERT_TRUE(tool);
    std::thread caller{[&] {
      std::atomic<bool> cancelled{false};
      std::string path = "root/c";
      for (int i = 1; i <= 30; ++i) {
        auto key = "k" + std::to_string(i);
        Ping p;
        p.set_n(i);
        for (uint32_t a = 1; a <= 3; ++a) {
          tool_call call{cancelled, std::chrono::steady_clock::now() + 2s, a,
                         path, &key};
          if (!tool->call(p, call).error)
            break;
        }
      }
    }};
    caller.join();
    for (auto& r : svc.requests())
      statuses.push_back(r.status);
    EXPECT_EQ(svc.applied(), 30u);
    EXPECT_LE(svc.max_executions_per_key(), 3u);
    EXPECT_GT(svc.max_executions_per_key(), 1u);
  };
  std::vector<int> first, second;
  run(first);
  run(second);
  EXPECT_EQ(first, second);
  EXPECT_GT(std::count(first.begin(), first.end(), 503), 5);
}

TEST(http_tool_test, a_429_waits_for_its_retry_after) {
  counting_http_server svc;
  svc.route("/ping/*", answer_n);
  svc.script("/ping/*", {{429, R"({"error":"slow down"})", "application/json",
                          "1"}});
  auto n = start_node(http_decl(ping_spec(svc.url())));
  auto r = n->call<Pong>("root/c", ping(1), 5s);
  ASSERT_TRUE(r) << describe(r.error());
  auto reqs = svc.requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[0].status, 429);
  // Its backoff alone would be 1-5 ms.
  EXPECT_GE(reqs[1].at - reqs[0].at, 1s);
}

TEST(http_tool_test, a_400_is_permanent_and_not_retried) {
  counting_http_server svc;
  svc.route("/ping/*", [](const httplib::Request&) {
    return http_answer{400, R"({"error":"n must be even"})"};
  });
  auto n = start_node(http_decl(ping_spec(svc.url())));
  auto r = n->call<Pong>("root/c", ping(1), 5s);
  ASSERT_FALSE(r);
  EXPECT_TRUE(is(r.error(), errc::tool_rejected)) << describe(r.error());
  auto text = describe(r.error());
  EXPECT_NE(text.find("GET " + svc.url("/ping/1") + ": 400"),
            std::string::npos) << text;
  EXPECT_NE(text.find("n must be even"), std::string::npos) << text;
  EXPECT_EQ(svc.count(), 1u);
}

TEST(http_tool_test, a_corrupt_body_is_invalid_output) {
  counting_http_server svc;
  svc.route("/ping/*", [](const httplib::Request&) {
    return http_answer{200, "{\"n\": oops"};
  });
  auto d = http_decl(ping_spec(svc.url()));
  d.policy.retry.retry_invalid_output = false;
  auto n = start_node(d);
  auto r = n->call<Pong>("root/c", ping(1), 5s);
  ASSERT_FALSE(r);
  EXPECT_TRUE(is(r.error(), errc::invalid_output)) << describe(r.error());
  auto text = describe(r.error());
  EXPECT_NE(text.find("does not map onto vigil.test.Pong"), std::string::npos)
    << text;
  EXPECT_NE(text.find("body: {\"n\": oops"), std::string::npos) << text;
  EXPECT_EQ(svc.count(), 1u);
}

TEST(http_tool_test, a_refused_connection_is_retried_even_for_a_write) {
  // Nothing was sent: retried although a repeat of the write would not be
  // safe, up to the policy's 3 attempts.
  auto s = ping_spec("http://127.0.0.1:" + std::to_string(closed_port()),
                     "POST");
  auto n = start_node(http_decl(s, side_effect::non_idempotent_write));
  auto r = n->call<Pong>("root/c", ping(1), 5s);
  ASSERT_FALSE(r);
  EXPECT_TRUE(is(r.error(), errc::tool_unavailable)) << describe(r.error());
  EXPECT_NE(describe(r.error()).find("could not connect"), std::string::npos)
    << describe(r.error());
  EXPECT_EQ(n->rt()->find_tool("svc")->stats().executions.load(), 3u);
}

TEST(http_tool_test, a_503_of_a_non_idempotent_write_is_not_retried) {
  // The contrast: the request reached the service, so no repeat.
  counting_http_server svc;
  svc.route("/ping/*", answer_n);
  svc.script("/ping/*", {{503, ""}});
  auto n = start_node(http_decl(ping_spec(svc.url(), "POST"),
                                side_effect::non_idempotent_write));
  auto r = n->call<Pong>("root/c", ping(1), 5s);
  ASSERT_FALSE(r);
  EXPECT_TRUE(is(r.error(), errc::tool_unavailable)) << describe(r.error());
  EXPECT_EQ(svc.count(), 1u);
}

TEST(http_tool_test, a_slow_server_times_the_attempt_out) {
  counting_http_server svc;
  svc.route("/ping/*", answer_n);
  svc.latency("/ping/*", 5s);
  auto d = http_decl(ping_spec(svc.url()));
  d.policy.attempt_timeout = 300ms;
  d.policy.retry.max_attempts = 1;
  auto n = start_node(d);
  auto t0 = std::chrono::steady_clock::now();
  auto r = n->call<Pong>("root/c", ping(1), 5s);
  ASSERT_FALSE(r);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_TRUE(is(r.error(), errc::tool_unavailable)
              || is(r.error(), errc::deadline_exceeded))
    << describe(r.error());
  // The request's own timeout (the attempt's deadline) gave the pool
  // thread back long before the service's 5 s.
  auto* tool = n->rt()->find_tool("svc");
  EXPECT_TRUE(eventually([&] { return tool->in_use() == 0; }, 2s));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 4s);
  EXPECT_EQ(svc.count(), 1u);
}

TEST(http_tool_test, https_verifies_the_server_against_the_ca_file) {
  temp_dir dir;
  auto tls = make_test_tls(dir.path());
  counting_http_server svc{tls.cert_file, tls.key_file};
  svc.route("/ping/*", answer_n);
  auto s = ping_spec(svc.url());
  s.ca_file = tls.ca_file;
  {
    auto n = start_node(http_decl(s));
    auto r = n->call<Pong>("root/c", ping(9), 5s);
    ASSERT_TRUE(r) << describe(r.error());
    EXPECT_EQ(r->value.n(), 9);
  }
  EXPECT_EQ(svc.count(), 1u);
  // Without the CA, the system's CAs do not know this server: refused at
  // the handshake, before any request, and not retried.
  s.ca_file.clear();
  auto n = start_node(http_decl(s));
  auto r = n->call<Pong>("root/c", ping(10), 5s);
  ASSERT_FALSE(r);
  EXPECT_TRUE(is(r.error(), errc::tool_rejected)) << describe(r.error());
  EXPECT_NE(describe(r.error()).find("certificate was refused"),
            std::string::npos)
    << describe(r.error());
  EXPECT_EQ(n->rt()->find_tool("svc")->stats().executions.load(), 1u);
  EXPECT_EQ(svc.count(), 1u);
}

TEST(http_tool_test, secrets_arrive_in_their_headers_and_in_no_text) {
  temp_dir dir;
  // Distinctive values; the key needs percent-encoding in the URL.
  const std::string token = "tok-7f3a9c21e8d4b6a0";
  const std::string api_key = "k/5b8e+2d7c4a1f9e3b";
  ::setenv("VIGIL_TEST_HTTP_TOKEN", token.c_str(), 1);
  auto key_file = dir.path() + "/api_key";
  std::ofstream{key_file} << api_key << "\n";
  // Every log line of the node, at every level.
  std::ostringstream log;
  auto old_logger = spdlog::default_logger();
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(log);
  auto capture = std::make_shared<spdlog::logger>("capture", sink);
  capture->set_level(spdlog::level::trace);
  spdlog::set_default_logger(capture);
  // vigil's own logger (stderr unless a program registered one), too.
  auto& vigil_log = vigil::detail::log();
  auto old_level = vigil_log.level();
  vigil_log.sinks().push_back(sink);
  vigil_log.set_level(spdlog::level::trace);

  counting_http_server svc;
  // The service echoes the credentials it got, as a careless one does:
  // n=1 in a 200, n=2 in a 400, n=3 in a 503, n=4 in a corrupt 200.
  svc.route("/ping/*", [](const httplib::Request& r) {
    auto n = r.path.substr(r.path.rfind('/') + 1);
    auto echo = r.get_header_value("Authorization") + " "
                + r.get_header_value("X-Api-Key") + " " + r.target;
    auto quoted = nlohmann::json(echo).dump();
    if (n == "1")
      return http_answer{200, R"({"n":"1","from":)" + quoted + "}"};
    if (n == "2")
      return http_answer{400, R"({"error":)" + quoted + "}"};
    if (n == "3")
      return http_answer{503, R"({"error":)" + quoted + "}"};
    return http_answer{200, "not json " + echo};
  });
  auto s = ping_spec(svc.url());
  s.url = svc.url("/ping/{n}?key={secret.api_key}");
  s.headers = {{"Authorization", "Bearer {secret.token}"},
               {"X-Api-Key", "{secret.api_key}"}};
  s.secrets = {{"token", {"VIGIL_TEST_HTTP_TOKEN", ""}},
               {"api_key", {"", key_file}}};
  std::vector<std::string> texts;
  {
    auto n = start_node(http_decl(s));
    auto ok = n->call<Pong>("root/c", ping(1), 5s);
    ASSERT_TRUE(ok) << describe(ok.error());
    texts.push_back(ok->value.from());
    EXPECT_NE(ok->value.from().find("Bearer [secret token] [secret api_key]"),
              std::string::npos)
      << ok->value.from();
    for (int i = 2; i <= 4; ++i) {
      auto r = n->call<Pong>("root/c", ping(i), 5s);
      ASSERT_FALSE(r) << i;
      texts.push_back(describe(r.error()));
    }
    EXPECT_NE(texts[1].find("[secret token]"), std::string::npos) << texts[1];
    ASSERT_FALSE(n->send("root/f", ping(2)));
    ASSERT_TRUE(eventually([&] { return !n->dead_letters().empty(); }, 5s));
    for (auto& d : n->dead_letters()) {
      texts.push_back(d.reason);
      texts.push_back(d.env.payload);
    }
    EXPECT_NE(texts.back().size(), 0u);
  }
  spdlog::set_default_logger(old_logger);
  vigil_log.sinks().pop_back();
  vigil_log.set_level(old_level);
  texts.push_back(log.str());
  ::unsetenv("VIGIL_TEST_HTTP_TOKEN");
  // They arrived, as written...
  auto reqs = svc.requests();
  ASSERT_GE(reqs.size(), 5u);
  for (auto& r : reqs) {
    EXPECT_EQ(r.header("Authorization"), "Bearer " + token);
    EXPECT_EQ(r.header("X-Api-Key"), api_key);
    EXPECT_NE(r.target.find("?key=k%2F5b8e%2B2d7c4a1f9e3b"), std::string::npos)
      << r.target;
  }
  // ... and are in no text: replies, errors, dead letters, the log.
  for (auto& t : texts) {
    for (auto& secret : {token, api_key, std::string{"k%2F5b8e%2B2d7c4a1f9e3b"},
                         std::string{"7f3a9c21e8d4b6a0"}})
      EXPECT_EQ(t.find(secret), std::string::npos) << t;
  }
}

TEST(http_tool_test, a_missing_secret_names_its_variable_not_a_value) {
  ::unsetenv("VIGIL_TEST_HTTP_MISSING");
  auto s = ping_spec("http://127.0.0.1:9");
  s.headers = {{"Authorization", "Bearer {secret.token}"}};
  s.secrets = {{"token", {"VIGIL_TEST_HTTP_MISSING", ""}},
               {"other", {"", "/nonexistent/vigil/secret"}}};
  std::vector<tool_problem> problems;
  EXPECT_FALSE(make_http_tool("pay", s, problems));
  ASSERT_EQ(problems.size(), 2u);
  EXPECT_EQ(problems[0].field, "secrets.other.file");
  EXPECT_EQ(problems[0].what,
            "cannot read the file /nonexistent/vigil/secret of secret "
            "\"other\": No such file or directory");
  EXPECT_EQ(problems[1].field, "secrets.token.env");
  EXPECT_EQ(problems[1].what, "the environment variable "
                              "VIGIL_TEST_HTTP_MISSING of secret \"token\" "
                              "is not set");
}
