// The pure parts of the `http` tool: templates, percent-encoding, the
// status and Retry-After rules, redaction.

#include "vigil/tools/detail/http_parts.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <ctime>

namespace vigil::detail {

namespace pb = google::protobuf;

namespace {

bool ident_start(char c) {
  return std::isalpha(static_cast<unsigned char>(c)) || c == '_';
}

bool ident_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
}

bool identifier(std::string_view s) {
  return !s.empty() && ident_start(s[0])
         && std::all_of(s.begin(), s.end(), ident_char);
}

// Characters a URL may hold as they are (RFC 3986's unreserved and
// reserved ones, and '%' of an escape); braces are placeholders.
bool url_char(char c) {
  static const std::string_view extra = "-._~:/?#[]@!$&'()*+,;=%";
  return std::isalnum(static_cast<unsigned char>(c))
         || extra.find(c) != std::string_view::npos;
}

std::string quote(std::string_view s) {
  return "\"" + std::string{s} + "\"";
}

} // namespace

std::string split_template(std::string_view s,
                           std::vector<template_piece>& out) {
  out.clear();
  std::string lit;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '}')
      return "a '}' without its '{' at position " + std::to_string(i + 1);
    if (s[i] != '{') {
      lit += s[i];
      continue;
    }
    auto end = s.find_first_of("{}", i + 1);
    if (end == std::string_view::npos || s[end] == '{')
      return "the '{' at position " + std::to_string(i + 1)
             + " is not closed";
    auto name = s.substr(i + 1, end - i - 1);
    template_piece p;
    constexpr std::string_view secret_prefix = "secret.";
    if (name.substr(0, secret_prefix.size()) == secret_prefix) {
      p.kind = template_piece::secret;
      name.remove_prefix(secret_prefix.size());
    } else {
      p.kind = template_piece::field;
    }
    if (!identifier(name))
      return quote("{" + std::string{s.substr(i + 1, end - i - 1)} + "}")
             + " is no placeholder: write {field} (a field of the request) or "
               "{secret.NAME}";
    if (!lit.empty())
      out.push_back({template_piece::literal, std::move(lit), nullptr});
    lit.clear();
    p.text = std::string{name};
    out.push_back(std::move(p));
    i = end;
  }
  if (!lit.empty())
    out.push_back({template_piece::literal, std::move(lit), nullptr});
  return {};
}

std::string parse_url(std::string_view url, url_parts& out) {
  out = url_parts{};
  auto sep = url.find("://");
  if (sep == std::string_view::npos)
    return "must start with http:// or https://";
  std::string scheme{url.substr(0, sep)};
  for (auto& c : scheme)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (scheme != "http" && scheme != "https")
    return "must start with http:// or https://, not " + quote(scheme + "://");
  out.https = scheme == "https";
  auto rest = url.substr(sep + 3);
  auto auth_end = rest.find_first_of("/?#");
  auto authority = rest.substr(0, auth_end);
  auto target = auth_end == std::string_view::npos ? std::string_view{}
                                                   : rest.substr(auth_end);
  if (authority.find_first_of("{}") != std::string_view::npos)
    return "placeholders may stand in the path and the query only: the "
           "scheme, host and port are fixed, so that no request can send "
           "the tool's secrets to another host";
  if (authority.find('@') != std::string_view::npos)
    return "holds a user name or password: send credentials in a header "
           "from a secret (Authorization: Basic {secret.NAME})";
  std::string_view host = authority;
  std::string_view port;
  if (!authority.empty() && authority[0] == '[') {
    auto close = authority.find(']');
    if (close == std::string_view::npos)
      return "the IPv6 address in " + quote(authority) + " is not closed";
    host = authority.substr(1, close - 1);
    auto after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':')
        return "expected ':' and a port after "
               + quote(authority.substr(0, close + 1));
      port = after.substr(1);
    }
  } else {
    if (auto colon = authority.rfind(':'); colon != std::string_view::npos) {
      host = authority.substr(0, colon);
      port = authority.substr(colon + 1);
    }
    for (char c : host)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-'
          && c != '.')
        return "the host " + quote(host) + " is not a host name or address";
  }
  if (host.empty())
    return "has no host";
  out.host = std::string{host};
  out.port = out.https ? 443 : 80;
  if (!authority.empty() && authority.back() == ':')
    return "has a ':' without a port";
  if (!port.empty()) {
    int p = 0;
    auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (ec != std::errc{} || ptr != port.data() + port.size() || p < 1
        || p > 65535)
      return "the port " + quote(port) + " is not a number from 1 to 65535";
    out.port = p;
  }
  out.origin = scheme + "://" + std::string{authority};
  if (target.find('#') != std::string_view::npos)
    return "has a fragment ('#'), which is never sent to the server";
  for (size_t i = 0; i < target.size(); ++i) {
    char c = target[i];
    if (c == '{' || c == '}')
      continue;
    if (!url_char(c))
      return "holds " + quote(std::string(1, c))
             + ", which a URL may not hold as it is; percent-encode it";
    if (c == '%'
        && (i + 2 >= target.size()
            || !std::isxdigit(static_cast<unsigned char>(target[i + 1]))
            || !std::isxdigit(static_cast<unsigned char>(target[i + 2]))))
      return "holds a '%' that is not followed by two hex digits";
  }
  std::string full = target.empty() || target[0] == '?'
                       ? "/" + std::string{target}
                       : std::string{target};
  return split_template(full, out.target);
}

