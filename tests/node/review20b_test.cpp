// Adversarial review (b) of issue 20's kept answers in flight
// (durable::kept_in_flight, answer_again) and caller-named keys, on a real
// node with a data dir. A journal agent defers its answer to a durable
// saga's call (keep_reply_flag) and gives it in a tool call's callback; the
// tool's executions wait for gates, and a store apply hook holds (and, on
// demand, fails) chosen commits:
// - a live requester, and a resend that crosses the in-flight consume,
//   whose commit then fails: the requester hears the re-run's answer, the
//   resend `duplicate` (one requester per journal entry; before, the
//   requester was never answered);
// - two resends cross the same in-flight consume, whose commit fails: one
//   hears the re-run, the other `duplicate`;
// - one resend attached, commit fails: the re-run answers it;
// - a call parked on a key the caller named, whose agent restarts
//   meanwhile: the next call with the key runs;
// - a parked own-key call waits until its own timeout (not the tool's);
// - a parked own-key call that waits past the tool's timeout: in_use.

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <string>
#include <thread>

#include <caf/scoped_actor.hpp>

#include "support/eventually.hpp"
#include "support/gate.hpp"
#include "support/gated_runs.hpp"
#include "support/kept_call.hpp"
#include "support/temp_dir.hpp"
#include "support/tool_fixture.hpp"
#include "proto/test.pb.h"
#include "vigil/node/node.hpp"
#include "vigil/persistence/store.hpp"

using namespace std::chrono_literals;
using namespace vigil;
using namespace vigil::test;

namespace {

using runs = gated_runs;

/// On Ping n: defers, calls the tool named by param `tool` (default "g")
/// with Ping n under the caller-named key "k-<n>", answers Pong n*10 from
/// the callback (or fails with the tool's error).
class stepper : public agent<> {
public:
  explicit stepper(const params& ps) {
    auto i = ps.find("tool");
    tool_ = i == ps.end() ? "g" : i->second;
    auto t = ps.find("timeout_ms");
    if (t != ps.end())
      timeout_ = std::chrono::milliseconds{std::stoi(t->second)};
  }
  static void define(handlers<stepper>& h) {
    h.on<Ping>([](stepper& self, context& ctx, const Ping& p) {
      auto rp = ctx.defer();
      tool_options o;
      o.idempotency_key = "k-" + std::to_string(p.n());
      o.timeout = self.timeout_;
      ctx.call_tool<Pong>(
        self.tool_, p, o,
        [rp, counted = self.tool_ != "quick"](Pong r) mutable {
          if (counted)
            ++runs::get().delivered;
          rp.deliver(r);
        },
        [rp](const caf::error& e) mutable { rp.fail(e); });
    });
  }

private:
  std::string tool_;
  std::chrono::milliseconds timeout_{0};
};

/// The store hook's plan: accepts of `guard` wait for `accept_gate`;
/// accepts of `blocker` wait for `block_gate`; the consume that keeps the
/// answer under `guard` waits for `consume_gate`, and the first
/// `fail_consumes` such batches fail (io, nothing committed).
struct plan {
  std::string guard;
  std::string blocker;
  std::atomic<int> accepts_seen{0};
  std::atomic<int> blocks_seen{0};
  std::atomic<int> consumes_seen{0};
  std::atomic<int> fail_consumes{0};
  std::atomic<int> failed{0};
  gate accept_gate;
  gate block_gate;
  gate consume_gate;
};

class review20b : public ::testing::Test {
protected:
  void SetUp() override {
    runs::get().reset();
  }

  void start() {
    registry r;
    r.add<stepper>("stepper");
    r.add_tool<Ping, Pong>("g", [](const Ping& p, tool_call&) {
      runs::get().run();
      Pong out;
      out.set_n(p.n() * 10);
      return tool_result<Pong>{out};
    });
    r.add_tool<Ping, Pong>("quick", [](const Ping& p, tool_call&) {
      Pong out;
      out.set_n(p.n() * 10);
      return tool_result<Pong>{out};
    });
    r.add_tool<Ping, Pong>("slow", [](const Ping& p, tool_call&) {
      runs::get().run();
      Pong out;
      out.set_n(p.n() * 10);
      return tool_result<Pong>{out};
    });
    node_config cfg;
    cfg.data_dir = dir.path();
    auto d = decl_of("g", side_effect::idempotent_write);
    d.record = false;
    d.policy.timeout = 30s;
    d.policy.attempt_timeout = 25s;
    cfg.tools.push_back(d);
    auto q = decl_of("quick", side_effect::idempotent_write);
    q.record = false;
    cfg.tools.push_back(q);
    auto s = decl_of("slow", side_effect::idempotent_write);
    s.record = false;
    s.policy.timeout = 1s;
    s.policy.attempt_timeout = 1s;
    s.policy.retry.max_attempts = 1;
    cfg.tools.push_back(s);
    n = std::make_unique<node>(std::move(r), cfg);
    supervisor_spec spec;
    spec.flags.intensity = 100;
    child_spec c;
    c.id = "a";
    c.agent = "stepper";
    c.durability.mode = durability_mode::journal;
    c.max_deliveries = 3;
    child_spec x; // a journal agent whose accepts block the writer
    x.id = "x";
    x.agent = "stepper";
    x.params = {{"tool", "quick"}};
    x.durability.mode = durability_mode::journal;
    child_spec b; // a memory agent sharing a's keys of tool g
    b.id = "b";
    b.agent = "stepper";
    child_spec sa; // two memory agents calling tool "slow"
    sa.id = "sa";
    sa.agent = "stepper";
    sa.params = {{"tool", "slow"}};
    child_spec sb = sa;
    sb.id = "sb";
    child_spec bt = b; // like b, its calls' own timeout 300 ms
    bt.id = "bt";
    bt.params = {{"timeout_ms", "300"}};
    spec.children = {c, x, b, sa, sb, bt};
    ASSERT_FALSE(n->start("root", spec));
  }

