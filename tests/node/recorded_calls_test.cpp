// Idempotency keys and recorded tool calls on a real node with a data dir:
// a journal agent's results are recorded under their keys before the
// callbacks run, and a replay of its envelope (after the node stopped in
// the middle of the envelope's calls) gets the recorded results without
// executing again; a repeat of a running key is `in_use`; a recorded key
// asked for another request is `idempotency_mismatch`; a tool's error
// thrown as tool_failure refuses the envelope (a dead letter).

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <thread>
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

/// A write service that counts its executions by idempotency key. A
/// request with n >= 100000 hangs (ignoring cancellation) until `release`.
struct keyed_service {
  std::mutex mtx;
  std::map<std::string, int> by_key;
  std::vector<std::string> keys; ///< in execution order
  std::atomic<int> executions{0};
  std::atomic<int> hanging{0};
  std::atomic<bool> release{false};
  std::atomic<int> fail_next{0}; ///< transient failures to give first

  tool_result<Pong> call(const Ping& req, tool_call& c) {
    ++executions;
    {
      std::lock_guard<std::mutex> guard{mtx};
      ++by_key[c.idempotency_key()];
      keys.push_back(c.idempotency_key());
    }
    if (req.n() >= 100000) {
      ++hanging;
      auto until = std::chrono::steady_clock::now() + 20s;
      while (!release && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(1ms); // a blocking call, as a tool's is
      --hanging;
    }
    if (fail_next > 0 && fail_next-- > 0)
      return tool_error::transient("503");
    Pong p;
    p.set_n(req.n());
    p.set_attempt(c.attempt());
    return p;
  }

  int count(const std::string& key) {
    std::lock_guard<std::mutex> guard{mtx};
    auto i = by_key.find(key);
    return i == by_key.end() ? 0 : i->second;
  }
  std::vector<std::string> all_keys() {
    std::lock_guard<std::mutex> guard{mtx};
    return keys;
  }

  static keyed_service& get() {
    static keyed_service s;
    return s;
  }
  void reset() {
    std::lock_guard<std::mutex> guard{mtx};
    by_key.clear();
    keys.clear();
    executions = 0;
    hanging = 0;
    release = false;
    fail_next = 0;
  }
};

/// Errors the agents saw, by code name (tests read them after the fact).
struct seen_errors {
  std::mutex mtx;
  std::vector<std::string> codes;
  void add(const caf::error& e) {
    std::lock_guard<std::mutex> guard{mtx};
    codes.push_back(e.category() == caf::atom("vigil")
                      ? to_string(static_cast<errc>(e.code()))
                      : describe(e));
  }
  bool has(const std::string& code) {
    std::lock_guard<std::mutex> guard{mtx};
    for (auto& c : codes)
      if (c == code)
        return true;
    return false;
  }
  static seen_errors& get() {
    static seen_errors s;
    return s;
  }
};

/// On Ping n: calls "w" with n * 10 + `bias` (a param), adds the reply to
/// its state (Pong.n) and counts its callbacks (Pong.seen); for n >= 100
/// the callback calls "w" again with n * 10 + 100000 + bias (which hangs),
/// and answers after that one. With param `throw`, the handler throws after
/// calling.
class recorder : public agent<Pong> {
public:
  explicit recorder(const params& ps) {
    if (auto i = ps.find("bias"); i != ps.end())
      bias_ = std::stoll(i->second);
    throw_ = ps.count("throw") > 0;
  }

  static void define(handlers<recorder>& h) {
    h.on<Ping>(&recorder::ping);
    h.on<Exit>([](recorder& self, context&, const Exit&) -> Pong {
      return self.state();
    });
  }

