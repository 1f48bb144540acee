// One attempt of an `http` tool: render the request, send it on this
// thread's keep-alive connection to the tool's host, map the answer.

#include <algorithm>
#include <memory>

#include <google/protobuf/util/json_util.h>
#include <nlohmann/json.hpp>
#include <openssl/x509.h>

#include "http_tool.hpp"
#include "vigil/tools/detail/json_reply.hpp"

namespace vigil::detail {

namespace {

namespace pb = google::protobuf;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

// -- connections --------------------------------------------------------------

/// A thread's client of one tool. httplib's client keeps one connection
/// open between requests (keep-alive) and reconnects when the server
/// closed it; a client is used by one thread at a time, so its lock is
/// never contended.
struct client_slot {
  uint64_t tool = 0;
  std::unique_ptr<httplib::ClientImpl> cli;
  httplib::SSLClient* ssl = nullptr; ///< cli, if https
};

/// The tools a thread keeps a connection to: a tool's pool threads serve
/// that tool only, so a few slots suffice; an executor shared by several
/// tools evicts the oldest.
constexpr size_t thread_slots = 8;

client_slot& client_for(const http_tool& t) {
  thread_local client_slot slots[thread_slots];
  thread_local size_t next = 0;
  for (auto& s : slots)
    if (s.tool == t.id)
      return s;
  auto& s = slots[next++ % thread_slots];
  s = client_slot{};
  if (t.url.https) {
    auto c = std::make_unique<httplib::SSLClient>(t.url.host, t.url.port);
    if (!t.ca_file.empty())
      c->set_ca_cert_path(t.ca_file);
    c->enable_server_certificate_verification(t.verify);
    s.ssl = c.get();
    s.cli = std::move(c);
  } else {
    s.cli = std::make_unique<httplib::ClientImpl>(t.url.host, t.url.port);
  }
  s.cli->set_keep_alive(true);
  s.cli->set_tcp_nodelay(true);
  s.cli->set_follow_location(false);
  s.tool = t.id;
  return s;
}

// -- the request --------------------------------------------------------------

std::string render_target(const http_tool& t, const pb::Message& req) {
  std::string out;
  std::string value;
  for (auto& p : t.url.target) {
    if (p.kind == template_piece::literal) {
      out += p.text;
      continue;
    }
    value.clear();
    append_scalar(req, p.fd, value);
    out += percent_encode(value);
  }
  return out;
}

std::string form_body(const pb::Message& req) {
  std::vector<const pb::FieldDescriptor*> fields;
  req.GetReflection()->ListFields(req, &fields);
  std::string out;
  std::string value;
  for (auto* fd : fields) {
    value.clear();
    append_scalar(req, fd, value);
    out += (out.empty() ? "" : "&") + percent_encode(fd->name()) + "="
           + percent_encode(value);
  }
  return out;
}

// -- the answer ---------------------------------------------------------------

const nlohmann::json* find_path(const nlohmann::json& doc,
                                const std::vector<std::string>& path) {
  auto* at = &doc;
  for (auto& key : path) {
    if (!at->is_object())
      return nullptr;
    auto i = at->find(key);
    if (i == at->end())
      return nullptr;
    at = &*i;
  }
  return at;
}

std::string joined(const std::vector<std::string>& path) {
  std::string out;
  for (auto& p : path)
    out += (out.empty() ? "" : ".") + p;
  return out;
}

/// What went wrong before a status came back.
struct transport {
  httplib::Error err;
  bool timed_out;  ///< the attempt's deadline passed
  bool cancelled;  ///< the caller gave the attempt up
  bool too_big;    ///< the body passed max_response_bytes
  long verify_result;
};

tool_error transport_error(const http_tool& t, const std::string& where,
                           const transport& x) {
  using E = httplib::Error;
  switch (x.err) {
    case E::Connection:
      return tool_error::transient(where + ": could not connect to "
                                   + t.url.origin
                                   + " (refused, unreachable or no such "
                                     "host)")
        .before_sending();
    case E::ConnectionTimeout:
      return tool_error::transient(where + ": no connection to "
                                   + t.url.origin + " in time")
        .before_sending();
    case E::SSLConnection:
      return tool_error::transient(where + ": the TLS handshake with "
                                   + t.url.origin + " failed")
        .before_sending();
    case E::SSLLoadingCerts:
      return tool_error::permanent(where + ": cannot load the CA file "
                                   + t.ca_file)
        .before_sending();
    case E::SSLServerVerification: {
      std::string why = x.verify_result != X509_V_OK
                          ? X509_verify_cert_error_string(x.verify_result)
                          : "it does not name the host " + t.url.host;
      return tool_error::permanent(
               where + ": the server's certificate was refused: " + why
               + (t.ca_file.empty()
                    ? " (not signed by a CA this system trusts; set "
                      "http.ca_file to the CA that signed it)"
                    : " (checked against http.ca_file " + t.ca_file + ")"))
        .before_sending();
    }
    case E::Canceled:
      if (x.too_big)
        return tool_error::permanent(
          where + ": the response is longer than max_response_bytes ("
          + std::to_string(t.max_response_bytes) + ")");
      return tool_error::transient(where + ": given up by the caller");
    case E::Read:
      if (x.timed_out)
        return tool_error::transient(where
                                     + ": no response before the attempt's "
                                       "deadline");
      return tool_error::transient(where + ": the connection failed while "
                                           "reading the response");
    case E::Write:
      return tool_error::transient(where + ": the connection failed while "
                                           "sending the request");
    default:
      return tool_error::transient(where + ": " + httplib::to_string(x.err));
  }
}

std::string status_text(const httplib::Response& res) {
  auto s = std::to_string(res.status);
  return res.reason.empty() ? s : s + " " + res.reason;
}

} // namespace

tool_outcome http_tool::call(const pb::Message& req, tool_call& call) const {
  tool_outcome out;
  auto target = render_target(*this, req);
  auto where = method + " " + url.origin + target;
  auto fail = [&](tool_error e) {
    e.what = redact.apply(std::move(e.what));
    out.error = std::move(e);
    return std::move(out);
  };
  auto left = std::chrono::duration_cast<milliseconds>(call.deadline()
                                                       - steady_clock::now());
  if (left <= milliseconds{0} || call.cancelled())
    return fail(tool_error::transient(where + ": no time left for the attempt")
                  .before_sending());
  auto& slot = client_for(*this);
  auto& cli = *slot.cli;
  cli.set_connection_timeout(std::min(left, connect_timeout));
  cli.set_read_timeout(left);
  cli.set_write_timeout(left);

  httplib::Request hr;
  hr.method = method;
  hr.path = std::move(target);
  hr.headers = headers;
  // Printable by tool_call's contract; checked all the same, so that no
  // key can end the header early.
  if (auto& key = call.idempotency_key();
      !key.empty() && std::all_of(key.begin(), key.end(), [](char c) {
        return c >= 0x20 && c < 0x7f;
      }))
    hr.headers.emplace("Idempotency-Key", key);
  if (body == http_body::json) {
    pb::util::JsonPrintOptions o;
    o.preserve_proto_field_names = true;
    auto st = pb::util::MessageToJsonString(req, &hr.body, o);
    if (!st.ok())
      return fail(tool_error::permanent(where + ": the request does not "
                                                "convert to JSON: "
                                        + st.ToString())
                    .before_sending());
  } else if (body == http_body::form) {
    hr.body = form_body(req);
  }
  std::string got;
  bool too_big = false;
  hr.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    if (got.size() + n > max_response_bytes) {
      too_big = true;
      return false;
    }
    got.append(data, n);
    return !call.cancelled();
  };
  httplib::Response res;
  auto err = httplib::Error::Success;
  if (!cli.send(hr, res, err)) {
    transport x{err, steady_clock::now() >= call.deadline(), call.cancelled(),
                too_big,
                slot.ssl != nullptr ? slot.ssl->get_openssl_verify_result()
                                    : 0};
    return fail(transport_error(*this, where, x));
  }
  auto clean = redact.empty() ? std::move(got) : redact.apply(std::move(got));
  auto body_part = [&] {
    return clean.empty() ? std::string{} : "; body: " + excerpt(clean);
  };
  switch (classify_status(res.status)) {
    case status_kind::transient: {
      milliseconds wait{0};
      if (res.has_header("Retry-After"))
        parse_retry_after(res.get_header_value("Retry-After"),
                          std::chrono::system_clock::now(), wait);
      return fail(tool_error::transient(where + ": " + status_text(res)
                                          + body_part(),
                                        wait));
    }
    case status_kind::permanent: {
      std::string also;
      if (res.status >= 300 && res.status <= 399)
        also = " (redirects are not followed; Location: "
               + res.get_header_value("Location") + ")";
      return fail(tool_error::permanent(where + ": " + status_text(res) + also
                                        + body_part()));
    }
    case status_kind::ok:
      break;
  }
  std::unique_ptr<pb::Message> reply{reply_prototype->New()};
  if (clean.empty()) {
    out.reply = std::move(reply);
    return out;
  }
  const std::string* json = &clean;
  std::string sub;
  bool paths = !response_path.empty() || !cost_path.empty();
  if (paths || quick_reply) {
    bool quick = false;
    auto doc = quick_reply ? parse_json(clean, quick)
                           : nlohmann::json::parse(clean, nullptr, false);
    if (doc.is_discarded() && paths)
      return fail(tool_error::invalid_output(where + ": the "
                                             + status_text(res)
                                             + " body is not JSON"
                                             + body_part()));
    // (Not JSON, without paths: protobuf words the error below.)
    const nlohmann::json* at = doc.is_discarded() ? nullptr : &doc;
    if (at != nullptr && !cost_path.empty()) {
      auto* n = find_path(doc, cost_path);
      if (n == nullptr || !n->is_number())
        return fail(tool_error::invalid_output(
          where + ": the " + status_text(res) + " body has no number at "
          + joined(cost_path) + " (response.cost)" + body_part()));
      out.cost = n->get<double>();
    }
    if (at != nullptr && !response_path.empty()) {
      at = find_path(doc, response_path);
      if (at == nullptr || !at->is_object())
        return fail(tool_error::invalid_output(
          where + ": the " + status_text(res) + " body has no object at "
          + joined(response_path) + " (response.path)" + body_part()));
    }
    if (at != nullptr && quick_reply && quick) {
      if (quick_json_onto(*at, *reply)) {
        out.reply = std::move(reply);
        return out;
      }
      reply->Clear(); // protobuf's rules decide
    }
    if (at != nullptr && !response_path.empty()) {
      sub = at->dump();
      json = &sub;
    }
  }
  pb::util::JsonParseOptions o;
  o.ignore_unknown_fields = true;
  auto st = pb::util::JsonStringToMessage(*json, reply.get(), o);
  if (!st.ok())
    return fail(tool_error::invalid_output(
      where + ": the " + status_text(res) + " body does not map onto "
      + reply->GetDescriptor()->full_name() + ": " + st.ToString()
      + body_part()));
  out.reply = std::move(reply);
  return out;
}

} // namespace vigil::detail
