// The `http` tool: make_http_tool reads the secrets and resolves the types
// once; each attempt renders the request, sends it on this thread's
// keep-alive connection and maps the answer (http_call.cpp).

#include "vigil/tools/http.hpp"

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include <fcntl.h>
#include <strings.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "http_tool.hpp"
#include "vigil/tools/detail/json_reply.hpp"

namespace vigil {

namespace {

namespace pb = google::protobuf;
using detail::template_piece;

std::string quote(const std::string& s) {
  return "\"" + s + "\"";
}

std::string trim(std::string s) {
  auto ws = " \t\r\n\f\v";
  auto b = s.find_first_not_of(ws);
  if (b == std::string::npos)
    return {};
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

// Reads the file at `path` into `out`; returns what failed, or nothing.
std::string read_file(const std::string& path, std::string& out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return std::strerror(errno);
  char buf[4096];
  for (;;) {
    auto n = ::read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      auto why = std::strerror(errno);
      ::close(fd);
      return why;
    }
    if (n == 0)
      break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > (size_t{1} << 20)) {
      ::close(fd);
      return "longer than 1 MiB";
    }
  }
  ::close(fd);
  return {};
}

// Reads the secret `name`; a problem names the variable or file, never
// the value.
bool read_secret(const std::string& name, const http_secret& sec,
                 std::string& value, std::vector<tool_problem>& problems) {
  auto field = "secrets." + name + (sec.env.empty() ? ".file" : ".env");
  if (!sec.env.empty()) {
    auto* v = std::getenv(sec.env.c_str());
    if (v == nullptr) {
      problems.push_back({field, "the environment variable " + sec.env
                                   + " of secret " + quote(name)
                                   + " is not set"});
      return false;
    }
    value = trim(v);
    if (value.empty()) {
      problems.push_back({field, "the environment variable " + sec.env
                                   + " of secret " + quote(name)
                                   + " is empty"});
      return false;
    }
  } else {
    std::string text;
    if (auto why = read_file(sec.file, text); !why.empty()) {
      problems.push_back({field, "cannot read the file " + sec.file
                                   + " of secret " + quote(name) + ": "
                                   + why});
      return false;
    }
    value = trim(std::move(text));
    if (value.empty()) {
      problems.push_back({field, "the file " + sec.file + " of secret "
                                   + quote(name) + " is empty"});
      return false;
    }
  }
  if (value.find_first_of(std::string{"\r\n\0", 3}) != std::string::npos) {
    problems.push_back({field, "the value of secret " + quote(name)
                                 + " holds a line break or NUL"});
    return false;
  }
  return true;
}

// The CA file must hold at least one PEM certificate.
void check_ca_file(const std::string& path,
                   std::vector<tool_problem>& problems) {
  errno = 0;
  auto* f = std::fopen(path.c_str(), "r");
  if (f == nullptr) {
    problems.push_back({"ca_file", "cannot read " + path + ": "
                                     + std::strerror(errno)});
    return;
  }
  auto* cert = PEM_read_X509(f, nullptr, nullptr, nullptr);
  std::fclose(f);
  if (cert == nullptr) {
    problems.push_back({"ca_file", path + " holds no PEM certificate"});
    return;
  }
  X509_free(cert);
}

// Renders a header template whose pieces are literals and secrets.
std::string render_header(const std::vector<template_piece>& ps,
                          const std::map<std::string, std::string>& values) {
  std::string out;
  for (auto& p : ps)
    out += p.kind == template_piece::secret ? values.at(p.text) : p.text;
  return out;
}

bool has_header(const std::map<std::string, std::string>& hs,
                const char* name) {
  for (auto& [k, v] : hs)
    if (strcasecmp(k.c_str(), name) == 0)
      return true;
  return false;
}

std::vector<std::string> split_path(const std::string& dotted) {
  std::vector<std::string> out;
  std::string part;
  std::istringstream in{dotted};
  while (std::getline(in, part, '.'))
    out.push_back(part);
  return out;
}

std::atomic<uint64_t> next_tool_id{1};

} // namespace

std::shared_ptr<const tool_type>
make_http_tool(const std::string& name, const http_spec& spec,
               std::vector<tool_problem>& problems) {
  auto before = problems.size();
  for (auto& p : check_http(spec))
    problems.push_back(std::move(p));
  std::map<std::string, std::string> values;
  for (auto& [sname, sec] : spec.secrets) {
    if (sec.env.empty() == sec.file.empty())
      continue; // check_http said so
    std::string v;
    if (read_secret(sname, sec, v, problems))
      values[sname] = std::move(v);
  }
  if (!spec.ca_file.empty())
    check_ca_file(spec.ca_file, problems);
  if (problems.size() != before)
    return nullptr;
  auto st = std::make_shared<detail::http_tool>();
  st->id = next_tool_id.fetch_add(1, std::memory_order_relaxed);
  st->name = name;
  st->method = spec.method;
  detail::parse_url(spec.url, st->url);
  auto* req = pb::DescriptorPool::generated_pool()->FindMessageTypeByName(
    spec.request_type);
  auto* rep = pb::DescriptorPool::generated_pool()->FindMessageTypeByName(
    spec.reply_type);
  st->request = req;
  st->reply_prototype
    = pb::MessageFactory::generated_factory()->GetPrototype(rep);
  st->quick_reply = detail::quick_json_type(rep);
  // Secrets in the URL are fixed text from now on; fields are resolved.
  for (auto& p : st->url.target) {
    if (p.kind == template_piece::secret) {
      p = {template_piece::literal, detail::percent_encode(values[p.text]),
           nullptr};
    } else if (p.kind == template_piece::field) {
      p.fd = req->FindFieldByName(p.text);
    }
  }
  for (auto& [sname, v] : values)
    st->redact.add(sname, v);
  for (auto& [hname, hvalue] : spec.headers) {
    std::vector<template_piece> ps;
    detail::split_template(hvalue, ps);
    st->headers.emplace(hname, render_header(ps, values));
  }
  st->body = spec.body;
  if (st->body == http_body::automatic)
    st->body = spec.method == "POST" || spec.method == "PUT"
                   || spec.method == "PATCH"
                 ? http_body::json
                 : http_body::none;
  if (!has_header(spec.headers, "Accept"))
    st->headers.emplace("Accept", "application/json");
  if (!has_header(spec.headers, "Content-Type")) {
    if (st->body == http_body::json)
      st->headers.emplace("Content-Type", "application/json");
    else if (st->body == http_body::form)
      st->headers.emplace("Content-Type", "application/x-www-form-urlencoded");
  }
  if (!spec.response.path.empty())
    st->response_path = split_path(spec.response.path);
  if (!spec.response.cost.empty())
    st->cost_path = split_path(spec.response.cost);
  st->ca_file = spec.ca_file;
  st->verify = spec.verify;
  st->connect_timeout = spec.connect_timeout;
  st->max_response_bytes = spec.max_response_bytes;
  auto t = std::make_shared<tool_type>();
  t->name = "http";
  t->request_type = spec.request_type;
  t->reply_type = spec.reply_type;
  t->request_symbol = symbol{spec.request_type};
  t->reply_symbol = symbol{spec.reply_type};
  t->call = [st](const pb::Message& req, tool_call& call) {
    return st->call(req, call);
  };
  t->waits_on_io = true;
  return t;
}

} // namespace vigil
