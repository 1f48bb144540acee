// check_http: every problem with an http_spec on its own, one small check
// per field, as check_tool and check_child_specs.

#include <algorithm>
#include <cctype>
#include <set>

#include "vigil/tools/detail/http_parts.hpp"
#include "vigil/tools/http.hpp"

namespace vigil {

namespace {

namespace pb = google::protobuf;
using detail::template_piece;

std::string quote(const std::string& s) {
  return "\"" + s + "\"";
}

std::string lower(std::string s) {
  for (auto& c : s)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// RFC 9110's token characters.
bool header_name(const std::string& s) {
  static const std::string extra = "!#$%&'*+-.^_`|~";
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c))
           || extra.find(c) != std::string::npos;
  });
}

bool secret_name(const std::string& s) {
  return !s.empty() && s.size() <= 64
         && (std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_')
         && std::all_of(s.begin(), s.end(), [](char c) {
              return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
            });
}

// A header that carries a credential: its value must come from a secret.
bool credential_header(const std::string& name) {
  auto n = lower(name);
  static const char* const exact[] = {"authorization", "proxy-authorization",
                                      "cookie", "x-api-key", "api-key",
                                      "apikey", "x-auth-token"};
  for (auto* e : exact)
    if (n == e)
      return true;
  for (auto* part : {"token", "secret", "password", "passwd", "api-key",
                     "apikey", "api_key"})
    if (n.find(part) != std::string::npos)
      return true;
  return false;
}

// A dotted path of JSON keys: "data", "result.item".
bool dotted_path(const std::string& s) {
  if (s.empty() || s.front() == '.' || s.back() == '.'
      || s.find("..") != std::string::npos)
    return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_'
           || c == '-' || c == '.';
  });
}

const pb::Descriptor* find_type(const std::string& name) {
  return pb::DescriptorPool::generated_pool()->FindMessageTypeByName(name);
}

class checker {
public:
  explicit checker(const http_spec& s) : s_(s) {
  }

  std::vector<tool_problem> run() {
    method();
    auto* req = type("request_type", s_.request_type);
    type("reply_type", s_.reply_type);
    url(req);
    headers();
    secrets();
    body(req);
    response();
    tls();
    limits();
    return std::move(out_);
  }

private:
  void need(bool ok, std::string field, std::string what) {
    if (!ok)
      out_.push_back({std::move(field), std::move(what)});
  }

  void method() {
    static const std::set<std::string> allowed{"GET",   "HEAD",  "POST",
                                               "PUT",   "PATCH", "DELETE"};
    need(allowed.count(s_.method) > 0, "method",
         quote(s_.method)
           + " is not allowed; allowed: GET, HEAD, POST, PUT, PATCH, DELETE");
  }

  const pb::Descriptor* type(const char* field, const std::string& name) {
    if (name.empty()) {
      need(false, field, "missing: the full name of a Protobuf message, e.g. "
                         "\"shop.v1.Order\"");
      return nullptr;
    }
    auto* d = find_type(name);
    need(d != nullptr, field,
         "no Protobuf message " + quote(name)
           + " is linked into this program (write its full name, package "
             "included, and link its generated code)");
    return d;
  }

  void url(const pb::Descriptor* req) {
    if (s_.url.empty()) {
      need(false, "url", "missing: write the URL, e.g. "
                         "https://api.example.com/v1/items/{id}");
      return;
    }
    detail::url_parts u;
    if (auto bad = detail::parse_url(s_.url, u); !bad.empty()) {
      need(false, "url", bad);
      return;
    }
    https_ = u.https;
    for (auto& p : u.target) {
      if (p.kind == template_piece::secret) {
        secret_ref("url", p.text);
      } else if (p.kind == template_piece::field && req != nullptr) {
        auto* fd = req->FindFieldByName(p.text);
        if (fd == nullptr) {
          need(false, "url",
               "{" + p.text + "}: the request type " + req->full_name()
                 + " has no field " + quote(p.text)
                 + "; its fields: " + detail::field_names(req));
        } else {
          need(!fd->is_repeated()
                 && fd->cpp_type() != pb::FieldDescriptor::CPPTYPE_MESSAGE,
               "url",
               "{" + p.text + "}: field " + quote(p.text) + " of "
                 + req->full_name()
                 + " is a list or a message; a URL takes scalar fields only");
        }
      }
    }
  }

