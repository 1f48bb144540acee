// Review of issue 20's kept deferred replies and caller-named keys, on a
// real node with a data dir: a journal agent that defers its answer to a
// durable saga's call (an envelope with keep_reply_flag) and gives it in a
// tool call's callback, against a resend of the same message id (what the
// saga does on resume and after reply_dropped) at the moments where the
// cell's bookkeeping changes hands:
// - the resend's duplicate verdict reaches the cell after the held
//   envelope was released but before its consume (with the kept answer)
//   is committed;
// - a callback of the held envelope's call throws: the envelope goes to
//   the next instance, the first requester hears reply_dropped (the
//   dropped deferred reply) and resends while the next instance holds it.
// Both got `duplicate` before they were fixed (the saga then marked the
// step in_doubt, though it ran once and kept its answer): a kept answer on
// its way to disk now answers the resend once committed, and an envelope
// has one requester (the slot's, once the deferred reply holds it).
// Also: a read_only tool sees a key the caller named.
// Each moment is forced with gates: the tool's executions wait for theirs,
// and a store apply hook holds the writer's commits of chosen items.

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <caf/scoped_actor.hpp>

#include "support/eventually.hpp"
#include "support/kept_call.hpp"
#include "support/gate.hpp"
#include "support/gated_runs.hpp"
#include "support/temp_dir.hpp"
#include "support/tool_fixture.hpp"
#include "proto/test.pb.h"
#include "vigil/actors/cell.hpp"
#include "vigil/node/node.hpp"
#include "vigil/persistence/store.hpp"

using namespace std::chrono_literals;
using namespace vigil;
using namespace vigil::test;

namespace {

using executions = gated_runs;

/// On Ping n: defers, calls tool "g" with Ping n under the caller-named
/// key "k-<n>" (as examples/accounts' step does), and answers Pong n*10
/// from the callback, or fails with the tool's error. With `throw_once`
/// set, the next result callback throws instead (once).
class stepper : public agent<> {
public:
  explicit stepper(const params&) {
  }
  static void define(handlers<stepper>& h) {
    h.on<Ping>([](stepper&, context& ctx, const Ping& p) {
      auto rp = ctx.defer();
      tool_options o;
      o.idempotency_key = "k-" + std::to_string(p.n());
      ctx.call_tool<Pong>(
        "g", p, o,
        [rp](Pong r) mutable {
          if (executions::get().throw_once.exchange(false))
            throw std::runtime_error("callback failed once");
          ++executions::get().delivered;
          rp.deliver(r);
        },
        [rp](const caf::error& e) mutable { rp.fail(e); });
    });
  }
};

/// On Ping n: calls read_only tool "ro" under the caller-named key
/// "read-<n>" and answers its Pong.
class reader : public agent<> {
public:
  explicit reader(const params&) {
  }
  static void define(handlers<reader>& h) {
    h.on<Ping>([](reader&, context& ctx, const Ping& p) {
      auto rp = ctx.defer();
      tool_options o;
      o.idempotency_key = "read-" + std::to_string(p.n());
      ctx.call_tool<Pong>(
        "ro", p, o, [rp](Pong r) mutable { rp.deliver(r); },
        [rp](const caf::error& e) mutable { rp.fail(e); });
    });
  }
};

/// The keys tool "ro" saw.
struct seen_keys {
  std::mutex mtx;
  std::vector<std::string> keys;
  static seen_keys& get() {
    static seen_keys x;
    return x;
  }
};

/// Holds the writer's commit of a chosen item until its gate opens.
struct commit_holds {
  std::string guard;           // the item whose accept is held (a resend)
  std::atomic<bool> accept_seen{false};
  std::atomic<bool> consume_seen{false};
  gate accept_gate;
  gate consume_gate;
};

class review20 : public ::testing::Test {
protected:
  void SetUp() override {
    executions::get().reset();
  }

  void start() {
    registry r;
    r.add<stepper>("stepper");
    r.add<reader>("reader");
    r.add_tool<Ping, Pong>("ro", [](const Ping& p, tool_call& c) {
      {
        std::lock_guard<std::mutex> g{seen_keys::get().mtx};
        seen_keys::get().keys.push_back(c.idempotency_key());
      }
      Pong out;
      out.set_n(p.n());
      return tool_result<Pong>{out};
    });
    r.add_tool<Ping, Pong>("g", [](const Ping& p, tool_call&) {
      executions::get().run();
      Pong out;
      out.set_n(p.n() * 10);
      return tool_result<Pong>{out};
    });
    node_config cfg;
    cfg.data_dir = dir.path();
    auto d = decl_of("g", side_effect::idempotent_write);
    d.record = false; // as examples/accounts' tools
    d.policy.timeout = 30s;
    d.policy.attempt_timeout = 25s;
    cfg.tools.push_back(d);
    cfg.tools.push_back(decl_of("ro", side_effect::read_only));
    n = std::make_unique<node>(std::move(r), cfg);
    supervisor_spec spec;
    spec.flags.intensity = 100;
    child_spec c;
    c.id = "a";
    c.agent = "stepper";
    c.durability.mode = durability_mode::journal;
    c.max_deliveries = 3; // a failed delivery is tried again
    child_spec rd;
    rd.id = "reader";
    rd.agent = "reader";
    spec.children = {c, rd};
    ASSERT_FALSE(n->start("root", spec));
  }

  void TearDown() override {
    h.accept_gate.open();
    h.consume_gate.open();
    if (n) {
      n->rt()->storage()->set_apply_hook({});
      for (int i = 1; i <= 8; ++i)
        executions::get().release(i);
      (void) n->stop();
    }
  }

