// Handler refusals on the edges (found by a review): a replayed refusal,
// a refusal past its deadline, a refusal of an outbox delivery. Real threads and, for journal agents, real LMDB files.
#include <gtest/gtest.h>

#include <chrono>
#include <atomic>
#include <thread>

#include "support/eventually.hpp"
#include "support/temp_dir.hpp"
#include "vigil/node/node.hpp"
#include "proto/test.pb.h"

using namespace vigil;
using namespace vigil::test;
using namespace std::chrono_literals;

namespace {

/// Add: counts it and forwards Add(n) to root/sink, then refuses n < 0
/// (what it did before refusing stands, as the docs say).
/// Slow: sleeps `ms` wall-clock, then refuses.
/// Get: the state.
class forwarder : public agent<Tally> {
public:
  static void define(handlers<forwarder>& h) {
    h.on<Add>([](forwarder& self, context& ctx,
                 const Add& a) -> caf::expected<Tally> {
      self.state().set_count(self.state().count() + 1);
      Add fwd;
      fwd.set_n(a.n());
      ctx.send("root/sink", fwd);
      if (a.n() < 0)
        return caf::make_error(caf::sec::invalid_argument, "negative");
      return self.state();
    });
    h.on<Slow>([](forwarder&, context&, const Slow& s) -> caf::error {
      std::this_thread::sleep_for(std::chrono::milliseconds{s.ms()});
      return caf::make_error(caf::sec::invalid_argument, "refused slowly");
    });
    h.on<Get>(
      [](forwarder& self, context&, const Get&) { return self.state(); });
  }
};

/// Counts every Add it gets.
class sink : public agent<Tally> {
public:
  static void define(handlers<sink>& h) {
    h.on<Add>([](sink& self, context&, const Add& a) {
      self.state().set_count(self.state().count() + 1);
      self.state().add_seen(a.n());
    });
    h.on<Get>([](sink& self, context&, const Get&) { return self.state(); });
  }
};

/// Refuses every Add with errc::not_found ("no such item": validation, as
/// agent.hpp invites), counting the handler's runs.
std::atomic<int> picky_runs{0};
class picky : public agent<Tally> {
public:
  static void define(handlers<picky>& h) {
    h.on<Add>([](picky&, context&, const Add& a) -> caf::error {
      ++picky_runs;
      return make_error(errc::not_found,
                        "no item " + std::to_string(a.n()));
    });
  }
};

registry reg() {
  registry r;
  r.add<forwarder>("forwarder");
  r.add<sink>("sink");
  r.add<picky>("picky");
  return r;
}

supervisor_spec journal_tree() {
  supervisor_spec spec;
  spec.flags.intensity = 1;
  spec.children.push_back(
    worker("sink", "sink").with_durability(durability_mode::journal));
  spec.children.push_back(
    worker("f", "forwarder").with_durability(durability_mode::journal));
  return spec;
}

Tally get(node& nd, const std::string& path) {
  auto r = nd.call<Tally>(path, Get{}, 5s);
  EXPECT_TRUE(r) << describe(r.error());
  return r ? r->value : Tally{};
}

Add add(int64_t n) {
  Add a;
  a.set_n(n);
  return a;
}

} // namespace

