// Tests of a policy file's `http` tools (supervision/src/policy_http.cpp
// through the loader in cli/src/policy.cpp): one row per kind of error
// with its exact message and position, a complete declaration loaded onto
// tool_decl and http_spec, and a policy file alone calling a real HTTP
// service on 127.0.0.1.

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/counting_http_server.hpp"
#include "support/eventually.hpp"
#include "support/temp_dir.hpp"
#include "vigil/builtin.pb.h"
#include "vigil/cli/app.hpp"
#include "vigil/cli/policy.hpp"
#include "vigil/node/node.hpp"

using namespace std::chrono_literals;
using namespace vigil;
using vigil::cli::load_policy_text;
using vigil::cli::loaded_policy;

namespace {

const registry& types() {
  static const registry r = [] {
    registry t;
    cli::add_builtin_agents(t); // tool_caller, flaky_tool, ...
    return t;
  }();
  return r;
}

std::vector<std::string> errors_of(const std::string& yaml) {
  loaded_policy out;
  std::vector<std::string> result;
  for (auto& e : load_policy_text(yaml, "policy.yaml", types(), out))
    result.push_back(e.to_string());
  return result;
}

// A node with one http tool `pay` whose http block continues with `rest`
// (lines indented by 8), and a tree that calls it.
std::string with_http(const std::string& rest) {
  return "node:\n"                                          // 1
         "  tools:\n"                                       // 2
         "    pay:\n"                                       // 3
         "      class: idempotent_write\n"                  // 4
         "      http:\n"                                    // 5
         "        request_type: vigil.builtin.ToolRequest\n" // 6
         "        reply_type: vigil.builtin.ToolReply\n"    // 7
         + rest                                             // 8...
         + "tree:\n"
           "  children:\n"
           "    - {name: a, agent: tool_caller, params: {tool: pay}}\n";
}

struct error_case {
  const char* name;
  std::string yaml;
  std::vector<std::string> expected;
};

std::ostream& operator<<(std::ostream& out, const error_case& x) {
  return out << x.name;
}

const error_case error_cases[] = {
  {"unknown_placeholder",
   with_http("        url: https://api.example.com/pay/{amount}\n"),
   {"policy.yaml:8:9: node.tools.pay.http.url: {amount}: the request type "
    "vigil.builtin.ToolRequest has no field \"amount\"; its fields: n, "
    "fail_every, fail_attempts, outage_from, outage_to, reject_every, "
    "delay_ms, cost"}},
  {"missing_url", with_http(""),
   {"policy.yaml:5:7: node.tools.pay.http.url: missing: write the URL, e.g. "
    "https://api.example.com/v1/items/{id}"}},
  {"bad_method",
   with_http("        method: FETCH\n"
             "        url: https://api.example.com/pay\n"),
   {"policy.yaml:8:9: node.tools.pay.http.method: \"FETCH\" is not allowed; "
    "allowed: GET, HEAD, POST, PUT, PATCH, DELETE"}},
  {"unknown_reply_type",
   "node:\n"
   "  tools:\n"
   "    pay:\n"
   "      class: read_only\n"
   "      http:\n"
   "        url: https://api.example.com/pay\n"
   "        request_type: vigil.builtin.ToolRequest\n"
   "        reply_type: shop.v1.Receipt\n"
   "tree: {}\n",
   {"policy.yaml:8:9: node.tools.pay.http.reply_type: no Protobuf message "
    "\"shop.v1.Receipt\" is linked into this program (write its full name, "
    "package included, and link its generated code)"}},
  {"missing_secret_env",
   with_http("        url: https://api.example.com/pay\n"
             "        headers: {Authorization: \"Bearer {secret.token}\"}\n"
             "        secrets:\n"
             "          token: {env: VIGIL_TEST_NO_SUCH_VAR}\n"),
   {"policy.yaml:11:19: node.tools.pay.http.secrets.token.env: the "
    "environment variable VIGIL_TEST_NO_SUCH_VAR of secret \"token\" is not "
    "set"}},
  {"secret_literal_in_a_header",
   with_http("        url: https://api.example.com/pay\n"
             "        headers: {Authorization: \"Bearer sk_live_abc\"}\n"),
   {"policy.yaml:9:19: node.tools.pay.http.headers.Authorization: a "
    "credential in the policy text is not allowed: write {secret.NAME} here "
    "and declare NAME under http.secrets with env (an environment variable) "
    "or file (a file's path)"}},
  {"secret_value_written",
   with_http("        url: https://api.example.com/pay\n"
             "        secrets:\n"
             "          token: {value: sk_live_abc}\n"),
   {"policy.yaml:10:11: node.tools.pay.http.secrets.token: write where its "
    "value comes from: env: VARIABLE or file: PATH",
    "policy.yaml:10:19: unknown key \"value\" in secret; allowed: env, "
    "file"}},
  {"secret_with_env_and_file",
   with_http("        url: https://api.example.com/pay\n"
             "        secrets:\n"
             "          token: {env: A, file: /b}\n"),
   {"policy.yaml:10:11: node.tools.pay.http.secrets.token: write env or "
    "file, not both"}},
  {"placeholder_in_the_host",
   with_http("        url: https://{n}.example.com/pay\n"),
   {"policy.yaml:8:9: node.tools.pay.http.url: placeholders may stand in "
    "the path and the query only: the scheme, host and port are fixed, so "
    "that no request can send the tool's secrets to another host"}},
  {"bad_body_word",
   with_http("        url: https://api.example.com/pay\n"
             "        body: xml\n"),
   {"policy.yaml:9:9: node.tools.pay.http.body: \"xml\" is not allowed; "
    "allowed: auto, json, form, none"}},
  {"unreadable_ca_file",
   with_http("        url: https://api.example.com/pay\n"
             "        ca_file: /nonexistent/vigil/ca.pem\n"),
   {"policy.yaml:9:9: node.tools.pay.http.ca_file: cannot read "
    "/nonexistent/vigil/ca.pem: No such file or directory"}},
  {"http_not_a_mapping",
   "node:\n"
   "  tools:\n"
   "    pay:\n"
   "      class: read_only\n"
   "      http: https://api.example.com/pay\n"
   "tree: {}\n",
   {"policy.yaml:5:7: node.tools.pay.http: expected a mapping"}},
  {"neither_http_nor_a_type",
   "node:\n"
   "  tools:\n"
   "    pay: {class: read_only}\n"
   "tree: {}\n",
   {"policy.yaml:3:5: node.tools.pay.type: no tool implementation is "
    "registered as \"pay\" (the tool's name; set \"type\"); register it "
    "with registry::add_tool"}},
};

class http_policy_errors : public testing::TestWithParam<error_case> {};

TEST_P(http_policy_errors, reports_exact_message_and_position) {
  ::unsetenv("VIGIL_TEST_NO_SUCH_VAR");
  auto& row = GetParam();
  EXPECT_EQ(errors_of(row.yaml), row.expected) << row.yaml;
}

INSTANTIATE_TEST_SUITE_P(rows, http_policy_errors,
                         testing::ValuesIn(error_cases),
                         [](const testing::TestParamInfo<error_case>& x) {
                           return std::string{x.param.name};
                         });

// -- a complete declaration, run ----------------------------------------------

std::string full_policy(const std::string& base) {
  return "node:\n"
         "  tools:\n"
         "    items:\n"
         "      class: read_only\n"
         "      record: false\n"
         "      timeout: 5s\n"
         "      attempt_timeout: 2s\n"
         "      retry: {max_attempts: 3, initial: 1ms, max: 5ms}\n"
         "      breaker: {consecutive_failures: 5, open_for: 10s}\n"
         "      http:\n"
         "        method: GET\n"
         "        url: " + base + "/items/{n}?v=1\n"
         "        headers:\n"
         "          Authorization: \"Bearer {secret.token}\"\n"
         "          X-Client: vigil\n"
         "        secrets:\n"
         "          token: {env: VIGIL_TEST_POLICY_TOKEN}\n"
         "        request_type: vigil.builtin.ToolRequest\n"
         "        reply_type: vigil.builtin.ToolReply\n"
         "        response: {path: data}\n"
         "        connect_timeout: 1s\n"
         "        max_response_bytes: 65536\n"
         "tree:\n"
         "  children:\n"
         "    - {name: a, agent: tool_caller, params: {tool: items}}\n";
}

TEST(http_policy_test, a_policy_file_alone_calls_a_real_service) {
  ::setenv("VIGIL_TEST_POLICY_TOKEN", "tok-policy-1234", 1);
  test::counting_http_server svc;
  svc.route("/items/*", [](const httplib::Request& r) {
    auto n = r.path.substr(r.path.rfind('/') + 1);
    return test::http_answer{200, R"({"data":{"n":")" + n
                                    + R"(","attempt":7}})"};
  });
  svc.script("/items/*", {{503, ""}});
  loaded_policy lp;
  auto errs = load_policy_text(full_policy(svc.url()), "policy.yaml", types(),
                               lp);
  ::unsetenv("VIGIL_TEST_POLICY_TOKEN");
  ASSERT_TRUE(errs.empty()) << errs.front().to_string();
  ASSERT_EQ(lp.node.tools.size(), 1u);
  auto& d = lp.node.tools[0];
  EXPECT_EQ(d.type, "http");
  EXPECT_FALSE(d.record);
  ASSERT_TRUE(d.impl);
  EXPECT_EQ(d.impl->request_type, "vigil.builtin.ToolRequest");
  EXPECT_EQ(d.impl->reply_type, "vigil.builtin.ToolReply");
  EXPECT_EQ(d.policy.breaker.consecutive_failures, 5u);

  // The secret was read when the policy was: the variable may go now.
  node n{types(), lp.node};
  ASSERT_FALSE(n.start(lp.name, lp.tree));
  builtin::Number num;
  num.set_n(12);
  ASSERT_FALSE(n.send("root/a", num));
  builtin::ToolCallCount count;
  ASSERT_TRUE(test::eventually(
    [&] {
      auto r = n.call<builtin::ToolCallCount>("root/a", builtin::Get{}, 5s);
      if (r)
        count = r->value;
      return r && count.ok() + count.failed() > 0;
    },
    10s));
  EXPECT_EQ(count.ok(), 1);
  // ToolReply.attempt is 7, mapped from the body's "data" object.
  EXPECT_EQ(count.ok_after_retry(), 1);
  auto reqs = svc.requests();
  ASSERT_EQ(reqs.size(), 2u); // a 503, then the answer
  for (auto& r : reqs) {
    EXPECT_EQ(r.target, "/items/12?v=1");
    EXPECT_EQ(r.header("Authorization"), "Bearer tok-policy-1234");
    EXPECT_EQ(r.header("X-Client"), "vigil");
  }
}

