#pragma once

// One `http` tool as make_http_tool leaves it: everything fixed resolved
// once (the URL's secrets, the headers, the types), so that an attempt only
// fills in the request's fields. Internal to vigil_tools.

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <google/protobuf/message.h>
#include <httplib.h>

#include "vigil/tools/detail/http_parts.hpp"
#include "vigil/tools/http.hpp"

namespace vigil::detail {

struct http_tool {
  /// Unique in the process: keys this tool's connection in each thread.
  uint64_t id = 0;
  std::string name;
  std::string method;
  url_parts url; ///< secrets rendered, fields resolved
  httplib::Headers headers; ///< secrets rendered
  http_body body = http_body::none; ///< never automatic
  const google::protobuf::Descriptor* request = nullptr;
  const google::protobuf::Message* reply_prototype = nullptr;
  /// The reply's type takes the quick JSON path (json_reply.hpp).
  bool quick_reply = false;
  std::vector<std::string> response_path;
  std::vector<std::string> cost_path;
  std::string ca_file;
  bool verify = true;
  std::chrono::milliseconds connect_timeout{0};
  size_t max_response_bytes = 0;
  redactor redact;

  /// One attempt (http_call.cpp). Never throws; every text redacted.
  tool_outcome call(const google::protobuf::Message& req,
                    tool_call& call) const;
};

} // namespace vigil::detail
