#pragma once

// A policy file's supervisor tree (proto/vigil/policy.proto) as specs: the
// conversion, with every check that the schema alone cannot make. It lives
// here, beside the specs, so that any reader of a policy (the `vigil`
// command's YAML, or a node that received one) converts it the same way.
// The reader keeps the positions: it says which fields were written and
// which values it rejected already, and turns each problem's message and
// field into a place in its file.

#include <string>
#include <vector>

#include <google/protobuf/message.h>

#include "vigil/actors/registry.hpp"
#include "vigil/policy.pb.h"
#include "vigil/supervision/child_spec.hpp"

namespace vigil {

/// What the conversion asks the reader of a policy. The messages it is
/// asked about are those of the policy being converted.
class policy_source {
public:
  virtual ~policy_source() = default;

  /// True if `field` of `msg` was written (-1: `msg` itself).
  virtual bool written(const google::protobuf::Message& msg,
                       int field) const = 0;

  /// True if the value written for `field` of `msg` was rejected already
  /// (it kept its default), so that the conversion does not blame it again.
  virtual bool rejected(const google::protobuf::Message& msg,
                        int field) const = 0;

  /// Where `field` of `msg` was written, as the reader names places (e.g.
  /// "FILE:LINE:COL"), for a problem that refers to another place.
  virtual std::string where(const google::protobuf::Message& msg,
                            int field) const = 0;
};

/// One problem of a policy: `text` (what is wrong, and what is allowed) is
/// about `field` of `msg` (-1: `msg` itself; `msg` null: no place known).
struct policy_problem {
  const google::protobuf::Message* msg = nullptr;
  int field = -1;
  std::string text;
};

/// Converts the policy's root supervisor `tree` into `out`, checking what
/// the schema cannot: that each child names an agent type of `types` or a
/// supervisor, duplicate names, `shutdown` words and durations, invalid
/// combinations (`significant` under `auto_shutdown: never`, `temporary`
/// with `degrade`, `degrade` without a default, a durable supervisor, tool
/// overrides on a supervisor), with `tools` (the node's, see
/// tools_from_policy) that every tool a child overrides is declared, and
/// then every rule of `check_child_specs`, each problem reported once.
/// Pure. Returns every problem in the order found; `out` is usable only if
/// there is none.
std::vector<policy_problem>
spec_from_policy(const policy::Supervisor& tree, const registry& types,
                 const policy_source& source, supervisor_spec& out,
                 const std::vector<tool_decl>* tools = nullptr);

/// Converts the tools the policy's node declares (`node.tools`) into
/// `out`, in the order written, each named by its key. Checks what the
/// schema cannot: that each has its side-effect class (`class`, which has
/// no default: a write taken for read_only would be retried), that its
/// implementation (`type`, default its name) is registered in `types`
/// (registry::add_tool) or is made from its `http:` block (make_http_tool:
/// `type` "http", `impl` set), and every rule of check_tool and
/// check_http, each problem at the field it names (`retry.max_attempts`,
/// `http.url`), or at the tool's key for a field not written. A field not
/// written keeps tool_policy's default, except that an irreversible tool's
/// `retry.max_attempts` is 1. Pure, but for the secrets and CA files of
/// `http:` blocks, which are read now (a missing one is a problem naming
/// its variable or file); `out` is usable only if there is no problem.
std::vector<policy_problem> tools_from_policy(const policy::Node& node,
                                              const registry& types,
                                              const policy_source& source,
                                              std::vector<tool_decl>& out);

} // namespace vigil