// examples/policies/http.yaml, as the README shows it, pointed at the
// counting service instead of payments.example.com.
TEST(http_policy_test, the_example_policy_charges_through_its_http_tool) {
  std::ifstream in{VIGIL_HTTP_POLICY};
  std::stringstream text;
  text << in.rdbuf();
  auto yaml = text.str();
  const std::string origin = "https://payments.example.com";
  ASSERT_NE(yaml.find(origin), std::string::npos);
  ::unsetenv("PAY_TOKEN");
  EXPECT_EQ(errors_of(yaml),
            std::vector<std::string>{
              "policy.yaml:24:19: node.tools.charge.http.secrets.token.env: "
              "the environment variable PAY_TOKEN of secret \"token\" is "
              "not set"});
  test::counting_http_server svc;
  svc.route("/v1/charges/*", [](const httplib::Request& r) {
    auto n = r.path.substr(r.path.rfind('/') + 1);
    return test::http_answer{200, R"({"data":{"n":")" + n + R"("}})"};
  });
  yaml.replace(yaml.find(origin), origin.size(), svc.url());
  ::setenv("PAY_TOKEN", "tok-example", 1);
  loaded_policy lp;
  auto errs = load_policy_text(yaml, "policy.yaml", types(), lp);
  ::unsetenv("PAY_TOKEN");
  ASSERT_TRUE(errs.empty()) << errs.front().to_string();
  node n{types(), lp.node};
  ASSERT_FALSE(n.start(lp.name, lp.tree));
  builtin::Number num;
  num.set_n(5);
  ASSERT_FALSE(n.send("root/billing", num));
  ASSERT_TRUE(svc.wait_for_count(1, 10s));
  auto r = svc.requests().front();
  EXPECT_EQ(r.method, "POST");
  EXPECT_EQ(r.target, "/v1/charges/5");
  EXPECT_EQ(r.header("Authorization"), "Bearer tok-example");
  EXPECT_NE(r.body.find(R"("n":"5")"), std::string::npos) << r.body;
}