// A refusal commits the handler's state change and its outbox sends
// together with a dead letter that names the consuming journal entry. Its
// guard names that entry, so the replay used to take it back and run it a
// second time: its committed effects (state, and sends under fresh message
// ids the receiver cannot recognize) happened twice. The letter is marked
// refused, and the replay leaves it alone.
TEST(refusal_edges_test, replaying_a_refused_letter_does_not_repeat_its_committed_effects) {
  temp_dir dir;
  node_config nc;
  nc.data_dir = dir.path();
  nc.sync = sync_mode::nosync;
  {
    node nd{reg(), nc};
    ASSERT_FALSE(nd.start("root", journal_tree()));
    call_options once;
    once.message_id = 4242;
    ASSERT_FALSE(nd.send("root/f", add(-1), once));
    eventually([&] { return get(nd, "root/sink").count() == 1; }, 5s);
    eventually([&] { return !nd.dead_letters().empty(); }, 5s);
    EXPECT_EQ(get(nd, "root/f").count(), 1);
    EXPECT_EQ(get(nd, "root/sink").count(), 1);
    ASSERT_FALSE(nd.stop());
  }
  {
    store_options so;
    so.dir = dir.path();
    so.sync = sync_mode::nosync;
    std::unique_ptr<store> st;
    ASSERT_FALSE(store::open(so, st));
    std::vector<std::string> problems;
    size_t replayed = 0;
    ASSERT_FALSE(st->replay_dead_letters({}, true, problems, replayed));
    EXPECT_EQ(replayed, 0u);
    ASSERT_EQ(problems.size(), 1u);
    EXPECT_NE(problems[0].find("refused it"), std::string::npos)
      << problems[0];
  }
  node nd{reg(), nc};
  ASSERT_FALSE(nd.start("root", journal_tree()));
  auto f = get(nd, "root/f");
  auto s = get(nd, "root/sink");
  EXPECT_EQ(f.count(), 1) << "the refused envelope's state change was "
                             "committed, then applied again by the replay";
  EXPECT_EQ(s.count(), 1) << "the refused envelope's send was delivered, "
                             "then sent again by the replay";
  ASSERT_FALSE(nd.stop());
}

// A refusal restarts nothing and spends no restart intensity, also when
// the request's deadline passed while the handler ran (it used to be
// turned into a failure: a restart, and with intensity 1 two such refusals
// escalated the tree).
TEST(refusal_edges_test, a_refusal_past_its_deadline_does_not_restart_the_child) {
  node nd{reg()};
  supervisor_spec spec;
  spec.flags.intensity = 1;
  spec.children.push_back(worker("sink", "sink"));
  spec.children.push_back(worker("f", "forwarder"));
  ASSERT_FALSE(nd.start("root", spec));
  ASSERT_FALSE(nd.send("root/f", add(5)));
  eventually([&] { return get(nd, "root/f").count() == 1; }, 5s);
  Slow s;
  s.set_ms(200); // deadline 50 ms
  auto r = nd.call<Pong>("root/f", s, 50ms);
  ASSERT_FALSE(r);
  // Get queues behind the slow handler: it answers after the refusal was
  // settled. A restart would have reset the non-durable state.
  EXPECT_EQ(get(nd, "root/f").count(), 1);
  EXPECT_EQ(nd.rt()->restarts(), 0u) << "a refusal restarted the child";
  ASSERT_FALSE(nd.stop());
}

// A refusal may carry any error. A journal agent's outbox takes a reply
// error of not_found, not_running, buffer_overflow, storage_failed or
// shutting_down as "not delivered" and retries it every 250 ms: a receiver
// that refused with errc::not_found ("no such item") ran its handler again
// and again for one committed send. Those codes in a refusal are reported
// as refused now.
TEST(refusal_edges_test, a_refusal_ends_the_outbox_delivery) {
  temp_dir dir;
  node_config nc;
  nc.data_dir = dir.path();
  nc.sync = sync_mode::nosync;
  supervisor_spec spec;
  spec.flags.intensity = 1;
  spec.children.push_back(worker("sink", "picky"));
  spec.children.push_back(
    worker("f", "forwarder").with_durability(durability_mode::journal));
  node nd{reg(), nc};
  ASSERT_FALSE(nd.start("root", spec));
  picky_runs = 0;
  auto r = nd.call<Tally>("root/f", add(1), 5s);
  ASSERT_TRUE(r) << describe(r.error());
  eventually([&] { return picky_runs.load() >= 1; }, 5s);
  // The refusal ends the delivery: the outbox entry is removed from disk.
  // (A refusal taken as "not delivered" keeps it, retried every 250 ms.)
  auto outbox_empty = [&] {
    size_t n = 1;
    return !nd.rt()->storage()->count(db::outbox, n) && n == 0;
  };
  EXPECT_TRUE(eventually(outbox_empty, 5s)) << "the outbox still holds it";
  EXPECT_EQ(picky_runs.load(), 1)
    << "one committed send, refused once, was delivered "
    << picky_runs.load() << " times";
  ASSERT_FALSE(nd.stop());
}
