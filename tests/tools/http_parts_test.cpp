// The pure parts of the `http` tool (tools/vigil/tools/detail/http_parts.hpp)
// and check_http: templates, percent-encoding, the status and Retry-After
// rules, redaction, and one row per kind of problem of a spec.

#include <chrono>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "proto/test.pb.h"
#include "vigil/tools/detail/http_parts.hpp"
#include "vigil/tools/http.hpp"

using namespace vigil;
using namespace vigil::detail;
using namespace std::chrono;

namespace {

std::string parse_error(const std::string& url) {
  url_parts u;
  return parse_url(url, u);
}

} // namespace

TEST(http_parts_test, a_url_splits_into_a_fixed_origin_and_a_template) {
  url_parts u;
  ASSERT_EQ(parse_url("https://api.example.com:8443/v1/items/{id}?q={q}", u),
            "");
  EXPECT_TRUE(u.https);
  EXPECT_EQ(u.host, "api.example.com");
  EXPECT_EQ(u.port, 8443);
  EXPECT_EQ(u.origin, "https://api.example.com:8443");
  ASSERT_EQ(u.target.size(), 4u);
  EXPECT_EQ(u.target[0].text, "/v1/items/");
  EXPECT_EQ(u.target[1].kind, template_piece::field);
  EXPECT_EQ(u.target[1].text, "id");
  EXPECT_EQ(u.target[2].text, "?q=");
  EXPECT_EQ(u.target[3].text, "q");
  ASSERT_EQ(parse_url("http://[::1]/", u), "");
  EXPECT_EQ(u.host, "::1");
  EXPECT_EQ(u.port, 80);
  ASSERT_EQ(parse_url("http://h?x={secret.k}", u), "");
  EXPECT_EQ(u.target[0].text, "/?x=");
  EXPECT_EQ(u.target[1].kind, template_piece::secret);
  EXPECT_EQ(u.target[1].text, "k");
}

TEST(http_parts_test, a_bad_url_says_what_is_wrong) {
  EXPECT_EQ(parse_error("ftp://h/x"),
            "must start with http:// or https://, not \"ftp://\"");
  EXPECT_EQ(parse_error("api.example.com/x"),
            "must start with http:// or https://");
  EXPECT_EQ(parse_error("http://{host}/x").substr(0, 53),
            "placeholders may stand in the path and the query only");
  EXPECT_EQ(parse_error("https://user:pw@h/").substr(0, 34),
            "holds a user name or password: sen");
  EXPECT_EQ(parse_error("http://h:99999/"),
            "the port \"99999\" is not a number from 1 to 65535");
  EXPECT_EQ(parse_error("http://h/a b"),
            "holds \" \", which a URL may not hold as it is; percent-encode "
            "it");
  EXPECT_EQ(parse_error("http://h/x#frag"),
            "has a fragment ('#'), which is never sent to the server");
  EXPECT_EQ(parse_error("http://h/{id"), "the '{' at position 2 is not closed");
  EXPECT_EQ(parse_error("http://h/id}"),
            "a '}' without its '{' at position 4");
  EXPECT_EQ(parse_error("http://h/{a-b}"),
            "\"{a-b}\" is no placeholder: write {field} (a field of the "
            "request) or {secret.NAME}");
  EXPECT_EQ(parse_error("http:///x"), "has no host");
}

TEST(http_parts_test, a_value_is_one_segment_once_percent_encoded) {
  EXPECT_EQ(percent_encode("a/b c?&=é~._-"), "a%2Fb%20c%3F%26%3D%C3%A9~._-");
  test::Pong p;
  p.set_n(-42);
  p.set_from("x y");
  std::string out;
  append_scalar(p, p.GetDescriptor()->FindFieldByName("n"), out);
  append_scalar(p, p.GetDescriptor()->FindFieldByName("from"), out);
  EXPECT_EQ(out, "-42x y");
}

TEST(http_parts_test, statuses_fall_into_three_classes) {
  EXPECT_EQ(classify_status(200), status_kind::ok);
  EXPECT_EQ(classify_status(204), status_kind::ok);
  for (int s : {408, 429, 500, 502, 503, 504, 599})
    EXPECT_EQ(classify_status(s), status_kind::transient) << s;
  for (int s : {301, 304, 400, 401, 403, 404, 409, 422, 600})
    EXPECT_EQ(classify_status(s), status_kind::permanent) << s;
}

TEST(http_parts_test, retry_after_reads_seconds_and_the_three_date_forms) {
  // Sun, 06 Nov 1994 08:49:37 GMT, and 30 s before it.
  auto date = system_clock::from_time_t(784111777);
  auto now = date - seconds{30};
  milliseconds d{-1};
  ASSERT_TRUE(parse_retry_after(" 120 ", now, d));
  EXPECT_EQ(d, seconds{120});
  ASSERT_TRUE(parse_retry_after("99999999999", now, d));
  EXPECT_EQ(d, hours{24});
  for (auto* form : {"Sun, 06 Nov 1994 08:49:37 GMT",
                     "Sunday, 06-Nov-94 08:49:37 GMT",
                     "Sun Nov  6 08:49:37 1994"}) {
    d = milliseconds{-1};
    ASSERT_TRUE(parse_retry_after(form, now, d)) << form;
    EXPECT_EQ(d, seconds{30}) << form;
  }
  ASSERT_TRUE(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT",
                                date + hours{1}, d));
  EXPECT_EQ(d, milliseconds{0}); // in the past
  for (auto* bad : {"", "soon", "-5", "1.5", "Sun, 06 Nov 1994 08:49:37 CET"})
    EXPECT_FALSE(parse_retry_after(bad, now, d)) << bad;
}