  void ping(context& ctx, const Ping& m) {
    auto rp = ctx.defer();
    Ping req;
    req.set_n(m.n() * 10 + bias_);
    auto fail = [rp](const caf::error& e) mutable {
      seen_errors::get().add(e);
      rp.fail(e);
    };
    ctx.call_tool<Pong>(
      "w", req,
      [this, &ctx, rp, fail, n = m.n()](Pong p) mutable {
        state().set_n(state().n() + p.n());
        state().set_seen(state().seen() + 1);
        if (n < 100) {
          rp.deliver(state());
          return;
        }
        Ping more;
        more.set_n(n * 10 + 100000 + bias_);
        ctx.call_tool<Pong>(
          "w", more,
          [this, rp](Pong q) mutable {
            state().set_n(state().n() + q.n());
            rp.deliver(state());
          },
          fail);
      },
      fail);
    if (throw_)
      throw std::runtime_error("after calling");
  }

private:
  int64_t bias_ = 0;
  bool throw_ = false;
};

registry recorder_types() {
  registry r;
  r.add<recorder>("recorder");
  r.add_tool<Ping, Pong>("w", [](const Ping& req, tool_call& c) {
    return keyed_service::get().call(req, c);
  });
  return r;
}

node_config recorder_config(const std::string& dir,
                            side_effect fx = side_effect::idempotent_write) {
  node_config cfg;
  cfg.data_dir = dir;
  auto d = decl_of("w", fx);
  d.policy.retry.initial = 1ms;
  d.policy.retry.max = 2ms;
  cfg.tools.push_back(d);
  // A stop does not wait for a hung execution (it finishes on its own).
  cfg.tool_executors = [](const tool_decl& t) {
    return std::make_shared<detail::thread_pool>(
      t.policy.bulkhead.max_concurrent, t.name, 0ms);
  };
  return cfg;
}

supervisor_spec recorder_tree(durability_mode mode, params ps = {},
                              uint32_t max_deliveries = 1) {
  child_spec c;
  c.id = "r";
  c.agent = "recorder";
  c.params = std::move(ps);
  c.durability.mode = mode;
  c.max_deliveries = max_deliveries;
  supervisor_spec spec;
  spec.flags.intensity = 100;
  spec.children.push_back(c);
  return spec;
}

size_t count(node& n, db d) {
  size_t out = 0;
  return n.rt()->storage()->count(d, out) ? size_t{999999} : out;
}

class recorded_calls_test : public ::testing::Test {
protected:
  void SetUp() override {
    keyed_service::get().reset();
  }
  void TearDown() override {
    keyed_service::get().release = true;
  }
};

} // namespace

TEST_F(recorded_calls_test, a_journal_agents_result_is_recorded_before_its_callback) {
  temp_dir dir;
  node n{recorder_types(), recorder_config(dir.path())};
  ASSERT_FALSE(n.start("root", recorder_tree(durability_mode::journal)));
  auto r = n.call<Pong>("root/r", ping(7), 5s);
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_EQ(r->value.n(), 70);
  // Recorded, with the key the tool saw, before the reply went out.
  EXPECT_EQ(count(n, db::tool_results), 1u);
  auto keys = keyed_service::get().all_keys();
  ASSERT_EQ(keys.size(), 1u);
  EXPECT_EQ(keys[0].rfind("root/r:", 0), 0u) << keys[0];
  EXPECT_EQ(keys[0].substr(keys[0].size() - 2), ":0") << keys[0];
  auto* tool = n.rt()->find_tool("w");
  EXPECT_EQ(tool->stats().recorded.load(), 1u);
  EXPECT_EQ(tool->stats().replayed.load(), 0u);
  // A second envelope has its own key.
  ASSERT_TRUE(n.call<Pong>("root/r", ping(8), 5s));
  EXPECT_EQ(count(n, db::tool_results), 2u);
  EXPECT_EQ(keyed_service::get().by_key.size(), 2u);
}

TEST_F(recorded_calls_test, retries_send_the_same_key_and_the_record_is_the_answer) {
  temp_dir dir;
  auto& svc = keyed_service::get();
  svc.fail_next = 2;
  node n{recorder_types(), recorder_config(dir.path())};
  ASSERT_FALSE(n.start("root", recorder_tree(durability_mode::journal)));
  auto r = n.call<Pong>("root/r", ping(3), 5s);
  ASSERT_TRUE(r) << describe(r.error());
  auto keys = svc.all_keys();
  ASSERT_EQ(keys.size(), 3u); // two 503s, then the answer
  EXPECT_EQ(keys[0], keys[1]);
  EXPECT_EQ(keys[1], keys[2]);
  EXPECT_EQ(count(n, db::tool_results), 1u);
}