// examples/policies/payments.yaml, as the README shows it, pointed at two
// local services: the processor answers 503 to every attempt, so the call
// falls back to the backup, which sees the same Idempotency-Key.
TEST(http_policy_test, the_payments_example_falls_back_with_the_same_key) {
  std::ifstream in{VIGIL_PAYMENTS_POLICY};
  std::stringstream text;
  text << in.rdbuf();
  auto yaml = text.str();
  test::counting_http_server main_svc;
  test::counting_http_server backup_svc;
  main_svc.route("/v1/charges/*", [](const httplib::Request&) {
    return test::http_answer{503, R"({"error":"overloaded"})"};
  });
  backup_svc.route("/charges/*", [](const httplib::Request& r) {
    auto n = r.path.substr(r.path.rfind('/') + 1);
    return test::http_answer{200, R"({"charge":{"n":")" + n + R"("}})"};
  });
  for (auto [origin, url] :
       {std::pair{std::string{"https://payments.example.com"}, main_svc.url()},
        std::pair{std::string{"https://backup-payments.example.com"},
                  backup_svc.url()}}) {
    ASSERT_NE(yaml.find(origin), std::string::npos) << origin;
    yaml.replace(yaml.find(origin), origin.size(), url);
  }
  ::setenv("PAY_TOKEN", "tok-main", 1);
  ::setenv("BACKUP_TOKEN", "tok-backup", 1);
  loaded_policy lp;
  auto errs = load_policy_text(yaml, "payments.yaml", types(), lp);
  ::unsetenv("PAY_TOKEN");
  ::unsetenv("BACKUP_TOKEN");
  ASSERT_TRUE(errs.empty()) << errs.front().to_string();
  test::temp_dir dir;
  lp.node.data_dir = dir.path();
  node n{types(), lp.node};
  ASSERT_FALSE(n.start(lp.name, lp.tree));
  builtin::Number num;
  num.set_n(7);
  ASSERT_FALSE(n.send("root/billing", num));
  ASSERT_TRUE(backup_svc.wait_for_count(1, 10s));
  auto tries = main_svc.requests();
  ASSERT_EQ(tries.size(), 3u); // its 3 attempts, then the fallback
  auto key = tries[0].header("Idempotency-Key");
  EXPECT_FALSE(key.empty());
  for (auto& t : tries)
    EXPECT_EQ(t.header("Idempotency-Key"), key);
  auto b = backup_svc.requests().at(0);
  EXPECT_EQ(b.header("Idempotency-Key"), key);
  EXPECT_EQ(b.header("Authorization"), "Bearer tok-backup");
  EXPECT_EQ(b.target, "/charges/7");
  // The call answered (by the backup), and its record says so.
  ASSERT_TRUE(test::eventually([&] {
    auto st = n.call<builtin::ToolCallCount>("root/billing", builtin::Get{}, 5s);
    return st && st->value.ok() == 1;
  }, 10s));
  EXPECT_EQ(n.rt()->find_tool("charge")->stats().fallbacks.load(), 1u);
  EXPECT_EQ(n.rt()->find_tool("charge")->stats().recorded.load(), 1u);
}

} // namespace
