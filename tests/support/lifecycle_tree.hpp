#pragma once

// The tree of the randomized lifecycle tests: three static journal tallies
// (one under a nested one_for_all supervisor) and three dynamic ones that
// start_child adds. Shared by the deterministic test and the process that
// the real-process test kills.

#include <chrono>
#include <set>
#include <string>
#include <vector>

#include "proto/test.pb.h"
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

/// Children that degrade once their budget is spent, under `root/deg`
/// (one_for_one, 1 restart in 10 s): a journal tally and a memory-only
/// one (mtally) that redelivers a failed envelope once. Their stand-in
/// answers Tally{count: -1}; probes wait 50 ms, doubling up to 200 ms.
inline const std::vector<std::string> degrade_paths = {"root/deg/j",
                                                       "root/deg/m"};

inline supervisor_spec degrade_tree() {
  using namespace std::chrono_literals;
  supervisor_spec deg;
  deg.flags.intensity = 1;
  deg.flags.period = 10000ms;
  Tally fallback;
  fallback.set_count(-1);
  auto degrading = [&](child_spec c) {
    c = c.with_failure(on_failure::degrade)
          .with_shutdown(shutdown_spec::after(50ms));
    c.degrade.set_fallback(fallback);
    c.degrade.probe_min = 50ms;
    c.degrade.probe_max = 200ms;
    return c;
  };
  deg.children.push_back(degrading(
    worker("j", "tally").with_durability(durability_mode::journal)));
  auto m = degrading(worker("m", "mtally"));
  m.max_deliveries = 2;
  deg.children.push_back(std::move(m));
  return deg;
}

/// `a` gets 50 ms to stop, `b` is brutally killed (1 s of grace), `c` lives
/// under a one_for_all supervisor; `extra` are dynamic children to start as
/// part of the tree; with `degrade`, root/deg (degrade_tree) comes last.
inline supervisor_spec tree(const std::set<std::string>& extra = {},
                            bool degrade = false) {
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
  if (degrade)
    spec.children.push_back(supervisor("deg", degrade_tree()));
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