TEST_F(recorded_calls_test, a_replay_after_a_stop_gets_the_recorded_result) {
  temp_dir dir;
  auto& svc = keyed_service::get();
  std::string first_key;
  {
    node n{recorder_types(), recorder_config(dir.path())};
    ASSERT_FALSE(n.start("root", recorder_tree(durability_mode::journal)));
    // Call 0 answers and is recorded; its callback's call (0.0) hangs, so
    // the envelope stays open (not consumed) when the node stops.
    ASSERT_FALSE(n.send("root/r", ping(200)));
    ASSERT_TRUE(eventually([&] { return svc.hanging.load() == 1; }, 5s));
    EXPECT_EQ(count(n, db::tool_results), 1u);
    EXPECT_EQ(count(n, db::journal), 1u); // held: not consumed
    first_key = svc.all_keys().at(0);
    n.stop();
    svc.release = true; // its answer reaches nobody
  }
  // The next node replays the envelope: call 0 from its record.
  EXPECT_EQ(svc.count(first_key), 1);
  node n{recorder_types(), recorder_config(dir.path())};
  ASSERT_FALSE(n.start("root", recorder_tree(durability_mode::journal)));
  auto* tool = n.rt()->find_tool("w");
  ASSERT_TRUE(eventually([&] { return count(n, db::journal) == 0; }, 5s));
  EXPECT_EQ(svc.count(first_key), 1) << "call 0 executed again";
  EXPECT_EQ(tool->stats().replayed.load(), 1u);
  auto st = n.call<Pong>("root/r", Exit{}, 5s);
  ASSERT_TRUE(st) << describe(st.error());
  // State: 2000 (call 0) + 102000 (call 0.0), applied once.
  EXPECT_EQ(st->value.n(), 2000 + 102000);
  EXPECT_EQ(st->value.seen(), 1);
  // Call 0.0 ran in both runs (its record was never committed), under
  // one key: the service can apply it once.
  auto keys = svc.all_keys();
  ASSERT_EQ(keys.size(), 3u);
  EXPECT_EQ(keys[1].substr(keys[1].size() - 4), ":0.0") << keys[1];
  EXPECT_EQ(keys[2], keys[1]);
  EXPECT_EQ(svc.count(keys[1]), 2);
}

TEST_F(recorded_calls_test, the_same_key_for_another_request_is_a_mismatch) {
  temp_dir dir;
  auto& svc = keyed_service::get();
  {
    node n{recorder_types(), recorder_config(dir.path())};
    ASSERT_FALSE(
      n.start("root", recorder_tree(durability_mode::journal, {{"bias", "1"}})));
    ASSERT_FALSE(n.send("root/r", ping(300)));
    ASSERT_TRUE(eventually([&] { return svc.hanging.load() == 1; }, 5s));
    n.stop();
    svc.release = true;
  }
  // The replay asks call 0 with other bytes (bias 2): refused, not run.
  int executed = svc.executions.load();
  node n{recorder_types(), recorder_config(dir.path())};
  ASSERT_FALSE(
    n.start("root", recorder_tree(durability_mode::journal, {{"bias", "2"}})));
  auto* tool = n.rt()->find_tool("w");
  ASSERT_TRUE(eventually([&] { return tool->stats().mismatches.load() == 1; },
                         5s));
  EXPECT_TRUE(seen_errors::get().has("idempotency_mismatch"));
  EXPECT_EQ(svc.executions.load(), executed);
}

