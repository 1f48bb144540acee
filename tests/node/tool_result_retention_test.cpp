// A node's writer compacts the recorded results of tool calls older than
// `tool_result_retention` in the background, as it does message ids: on a
// real data dir, with records written before the node started.

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "support/eventually.hpp"
#include "support/temp_dir.hpp"
#include "vigil/node/node.hpp"
#include "vigil/persistence/store.hpp"

using namespace vigil;
using namespace vigil::test;
using namespace std::chrono_literals;

namespace {

std::string result_at(uint64_t ms, bool running) {
  records::ToolResultRecord rec;
  rec.set_format(store::format);
  rec.set_tool("pay");
  rec.set_running(running);
  rec.set_recorded_ms(ms);
  return encode_record(rec);
}

uint64_t now_ms() {
  return static_cast<uint64_t>(
    std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::system_clock::now().time_since_epoch())
      .count());
}

size_t tool_results(node& nd) {
  size_t n = 0;
  return nd.rt()->storage()->count(db::tool_results, n) ? size_t{999} : n;
}

} // namespace

TEST(tool_result_retention_test, old_finished_results_are_compacted) {
  temp_dir dir;
  {
    // Three old finished results, one old still running, one new, and one
    // that does not parse.
    store_options so;
    so.dir = dir.path();
    std::unique_ptr<store> s;
    ASSERT_TRUE(store::open(so, s).ok());
    std::vector<write_item> items(1);
    auto put = [&](std::string key, std::string value) {
      items[0].muts.push_back({mutation::op::put, db::tool_results,
                               std::move(key), std::move(value)});
    };
    for (uint32_t i = 0; i < 3; ++i)
      put(tool_result_key("root/a", 1, 10, i), result_at(1, false));
    put(tool_result_key("root/a", 1, 11, 0), result_at(1, true));
    put(tool_result_key("root/b", 1, 12, 0), result_at(now_ms(), false));
    put(tool_result_key("root/b", 1, 13, 0), "not a record");
    write_item* ptr = items.data();
    write_result res;
    ASSERT_TRUE(s->apply(&ptr, 1, &res).ok());
  }
  node_config nc;
  nc.data_dir = dir.path();
  nc.sync = sync_mode::nosync;
  nc.writer.tool_result_retention = 60s; // the new one stays
  nc.writer.compact_every = 20ms;
  nc.writer.compact_step = 2; // several steps per pass
  node nd{registry{}, nc};
  ASSERT_FALSE(nd.start("root", supervisor_spec{}));
  EXPECT_TRUE(eventually([&] { return tool_results(nd) == 3; }))
    << tool_results(nd) << " left";
  auto stats = nd.writer_stats();
  ASSERT_TRUE(stats);
  EXPECT_EQ((*stats)[4], 3u) << "compacted";
  EXPECT_EQ((*stats)[5], 0u) << "compaction failures";
  // Later passes find nothing more.
  auto passes = [&] {
    auto st = nd.writer_stats();
    return st ? (*st)[6] : uint64_t{0};
  };
  auto p0 = passes();
  ASSERT_TRUE(eventually([&] { return passes() >= p0 + 3; }));
  EXPECT_EQ(tool_results(nd), 3u);
}

// With the retention at 0 results are kept for ever, while message ids
// are still compacted.
TEST(tool_result_retention_test, a_zero_retention_keeps_every_result) {
  temp_dir dir;
  {
    store_options so;
    so.dir = dir.path();
    std::unique_ptr<store> s;
    ASSERT_TRUE(store::open(so, s).ok());
    std::vector<write_item> items(1);
    items[0].muts.push_back({mutation::op::put, db::tool_results,
                             tool_result_key("root/a", 1, 10, 0),
                             result_at(1, false)});
    write_item* ptr = items.data();
    write_result res;
    ASSERT_TRUE(s->apply(&ptr, 1, &res).ok());
  }
  node_config nc;
  nc.data_dir = dir.path();
  nc.sync = sync_mode::nosync;
  nc.writer.tool_result_retention = 0ms;
  nc.writer.compact_every = 10ms;
  node nd{registry{}, nc};
  ASSERT_FALSE(nd.start("root", supervisor_spec{}));
  auto passes = [&] {
    auto st = nd.writer_stats();
    return st ? (*st)[6] : uint64_t{0};
  };
  ASSERT_TRUE(eventually([&] { return passes() >= 5; }));
  EXPECT_EQ(tool_results(nd), 1u);
}
