#pragma once

// A fixture for the shared-state tests in the store: a data dir of its own
// on an injected wall clock, and operations run through store::apply as the
// writer runs them.

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "support/temp_dir.hpp"
#include "vigil/persistence/shared.hpp"
#include "vigil/persistence/store.hpp"

namespace vigil::test {

class shared_store_test : public ::testing::Test {
protected:
  void SetUp() override {
    open();
  }

  /// (Re)opens the store on `dir` (default: the fixture's own).
  void open(uint32_t history = 4, const std::string* dir = nullptr) {
    st_.reset();
    store_options o;
    o.dir = dir != nullptr ? *dir : dir_.path();
    o.sync = sync_mode::nosync;
    o.kv_history = history;
    o.wall_ms = [this] { return now_; };
    ASSERT_FALSE(store::open(o, st_)) << o.dir;
  }

  /// Runs `ops` in one apply (one transaction); their results in order.
  std::vector<records::SharedResult>
  run_all(const std::vector<records::SharedOp>& ops) {
    write_item item;
    for (auto& op : ops) {
      mutation m;
      m.what = mutation::op::shared;
      m.where = db::shared;
      op.SerializeToString(&m.value);
      item.muts.push_back(std::move(m));
    }
    write_item* p = &item;
    write_result r;
    auto s = st_->apply(&p, 1, &r);
    EXPECT_FALSE(s) << s.message();
    std::vector<records::SharedResult> out;
    for (auto& m : item.muts) {
      records::SharedResult res;
      EXPECT_TRUE(res.ParseFromString(m.key));
      out.push_back(std::move(res));
    }
    return out;
  }

  records::SharedResult run(const records::SharedOp& op) {
    return run_all({op}).at(0);
  }

  /// Writes raw bytes at `key` of db::shared (a damaged record).
  void plant(const std::string& key, const std::string& value) {
    write_item item;
    item.muts.push_back({mutation::op::put, db::shared, key, value});
    write_item* p = &item;
    write_result wr;
    ASSERT_FALSE(st_->apply(&p, 1, &wr));
  }

  temp_dir dir_;
  std::unique_ptr<store> st_;
  uint64_t now_ = 1'000'000;
};

} // namespace vigil::test