  envelope kept_envelope(int64_t v, uint64_t id) {
    return vigil::test::kept_envelope(*n, v, id);
  }

  /// A durable saga's call: Ping `v` under message id `id`, reply kept.
  caf::expected<Pong> kept_call(int64_t v, uint64_t id) {
    return call_raw(*n, "root/a", kept_envelope(v, id), 20s);
  }

  /// Returns once root/a has handled everything queued before now.
  void probe_cell() {
    ASSERT_TRUE(drain_cell(*n, "root/a"));
  }

  /// Holds the commits of the accept of an envelope whose idempotency
  /// key is `key` and of the consume that keeps its answer until `h`'s
  /// gates open.
  void hold_commits(std::string key) {
    h.guard = std::move(key);
    n->rt()->storage()->set_apply_hook(
      [this](write_item* const* items, size_t k) {
        for (size_t i = 0; i < k; ++i) {
          if (items[i]->guard == h.guard) {
            h.accept_seen = true;
            h.accept_gate.pass();
          }
          if (!items[i]->guard.empty())
            continue;
          for (auto& m : items[i]->muts)
            if (m.where == db::idempotency && m.key == h.guard) {
              h.consume_seen = true;
              h.consume_gate.pass();
            }
        }
        return false;
      });
  }

  commit_holds h; // outlives the node's writes (the hook uses it)
  temp_dir dir;
  std::unique_ptr<node> n;
};

TEST_F(review20, a_resend_whose_duplicate_verdict_crosses_the_consume_gets_the_kept_answer) {
  // The saga's first send is in the journal and replayed with nobody
  // waiting (here: sent without a requester); its call runs.
  start();
  constexpr uint64_t id = 9201;
  auto dest = n->rt()->lookup("root/a");
  ASSERT_TRUE(dest);
  caf::anon_send(dest, kept_envelope(5, id));
  ASSERT_TRUE(eventually([] { return executions::get().begun() == 1; }, 10s));
  // The saga resends; the writer holds the resend's accept (a duplicate).
  hold_commits(guard_key("root/a", 0, id));
  caf::expected<Pong> r2{make_error(errc::not_found)};
  std::thread t2{[&] { r2 = kept_call(5, id); }};
  ASSERT_TRUE(eventually([&] { return h.accept_seen.load(); }, 10s));
  // Meanwhile the call returns: the cell answers in the callback and
  // releases the envelope, whose consume (with the kept answer) goes to
  // the writer behind the resend's accept.
  executions::get().release(1);
  ASSERT_TRUE(
    eventually([] { return executions::get().delivered.load() == 1; }, 10s));
  // The resend's verdict (duplicate) reaches the cell now, before the
  // consume is committed.
  h.accept_gate.open();
  ASSERT_TRUE(eventually([&] { return h.consume_seen.load(); }, 10s));
  probe_cell();
  h.consume_gate.open();
  t2.join();
  ASSERT_TRUE(r2) << "the resend was refused though the step ran once and "
                     "kept its answer: "
                  << describe(r2.error());
  EXPECT_EQ(r2->n(), 50);
  EXPECT_EQ(executions::get().begun(), 1);
}

TEST_F(review20, a_resend_after_a_failed_callback_dropped_the_reply_gets_the_kept_answer) {
  start();
  constexpr uint64_t id = 9202;
  executions::get().throw_once = true;
  caf::expected<Pong> r1{make_error(errc::not_found)};
  std::thread t1{[&] { r1 = kept_call(6, id); }};
  ASSERT_TRUE(eventually([] { return executions::get().begun() == 1; }, 10s));
  // The call returns and its callback throws: the held envelope's
  // delivery failed, and it is delivered again to the next instance. The
  // dropped deferred reply tells the requester reply_dropped (a saga
  // resends on it).
  executions::get().release(1);
  t1.join();
  ASSERT_FALSE(r1) << "answered: " << r1->n();
  EXPECT_TRUE(is(r1.error(), errc::reply_dropped)) << describe(r1.error());
  // The next instance holds the envelope for its call.
  ASSERT_TRUE(eventually([] { return executions::get().begun() == 2; }, 10s));
  // The saga resends after reply_dropped (resend_lost).
  h.accept_gate.open();
  h.consume_gate.open();
  hold_commits(guard_key("root/a", 0, id));
  caf::expected<Pong> r2{make_error(errc::not_found)};
  std::thread t2{[&] { r2 = kept_call(6, id); }};
  ASSERT_TRUE(eventually([&] { return h.accept_seen.load(); }, 10s));
  (void) n->writer_stats(); // the accept's verdict was sent to the cell
  probe_cell();             // and handled there
  executions::get().release(2);
  t2.join();
  ASSERT_TRUE(r2) << "the resend was refused though the step ran and kept "
                     "its answer: "
                  << describe(r2.error());
  EXPECT_EQ(r2->n(), 60);
  EXPECT_EQ(executions::get().delivered.load(), 1);
}

TEST_F(review20, a_read_only_tool_sees_the_key_the_caller_named) {
  // README: every call to the tool with the key "is then the same call:
  // the tool (and the service) sees the key as given".
  start();
  seen_keys::get().keys.clear();
  Ping p;
  p.set_n(3);
  auto r = n->call<Pong>("root/reader", p, 5s);
  ASSERT_TRUE(r) << describe(r.error());
  std::lock_guard<std::mutex> g{seen_keys::get().mtx};
  ASSERT_EQ(seen_keys::get().keys.size(), 1u);
  EXPECT_EQ(seen_keys::get().keys[0], "read-3");
}

} // namespace
