#pragma once

#include <string>
#include <vector>

#include "vigil/actors/registry.hpp"
#include "vigil/policy.pb.h"
#include "vigil/supervision/child_spec.hpp"
#include "vigil/node/node.hpp"

namespace vigil::cli {

/// One problem in a policy file, at a 1-based line and column.
struct policy_error {
  std::string file;
  int line = 0;
  int column = 0;
  std::string message; ///< What is wrong, and what is allowed.

  /// "FILE:LINE:COL: message", or "FILE: message" for the file as a whole
  /// (line 0: it cannot be read, or is a directory).
  std::string to_string() const;
};

/// A policy file turned into what a node runs.
struct loaded_policy {
  policy::Policy pb;    ///< The file as its Protobuf schema.
  std::string name;     ///< Root path (node.name, default "root").
  node_config node;     ///< Node settings (threads, data dir, sync, tools).
  supervisor_spec tree; ///< The root supervisor.
};

/// Parses the YAML in `text` (named `file` in messages), maps it onto
/// `vigil::policy::Policy` and converts it into a node config and a tree,
/// checking everything: unknown keys, wrong types, enum words, durations,
/// unknown agent types and tool implementations (against `types`),
/// duplicate names, invalid combinations, overrides of tools the node does
/// not declare, and every rule of `check_child_specs` and `check_tool`. Returns all errors
/// at once, sorted by position; `out` is valid only if none.
std::vector<policy_error> load_policy_text(const std::string& text,
                                           const std::string& file,
                                           const registry& types,
                                           loaded_policy& out);

/// `load_policy_text` on the contents of `path`; an unreadable file is one
/// error at 0:0.
std::vector<policy_error> load_policy_file(const std::string& path,
                                           const registry& types,
                                           loaded_policy& out);

} // namespace vigil::cli
