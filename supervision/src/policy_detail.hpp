#pragma once

// What the conversion of a policy's tree (policy.cpp) and of its tools
// (policy_tools.cpp) share: where in the policy a problem is, and how a
// duration is read. Internal to vigil_supervision.

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include <google/protobuf/duration.pb.h>
#include <google/protobuf/message.h>

#include "vigil/supervision/policy.hpp"

namespace vigil::detail {

/// A place in the policy: `field` of `msg` (-1: `msg` itself).
struct place {
  const google::protobuf::Message* msg = nullptr;
  int field = -1;
};

/// The place of the field that `dotted` names inside `m` ("backoff.jitter"
/// is field jitter of field backoff; after a map field comes a key, so
/// "tools.ocr.timeout" is field timeout of the entry "ocr" of field tools,
/// and a key may hold dots), falling back to the nearest enclosing field
/// that was written, or to `m`. A map entry's place is its key's. Sets
/// `bad_value` if the value written there was rejected already.
place locate_field(const google::protobuf::Message& m,
                   const std::string& dotted, const policy_source& source,
                   bool& bad_value);

/// `d` in milliseconds, saturated far beyond what a policy may hold, so
/// that a check refuses a huge duration instead of the multiplication
/// wrapping it into range.
std::chrono::milliseconds to_ms(const google::protobuf::Duration& d);

/// Calls `f(entry, key, value)` for each entry of map field `field_number`
/// of `m` (a map of messages), through reflection, so that the messages are
/// those the reader marked (the generated map accessor hands out copies).
template <class Value, class F>
void for_each_entry(const google::protobuf::Message& m, int field_number,
                    F f) {
  auto* fd = m.GetDescriptor()->FindFieldByNumber(field_number);
  auto* r = m.GetReflection();
  auto* kf = fd->message_type()->map_key();
  auto* vf = fd->message_type()->map_value();
  for (int i = 0; i < r->FieldSize(m, fd); ++i) {
    auto& e = r->GetRepeatedMessage(m, fd, i);
    auto* er = e.GetReflection();
    auto& v = er->GetMessage(e, vf);
    f(e, er->GetString(e, kf), static_cast<const Value&>(v));
  }
}

/// Reads the `http:` block of tool `name` (`t.http`, written) into
/// `d.impl` (make_http_tool: the secrets are read now), with `d.type`
/// "http" unless `t` names one. Every problem names the tool and the field
/// (`node.tools.pay.http.url: ...`), at that field's place.
void http_from_policy(const google::protobuf::Message& entry,
                      const std::string& name, const policy::Tool& t,
                      const policy_source& source, tool_decl& d,
                      std::vector<policy_problem>& problems);

/// Converts a child's tool overrides (`c.tools`) into `out`. With
/// `declared` (the node's tools), an override of a tool the node does not
/// declare is a problem, at its key.
void overrides_from_policy(const policy::Child& c,
                           const std::vector<tool_decl>* declared,
                           std::map<std::string, tool_override>& out,
                           std::vector<policy_problem>& problems);

} // namespace vigil::detail
