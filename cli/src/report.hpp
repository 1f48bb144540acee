#pragma once

// The run report of `vigil run`: a snapshot of the tree with each node's
// state and restarts, as text or JSON.

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "vigil/node/node.hpp"

namespace vigil::cli {

struct tree_node {
  std::string name;  ///< Path segment (the full path for the root).
  std::string path;
  std::string kind;  ///< "supervisor" or "worker"
  std::string state; ///< running | degraded | stopped | failed
  uint64_t restarts = 0;
  std::vector<tree_node> children;
};

/// Reads the tree under supervisor `root` with which_children, recursively.
/// False if the root does not answer (it exited).
bool snapshot_tree(node& nd, const std::string& root, tree_node& out);

/// Restarts summed over the tree, and children in state `degraded`.
void totals(const tree_node& t, uint64_t& restarts, size_t& degraded);

nlohmann::json to_json(const tree_node& t);

void print_tree(const tree_node& t, std::ostream& out, int depth = 0);

} // namespace vigil::cli
