// Review: a format 1 data dir (tests/fixtures/format1) run by a node: the
// journal entries format 1 left pending are applied once, and a message id
// that format 1 accepted, resent by a caller after the upgrade, is a
// duplicate (not applied twice).

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>

#include "support/eventually.hpp"
#include "support/temp_dir.hpp"
#include "vigil/builtin.pb.h"
#include "vigil/cli/app.hpp"
#include "vigil/node/node.hpp"

using namespace vigil;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

builtin::Count count_of(node& nd, const std::string& path) {
  auto r = nd.call<builtin::Count>(path, builtin::Get{}, 5s);
  return r ? r->value : builtin::Count{};
}

} // namespace

TEST(upgrade_node_review, format1_ids_stay_duplicates_through_the_node) {
  test::temp_dir dir;
  fs::copy_file(fs::path{VIGIL_FIXTURES} / "format1" / "data.mdb",
                fs::path{dir.path()} / "data.mdb");
  registry types;
  cli::add_builtin_agents(types);
  node_config nc;
  nc.data_dir = dir.path();
  node nd{types, nc};
  supervisor_spec spec;
  spec.flags.intensity = 100;
  spec.children.push_back(
    worker("counter", "counter").with_durability(durability_mode::journal));
  ASSERT_FALSE(nd.start("chaos", spec));
  EXPECT_EQ(nd.rt()->storage()->upgraded_from(), 1u);
  // 693 applied before, 27 pending (n = 694..720).
  ASSERT_TRUE(
    test::eventually([&] { return count_of(nd, "chaos/counter").count() == 720; }))
    << count_of(nd, "chaos/counter").count();
  auto before = count_of(nd, "chaos/counter");
  // Id 0x1000000000e was accepted as chaos/counter's seq 1 under format 1.
  builtin::Number n;
  n.set_n(1000000);
  call_options again;
  again.message_id = 0x1000000000eull;
  ASSERT_FALSE(nd.send("chaos/counter", n, again));
  // A new id after it: once it is applied, the resend was handled first.
  builtin::Number m;
  m.set_n(1);
  call_options fresh;
  fresh.message_id = 0x7777000000000001ull;
  ASSERT_FALSE(nd.send("chaos/counter", m, fresh));
  ASSERT_TRUE(test::eventually([&] {
    return count_of(nd, "chaos/counter").count() >= before.count() + 1;
  }));
  auto after = count_of(nd, "chaos/counter");
  EXPECT_EQ(after.count(), before.count() + 1);
  EXPECT_EQ(after.sum(), before.sum() + 1);
}
