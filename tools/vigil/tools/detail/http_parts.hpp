#pragma once

// The pure parts of the `http` tool (vigil/tools/http.hpp), apart so that
// tests reach them: templates, percent-encoding, the status and Retry-After
// rules, and the redaction of secrets. Internal to vigil_tools.

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

namespace vigil::detail {

/// One piece of a URL or header template: literal text, `{field}` or
/// `{secret.NAME}` (`text` is the name without "secret.").
struct template_piece {
  enum kind_t { literal, field, secret } kind = literal;
  std::string text;
  /// For a field: its descriptor, once checked against the request type.
  const google::protobuf::FieldDescriptor* fd = nullptr;
};

/// Splits `s` into pieces. Returns an empty string, or what is wrong (an
/// unclosed '{', a '}' without '{', an empty or malformed name).
std::string split_template(std::string_view s,
                           std::vector<template_piece>& out);

/// A URL split into what is fixed and the path-and-query template.
struct url_parts {
  bool https = false;
  std::string host; ///< without brackets for an IPv6 address
  int port = 0;
  std::string origin; ///< "https://host:port", for texts
  std::vector<template_piece> target; ///< "/path?query", never empty
};

/// Parses a URL template. Returns an empty string, or what is wrong.
std::string parse_url(std::string_view url, url_parts& out);

/// Percent-encodes every byte but the unreserved ones (RFC 3986:
/// A-Z a-z 0-9 - . _ ~), so that a value stays one path segment or one
/// query value: "a/b c" is "a%2Fb%20c".
std::string percent_encode(std::string_view s);

/// Appends the value of scalar field `fd` of `m` as text: integers in
/// decimal, bools as true/false, enums by name, floating point in its
/// shortest form that reads back the same, strings and bytes as they are.
void append_scalar(const google::protobuf::Message& m,
                   const google::protobuf::FieldDescriptor* fd,
                   std::string& out);

/// The names of `d`'s fields, for texts: "a, b, c".
std::string field_names(const google::protobuf::Descriptor* d);

/// How a response status is treated.
enum class status_kind { ok, transient, permanent };

/// 2xx: ok; 408, 429 and 5xx: transient; anything else: permanent.
status_kind classify_status(int status) noexcept;

/// Reads a Retry-After value: delta seconds ("120") or an HTTP-date
/// (IMF-fixdate, RFC 850 or asctime), relative to `now`. A date in the
/// past is 0. Capped at 24 h. Returns false for anything else.
bool parse_retry_after(std::string_view v,
                       std::chrono::system_clock::time_point now,
                       std::chrono::milliseconds& out);

/// At most `max` bytes of `s` for a text: control bytes as '?', and "..."
/// if cut.
std::string excerpt(std::string_view s, size_t max = 200);

/// Replaces each secret's value in a text with "[secret NAME]": as written,
/// percent-encoded and JSON-escaped. The longest values go first, so that a
/// value that holds another is replaced whole.
class redactor {
public:
  /// Adds the secret `name` whose value is `value` (non-empty).
  void add(const std::string& name, const std::string& value);

  /// `s` with every secret value replaced.
  std::string apply(std::string s) const;

  bool empty() const noexcept {
    return forms_.empty();
  }

private:
  /// (a form of a value, its replacement), longest first.
  std::vector<std::pair<std::string, std::string>> forms_;
};

} // namespace vigil::detail