  void TearDown() override {
    p.accept_gate.open();
    p.block_gate.open();
    p.consume_gate.open();
    if (n) {
      n->rt()->storage()->set_apply_hook({});
      for (int i = 1; i <= 10; ++i)
        runs::get().release(i);
      (void) n->stop();
    }
  }

  void hook() {
    p.consume_gate.open(); // (the failure is enough; nothing waits there)
    n->rt()->storage()->set_apply_hook(
      [this](write_item* const* items, size_t k) {
        bool fail = false;
        for (size_t i = 0; i < k; ++i) {
          if (!p.blocker.empty() && items[i]->guard == p.blocker) {
            ++p.blocks_seen;
            p.block_gate.pass();
          }
          if (items[i]->guard == p.guard) {
            ++p.accepts_seen;
            p.accept_gate.pass();
          }
          if (!items[i]->guard.empty())
            continue;
          for (auto& m : items[i]->muts)
            if (m.where == db::idempotency && m.key == p.guard) {
              ++p.consumes_seen;
              p.consume_gate.pass();
              if (p.fail_consumes.load() > 0) {
                --p.fail_consumes;
                ++p.failed;
                fail = true;
              }
            }
        }
        return fail;
      });
  }

  void probe(const std::string& path) {
    ASSERT_TRUE(drain_cell(*n, path));
  }

  caf::expected<Pong> kept(int64_t v, uint64_t id, std::chrono::seconds t) {
    return call_raw(*n, "root/a", kept_envelope(*n, v, id), t);
  }

