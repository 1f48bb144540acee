// Adversarial review of 6a0541a end to end: the `http` tool's quick JSON
// path on a real node against the counting HTTP service on 127.0.0.1. The
// reference is protobuf's JsonStringToMessage (ignore_unknown_fields) on
// the body (or the object at response.path), as before the quick path:
// the reply must be the one protobuf makes, and what protobuf refuses must
// stay invalid_output with the same texts.

#include <chrono>
#include <memory>
#include <string>

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/counting_http_server.hpp"
#include "support/tool_fixture.hpp"
#include "vigil/node/node.hpp"
#include "vigil/tools/http.hpp"

using namespace vigil;
using namespace vigil::test;
using namespace std::chrono_literals;
namespace pb = google::protobuf;

namespace {

/// On Ping: calls "svc" for a JsonAll and answers it.
class json_caller : public agent<> {
public:
  explicit json_caller(const params&) {
  }
  static void define(handlers<json_caller>& h) {
    h.on<Ping>([](json_caller&, context& ctx, const Ping& req) {
      auto rp = ctx.defer();
      ctx.call_tool<JsonAll>(
        "svc", req, tool_options{}, [rp](JsonAll a) mutable { rp.deliver(a); },
        [rp](const caf::error& e) mutable { rp.fail(e); });
    });
  }
};

tool_decl http_decl(const http_spec& s) {
  tool_decl d;
  d.name = "svc";
  d.type = "http";
  d.effect = side_effect::read_only;
  d.policy.timeout = 5s;
  d.policy.attempt_timeout = 2s;
  d.policy.retry.max_attempts = 1;
  d.policy.retry.retry_invalid_output = false;
  d.policy.breaker.enabled = false;
  std::vector<tool_problem> problems;
  d.impl = make_http_tool("svc", s, problems);
  for (auto& p : problems)
    ADD_FAILURE() << p.field << ": " << p.what;
  return d;
}

std::unique_ptr<node> start_node(tool_decl d) {
  registry types;
  types.add<tool_caller>("tool_caller");
  types.add<json_caller>("json_caller");
  node_config cfg;
  cfg.tools.push_back(std::move(d));
  auto n = std::make_unique<node>(std::move(types), cfg);
  child_spec c;
  c.id = "c";
  c.agent = "tool_caller";
  c.params = {{"tool", "svc"}};
  child_spec j;
  j.id = "j";
  j.agent = "json_caller";
  supervisor_spec spec;
  spec.flags.intensity = 1000;
  spec.children = {c, j};
  if (auto err = n->start("root", std::move(spec)))
    ADD_FAILURE() << describe(err);
  return n;
}

http_spec spec_for(const std::string& base, const std::string& reply_type) {
  http_spec s;
  s.method = "GET";
  s.url = base + "/r/{n}";
  s.request_type = "vigil.test.Ping";
  s.reply_type = reply_type;
  return s;
}

/// The tool's verdict on `body` (served with 200) against protobuf's on
/// `reference` (the body, or the object at response.path).
void expect_as_protobuf(const std::string& body, const std::string& reference,
                        const std::string& path = "") {
  SCOPED_TRACE(body.size() > 200 ? body.substr(0, 200) + "..." : body);
  counting_http_server svc;
  svc.route("/r/*", [body](const httplib::Request&) {
    return http_answer{200, body};
  });
  auto s = spec_for(svc.url(), "vigil.test.JsonAll");
  s.response.path = path;
  auto n = start_node(http_decl(s));
  Ping p;
  p.set_n(1);
  auto r = n->call<JsonAll>("root/j", p, 5s);
  JsonAll want;
  pb::util::JsonParseOptions o;
  o.ignore_unknown_fields = true;
  auto st = pb::util::JsonStringToMessage(reference, &want, o);
  if (!st.ok()) {
    ASSERT_FALSE(r) << "the tool answered " << r->value.ShortDebugString()
                    << " where protobuf refuses the body: " << st.ToString();
    EXPECT_TRUE(is(r.error(), errc::invalid_output)) << describe(r.error());
    return;
  }
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_TRUE(pb::util::MessageDifferencer::Equals(want, r->value))
    << "protobuf: " << want.ShortDebugString()
    << "\ntool:     " << r->value.ShortDebugString();
}

std::string deep_unknown(int depth) {
  std::string s = "{\"i32\":1,\"unknown\":";
  for (int i = 0; i < depth; ++i)
    s += "{\"a\":";
  s += "1";
  for (int i = 0; i < depth; ++i)
    s += "}";
  return s + "}";
}

} // namespace

