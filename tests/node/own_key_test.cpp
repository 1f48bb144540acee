// Two runtime features issue 20's examples need, on a real node with a data
// dir and a counting tool:
// - a caller-named idempotency key (tool_options::idempotency_key): the
//   tool sees it as is; every agent's call to the tool with it is one call
//   (a journal agent's result is recorded under it and answers a later
//   call with the same request from another agent); another request under
//   it is idempotency_mismatch; another tool has its own keys; a key that
//   is not printable ASCII of 1 to 255 bytes fails before any attempt;
//   a call from outside any envelope (on_start) carries it too;
// - a journal agent's deferred reply to an envelope that asks for its
//   reply to be kept (a durable saga's call), given in a tool call's
//   callback: kept with the consume, so that a resend of the message id
//   (also after a restart of the node) gets it, and the tool does not run
//   again; a deferred refusal likewise.

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "support/eventually.hpp"
#include "support/kept_call.hpp"
#include "support/temp_dir.hpp"
#include "support/tool_fixture.hpp"
#include "proto/test.pb.h"
#include "vigil/node/node.hpp"

using namespace std::chrono_literals;
using namespace vigil;
using namespace vigil::test;

namespace {

/// The tools' executions by tool and key; a request with n < 0 is refused
/// for good, one with n <= -100 after it hangs until `release`.
struct key_log {
  std::mutex mtx;
  std::map<std::string, int> runs; // "tool key" -> executions
  int total = 0;
  std::atomic<int> hanging{0};
  std::atomic<bool> release{false};
  static key_log& get() {
    static key_log l;
    return l;
  }
  void reset() {
    std::lock_guard<std::mutex> g{mtx};
    runs.clear();
    total = 0;
    hanging = 0;
    release = false;
  }
  int of(const std::string& tool, const std::string& key) {
    std::lock_guard<std::mutex> g{mtx};
    return runs[tool + " " + key];
  }
  int all() {
    std::lock_guard<std::mutex> g{mtx};
    return total;
  }
};

tool_result<Pong> run_tool(const char* tool, const Ping& p, tool_call& c) {
  {
    std::lock_guard<std::mutex> g{key_log::get().mtx};
    ++key_log::get().runs[std::string{tool} + " " + c.idempotency_key()];
    ++key_log::get().total;
  }
  if (p.n() <= -100 && !key_log::get().release) {
    // Hangs (bounded) until released: its envelope stays held.
    ++key_log::get().hanging;
    auto until = std::chrono::steady_clock::now() + 10s;
    while (!key_log::get().release && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(1ms);
    --key_log::get().hanging;
  }
  if (p.n() < 0)
    return tool_error::permanent("refused: n < 0");
  Pong r;
  r.set_n(p.n() * 10);
  return r;
}

/// On Ping n: defers, calls tool param `tool` (default "w") with Ping n
/// under key param `key` (+ "-n" with param `per_n`), and answers the
/// Pong with `from` = "replayed" when the answer came from a record, or
/// fails with the tool's error. With param `at_start`, also calls the tool
/// once from on_start (outside any envelope) with Ping 1.
class keyed : public agent<> {
public:
  explicit keyed(const params& ps) : ps_(ps) {
  }
  static void define(handlers<keyed>& h) {
    h.on<Ping>([](keyed& self, context& ctx, const Ping& p) {
      auto rp = ctx.defer();
      tool_options o;
      o.idempotency_key = self.param("key");
      if (self.ps_.count("per_n"))
        o.idempotency_key += "-" + std::to_string(p.n());
      ctx.call_tool<Pong>(
        self.tool(), p, o,
        [rp](Pong r, const tool_answer& a) mutable {
          if (a.replayed)
            r.set_from("replayed");
          rp.deliver(r);
        },
        [rp](const caf::error& e) mutable { rp.fail(e); });
    });
  }
  void on_start(context& ctx) override {
    if (!ps_.count("at_start"))
      return;
    tool_options o;
    o.idempotency_key = param("key");
    Ping p;
    p.set_n(1);
    ctx.call_tool<Pong>(tool(), p, o, [](Pong) {}, [](const caf::error&) {});
  }

private:
  std::string param(const char* k) const {
    auto i = ps_.find(k);
    return i == ps_.end() ? std::string{} : i->second;
  }
  std::string tool() const {
    auto t = param("tool");
    return t.empty() ? "w" : t;
  }
  params ps_;
};

child_spec keyed_child(std::string id, params ps, bool journal) {
  child_spec c;
  c.id = std::move(id);
  c.agent = "keyed";
  c.params = std::move(ps);
  if (journal)
    c.durability.mode = durability_mode::journal;
  return c;
}

class own_key : public ::testing::Test {
protected:
  void SetUp() override {
    key_log::get().reset();
  }

  void start(std::vector<child_spec> cs) {
    registry r;
    r.add<keyed>("keyed");
    r.add_tool<Ping, Pong>("w", [](const Ping& p, tool_call& c) {
      return run_tool("w", p, c);
    });
    r.add_tool<Ping, Pong>("v", [](const Ping& p, tool_call& c) {
      return run_tool("v", p, c);
    });
    node_config cfg;
    cfg.data_dir = dir.path();
    for (auto* t : {"w", "v"}) {
      auto d = decl_of(t, side_effect::idempotent_write);
      d.policy.retry.initial = 1ms;
      d.policy.retry.max = 2ms;
      d.record = std::string{t} == "w"; // v keeps no records
      cfg.tools.push_back(d);
    }
    n = std::make_unique<node>(std::move(r), cfg);
    supervisor_spec spec;
    spec.flags.intensity = 100;
    spec.children = std::move(cs);
    ASSERT_FALSE(n->start("root", spec));
  }

  void TearDown() override {
    if (n)
      (void) n->stop();
  }

  caf::expected<reply<Pong>> ping(const std::string& path, int64_t v) {
    Ping p;
    p.set_n(v);
    return n->call<Pong>(path, p, 5s);
  }

  /// A request of Ping `v` to `path` under message id `id`, asking for
  /// its reply to be kept (as a durable saga's calls do) if `keep`.
  caf::expected<Pong> kept_call(const std::string& path, int64_t v,
                                uint64_t id, bool keep = true) {
    return call_raw(*n, path, kept_envelope(*n, v, id, keep), 5s);
  }

  temp_dir dir;
  std::unique_ptr<node> n;
};

TEST_F(own_key, the_tool_sees_the_key_and_a_journal_record_answers_another_agent) {
  start({keyed_child("a", {{"key", "order-42"}}, true),
         keyed_child("b", {{"key", "order-42"}}, true)});
  auto r1 = ping("root/a", 7);
  ASSERT_TRUE(r1) << describe(r1.error());
  EXPECT_EQ(r1->value.n(), 70);
  EXPECT_EQ(r1->value.from(), "");
  EXPECT_EQ(key_log::get().of("w", "order-42"), 1);
  // Another agent, the same key and request: the record answers.
  auto r2 = ping("root/b", 7);
  ASSERT_TRUE(r2) << describe(r2.error());
  EXPECT_EQ(r2->value.n(), 70);
  EXPECT_EQ(r2->value.from(), "replayed");
  EXPECT_EQ(key_log::get().all(), 1);
  // The same key for another request: refused, not run.
  auto r3 = ping("root/b", 8);
  ASSERT_FALSE(r3);
  EXPECT_TRUE(is(r3.error(), errc::idempotency_mismatch)) << describe(r3.error());
  EXPECT_EQ(key_log::get().all(), 1);
}

TEST_F(own_key, memory_agents_send_the_same_key_each_time) {
  start({keyed_child("a", {{"key", "doc-1"}}, false),
         keyed_child("b", {{"key", "doc-1"}}, false)});
  ASSERT_TRUE(ping("root/a", 3));
  // (The key is claimed until the first call's execution returns, which
  // may be just after its answer: a call with it meanwhile waits.)
  ASSERT_TRUE(ping("root/b", 3));
  // No record without a journal: the service sees the key twice (and,
  // keyed, applies it once).
  EXPECT_EQ(key_log::get().of("w", "doc-1"), 2);
  EXPECT_EQ(key_log::get().all(), 2);
}

TEST_F(own_key, a_call_with_a_running_key_waits_for_it) {
  start({keyed_child("a", {{"key", "slow"}, {"tool", "v"}}, false),
         keyed_child("b", {{"key", "slow"}, {"tool", "v"}}, false)});
  // a's call hangs; b's call with the key waits instead of in_use, and
  // runs once a's has returned.
  std::thread t{[&] { (void) ping("root/a", -100); }};
  ASSERT_TRUE(eventually([] { return key_log::get().hanging.load() == 1; },
                         5s));
  caf::expected<reply<Pong>> rb{make_error(errc::not_found)};
  std::thread tb{[&] { rb = ping("root/b", -100); }};
  key_log::get().release = true;
  t.join();
  tb.join();
  ASSERT_FALSE(rb);
  EXPECT_TRUE(is(rb.error(), errc::tool_rejected)) << describe(rb.error());
  EXPECT_EQ(key_log::get().of("v", "slow"), 2);
}

TEST_F(own_key, each_tool_has_its_own_keys) {
  start({keyed_child("a", {{"key", "k"}}, true),
         keyed_child("b", {{"key", "k"}, {"tool", "v"}}, true)});
  ASSERT_TRUE(ping("root/a", 3));
  auto r = ping("root/b", 3);
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_EQ(r->value.from(), ""); // run, not replayed from w's record
  EXPECT_EQ(key_log::get().of("w", "k"), 1);
  EXPECT_EQ(key_log::get().of("v", "k"), 1);
}

TEST_F(own_key, a_bad_key_fails_before_any_attempt) {
  std::string long_key(256, 'x');
  start({keyed_child("ctl", {{"key", "bad\nkey"}}, true),
         keyed_child("long", {{"key", long_key}}, false),
         keyed_child("max", {{"key", std::string(255, 'y')}}, false)});
  for (auto* path : {"root/ctl", "root/long"}) {
    auto r = ping(path, 1);
    ASSERT_FALSE(r) << path;
    EXPECT_TRUE(is(r.error(), errc::bad_payload)) << describe(r.error());
    EXPECT_NE(describe(r.error()).find("idempotency key"), std::string::npos)
      << describe(r.error());
  }
  EXPECT_EQ(key_log::get().all(), 0);
  ASSERT_TRUE(ping("root/max", 1)); // 255 bytes is allowed
  EXPECT_EQ(key_log::get().of("w", std::string(255, 'y')), 1);
}

TEST_F(own_key, a_call_outside_any_envelope_carries_the_key) {
  start({keyed_child("a", {{"key", "boot"}, {"at_start", "1"}}, false)});
  EXPECT_TRUE(eventually([] { return key_log::get().of("w", "boot") == 1; },
                         5s));
}

TEST_F(own_key, a_deferred_reply_given_in_a_callback_is_kept) {
  start({keyed_child("a", {{"key", "acct"}, {"per_n", "1"}}, true)});
  auto r1 = kept_call("root/a", 5, 9001);
  ASSERT_TRUE(r1) << describe(r1.error());
  EXPECT_EQ(r1->n(), 50);
  // The resend gets the kept answer: not duplicate, not run again.
  auto r2 = kept_call("root/a", 5, 9001);
  ASSERT_TRUE(r2) << describe(r2.error());
  EXPECT_EQ(r2->n(), 50);
  EXPECT_EQ(key_log::get().of("w", "acct-5"), 1);
  // And after the node restarts: the answer is on disk.
  (void) n->stop();
  n.reset();
  start({keyed_child("a", {{"key", "acct"}, {"per_n", "1"}}, true)});
  auto r3 = kept_call("root/a", 5, 9001);
  ASSERT_TRUE(r3) << describe(r3.error());
  EXPECT_EQ(r3->n(), 50);
  EXPECT_EQ(key_log::get().all(), 1);
}

TEST_F(own_key, a_deferred_refusal_given_in_a_callback_is_kept) {
  start({keyed_child("a", {{"key", "neg"}, {"per_n", "1"}}, true)});
  auto r1 = kept_call("root/a", -2, 9002);
  ASSERT_FALSE(r1);
  EXPECT_TRUE(is(r1.error(), errc::tool_rejected)) << describe(r1.error());
  auto r2 = kept_call("root/a", -2, 9002);
  ASSERT_FALSE(r2);
  EXPECT_EQ(describe(r2.error()), describe(r1.error()));
  EXPECT_EQ(key_log::get().all(), 1);
}

TEST_F(own_key, a_deferred_answer_of_a_replay_from_the_journal_is_kept) {
  // The envelope is accepted, its call hangs, and the node stops: the
  // next node replays it from the journal, with nobody waiting for its
  // answer. The answer the replay defers (a refusal) is the one kept, not
  // the handler's return value. (Tool v records no results, so that the
  // replay calls it again rather than wait for the first call's record.)
  auto child = [] {
    auto c = keyed_child("a", {{"key", "acct"}, {"per_n", "1"}, {"tool", "v"}},
                         true);
    // The stop waits for the hanging call no longer than this.
    c.has_shutdown = true;
    c.shutdown = shutdown_spec::after(std::chrono::milliseconds{300});
    return c;
  };
  start({child()});
  {
    auto dest = n->rt()->lookup("root/a");
    ASSERT_TRUE(dest);
    caf::anon_send(dest, kept_envelope(*n, -100, 9005));
  }
  ASSERT_TRUE(eventually([] { return key_log::get().hanging.load() == 1; },
                         5s));
  (void) n->stop();
  key_log::get().release = true; // its answer reaches nobody
  n.reset();
  start({child()});
  ASSERT_TRUE(eventually([] { return key_log::get().all() == 2; }, 5s));
  auto r = kept_call("root/a", -100, 9005);
  ASSERT_FALSE(r) << "kept a success: n = " << r->n();
  EXPECT_TRUE(is(r.error(), errc::tool_rejected)) << describe(r.error());
  EXPECT_EQ(key_log::get().all(), 2);
}

TEST_F(own_key, without_the_keep_flag_a_resend_is_a_duplicate) {
  start({keyed_child("a", {{"key", "plain"}, {"per_n", "1"}}, true)});
  auto r1 = kept_call("root/a", 4, 9003, false);
  ASSERT_TRUE(r1) << describe(r1.error());
  EXPECT_EQ(r1->n(), 40);
  auto r2 = kept_call("root/a", 4, 9003, false);
  ASSERT_FALSE(r2);
  EXPECT_TRUE(is(r2.error(), errc::duplicate)) << describe(r2.error());
  EXPECT_EQ(key_log::get().all(), 1);
}

} // namespace
