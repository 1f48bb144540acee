// Adversarial review of issue 17 (part 2): the idempotency keys' text, and
// keys that follow each call's place whatever the order of the answers.
// Each test states what the issue promises; a failing one is a defect.

#include <gtest/gtest.h>

#include "support/recorded_review.hpp"

using namespace vigil;
using namespace vigil::test;
using namespace vigil::test::review17;
using namespace std::chrono_literals;
// -- tool_key_text --------------------------------------------------------------

TEST(tool_key_text_review, printable_bounded_and_distinct) {
  std::vector<std::string> paths = {
    "root/a",
    "root/a:b",
    "root/a b",
    "root/\xc3\xa9t\xc3\xa9",
    std::string(250, 'p'),
    std::string(400, 'q'),
    "root/vigil-",
    std::string("root/a\x01", 7),
    std::string("root/a\x7f", 7),
  };
  std::vector<std::string> indexes;
  {
    std::string ix;
    indexes.push_back(ix);
    for (uint32_t v : {0u, 1u, 4294967295u, 10u}) {
      std::string one;
      detail::push_index(one, v);
      indexes.push_back(one);
      ix += one;
      indexes.push_back(ix);
    }
    std::string deep;
    for (int i = 0; i < 150; ++i)
      detail::push_index(deep, static_cast<uint32_t>(i));
    indexes.push_back(deep);
  }
  std::map<std::string, std::string> seen;
  for (auto& p : paths)
    for (uint64_t origin : {0ull, 1ull, ~0ull})
      for (uint64_t id : {0ull, 7ull, 0x1000000000ull})
        for (auto& ix : indexes) {
          auto t = detail::tool_key_text(p, origin, id, ix);
          auto bin = tool_result_key(p, origin, id, ix);
          EXPECT_LE(t.size(), 255u) << p;
          for (char c : t)
            EXPECT_TRUE(c > ' ' && c < 127) << "not printable: " << t;
          auto [it, fresh] = seen.emplace(t, bin);
          EXPECT_TRUE(fresh || it->second == bin) << "collision: " << t;
          // Deterministic.
          EXPECT_EQ(t, detail::tool_key_text(p, origin, id, ix));
        }
}

// -- keys under any order of answers, and their replay (seeded) -------------

// k calls in one handler, each with a child call made in its callback; the
// answers come back in an order the seed picks, one child is left running
// when the node stops. Model: call i's key ends in ":i", its child's in
// ":i.0", whatever the order; the next node replays the envelope, every
// recorded call answered from its record (executed once in all), the one
// left running executed again under the same key, and the state applied
// once.
TEST_F(recorded_calls_review, keys_follow_the_calls_place_whatever_the_order) {
  auto& svc = review_service::get();
  for (uint32_t seed = 1; seed <= 12; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    svc.reset();
    review_seen::get().reset();
    std::mt19937 rng{seed};
    int k = 2 + static_cast<int>(rng() % 3); // 2..4
    // The order in which the 2k gates open; the last one stays closed.
    std::vector<int> order;
    for (int i = 0; i < 2 * k; ++i)
      order.push_back(i);
    std::shuffle(order.begin(), order.end(), rng);
    // A child can only run after its parent: open parents of the last
    // one's... keep it simple: the gate left closed is a child's.
    int left = -1;
    for (auto it = order.rbegin(); it != order.rend(); ++it)
      if (*it % 2 == 1) {
        left = *it;
        break;
      }
    temp_dir dir;
    std::string key_of[16];
    child_spec c;
    c.id = "f";
    c.agent = "fan";
    c.params = {{"k", std::to_string(k)}};
    c.durability.mode = durability_mode::journal;
    {
      svc.gated = true;
      node n{review_types(), review_config(dir.path())};
      ASSERT_FALSE(n.start("root", review_tree({c})));
      ASSERT_FALSE(n.send("root/f", ping_of(1)));
      for (int g : order) {
        if (g == left)
          continue;
        // A child's gate: its parent's answer must have come first.
        if (g % 2 == 1 && !svc.gate[g - 1]) {
          svc.gate[g - 1] = true;
        }
        svc.gate[g] = true;
      }
      // Every call but the one left has executed and been recorded.
      ASSERT_TRUE(eventually(
        [&] { return count(n, db::tool_results) == size_t(2 * k - 1); }, 5s))
        << count(n, db::tool_results);
      ASSERT_TRUE(eventually([&] { return svc.hanging.load() == 1; }, 5s));
      EXPECT_EQ(count(n, db::journal), 1u);
      n.stop();
      svc.release = true;
      ASSERT_TRUE(eventually([&] { return svc.hanging.load() == 0; }, 5s));
    }
    auto keys = svc.all_keys();
    ASSERT_EQ(keys.size(), size_t(2 * k));
    {
      std::lock_guard<std::mutex> guard{svc.mtx};
      (void)guard;
    }
    // The key of each request value: call i ":i", its child ":i.0".
    std::map<std::string, int> expect;
    for (auto& key : keys) {
      auto colon = key.rfind(':');
      ASSERT_NE(colon, std::string::npos) << key;
      expect[key.substr(colon + 1)]++;
    }
    for (int i = 0; i < k; ++i) {
      EXPECT_EQ(expect[std::to_string(i)], 1) << i;
      EXPECT_EQ(expect[std::to_string(i) + ".0"], 1) << i;
    }
    svc.release = true;
    node n{review_types(), review_config(dir.path())};
    ASSERT_FALSE(n.start("root", review_tree({c})));
    ASSERT_TRUE(eventually([&] { return count(n, db::journal) == 0; }, 5s));
    auto all = svc.all_keys();
    ASSERT_EQ(all.size(), size_t(2 * k + 1)) << "recorded calls executed again";
    auto again = all.back();
    EXPECT_EQ(again.substr(again.rfind(':') + 1),
              std::to_string(left / 2) + ".0");
    EXPECT_EQ(n.rt()->find_tool("w")->stats().replayed.load(),
              size_t(2 * k - 1));
    auto t = get_tally(n, "root/f");
    ASSERT_TRUE(t) << describe(t.error());
    int64_t sum = 0;
    for (int i = 0; i < k; ++i)
      sum += 2 * 1000 * (i + 1) + 1;
    EXPECT_EQ(t->sum(), sum) << review_seen::get().all();
    EXPECT_EQ(t->count(), k);
    if (HasFailure()) {
      std::cerr << "failing seed " << seed << "\n";
      break;
    }
  }
}
