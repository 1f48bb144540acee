#pragma once

// Helpers for the ownership tests (fencing_test, fencing_edges_test): a
// node on a temp data dir, journal tallies with a short shutdown, stuck
// handlers at test gates, and reads of what is on disk.

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "support/durable_agents.hpp"
#include "support/gate.hpp"
#include "support/temp_dir.hpp"
#include "vigil/node/node.hpp"

namespace vigil::test {

using namespace std::chrono_literals;

inline node_config with_dir(const temp_dir& d) {
  node_config nc;
  nc.data_dir = d.path();
  nc.sync = sync_mode::nosync; // kill -9 safe; these tests do not pull power
  return nc;
}

inline supervisor_spec tree(std::vector<child_spec> children) {
  supervisor_spec spec;
  spec.flags.intensity = 10;
  spec.children = std::move(children);
  return spec;
}

/// A journal tally that gets 50 ms to stop: a stuck one is killed.
inline child_spec journaled(std::string id) {
  return worker(std::move(id), "tally")
    .with_durability(durability_mode::journal)
    .with_shutdown(shutdown_spec::after(50ms));
}

inline Add add(int64_t n) {
  Add a;
  a.set_n(n);
  return a;
}

inline Block block(const std::string& gate, int64_t n,
                   bool first_only = true) {
  Block b;
  b.set_gate(gate);
  b.set_n(n);
  b.set_first_only(first_only);
  return b;
}

inline Tally get(node& nd, const std::string& path) {
  auto r = nd.call<Tally>(path, Get{}, 5s);
  return r ? r->value : Tally{};
}

/// The committed state of `path`, read from the data dir.
inline Tally saved(node& nd, const std::string& path) {
  records::Snapshot s;
  bool found = false;
  Tally t;
  if (!nd.rt()->storage()->snapshot(path, s, found) && found)
    t.ParseFromString(s.state());
  return t;
}

/// Writes the writer refused so far (from replaced owners, or after a
/// failed commit).
inline uint64_t refused(node& nd) {
  auto st = nd.writer_stats();
  return st ? (*st)[8] : 0;
}

inline size_t on_disk(node& nd, db which) {
  size_t n = 0;
  EXPECT_FALSE(nd.rt()->storage()->count(which, n));
  return n;
}

/// Opens every gate when the test ends, before the node (declared earlier)
/// waits for its actors: no handler stays stuck at teardown.
struct open_gates_at_exit {
  ~open_gates_at_exit() {
    gates::get().reset();
  }
};

/// An apply hook that holds every commit at `g` while it is closed.
inline store::apply_hook hold_at(gate& g) {
  return [&g](write_item* const*, size_t) {
    g.pass();
    return false;
  };
}

inline bool has(write_item* const* items, size_t n, db where,
                mutation::op op) {
  for (size_t i = 0; i < n; ++i)
    for (auto& m : items[i]->muts)
      if (m.where == where && m.what == op)
        return true;
  return false;
}

inline supervisor_spec dynamic(child_spec tmpl) {
  supervisor_spec spec;
  spec.flags.strategy = strategy::simple_one_for_one;
  spec.flags.intensity = 10;
  spec.children.push_back(std::move(tmpl));
  return spec;
}

inline std::vector<int64_t> seen(const Tally& t) {
  return {t.seen().begin(), t.seen().end()};
}

} // namespace vigil::test
