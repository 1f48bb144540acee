#pragma once

// The `http` tool: a tool whose call is an HTTP request described in data
// (a policy file's `http:` block, or an http_spec in C++) instead of a C++
// callable registered with registry::add_tool. It is made once per
// declaration (tool_decl::impl) and runs through the same stack as every
// tool: deadline, bulkhead, retries, breaker, limits, attempt timeout.
//
// One attempt is one request:
//
//   url template <- the request's scalar fields    (percent-encoded)
//   headers      <- fixed values and {secret.NAME}  (secrets: env or file)
//   body         <- the request as JSON (POST, PUT, PATCH) or a form
//   Idempotency-Key: tool_call::idempotency_key()   (when it has one)
//
// and its answer is mapped onto the reply type or a tool_error:
//
//   2xx            the body's JSON (or a sub-object of it) -> the reply
//   body unparsed  invalid_output
//   408, 429, 5xx  transient, after Retry-After (seconds or an HTTP-date)
//   other 3xx/4xx  permanent (redirects are not followed)
//   no connection  transient, before_sending() (retried even for writes)
//   timeout        transient (the attempt's deadline bounds every wait)
//
// Why secrets are read when the tool is made: a missing token is a
// configuration error that `vigil check` and `vigil run` report before
// anything starts, instead of a 401 on the first call. Their values live in
// the tool only; every text the tool produces (tool_error::what, and so the
// logs, reports, dead letters and traces that quote it) and every response
// body it maps has each value replaced by "[secret NAME]".

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "vigil/actors/tool.hpp"

namespace vigil {

/// Where one secret's value comes from: exactly one of the two. Never the
/// value itself, so that a policy file can be committed and shown.
struct http_secret {
  /// The name of an environment variable holding the value.
  std::string env;
  /// The path of a file holding the value (surrounding white space,
  /// such as a final newline, is trimmed).
  std::string file;
};

/// What a request's body holds.
enum class http_body : uint8_t {
  /// `json` for POST, PUT and PATCH; `none` for the other methods.
  automatic,
  /// The request message as JSON (Protobuf's JSON mapping with the
  /// .proto field names; 64-bit integers as strings), sent as
  /// `Content-Type: application/json`.
  json,
  /// The request's scalar fields that are set, as
  /// `application/x-www-form-urlencoded` (a request type with a list or a
  /// message field cannot be sent as a form).
  form,
  /// No body.
  none,
};

/// One `http` tool: an HTTP request made from a Protobuf request, and its
/// answer mapped onto a Protobuf reply. Plain data; check_http says what is
/// wrong with it, make_http_tool makes the tool.
struct http_spec {
  /// GET, HEAD, POST, PUT, PATCH or DELETE.
  std::string method = "GET";
  /// `http://host[:port]/path?query` or `https://...`, where the path and
  /// the query may hold `{field}` (a top-level scalar field of the request,
  /// percent-encoded: "a/b c" becomes "a%2Fb%20c") and `{secret.NAME}`. The
  /// scheme, host and port are fixed, so that no request can send the
  /// tool's secrets to another host.
  std::string url;
  /// Extra request headers, by name: fixed text, which may hold
  /// `{secret.NAME}` (e.g. `Authorization: Bearer {secret.token}`). A
  /// credential header (Authorization, Cookie, X-Api-Key, a name with
  /// "token", "secret" or "password") must take its value from a secret.
  /// Content-Type, Accept and User-Agent may be overridden; Host,
  /// Content-Length, Connection and Idempotency-Key are the tool's.
  std::map<std::string, std::string> headers;
  /// The secrets the headers and the URL refer to, by NAME.
  std::map<std::string, http_secret> secrets;
  http_body body = http_body::automatic;
  /// The full Protobuf names of the request and reply messages, which must
  /// be linked into the program (generated code).
  std::string request_type;
  std::string reply_type;
  /// Where the reply is in a 2xx body.
  struct response_mapping {
    /// The dotted path of the JSON object that is the reply ("data",
    /// "result.item"); empty: the whole body.
    std::string path;
    /// The dotted path of a number in the body that is the call's cost
    /// (an LLM API's "usage.total_tokens"), for the tool's cost limits;
    /// empty: 0.
    std::string cost;
  } response;
  /// https only: a PEM file of the CAs to trust instead of the system's.
  std::string ca_file;
  /// https only: verify the server's certificate and host name (on by
  /// default; off only for a test server on a trusted network).
  bool verify = true;
  /// The longest wait for a connection (TLS handshake included); the
  /// attempt's remaining time caps it.
  std::chrono::milliseconds connect_timeout{std::chrono::seconds{5}};
  /// A longer response body fails the attempt (permanent).
  size_t max_response_bytes = size_t{4} << 20;
};

/// Every problem with `spec` on its own, without reading the secrets: a
/// pure function (it reads the program's generated Protobuf descriptors), one
/// small check per field, every problem at once. Each problem's field is
/// the spec's, as a policy file writes it under `http:` ("url",
/// "headers.Authorization", "secrets.token.env", "response.path").
std::vector<tool_problem> check_http(const http_spec& spec);

/// Makes the `http` tool described by `spec`, named `name` (the tool's name
/// on the node, for its texts). Checks `spec` (check_http), then reads each
/// secret from its environment variable or file, and the CA file. Returns
/// null if anything is wrong, with every problem in `problems`; a problem
/// names the secret and its variable or file, never its value.
///
/// The tool is immutable and thread-safe: each thread that runs its calls
/// (the tool's pool) keeps its own keep-alive connection to the host, so
/// that calls do not connect each time.
[[nodiscard]] std::shared_ptr<const tool_type>
make_http_tool(const std::string& name, const http_spec& spec,
               std::vector<tool_problem>& problems);

} // namespace vigil
