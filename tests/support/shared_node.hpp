#pragma once

// A fixture for the shared-state tests on a real node: a data dir of its
// own, a tree "t" of the given children, calls to the probe agent
// (shared_probe.hpp), and reads of the store.

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "support/shared_probe.hpp"
#include "support/temp_dir.hpp"
#include "vigil/node/node.hpp"
#include "vigil/persistence/shared.hpp"

namespace vigil::test {

class shared_node_fixture : public ::testing::Test {
protected:
  /// The node's settings: the fixture's data dir (or none), no fsync, and
  /// the probes' injected wall clock (or the system's).
  node_config config(bool with_dir = true, bool injected_wall = true) {
    node_config nc;
    if (with_dir)
      nc.data_dir = dir_.path();
    nc.sync = sync_mode::nosync;
    if (injected_wall)
      nc.wall_ms = [] { return probe_wall.load(); };
    return nc;
  }

  /// Starts a node of `types` with the tree "t" of `children`.
  void start_tree(registry types, node_config nc,
                  std::vector<child_spec> children, int intensity = 100,
                  std::chrono::seconds period = std::chrono::seconds{60}) {
    nd_ = std::make_unique<node>(std::move(types), std::move(nc));
    supervisor_spec spec;
    spec.flags.intensity = intensity;
    spec.flags.period = period;
    spec.children = std::move(children);
    ASSERT_FALSE(nd_->start("t", spec));
  }

  /// Asks the probe at t/WHO to run `o`; a failed call is an error
  /// "call: ..." in the result.
  ProbeResult call(const std::string& who, ProbeOp o) {
    auto r = nd_->call<ProbeResult>("t/" + who, o,
                                    std::chrono::seconds{10});
    if (!r) {
      ProbeResult p;
      p.set_error("call: " + describe(r.error()));
      return p;
    }
    return r->value;
  }

  /// The current record of `key` in `store`; `found_out`: it exists and
  /// is not deleted.
  records::KvRecord kv(const std::string& store, const std::string& key,
                       bool* found_out = nullptr) {
    records::KvRecord rec;
    bool found = false;
    EXPECT_FALSE(kv_read(*nd_->rt()->storage(), store, key, rec, found));
    if (found_out != nullptr)
      *found_out = found && !rec.deleted();
    return rec;
  }

  void TearDown() override {
    if (nd_) {
      if (auto& st = nd_->rt()->storage())
        st->set_apply_hook({});
      EXPECT_FALSE(nd_->stop());
    }
  }

  temp_dir dir_;
  std::unique_ptr<node> nd_;
};

} // namespace vigil::test