  void secret_ref(const std::string& field, const std::string& name) {
    need(s_.secrets.count(name) > 0, field,
         "{secret." + name + "}: no secret " + quote(name)
           + " is declared; declare it under http.secrets with env or file");
  }

  void headers() {
    static const std::set<std::string> owned{"host", "content-length",
                                             "connection", "idempotency-key",
                                             "transfer-encoding"};
    for (auto& [name, value] : s_.headers) {
      auto field = "headers." + name;
      if (!header_name(name)) {
        need(false, field, quote(name) + " is not a header name");
        continue;
      }
      if (owned.count(lower(name)) > 0) {
        need(false, field,
             "is set by the tool (Idempotency-Key comes from the call's "
             "idempotency key)");
        continue;
      }
      if (value.find_first_of(std::string{"\r\n\0", 3}) != std::string::npos) {
        need(false, field, "holds a line break or NUL");
        continue;
      }
      std::vector<template_piece> ps;
      if (auto bad = detail::split_template(value, ps); !bad.empty()) {
        need(false, field, bad);
        continue;
      }
      bool from_secret = false;
      for (auto& p : ps) {
        if (p.kind == template_piece::field)
          need(false, field,
               "{" + p.text + "}: a header takes {secret.NAME} only");
        if (p.kind == template_piece::secret) {
          from_secret = true;
          secret_ref(field, p.text);
        }
      }
      need(from_secret || !credential_header(name), field,
           "a credential in the policy text is not allowed: write "
           "{secret.NAME} here and declare NAME under http.secrets with env "
           "(an environment variable) or file (a file's path)");
    }
  }

  void secrets() {
    for (auto& [name, sec] : s_.secrets) {
      auto field = "secrets." + name;
      need(secret_name(name), field,
           quote(name) + " is not a secret name (letters, digits and '_', "
                         "at most 64)");
      need(!(sec.env.empty() && sec.file.empty()), field,
           "write where its value comes from: env: VARIABLE or file: PATH");
      need(sec.env.empty() || sec.file.empty(), field,
           "write env or file, not both");
    }
  }

  void body(const pb::Descriptor* req) {
    bool can_have = s_.method != "GET" && s_.method != "HEAD";
    bool sends = s_.body == http_body::json || s_.body == http_body::form;
    need(can_have || !sends, "body",
         "a " + s_.method
           + " sends no body; use POST, PUT or PATCH, or body: none");
    if (s_.body != http_body::form || req == nullptr)
      return;
    for (int i = 0; i < req->field_count(); ++i) {
      auto* fd = req->field(i);
      need(!fd->is_repeated()
             && fd->cpp_type() != pb::FieldDescriptor::CPPTYPE_MESSAGE,
           "body",
           "a form takes scalar fields only, and field " + quote(fd->name())
             + " of " + req->full_name()
             + " is a list or a message; use body: json");
    }
  }

  void response() {
    need(s_.response.path.empty() || dotted_path(s_.response.path),
         "response.path",
         quote(s_.response.path) + " is not a dotted path of JSON keys "
                                   "(e.g. data or result.item)");
    need(s_.response.cost.empty() || dotted_path(s_.response.cost),
         "response.cost",
         quote(s_.response.cost) + " is not a dotted path of JSON keys "
                                   "(e.g. usage.total_tokens)");
  }

  void tls() {
    need(s_.ca_file.empty() || https_, "ca_file",
         "is for an https URL only");
  }

  void limits() {
    using namespace std::chrono;
    need(s_.connect_timeout > milliseconds{0}
           && s_.connect_timeout <= minutes{10},
         "connect_timeout", "must be more than 0 and at most 10m");
    need(s_.max_response_bytes >= 1
           && s_.max_response_bytes <= (size_t{1} << 30),
         "max_response_bytes", "must be 1 to 1073741824 (1 GiB)");
  }

  const http_spec& s_;
  bool https_ = false;
  std::vector<tool_problem> out_;
};

} // namespace

std::vector<tool_problem> check_http(const http_spec& spec) {
  return checker{spec}.run();
}

} // namespace vigil