std::string percent_encode(std::string_view s) {
  static const char hex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

void append_scalar(const pb::Message& m, const pb::FieldDescriptor* fd,
                   std::string& out) {
  using cpp = pb::FieldDescriptor::CppType;
  auto* r = m.GetReflection();
  char buf[64];
  auto num = [&](auto v) {
    auto [ptr, ec] = std::to_chars(buf, buf + sizeof(buf), v);
    out.append(buf, ec == std::errc{} ? static_cast<size_t>(ptr - buf) : 0);
  };
  switch (fd->cpp_type()) {
    case cpp::CPPTYPE_INT32:
      num(r->GetInt32(m, fd));
      break;
    case cpp::CPPTYPE_INT64:
      num(r->GetInt64(m, fd));
      break;
    case cpp::CPPTYPE_UINT32:
      num(r->GetUInt32(m, fd));
      break;
    case cpp::CPPTYPE_UINT64:
      num(r->GetUInt64(m, fd));
      break;
    case cpp::CPPTYPE_DOUBLE:
      num(r->GetDouble(m, fd));
      break;
    case cpp::CPPTYPE_FLOAT:
      num(r->GetFloat(m, fd));
      break;
    case cpp::CPPTYPE_BOOL:
      out += r->GetBool(m, fd) ? "true" : "false";
      break;
    case cpp::CPPTYPE_ENUM:
      out += r->GetEnum(m, fd)->name();
      break;
    case cpp::CPPTYPE_STRING: {
      std::string scratch;
      out += r->GetStringReference(m, fd, &scratch);
      break;
    }
    case cpp::CPPTYPE_MESSAGE:
      break;
  }
}

std::string field_names(const pb::Descriptor* d) {
  std::string out;
  for (int i = 0; i < d->field_count(); ++i)
    out += (i > 0 ? ", " : "") + d->field(i)->name();
  return out.empty() ? "none" : out;
}

status_kind classify_status(int status) noexcept {
  if (status >= 200 && status <= 299)
    return status_kind::ok;
  if (status == 408 || status == 429 || (status >= 500 && status <= 599))
    return status_kind::transient;
  return status_kind::permanent;
}

bool parse_retry_after(std::string_view v,
                       std::chrono::system_clock::time_point now,
                       std::chrono::milliseconds& out) {
  using namespace std::chrono;
  constexpr int64_t cap_s = 24 * 3600;
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t'))
    v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t'))
    v.remove_suffix(1);
  if (v.empty())
    return false;
  auto digit = [](char c) {
    return std::isdigit(static_cast<unsigned char>(c)) != 0;
  };
  if (std::all_of(v.begin(), v.end(), digit)) {
    // Delta seconds; a huge count saturates at the cap.
    int64_t s = v.size() > 6 ? cap_s : std::atoll(std::string{v}.c_str());
    out = seconds{std::min(s, cap_s)};
    return true;
  }
  // RFC 9110's three date forms; strptime reads English names in the "C"
  // locale, which a program has until it calls setlocale.
  static const char* const forms[] = {"%a, %d %b %Y %H:%M:%S GMT",
                                      "%A, %d-%b-%y %H:%M:%S GMT",
                                      "%a %b %d %H:%M:%S %Y"};
  std::string text{v};
  for (auto* form : forms) {
    std::tm tm{};
    auto* end = strptime(text.c_str(), form, &tm);
    if (end == nullptr || *end != '\0')
      continue;
    auto at = system_clock::from_time_t(timegm(&tm));
    auto delta = duration_cast<milliseconds>(at - now);
    out = std::clamp(delta, milliseconds{0}, milliseconds{seconds{cap_s}});
    return true;
  }
  return false;
}

std::string excerpt(std::string_view s, size_t max) {
  std::string out{s.substr(0, max)};
  for (auto& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
      c = '?';
  if (s.size() > max)
    out += "...";
  return out;
}

void redactor::add(const std::string& name, const std::string& value) {
  if (value.empty())
    return;
  auto mark = "[secret " + name + "]";
  std::string json;
  for (char c : value) {
    if (c == '"' || c == '\\' || c == '/')
      json += '\\';
    json += c;
  }
  for (auto form : {value, percent_encode(value), json})
    if (std::none_of(forms_.begin(), forms_.end(),
                     [&](const auto& f) { return f.first == form; }))
      forms_.emplace_back(std::move(form), mark);
  std::stable_sort(forms_.begin(), forms_.end(),
                   [](const auto& x, const auto& y) {
                     return x.first.size() > y.first.size();
                   });
}

std::string redactor::apply(std::string s) const {
  for (auto& [form, mark] : forms_) {
    for (auto i = s.find(form); i != std::string::npos;
         i = s.find(form, i + mark.size())) {
      s.replace(i, form.size(), mark);
    }
  }
  return s;
}

} // namespace vigil::detail
