// context::effect on a real node with a data dir: a journal agent's effect
// is committed with its handler and dispatched after the commit, with its
// key; a failing one is sent again with the same key, then becomes a dead
// letter that names the key, and a replay of that letter dispatches it
// again under the same key.

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/eventually.hpp"
#include "support/temp_dir.hpp"
#include "support/tool_fixture.hpp"
#include "vigil/node/node.hpp"

using namespace vigil;
using namespace vigil::test;
using namespace std::chrono_literals;

namespace {

/// A webhook that records every execution's key and request, and fails
/// (transiently, or permanently with `reject`) while `failing`.
struct webhook {
  std::mutex mtx;
  std::vector<std::pair<std::string, int64_t>> seen; ///< (key, n)
  std::atomic<bool> failing{false};
  std::atomic<bool> reject{false};

  tool_result<Pong> call(const Ping& req, tool_call& c) {
    {
      std::lock_guard<std::mutex> guard{mtx};
      seen.emplace_back(c.idempotency_key(), req.n());
    }
    if (failing)
      return reject ? tool_error::permanent("400 bad hook")
                    : tool_error::transient("503 hook down");
    Pong p;
    p.set_n(req.n());
    return p;
  }
  std::vector<std::pair<std::string, int64_t>> all() {
    std::lock_guard<std::mutex> guard{mtx};
    return seen;
  }
  static webhook& get() {
    static webhook w;
    return w;
  }
  void reset() {
    std::lock_guard<std::mutex> guard{mtx};
    seen.clear();
    failing = false;
    reject = false;
  }
};

/// On Ping n: counts it in its state and sends an effect (Ping n) to
/// "hook"; answers the count.
class notifier : public agent<Pong> {
public:
  explicit notifier(const params&) {
  }
  static void define(handlers<notifier>& h) {
    h.on<Ping>([](notifier& self, context& ctx, const Ping& m) -> Pong {
      self.state().set_n(self.state().n() + 1);
      if (auto err = ctx.effect("hook", m))
        throw tool_failure(err);
      return self.state();
    });
  }
};

registry notifier_types() {
  registry r;
  r.add<notifier>("notifier");
  r.add_tool<Ping, Pong>("hook", [](const Ping& req, tool_call& c) {
    return webhook::get().call(req, c);
  });
  return r;
}

node_config notifier_config(const std::string& dir) {
  node_config cfg;
  cfg.data_dir = dir;
  auto d = decl_of("hook", side_effect::non_idempotent_write);
  d.policy.retry.max_attempts = 1;
  d.policy.breaker.enabled = false; // every dispatch reaches the hook
  cfg.tools.push_back(d);
  return cfg;
}

supervisor_spec notifier_tree(durability_mode mode) {
  child_spec c;
  c.id = "n";
  c.agent = "notifier";
  c.durability.mode = mode;
  supervisor_spec spec;
  spec.children.push_back(c);
  return spec;
}

size_t count(node& n, db d) {
  size_t out = 0;
  return n.rt()->storage()->count(d, out) ? size_t{999999} : out;
}

class effects_test : public ::testing::Test {
protected:
  void SetUp() override {
    webhook::get().reset();
  }
};

} // namespace

TEST_F(effects_test, a_journal_agents_effect_is_dispatched_after_its_commit) {
  temp_dir dir;
  node n{notifier_types(), notifier_config(dir.path())};
  ASSERT_FALSE(n.start("root", notifier_tree(durability_mode::journal)));
  auto r = n.call<Pong>("root/n", ping(5), 5s);
  ASSERT_TRUE(r) << describe(r.error());
  auto& hook = webhook::get();
  ASSERT_TRUE(eventually([&] { return hook.all().size() == 1; }, 5s));
  EXPECT_TRUE(eventually([&] { return count(n, db::outbox) == 0; }, 5s));
  auto seen = hook.all();
  EXPECT_EQ(seen[0].second, 5);
  EXPECT_EQ(seen[0].first.rfind("root/n:", 0), 0u) << seen[0].first;
  EXPECT_EQ(n.rt()->find_tool("hook")->stats().effects.load(), 1u);
}

