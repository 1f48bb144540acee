// A policy tool's `http:` block (policy.proto Tool.Http) as an http_spec,
// made into the tool's own implementation (tool_decl::impl).

#include <algorithm>

#include "policy_detail.hpp"
#include "vigil/tools/http.hpp"

namespace vigil::detail {

namespace {

namespace pol = vigil::policy;
using H = pol::Tool::Http;

http_body body_of(H::Body b) {
  switch (b) {
    case H::BODY_JSON:
      return http_body::json;
    case H::BODY_FORM:
      return http_body::form;
    case H::BODY_NONE:
      return http_body::none;
    default:
      return http_body::automatic;
  }
}

} // namespace

void http_from_policy(const google::protobuf::Message& entry,
                      const std::string& name, const policy::Tool& t,
                      const policy_source& source, tool_decl& d,
                      std::vector<policy_problem>& problems) {
  auto label = "node.tools." + name + ".http.";
  if (d.type.empty())
    d.type = "http";
  auto& h = t.http();
  http_spec s;
  if (!h.method().empty())
    s.method = h.method();
  s.url = h.url();
  for (auto& [k, v] : h.headers())
    s.headers[k] = v;
  // A secret with both env and file keeps only the last one written (a
  // oneof), but the reader's marks tell that both were: both are set here,
  // so that check_http refuses it as it refuses such an http_secret.
  for_each_entry<H::Secret>(
    h, H::kSecretsFieldNumber,
    [&](const google::protobuf::Message&, const std::string& key,
        const H::Secret& sec) {
      auto& out = s.secrets[key];
      out = {sec.env(), sec.file()};
      if (source.written(sec, H::Secret::kEnvFieldNumber)
          && source.written(sec, H::Secret::kFileFieldNumber))
        out = {"(env)", "(file)"};
    });
  s.request_type = h.request_type();
  s.reply_type = h.reply_type();
  s.body = body_of(h.body());
  s.response.path = h.response().path();
  s.response.cost = h.response().cost();
  s.ca_file = h.ca_file();
  if (h.has_verify())
    s.verify = h.verify();
  if (h.has_connect_timeout())
    s.connect_timeout = std::clamp(to_ms(h.connect_timeout()),
                                   std::chrono::milliseconds{-1},
                                   std::chrono::milliseconds{int64_t{1} << 40});
  if (h.has_max_response_bytes())
    s.max_response_bytes
      = static_cast<size_t>(std::min<uint64_t>(h.max_response_bytes(),
                                               uint64_t{1} << 40));
  std::vector<tool_problem> found;
  d.impl = make_http_tool(name, s, found);
  for (auto& pr : found) {
    bool bad_value = false;
    auto at = locate_field(t, "http." + pr.field, source, bad_value);
    if (bad_value)
      continue; // its value was rejected; the default stands in
    if (at.msg == &t && at.field < 0)
      at = {&entry};
    problems.push_back({at.msg, at.field, label + pr.field + ": " + pr.what});
  }
}

} // namespace vigil::detail