// -- defects, end to end -------------------------------------------------------

TEST(http_quick_test, a_float_reply_field_from_a_large_integer) {
  expect_as_protobuf(R"({"fl":1152921573326323713})",
                     R"({"fl":1152921573326323713})");
}

TEST(http_quick_test, a_reply_nested_deeper_than_protobuf_reads) {
  expect_as_protobuf(deep_unknown(150), deep_unknown(150));
}

TEST(http_quick_test, a_body_with_a_byte_order_mark) {
  expect_as_protobuf("\xEF\xBB\xBF{\"i32\":1}", "\xEF\xBB\xBF{\"i32\":1}");
}

TEST(http_quick_test, a_body_with_an_empty_key) {
  expect_as_protobuf(R"({"i32":1,"":2})", R"({"i32":1,"":2})");
}

// -- sound ------------------------------------------------------------------------

TEST(http_quick_test, plain_replies_and_response_path) {
  expect_as_protobuf(R"({"i64":"5","s":"x","child":{"rd":[1.5]},"zz":[1]})",
                     R"({"i64":"5","s":"x","child":{"rd":[1.5]},"zz":[1]})");
  expect_as_protobuf(R"({"data":{"i64":7,"oi":0},"x":{"k":1,"k":2}})",
                     R"({"i64":7,"oi":0})", "data");
  expect_as_protobuf(R"({"data":{"i64":7,"i64":8}})", R"({"i64":8})", "data");
  expect_as_protobuf(R"({"a":{"b":{"fl":0.1,"u64":"18446744073709551615"}}})",
                     R"({"fl":0.1,"u64":"18446744073709551615"})", "a.b");
  expect_as_protobuf(R"({"i32":"x"})", R"({"i32":"x"})");
  expect_as_protobuf(R"({"s":"\u0000\ud83d\ude00"})", R"({"s":"\u0000\ud83d\ude00"})");
}

TEST(http_quick_test, error_texts_as_before) {
  counting_http_server svc;
  svc.route("/r/*", [](const httplib::Request& r) {
    if (r.path == "/r/1")
      return http_answer{200, "not json at all"};
    if (r.path == "/r/2")
      return http_answer{200, R"({"n":"x"})"};
    return http_answer{200, R"({"data":[1]})"};
  });
  {
    auto n = start_node(http_decl(spec_for(svc.url(), "vigil.test.Pong")));
    for (int k : {1, 2}) {
      auto r = n->call<Pong>("root/c", ping(k), 5s);
      ASSERT_FALSE(r);
      EXPECT_TRUE(is(r.error(), errc::invalid_output)) << describe(r.error());
      auto text = describe(r.error());
      EXPECT_NE(text.find("does not map onto vigil.test.Pong"), std::string::npos)
        << text;
    }
  }
  auto s = spec_for(svc.url(), "vigil.test.Pong");
  s.response.path = "data";
  auto n = start_node(http_decl(s));
  auto r = n->call<Pong>("root/c", ping(1), 5s);
  ASSERT_FALSE(r);
  auto text = describe(r.error());
  EXPECT_NE(text.find("body is not JSON"), std::string::npos) << text;
  r = n->call<Pong>("root/c", ping(3), 5s);
  ASSERT_FALSE(r);
  text = describe(r.error());
  EXPECT_NE(text.find("has no object at data (response.path)"), std::string::npos)
    << text;
}