TEST(http_parts_test, redaction_replaces_every_form_of_every_secret) {
  redactor r;
  r.add("token", "s3cr/et\"");
  r.add("short", "s3cr");
  EXPECT_EQ(r.apply("a s3cr/et\" b s3cr%2Fet%22 c s3cr\\/et\\\" d s3cr"),
            "a [secret token] b [secret token] c [secret token] d "
            "[secret short]");
  EXPECT_EQ(excerpt("ab\ncd", 3), "ab?...");
}

// -- check_http: one row per kind of problem ---------------------------------

struct check_case {
  const char* name;
  http_spec spec;
  std::vector<std::string> expected; ///< "field: what"
};

std::ostream& operator<<(std::ostream& out, const check_case& x) {
  return out << x.name;
}

http_spec good() {
  http_spec s;
  s.method = "POST";
  s.url = "https://api.example.com/pay/{n}";
  s.request_type = "vigil.test.Ping";
  s.reply_type = "vigil.test.Pong";
  s.headers = {{"Authorization", "Bearer {secret.token}"}};
  s.secrets = {{"token", {"PAY_TOKEN", ""}}};
  return s;
}

template <class F>
http_spec with(F f) {
  auto s = good();
  f(s);
  return s;
}

const check_case check_cases[] = {
  {"good", good(), {}},
  {"bad_method", with([](http_spec& s) { s.method = "FETCH"; }),
   {"method: \"FETCH\" is not allowed; allowed: GET, HEAD, POST, PUT, PATCH, "
    "DELETE"}},
  {"unknown_placeholder", with([](http_spec& s) { s.url += "/{amount}"; }),
   {"url: {amount}: the request type vigil.test.Ping has no field "
    "\"amount\"; its fields: n"}},
  {"message_placeholder",
   with([](http_spec& s) {
     s.request_type = "vigil.test.Tally";
     s.url = "http://h/{seen}";
   }),
   {"url: {seen}: field \"seen\" of vigil.test.Tally is a list or a "
    "message; a URL takes scalar fields only"}},
  {"unknown_types",
   with([](http_spec& s) {
     s.request_type = "";
     s.reply_type = "shop.Nope";
   }),
   {"request_type: missing: the full name of a Protobuf message, e.g. "
    "\"shop.v1.Order\"",
    "reply_type: no Protobuf message \"shop.Nope\" is linked into this "
    "program (write its full name, package included, and link its "
    "generated code)"}},
  {"credential_literal",
   with([](http_spec& s) { s.headers["Authorization"] = "Bearer abc123"; }),
   {"headers.Authorization: a credential in the policy text is not allowed: "
    "write {secret.NAME} here and declare NAME under http.secrets with env "
    "(an environment variable) or file (a file's path)"}},
  {"undeclared_secret",
   with([](http_spec& s) { s.headers["X-Api-Key"] = "{secret.key}"; }),
   {"headers.X-Api-Key: {secret.key}: no secret \"key\" is declared; "
    "declare it under http.secrets with env or file"}},
  {"tool_owned_header",
   with([](http_spec& s) { s.headers["Idempotency-Key"] = "x"; }),
   {"headers.Idempotency-Key: is set by the tool (Idempotency-Key comes "
    "from the call's idempotency key)"}},
  {"field_in_header",
   with([](http_spec& s) { s.headers["X-N"] = "{n}"; }),
   {"headers.X-N: {n}: a header takes {secret.NAME} only"}},
  {"secret_without_source",
   with([](http_spec& s) { s.secrets["token"] = {}; }),
   {"secrets.token: write where its value comes from: env: VARIABLE or "
    "file: PATH"}},
  {"secret_with_both",
   with([](http_spec& s) { s.secrets["token"] = {"A", "/b"}; }),
   {"secrets.token: write env or file, not both"}},
  {"body_on_a_get",
   with([](http_spec& s) {
     s.method = "GET";
     s.body = http_body::json;
   }),
   {"body: a GET sends no body; use POST, PUT or PATCH, or body: none"}},
  {"form_of_a_list",
   with([](http_spec& s) {
     s.request_type = "vigil.test.Tally";
     s.url = "http://h/";
     s.body = http_body::form;
   }),
   {"body: a form takes scalar fields only, and field \"seen\" of "
    "vigil.test.Tally is a list or a message; use body: json"}},
  {"bad_paths",
   with([](http_spec& s) {
     s.response.path = "data..x";
     s.response.cost = "usage.";
   }),
   {"response.path: \"data..x\" is not a dotted path of JSON keys (e.g. "
    "data or result.item)",
    "response.cost: \"usage.\" is not a dotted path of JSON keys (e.g. "
    "usage.total_tokens)"}},
  {"ca_file_on_http",
   with([](http_spec& s) {
     s.url = "http://h/{n}";
     s.ca_file = "/etc/ca.pem";
   }),
   {"ca_file: is for an https URL only"}},
  {"limits",
   with([](http_spec& s) {
     s.connect_timeout = milliseconds{0};
     s.max_response_bytes = 0;
   }),
   {"connect_timeout: must be more than 0 and at most 10m",
    "max_response_bytes: must be 1 to 1073741824 (1 GiB)"}},
};

class check_http_rows : public testing::TestWithParam<check_case> {};

TEST_P(check_http_rows, names_the_field_and_what_is_wrong) {
  std::vector<std::string> got;
  for (auto& p : check_http(GetParam().spec))
    got.push_back(p.field + ": " + p.what);
  EXPECT_EQ(got, GetParam().expected);
}

INSTANTIATE_TEST_SUITE_P(rows, check_http_rows, testing::ValuesIn(check_cases),
                         [](const testing::TestParamInfo<check_case>& x) {
                           return std::string{x.param.name};
                         });