TEST_F(effects_test, a_failing_effect_is_sent_again_then_dead_and_replayed) {
  temp_dir dir;
  auto& hook = webhook::get();
  hook.failing = true;
  std::string key;
  {
    node n{notifier_types(), notifier_config(dir.path())};
    ASSERT_FALSE(n.start("root", notifier_tree(durability_mode::journal)));
    ASSERT_TRUE(n.call<Pong>("root/n", ping(7), 5s));
    // 5 dispatches (250 ms apart), all under one key, then a dead letter.
    ASSERT_TRUE(eventually([&] { return count(n, db::dead_letters) == 1; },
                           10s));
    auto seen = hook.all();
    ASSERT_EQ(seen.size(), 5u);
    key = seen[0].first;
    for (auto& s : seen)
      EXPECT_EQ(s.first, key);
    EXPECT_EQ(count(n, db::outbox), 0u);
    auto dls = n.dead_letters();
    ASSERT_EQ(dls.size(), 1u);
    EXPECT_NE(dls[0].reason.find(key), std::string::npos) << dls[0].reason;
    EXPECT_NE(dls[0].reason.find("503 hook down"), std::string::npos)
      << dls[0].reason;
    n.stop();
  }
  // Replayed offline: back into the outbox, dispatched by the next node
  // under the same key.
  {
    store_options so;
    so.dir = dir.path();
    std::unique_ptr<store> s;
    ASSERT_TRUE(store::open(so, s).ok());
    std::vector<std::string> problems;
    size_t replayed = 0;
    ASSERT_TRUE(s->replay_dead_letters({}, true, problems, replayed).ok());
    EXPECT_EQ(replayed, 1u);
    EXPECT_TRUE(problems.empty()) << problems[0];
  }
  hook.failing = false;
  node n{notifier_types(), notifier_config(dir.path())};
  ASSERT_FALSE(n.start("root", notifier_tree(durability_mode::journal)));
  ASSERT_TRUE(eventually([&] { return hook.all().size() == 6; }, 5s));
  EXPECT_EQ(hook.all().back().first, key);
  EXPECT_TRUE(eventually([&] { return count(n, db::outbox) == 0; }, 5s));
  EXPECT_EQ(count(n, db::dead_letters), 0u);
}

TEST_F(effects_test, a_permanent_error_is_a_dead_letter_at_once) {
  temp_dir dir;
  auto& hook = webhook::get();
  hook.failing = true;
  hook.reject = true;
  node n{notifier_types(), notifier_config(dir.path())};
  ASSERT_FALSE(n.start("root", notifier_tree(durability_mode::journal)));
  ASSERT_TRUE(n.call<Pong>("root/n", ping(9), 5s));
  ASSERT_TRUE(
    eventually([&] { return count(n, db::dead_letters) == 1; }, 5s));
  EXPECT_EQ(hook.all().size(), 1u);
  EXPECT_EQ(count(n, db::outbox), 0u);
}

TEST_F(effects_test, an_ephemeral_agents_effect_goes_at_once) {
  temp_dir dir;
  node n{notifier_types(), notifier_config(dir.path())};
  ASSERT_FALSE(n.start("root", notifier_tree(durability_mode::none)));
  ASSERT_TRUE(n.call<Pong>("root/n", ping(3), 5s));
  auto& hook = webhook::get();
  ASSERT_TRUE(eventually([&] { return hook.all().size() == 1; }, 5s));
  EXPECT_FALSE(hook.all()[0].first.empty());
  EXPECT_EQ(count(n, db::outbox), 0u);
}

TEST_F(effects_test, an_unknown_tool_is_refused_at_once) {
  temp_dir dir;
  auto types = notifier_types();
  node_config cfg;
  cfg.data_dir = dir.path();
  node n{std::move(types), cfg}; // "hook" not declared
  ASSERT_FALSE(n.start("root", notifier_tree(durability_mode::journal)));
  auto r = n.call<Pong>("root/n", ping(1), 5s);
  ASSERT_FALSE(r);
  EXPECT_TRUE(is(r.error(), errc::unknown_tool)) << describe(r.error());
}