  plan p;
  temp_dir dir;
  std::unique_ptr<node> n;
};

// A live requester waits for its kept call (the envelope is held for its
// tool call); the saga's resend crosses the consume (its duplicate verdict
// arrives after the consume was written) and is attached to the same
// commit. The commit fails: the cell reconciles and re-runs the envelope,
// whose answer should reach both requesters.
// One requester per journal entry: the envelope's live requester hears
// the re-run after its consume's commit failed, and a resend that crossed
// the consume is told `duplicate` at once (nobody is left waiting).
TEST_F(review20b, a_live_requester_hears_the_rerun_after_a_failed_commit) {
  start();
  constexpr uint64_t id = 9301;
  hook();
  p.guard = guard_key("root/a", 0, id);
  p.accept_gate.open(); // the first accept passes
  caf::expected<Pong> r1{make_error(errc::not_found)};
  std::thread t1{[&] { r1 = kept(5, id, 12s); }};
  ASSERT_TRUE(eventually([] { return runs::get().begun() == 1; }, 10s));
  p.accept_gate.close();
  caf::expected<Pong> r2{make_error(errc::not_found)};
  std::thread t2{[&] { r2 = kept(5, id, 12s); }};
  struct joiner {
    std::thread& a;
    std::thread& b;
    ~joiner() {
      runs::get().release(1);
      runs::get().release(2);
      if (a.joinable())
        a.join();
      if (b.joinable())
        b.join();
    }
  } j{t1, t2};
  ASSERT_TRUE(eventually([&] { return p.accepts_seen.load() == 2; }, 10s));
  p.fail_consumes = 1;
  runs::get().release(1);
  ASSERT_TRUE(eventually([] { return runs::get().delivered.load() == 1; }, 10s));
  probe("root/a"); // the consume is written
  p.accept_gate.open();
  ASSERT_TRUE(eventually([&] { return p.failed.load() == 1; }, 10s))
    << "accepts " << p.accepts_seen << ", consumes " << p.consumes_seen;
  p.consume_gate.open();
  // The re-run (after the reconcile) executes the tool again.
  ASSERT_TRUE(eventually([] { return runs::get().begun() == 2; }, 10s));
  runs::get().release(2);
  t1.join();
  t2.join();
  ASSERT_FALSE(r2) << "resend answered " << r2->n();
  EXPECT_TRUE(is(r2.error(), errc::duplicate)) << describe(r2.error());
  ASSERT_TRUE(r1) << "the live requester of the envelope was never answered "
                     "after its consume's commit failed: "
                  << describe(r1.error());
  EXPECT_EQ(r1->n(), 50);
}

// The first send has no live requester (replayed from the saga's
// journal); two resends' duplicate verdicts both cross the consume. The
// first is attached to it, the second is told `duplicate` (one requester
// per journal entry); the commit fails, and the attached one hears the
// re-run's answer. Nobody is left waiting.
TEST_F(review20b, of_two_resends_crossing_a_failed_commit_one_hears_the_rerun) {
  start();
  constexpr uint64_t id = 9302;
  constexpr uint64_t xid = 9399;
  auto dest = n->rt()->lookup("root/a");
  ASSERT_TRUE(dest);
  caf::anon_send(dest, kept_envelope(*n, 6, id));
  ASSERT_TRUE(eventually([] { return runs::get().begun() == 1; }, 10s));
  hook();
  p.guard = guard_key("root/a", 0, id);
  p.blocker = guard_key("root/x", 0, xid);
  // The writer is held on x's accept, so that both resends' accepts go in
  // the next batch, and the consume in the one after.
  auto xdest = n->rt()->lookup("root/x");
  ASSERT_TRUE(xdest);
  caf::anon_send(xdest, kept_envelope(*n, 1, xid, false));
  ASSERT_TRUE(eventually([&] { return p.blocks_seen.load() == 1; }, 10s));
  // Both resends sent now, each from its own scoped actor (received
  // below), so that the probe after them finds both handled.
  caf::scoped_actor s2{n->system()};
  caf::scoped_actor s3{n->system()};
  auto h2 = s2->request(dest, caf::duration{12s}, kept_envelope(*n, 6, id));
  auto h3 = s3->request(dest, caf::duration{12s}, kept_envelope(*n, 6, id));
  probe("root/a"); // both accepts were written (behind x's)
  // Both resends' accepts are queued at the writer: only then is a's
  // envelope released.
  p.block_gate.open();
  ASSERT_TRUE(eventually([&] { return p.accepts_seen.load() >= 1; }, 10s));
  p.fail_consumes = 1;
  runs::get().release(1);
  ASSERT_TRUE(eventually([] { return runs::get().delivered.load() == 1; }, 10s));
  probe("root/a"); // the consume is written, behind the accepts
  p.accept_gate.open();
  ASSERT_TRUE(eventually([&] { return p.failed.load() == 1; }, 10s));
  p.consume_gate.open();
  ASSERT_TRUE(eventually([] { return runs::get().begun() == 2; }, 10s));
  runs::get().release(2);
  auto r2 = receive_pong(h2);
  auto r3 = receive_pong(h3);
  auto text = [](const caf::expected<Pong>& r) {
    return r ? std::to_string(r->n()) : describe(r.error());
  };
  int answered = (r2 ? 1 : 0) + (r3 ? 1 : 0);
  int duplicates = (!r2 && is(r2.error(), errc::duplicate) ? 1 : 0)
                   + (!r3 && is(r3.error(), errc::duplicate) ? 1 : 0);
  EXPECT_EQ(answered, 1) << "r2: " << text(r2) << "; r3: " << text(r3);
  EXPECT_EQ(duplicates, 1) << "r2: " << text(r2) << "; r3: " << text(r3);
  for (auto* r : {&r2, &r3})
    if (*r)
      EXPECT_EQ((*r)->n(), 60);
}

// Pin: one resend attached to an in-flight consume whose commit fails
// hears the re-run's answer (not duplicate, not a hang).
TEST_F(review20b, one_attached_resend_hears_the_rerun_after_a_failed_commit) {
  start();
  constexpr uint64_t id = 9303;
  auto dest = n->rt()->lookup("root/a");
  ASSERT_TRUE(dest);
  caf::anon_send(dest, kept_envelope(*n, 7, id));
  ASSERT_TRUE(eventually([] { return runs::get().begun() == 1; }, 10s));
  hook();
  p.guard = guard_key("root/a", 0, id);
  caf::expected<Pong> r2{make_error(errc::not_found)};
  std::thread t2{[&] { r2 = kept(7, id, 12s); }};
  ASSERT_TRUE(eventually([&] { return p.accepts_seen.load() == 1; }, 10s));
  p.fail_consumes = 1;
  runs::get().release(1);
  ASSERT_TRUE(eventually([] { return runs::get().delivered.load() == 1; }, 10s));
  probe("root/a");
  p.accept_gate.open();
  ASSERT_TRUE(eventually([&] { return p.failed.load() == 1; }, 10s));
  p.consume_gate.open();
  ASSERT_TRUE(eventually([] { return runs::get().begun() == 2; }, 10s));
  runs::get().release(2);
  t2.join();
  ASSERT_TRUE(r2) << describe(r2.error());
  EXPECT_EQ(r2->n(), 70);
}

// A call parked on a key that a's running call holds; its agent (b) is
// restarted meanwhile. Then the key is free: b's next call with it runs.
TEST_F(review20b, a_parked_own_key_call_whose_agent_restarts_leaves_the_key_usable) {
  start();
  caf::expected<reply<Pong>> ra{make_error(errc::not_found)};
  std::thread ta{[&] {
    Ping q;
    q.set_n(8);
    ra = n->call<Pong>("root/a", q, 15s);
  }};
  ASSERT_TRUE(eventually([] { return runs::get().begun() == 1; }, 10s));
  auto bdest = n->rt()->lookup("root/b");
  ASSERT_TRUE(bdest);
  caf::scoped_actor sb{n->system()};
  auto hb = sb->request(bdest, caf::duration{15s},
                        kept_envelope(*n, 8, 9304, false));
  probe("root/b"); // b's call is parked (the key is a's)
  EXPECT_EQ(runs::get().begun(), 1);
  struct joiner {
    std::thread& t;
    ~joiner() {
      runs::get().release(1);
      if (t.joinable())
        t.join();
    }
  } j{ta};
  auto rt = n->terminate_child("root", "b");
  ASSERT_FALSE(rt) << describe(rt);
  auto rs = n->restart_child("root", "b");
  ASSERT_TRUE(rs) << describe(rs.error());
  runs::get().release(1);
  ta.join();
  ASSERT_TRUE(ra) << describe(ra.error());
  EXPECT_EQ(ra->value.n(), 80);
  for (int i = 2; i <= 4; ++i)
    runs::get().release(i);
  // Answered: reply_dropped or not_running at the stop, or 80 after it.
  auto rb = receive_pong(hb);
  if (!rb)
    EXPECT_TRUE(is(rb.error(), errc::reply_dropped)
                || is(rb.error(), errc::not_running))
      << describe(rb.error());
  else
    EXPECT_EQ(rb->n(), 80);
  Ping q;
  q.set_n(8);
  auto again = n->call<Pong>("root/b", q, 10s);
  ASSERT_TRUE(again) << describe(again.error());
  EXPECT_EQ(again->value.n(), 80);
}

// A call parked on a caller-named key longer than the tool's timeout
// (1 s) is refused in_use; the key's holder is unaffected.
TEST_F(review20b, a_parked_own_key_call_is_in_use_after_the_tools_timeout) {
  start();
  caf::expected<reply<Pong>> r1{make_error(errc::not_found)};
  std::thread t1{[&] {
    Ping q;
    q.set_n(9);
    r1 = n->call<Pong>("root/sa", q, 10s);
  }};
  ASSERT_TRUE(eventually([] { return runs::get().begun() == 1; }, 10s));
  Ping q;
  q.set_n(9);
  auto r2 = n->call<Pong>("root/sb", q, 10s);
  ASSERT_FALSE(r2) << "answered " << r2->value.n();
  EXPECT_TRUE(is(r2.error(), errc::in_use)) << describe(r2.error());
  EXPECT_EQ(runs::get().begun(), 1);
  runs::get().release(1);
  t1.join();
}

// A call with its own timeout (tool_options::timeout, 300 ms) parked on a
// caller-named key that another agent's call holds ends by its own
// timeout, as every other wait of the call does; it waits the tool's
// policy timeout (30 s) instead.
TEST_F(review20b, a_parked_own_key_call_ends_by_the_calls_own_timeout) {
  start();
  caf::expected<reply<Pong>> ra{make_error(errc::not_found)};
  std::thread ta{[&] {
    Ping q;
    q.set_n(12);
    ra = n->call<Pong>("root/a", q, 15s);
  }};
  struct joiner {
    std::thread& t;
    ~joiner() {
      runs::get().release(1);
      if (t.joinable())
        t.join();
    }
  } j{ta};
  ASSERT_TRUE(eventually([] { return runs::get().begun() == 1; }, 10s));
  Ping q;
  q.set_n(12);
  auto t0 = std::chrono::steady_clock::now();
  auto r = n->call<Pong>("root/bt", q, 5s);
  auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(r) << "answered " << r->value.n();
  EXPECT_LT(std::chrono::duration_cast<std::chrono::milliseconds>(took)
              .count(),
            3000)
    << "the call with a 300 ms timeout was still parked when the request "
       "gave up after 5 s: "
    << describe(r.error());
  EXPECT_TRUE(is(r.error(), errc::in_use)) << describe(r.error());
}

} // namespace
