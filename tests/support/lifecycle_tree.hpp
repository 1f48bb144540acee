#pragma once

// The tree of the randomized lifecycle tests: three static journal tallies
// (one under a nested one_for_all supervisor) and three dynamic ones that
// start_child adds. Shared by the deterministic test and the process that
// the real-process test kills.

#include <chrono>
#include <set>
#include <string>
#include <vector>

#include "vigil/supervision/child_spec.hpp"

namespace vigil::test::lifecycle {

/// The paths an operation can name; the first `n_static` are in the tree
/// from the start.
inline const std::vector<std::string> paths = {
  "root/a", "root/b", "root/sub/c", "root/x1", "root/x2", "root/x3"};
constexpr size_t n_static = 3;

inline child_spec tally_spec(const std::string& id, shutdown_spec sd) {
  return worker(id, "tally")
    .with_durability(durability_mode::journal)
    .with_shutdown(sd);
}

/// `a` gets 50 ms to stop, `b` is brutally killed (1 s of grace), `c` lives
/// under a one_for_all supervisor; `extra` are dynamic children to start as
/// part of the tree.
inline supervisor_spec tree(const std::set<std::string>& extra = {}) {
  using namespace std::chrono_literals;
  supervisor_spec sub;
  sub.flags.strategy = strategy::one_for_all;
  sub.flags.intensity = 1000;
  sub.children.push_back(tally_spec("c", shutdown_spec::after(50ms)));
  supervisor_spec spec;
  spec.flags.intensity = 1000;
  spec.children.push_back(tally_spec("a", shutdown_spec::after(50ms)));
  spec.children.push_back(tally_spec("b", shutdown_spec::brutal_kill()));
  spec.children.push_back(supervisor("sub", sub));
  for (auto& id : extra)
    spec.children.push_back(tally_spec(id, shutdown_spec::after(50ms)));
  return spec;
}

/// Every dynamic child: the final drain starts them all, so that whatever
/// waits in their journals (or in an outbox bound for them) is applied.
inline std::set<std::string> all_dynamic() {
  std::set<std::string> out;
  for (size_t i = n_static; i < paths.size(); ++i)
    out.insert(paths[i].substr(paths[i].rfind('/') + 1));
  return out;
}

inline std::string leaf(const std::string& path) {
  return path.substr(path.rfind('/') + 1);
}

/// The supervisor of path index `i`.
inline std::string sup_of(size_t i) {
  return i == 2 ? "root/sub" : "root";
}

} // namespace vigil::test::lifecycle