TEST_F(recorded_calls_test, a_repeat_of_a_running_key_is_in_use) {
  temp_dir dir;
  auto& svc = keyed_service::get();
  node n{recorder_types(),
         recorder_config(dir.path(), side_effect::non_idempotent_write)};
  // Not durable: the key still goes to the tool, and guards the repeat.
  ASSERT_FALSE(n.start("root", recorder_tree(durability_mode::none,
                                             {{"throw", ""}}, 2)));
  // Delivery 1 calls (hangs: n * 10 >= 100000) and throws; delivery 2, on
  // the next instance, calls with the same key while the first runs.
  ASSERT_FALSE(n.send("root/r", ping(10000)));
  auto* tool = n.rt()->find_tool("w");
  ASSERT_TRUE(eventually(
    [&] { return tool->stats().in_use_refusals.load() == 1; }, 5s));
  EXPECT_TRUE(seen_errors::get().has("in_use"));
  // The first execution may not have started yet (its pool thread) when
  // the repeat was refused: it runs once, and only once.
  ASSERT_TRUE(eventually([&] { return svc.hanging.load() == 1; }, 5s));
  EXPECT_EQ(svc.executions.load(), 1);
  svc.release = true;
  ASSERT_TRUE(eventually([&] { return svc.hanging.load() == 0; }, 5s));
  EXPECT_EQ(count(n, db::tool_results), 0u); // nothing recorded: not a journal
}

TEST_F(recorded_calls_test, a_read_outside_a_journal_has_no_key) {
  temp_dir dir;
  auto& svc = keyed_service::get();
  node n{recorder_types(),
         recorder_config(dir.path(), side_effect::read_only)};
  ASSERT_FALSE(n.start("root", recorder_tree(durability_mode::none)));
  ASSERT_TRUE(n.call<Pong>("root/r", ping(1), 5s));
  auto keys = svc.all_keys();
  ASSERT_EQ(keys.size(), 1u);
  EXPECT_EQ(keys[0], "");
}

// -- tool_failure thrown from a call's callback ------------------------------

namespace {

/// On Ping: calls "w" for it. With param `in_handler`, the handler throws
/// tool_failure itself (a refusal); otherwise the call's error callback
/// passes the tool's error on as tool_failure.
class refuser : public agent<Pong> {
public:
  explicit refuser(const params& ps) : in_handler_(ps.count("in_handler")) {
  }
  static void define(handlers<refuser>& h) {
    h.on<Ping>(&refuser::ping);
  }
  void ping(context& ctx, const Ping& m) {
    if (in_handler_)
      throw tool_failure(make_error(errc::tool_unavailable, "refused"));
    ctx.call_tool<Pong>(
      "w", m, [](Pong) {},
      [](const caf::error& e) { throw tool_failure(e); });
  }

private:
  bool in_handler_;
};

size_t refused_async_ping(const std::string& dir, params ps) {
  auto types = recorder_types();
  types.add<refuser>("refuser");
  auto cfg = recorder_config(dir);
  cfg.tools[0].policy.retry.max_attempts = 1;
  keyed_service::get().fail_next = 1; // the one attempt fails
  node n{std::move(types), cfg};
  auto spec = recorder_tree(durability_mode::journal, std::move(ps));
  spec.children[0].agent = "refuser";
  EXPECT_FALSE(n.start("root", spec));
  EXPECT_FALSE(n.send("root/r", ping(1)));
  // Accepted (its id's guard stays), then consumed.
  EXPECT_TRUE(eventually(
    [&] {
      return count(n, db::idempotency) == 1 && count(n, db::journal) == 0;
    },
    5s));
  return count(n, db::dead_letters); // in the consume's commit
}

} // namespace

TEST_F(recorded_calls_test, tool_failure_in_a_handler_is_a_dead_letter) {
  temp_dir dir;
  EXPECT_EQ(refused_async_ping(dir.path(), {{"in_handler", ""}}), 1u);
}

// README ("Tool calls"): a handler may throw a tool's error as tool_failure
// and "either way it is a refusal"; a journal agent's refusal of an async
// envelope is a dead letter (the test above). Thrown from the error
// callback of a call that holds the envelope, it refuses that envelope
// too. (Found by tool_kill_test with injected failures: it used to be
// swallowed, and the envelope consumed as handled, without a trace.)
TEST_F(recorded_calls_test, tool_failure_in_a_callback_is_a_dead_letter) {
  temp_dir dir;
  EXPECT_EQ(refused_async_ping(dir.path(), {}), 1u)
    << "the envelope was consumed as handled, without a trace";
}
