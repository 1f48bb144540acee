// One owner per path along more lifecycle paths: snapshot durability
// across reloads and give-ups, the outbox across replacements, handlers
// that fail or stop after they were given up on, dead letters and replay,
// the node's stop and restart. Found by a second independent review of the
// fencing change; the held_* cases are scenarios it found sound. Real
// threads, real LMDB; stuck handlers and held or failed commits are test
// gates and apply hooks.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <iostream>

#include <caf/all.hpp>

#include "support/eventually.hpp"
#include "support/fencing_support.hpp"
#include "support/test_agents.hpp"
#include "vigil/actors/cell.hpp"

using namespace vigil;
using namespace vigil::test;
using namespace std::chrono_literals;

namespace {

/// Invocations of `flaky`'s Block handler, by gate name.
struct calls {
  static calls& get() {
    static calls inst;
    return inst;
  }
  std::mutex mtx;
  std::map<std::string, int> n;
  int bump(const std::string& g) {
    std::lock_guard<std::mutex> guard{mtx};
    return ++n[g];
  }
  int at(const std::string& g) {
    std::lock_guard<std::mutex> guard{mtx};
    return n[g];
  }
};

/// Like tally, but its Block handler throws on the first arrival at the
/// gate once the gate opens (a stuck handler that then fails); later
/// arrivals add. Fanout sends Adds through the outbox, then waits at gate
/// `to + "!"` if that gate exists in `calls` (see below).
class flaky : public agent<Tally> {
public:
  static void define(handlers<flaky>& h) {
    h.on<Add>([](flaky& self, context&, const Add& a) {
      if (a.n() < 0)
        throw std::runtime_error("negative add");
      auto& st = self.state();
      st.set_count(st.count() + 1);
      st.set_sum(st.sum() + a.n());
      st.add_seen(a.n());
    });
    h.on<Get>([](flaky& self, context&, const Get&) { return self.state(); });
    h.on<Block>([](flaky& self, context&, const Block& b) {
      auto k = calls::get().bump(b.gate());
      auto& g = gates::get().at(b.gate());
      if (!g.pass_first())
        throw std::runtime_error("gate " + b.gate() + " was never opened");
      if (k == 1)
        throw std::runtime_error("first run of " + b.gate() + " fails");
      auto& st = self.state();
      st.set_count(st.count() + 1);
      st.set_sum(st.sum() + b.n());
      st.add_seen(b.n());
      return st;
    });
  }
};

/// A journal agent whose Fanout handler sends through the outbox, then
/// waits at the gate named in Fanout.to + "#" on its first run (a sender
/// stuck after ctx.send).
class stuck_sender : public agent<Tally> {
public:
  static void define(handlers<stuck_sender>& h) {
    h.on<Fanout>([](stuck_sender& self, context& ctx, const Fanout& f) {
      for (int64_t i = 0; i < f.count(); ++i) {
        Add a;
        a.set_n(f.from() + i);
        ctx.send(f.to(), a);
      }
      auto& g = gates::get().at("sender#" + ctx.path());
      if (!g.pass_first())
        throw std::runtime_error("sender gate was never opened");
      self.state().set_count(self.state().count() + 1);
    });
    h.on<Get>(
      [](stuck_sender& self, context&, const Get&) { return self.state(); });
  }
};

/// tally's Block (waits at its gate on the first arrival, then adds) and
/// an on_stop that counts its calls and tells the agent at param "to".
class stopper : public agent<Tally> {
public:
  static void define(handlers<stopper>& h) {
    h.on<Block>([](stopper& self, context&, const Block& b) {
      auto& g = gates::get().at(b.gate());
      if (!g.pass_first())
        throw std::runtime_error("gate " + b.gate() + " was never opened");
      auto& st = self.state();
      st.set_count(st.count() + 1);
      st.set_sum(st.sum() + b.n());
      return st;
    });
    h.on<Get>([](stopper& self, context&, const Get&) { return self.state(); });
  }
  void on_stop(context& ctx) override {
    calls::get().bump("stop:" + ctx.path());
    auto& ps = ctx.parameters();
    if (auto i = ps.find("to"); i != ps.end())
      ctx.send(i->second, add(1000));
  }
};

/// Block: on the first run passes its gate (first arrival waits) and
/// adds; the second run throws; later runs add.
class second_fails : public agent<Tally> {
public:
  static void define(handlers<second_fails>& h) {
    h.on<Block>([](second_fails& self, context&, const Block& b) {
      auto k = calls::get().bump(b.gate());
      auto& g = gates::get().at(b.gate());
      if (!g.pass_first())
        throw std::runtime_error("gate " + b.gate() + " was never opened");
      if (k == 2)
        throw std::runtime_error("second run of " + b.gate() + " fails");
      auto& st = self.state();
      st.set_count(st.count() + 1);
      st.set_sum(st.sum() + b.n());
      return st;
    });
    h.on<Get>(
      [](second_fails& self, context&, const Get&) { return self.state(); });
  }
};

registry round2_registry() {
  auto r = durable_registry();
  r.add<flaky>("flaky");
  r.add<stuck_sender>("stuck_sender");
  r.add<stopper>("stopper");
  r.add<second_fails>("second_fails");
  return r;
}

std::shared_ptr<std::atomic<bool>> exit_flag(const caf::actor& cell) {
  auto flag = std::make_shared<std::atomic<bool>>(false);
  cell->attach_functor([flag] { flag->store(true); });
  return flag;
}

std::string cell_state(node& nd, const caf::actor& cell) {
  caf::scoped_actor self{nd.system()};
  std::string out;
  self->request(cell, std::chrono::seconds{2}, state_atom::value)
    .receive([&](std::string& s) { out = std::move(s); },
             [&](caf::error&) {});
  return out;
}

child_spec snapshotted(std::string id, uint32_t every = 1) {
  auto t = worker(std::move(id), "tally")
             .with_shutdown(shutdown_spec::after(50ms));
  t.durability.mode = durability_mode::snapshot;
  t.durability.every_messages = every;
  t.durability.every = 0ms;
  return t;
}

std::string status_of(node& nd, const std::string& sup, size_t i) {
  auto kids = nd.which_children(sup);
  return kids && kids->size() > i ? (*kids)[i].status : std::string{"?"};
}

int64_t sum_of(int64_t from, int64_t to) {
  return (from + to) * (to - from + 1) / 2;
}

// ---------------------------------------------------------------------------
// Snapshot durability.
// ---------------------------------------------------------------------------

// A snapshot child buffers envelopes while it restarts; the drain saves
// after each one, with the rest of the buffer as `pending`. The first save
// ({1}, pending [Block(2), Add(3)]) commits; the next one fails. The reload
// (reconcile) takes the state from the disk but ignores its `pending`, so
// Block(2) and Add(3) are neither in the state nor replayed: lost, without
// any crash. A crash at the same moment would have replayed both from the
// snapshot. The next save then overwrites the pending list for good.
TEST(fencing_paths_test, a_snapshot_reload_replays_the_pending_on_disk) {
  temp_dir dir;
  node nd{durable_registry(), with_dir(dir)};
  open_gates_at_exit guard;
  auto spec = tree({snapshotted("t")});
  spec.flags.backoff.min = 1000ms;
  spec.flags.backoff.max = 1000ms;
  ASSERT_FALSE(nd.start("root", spec));
  ASSERT_FALSE(nd.send("root/t", add(-1))); // throws: restarts in 1 s
  ASSERT_TRUE(eventually([&] { return status_of(nd, "root", 0) == "restarting"; }));
  ASSERT_FALSE(nd.send("root/t", add(1)));
  ASSERT_FALSE(nd.send("root/t", block("s1", 2)));
  ASSERT_FALSE(nd.send("root/t", add(3)));
  auto& g = gates::get().at("s1");
  ASSERT_TRUE(g.arrived()); // the drain handled Add(1) and is stuck
  ASSERT_TRUE(eventually([&] { return saved(nd, "root/t").count() == 1; }));
  {
    records::Snapshot s;
    bool found = false;
    ASSERT_FALSE(nd.rt()->storage()->snapshot("root/t", s, found));
    ASSERT_TRUE(found);
    ASSERT_EQ(s.pending_size(), 2) << "Block(2) and Add(3) wait on disk";
  }
  std::atomic<int> failed{0};
  nd.rt()->storage()->set_apply_hook([&](write_item* const* items, size_t n) {
    return has(items, n, db::snapshots, mutation::op::put)
           && failed.fetch_add(1) == 0;
  });
  g.open();
  ASSERT_TRUE(eventually([&] {
    auto st = nd.writer_stats();
    return st && (*st)[2] == 1;
  }));
  nd.rt()->storage()->set_apply_hook({});
  ASSERT_TRUE(eventually([&] { return status_of(nd, "root", 0) == "running"; }));
  Tally t;
  ASSERT_TRUE(eventually([&] {
    t = get(nd, "root/t");
    return t.count() == 3;
  }, 3s)) << "count " << t.count() << ", sum " << t.sum() << ", seen "
          << ::testing::PrintToString(seen(t));
  EXPECT_EQ(t.sum(), 6);
  EXPECT_EQ(seen(t), (std::vector<int64_t>{1, 2, 3}));
}

// A snapshot child stuck in the middle of a drain (more than one chunk of
// 64 buffered envelopes) is given up in a one_for_all group restart. Its
// successor adopts the last save: state {Add(1)} and every envelope that
// was still buffered as `pending`, and applies them. The stuck cell then
// returns, handles the rest of its chunk (fenced), and on `abandon`
// forwards what is still in its buffer to the successor: those envelopes
// are applied a second time.
TEST(fencing_paths_test, a_given_up_snapshot_cell_does_not_forward_saved_pending) {
  temp_dir dir;
  node nd{durable_registry(), with_dir(dir)};
  open_gates_at_exit guard;
  auto spec = tree({snapshotted("s"), worker("b", "tally")});
  spec.flags.strategy = strategy::one_for_all;
  spec.flags.backoff.min = 1000ms;
  spec.flags.backoff.max = 1000ms;
  ASSERT_FALSE(nd.start("root", spec));
  ASSERT_FALSE(nd.send("root/s", add(-1))); // group restart in 1 s
  ASSERT_TRUE(eventually([&] { return status_of(nd, "root", 0) == "restarting"; }));
  ASSERT_FALSE(nd.send("root/s", add(1)));
  ASSERT_FALSE(nd.send("root/s", block("s2", 2)));
  for (int64_t i = 10; i <= 79; ++i)
    ASSERT_FALSE(nd.send("root/s", add(i)));
  auto& g = gates::get().at("s2");
  ASSERT_TRUE(g.arrived());
  ASSERT_TRUE(eventually([&] { return saved(nd, "root/s").count() == 1; }));
  ASSERT_TRUE(eventually([&] { return status_of(nd, "root", 1) == "running"; }));
  auto old_s = nd.rt()->lookup("root/s");
  auto done = exit_flag(old_s);
  ASSERT_FALSE(nd.send("root/b", add(-1))); // group restart: s is given up
  ASSERT_TRUE(eventually([&] {
    auto c = nd.rt()->lookup("root/s");
    return c && c != old_s;
  }));
  const int64_t want_count = 1 + 1 + 70;
  const int64_t want_sum = 1 + 2 + sum_of(10, 79);
  ASSERT_TRUE(eventually([&] { return saved(nd, "root/s").count() == want_count; }))
    << "the successor applied the saved pending: count "
    << saved(nd, "root/s").count();
  g.open();
  ASSERT_TRUE(eventually([&] { return done->load(); }))
    << "the given-up cell never ended";
  auto t = get(nd, "root/s");
  EXPECT_EQ(t.count(), want_count) << "sum " << t.sum() << " (want "
                                   << want_sum << ")";
  EXPECT_EQ(t.sum(), want_sum);
}

// ---------------------------------------------------------------------------
// A handler that fails after its supervisor gave up on it.
// ---------------------------------------------------------------------------

// A stuck journal handler is given up; its successor applies the envelope
// from the journal. The stuck handler then throws: the old cell settles
// the envelope as failed for good and reports a dead letter for it
// (consume_failed adds it to the node's dead letters at once), although
// the successor applied it and nothing failed for good.
TEST(fencing_paths_test, a_replaced_handler_that_throws_is_no_dead_letter) {
  temp_dir dir;
  node nd{round2_registry(), with_dir(dir)};
  open_gates_at_exit guard;
  auto t = worker("t", "flaky").with_durability(durability_mode::journal)
             .with_shutdown(shutdown_spec::after(50ms));
  ASSERT_FALSE(nd.start("root", tree({t})));
  ASSERT_FALSE(nd.send("root/t", block("f1", 7)));
  auto& g = gates::get().at("f1");
  ASSERT_TRUE(g.arrived());
  auto old_cell = nd.rt()->lookup("root/t");
  auto done = exit_flag(old_cell);
  ASSERT_FALSE(nd.terminate_child("root", "t")); // given up
  ASSERT_TRUE(nd.restart_child("root", "t"));
  ASSERT_TRUE(eventually([&] { return saved(nd, "root/t").sum() == 7; }));
  g.open(); // the old handler throws now
  ASSERT_TRUE(eventually([&] { return done->load(); }));
  auto now = get(nd, "root/t");
  EXPECT_EQ(now.count(), 1);
  EXPECT_EQ(now.sum(), 7);
  auto dls = nd.dead_letters();
  EXPECT_TRUE(dls.empty()) << dls.size() << " dead letters; first: "
                           << (dls.empty() ? "" : dls[0].reason);
  EXPECT_EQ(on_disk(nd, db::dead_letters), 0u);
}

// ---------------------------------------------------------------------------
// The outbox across replacements.
// ---------------------------------------------------------------------------

// P (journal) sends Add(1..20) to R (journal) through its outbox and gets
// stuck after ctx.send; R is stuck too, so nothing is delivered yet. P is
// given up and replaced (its successor replays the Fanout from the
// journal: the outbox entries are written once, by the successor), then R
// is given up and replaced. R must apply each Add exactly once, P's
// outbox must empty, and the same must hold after a node restart.
TEST(fencing_paths_test, held_outbox_across_both_ends_replaced) {
  temp_dir dir;
  auto specs = [] {
    return tree({worker("p", "stuck_sender")
                   .with_durability(durability_mode::journal)
                   .with_shutdown(shutdown_spec::after(50ms)),
                 worker("r", "flaky")
                   .with_durability(durability_mode::journal)
                   .with_shutdown(shutdown_spec::after(50ms))});
  };
  {
    auto nc = with_dir(dir);
    nc.threads = 4; // two handlers are stuck at once
    node nd{round2_registry(), nc};
    open_gates_at_exit guard;
    ASSERT_FALSE(nd.start("root", specs()));
    // R stuck (its first Block fails when let go; the replay adds 100).
    ASSERT_FALSE(nd.send("root/r", block("r1", 100)));
    ASSERT_TRUE(gates::get().at("r1").arrived());
    Fanout f;
    f.set_to("root/r");
    f.set_from(1);
    f.set_count(20);
    ASSERT_FALSE(nd.send("root/p", f));
    auto& pg = gates::get().at("sender#root/p");
    ASSERT_TRUE(pg.arrived());
    ASSERT_FALSE(nd.terminate_child("root", "p")); // given up
    ASSERT_TRUE(nd.restart_child("root", "p"));
    ASSERT_TRUE(eventually([&] { return on_disk(nd, db::outbox) == 20; }));
    ASSERT_FALSE(nd.terminate_child("root", "r")); // given up
    ASSERT_TRUE(nd.restart_child("root", "r"));
    pg.open();
    gates::get().at("r1").open();
    ASSERT_TRUE(eventually([&] { return on_disk(nd, db::outbox) == 0; }, 10s))
      << on_disk(nd, db::outbox) << " outbox entries left";
    auto r = get(nd, "root/r");
    EXPECT_EQ(r.count(), 21);
    EXPECT_EQ(r.sum(), 100 + sum_of(1, 20));
    EXPECT_EQ(get(nd, "root/p").count(), 1);
    nd.stop();
  }
  node nd{round2_registry(), with_dir(dir)};
  ASSERT_FALSE(nd.start("root", specs()));
  auto r = get(nd, "root/r");
  EXPECT_EQ(r.count(), 21);
  EXPECT_EQ(r.sum(), 100 + sum_of(1, 20));
  EXPECT_EQ(on_disk(nd, db::outbox), 0u);
}

// ---------------------------------------------------------------------------
// on_stop of an instance that was given up on.
// ---------------------------------------------------------------------------

// terminate_child times out on a stuck journal child and gives it up; the
// README says the old cell "drops its instance without on_stop". But the
// supervisor's stop request stays in the old cell's mailbox, ahead of
// `abandon`, and is handled once the stuck handler returns: on_stop runs on
// the replaced instance, and what it sends (not outboxed: no envelope is
// current) reaches other agents: an effect of a replaced instance.
TEST(fencing_paths_test, a_given_up_instance_gets_no_on_stop) {
  temp_dir dir;
  node nd{round2_registry(), with_dir(dir)};
  open_gates_at_exit guard;
  auto p = worker("p", "stopper").with_durability(durability_mode::journal)
             .with_shutdown(shutdown_spec::after(50ms))
             .with_param("to", "root/r");
  ASSERT_FALSE(nd.start("root", tree({p, journaled("r")})));
  ASSERT_FALSE(nd.send("root/p", block("st1", 3)));
  auto& g = gates::get().at("st1");
  ASSERT_TRUE(g.arrived());
  auto old_cell = nd.rt()->lookup("root/p");
  auto done = exit_flag(old_cell);
  ASSERT_FALSE(nd.terminate_child("root", "p")); // given up
  ASSERT_TRUE(nd.restart_child("root", "p"));
  ASSERT_TRUE(eventually([&] { return saved(nd, "root/p").sum() == 3; }));
  g.open();
  ASSERT_TRUE(eventually([&] { return done->load(); }));
  // Let anything the old instance sent arrive and commit.
  ASSERT_FALSE(nd.send("root/r", add(1)));
  ASSERT_TRUE(eventually([&] { return saved(nd, "root/r").sum() >= 1; }));
  EXPECT_EQ(calls::get().at("stop:root/p"), 0)
    << "on_stop ran on the given-up instance";
  auto r = get(nd, "root/r");
  EXPECT_EQ(r.sum(), 1) << "root/r got " << ::testing::PrintToString(seen(r));
}

// ---------------------------------------------------------------------------
// Dead letters of given-up envelopes, replayed, then a node restart.
// ---------------------------------------------------------------------------

// A stuck journal child is given up; its successor's run of the envelope
// fails for good (a dead letter on disk, consumed in the same commit); the
// stuck handler then succeeds, fenced. The dead letter is replayed offline
// and the node restarted on the same data dir: the envelope is applied
// exactly once, and nothing of the fenced run shows.
TEST(fencing_paths_test, held_replay_of_a_given_up_envelope_applies_it_once) {
  temp_dir dir;
  auto spec = [] {
    return tree({worker("t", "second_fails")
                   .with_durability(durability_mode::journal)
                   .with_shutdown(shutdown_spec::after(50ms))});
  };
  {
    node nd{round2_registry(), with_dir(dir)};
    open_gates_at_exit guard;
    ASSERT_FALSE(nd.start("root", spec()));
    ASSERT_FALSE(nd.send("root/t", block("rp1", 9)));
    auto& g = gates::get().at("rp1");
    ASSERT_TRUE(g.arrived());
    auto done = exit_flag(nd.rt()->lookup("root/t"));
    ASSERT_FALSE(nd.terminate_child("root", "t"));
    ASSERT_TRUE(nd.restart_child("root", "t")); // the replay fails for good
    ASSERT_TRUE(eventually([&] { return on_disk(nd, db::dead_letters) == 1; }));
    ASSERT_TRUE(eventually([&] { return on_disk(nd, db::journal) == 0; }));
    g.open(); // the stuck run succeeds, fenced
    ASSERT_TRUE(eventually([&] { return done->load(); }));
    EXPECT_EQ(get(nd, "root/t").count(), 0);
    EXPECT_EQ(saved(nd, "root/t").count(), 0);
    nd.stop();
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
    EXPECT_EQ(replayed, 1u);
    EXPECT_TRUE(problems.empty());
  }
  for (int round = 0; round < 2; ++round) {
    node nd{round2_registry(), with_dir(dir)};
    open_gates_at_exit guard;
    gates::get().at("rp1").open(); // a new gate: the replay passes
    ASSERT_FALSE(nd.start("root", spec()));
    auto t = get(nd, "root/t");
    EXPECT_EQ(t.count(), 1) << "round " << round;
    EXPECT_EQ(t.sum(), 9) << "round " << round;
    EXPECT_EQ(on_disk(nd, db::journal), 0u);
    EXPECT_EQ(on_disk(nd, db::dead_letters), 0u);
    nd.stop();
  }
}

// ---------------------------------------------------------------------------
// Node lifecycle and zombies.
// ---------------------------------------------------------------------------

// Many give-ups in a row: every zombie ends once its handler returns, the
// writer owns one path at the end, and the node (then a new node on the
// same data dir) sees every envelope applied once.
TEST(fencing_paths_test, held_many_give_ups_leave_no_zombies) {
  temp_dir dir;
  constexpr int rounds = 15;
  {
    node nd{durable_registry(), with_dir(dir)};
    open_gates_at_exit guard;
    ASSERT_FALSE(nd.start("root", tree({journaled("t")})));
    std::vector<std::shared_ptr<std::atomic<bool>>> ends;
    for (int i = 0; i < rounds; ++i) {
      auto name = "z" + std::to_string(i);
      ASSERT_FALSE(nd.send("root/t", block(name, 1)));
      ASSERT_FALSE(nd.send("root/t", add(10))); // queues at the stuck cell
      auto& g = gates::get().at(name);
      ASSERT_TRUE(g.arrived());
      ends.push_back(exit_flag(nd.rt()->lookup("root/t")));
      ASSERT_FALSE(nd.terminate_child("root", "t"));
      ASSERT_TRUE(nd.restart_child("root", "t"));
      g.open();
    }
    for (size_t i = 0; i < ends.size(); ++i)
      EXPECT_TRUE(eventually([&] { return ends[i]->load(); }, 5s))
        << "zombie " << i << " never ended";
    ASSERT_TRUE(eventually([&] { return saved(nd, "root/t").count() == 2 * rounds; }))
      << saved(nd, "root/t").count();
    auto t = get(nd, "root/t");
    EXPECT_EQ(t.count(), 2 * rounds);
    EXPECT_EQ(t.sum(), 11 * rounds);
    EXPECT_TRUE(eventually([&] {
      auto st = nd.writer_stats();
      return st && (*st)[7] == 1;
    }, 5s));
    nd.stop();
    EXPECT_TRUE(eventually([&] {
      auto st = nd.writer_stats();
      return st && (*st)[7] == 0;
    }, 5s));
  }
  node nd{durable_registry(), with_dir(dir)};
  ASSERT_FALSE(nd.start("root", tree({journaled("t")})));
  auto t = get(nd, "root/t");
  EXPECT_EQ(t.count(), 2 * rounds);
  EXPECT_EQ(t.sum(), 11 * rounds);
}

// The node is stopped while a given-up zombie is still stuck in its
// handler (with a requester waiting), then the zombie returns, the node is
// destroyed and a new node opens the same data dir: the envelope is
// applied once, and the requester got exactly one answer.
TEST(fencing_paths_test, held_node_stop_with_a_stuck_zombie) {
  temp_dir dir;
  std::future<caf::expected<reply<Tally>>> asked;
  {
    node nd{durable_registry(), with_dir(dir)};
    open_gates_at_exit guard;
    ASSERT_FALSE(nd.start("root", tree({journaled("t")})));
    ASSERT_FALSE(nd.send("root/t", add(1)));
    asked = std::async(std::launch::async, [&] {
      return nd.call<Tally>("root/t", block("zs", 5), 15s);
    });
    auto& g = gates::get().at("zs");
    ASSERT_TRUE(g.arrived());
    auto done = exit_flag(nd.rt()->lookup("root/t"));
    ASSERT_FALSE(nd.stop()); // gives the stuck child up
    g.open();
    EXPECT_TRUE(eventually([&] { return done->load(); }, 5s));
    ASSERT_EQ(asked.wait_for(5s), std::future_status::ready);
    auto r = asked.get();
    if (r)
      std::cout << "  requester got a Tally, sum " << r->value.sum() << "\n";
    else
      std::cout << "  requester got: " << describe(r.error()) << "\n";
    // Nobody took the path after the give-up, so the zombie's commit is
    // the owner's: either it committed (the requester got a Tally) or the
    // envelope waits in the journal.
    auto s = saved(nd, "root/t").sum();
    std::cout << "  saved sum after the zombie: " << s << ", journal "
              << on_disk(nd, db::journal) << "\n";
    EXPECT_EQ(s + (on_disk(nd, db::journal) == 1 ? 5 : 0), 6);
  }
  node nd{durable_registry(), with_dir(dir)};
  ASSERT_FALSE(nd.start("root", tree({journaled("t")})));
  auto t = get(nd, "root/t");
  EXPECT_EQ(t.count(), 2);
  EXPECT_EQ(t.sum(), 6);
}

// ---------------------------------------------------------------------------
// More scenarios that held.
// ---------------------------------------------------------------------------

// max_deliveries 3: a stuck handler is given up; once let go it throws
// (the old cell records a redelivery, fenced). The successor applied the
// envelope from the journal at its first attempt: once, no poison.
TEST(fencing_paths_test, held_redelivery_across_a_give_up) {
  temp_dir dir;
  node nd{round2_registry(), with_dir(dir)};
  open_gates_at_exit guard;
  auto t = worker("t", "flaky").with_durability(durability_mode::journal)
             .with_shutdown(shutdown_spec::after(50ms));
  t.max_deliveries = 3;
  ASSERT_FALSE(nd.start("root", tree({t})));
  ASSERT_FALSE(nd.send("root/t", block("md1", 4)));
  auto& g = gates::get().at("md1");
  ASSERT_TRUE(g.arrived());
  auto done = exit_flag(nd.rt()->lookup("root/t"));
  ASSERT_FALSE(nd.terminate_child("root", "t"));
  ASSERT_TRUE(nd.restart_child("root", "t"));
  ASSERT_TRUE(eventually([&] { return saved(nd, "root/t").sum() == 4; }));
  g.open();
  ASSERT_TRUE(eventually([&] { return done->load(); }));
  ASSERT_FALSE(nd.send("root/t", add(1)));
  ASSERT_TRUE(eventually([&] { return saved(nd, "root/t").count() == 2; }));
  auto now = get(nd, "root/t");
  EXPECT_EQ(now.sum(), 5);
  EXPECT_EQ(on_disk(nd, db::journal), 0u);
  EXPECT_EQ(on_disk(nd, db::dead_letters), 0u);
  EXPECT_EQ(status_of(nd, "root", 0), "running");
}

// P's consume (with its outbox entries) fails: P reloads, its Fanout is
// applied again from the journal, and R gets each Add exactly once; the
// outbox empties; also after a node restart.
TEST(fencing_paths_test, held_outbox_after_a_failed_sender_commit) {
  temp_dir dir;
  auto spec = [] { return tree({journaled("p"), journaled("r")}); };
  {
    node nd{durable_registry(), with_dir(dir)};
    ASSERT_FALSE(nd.start("root", spec()));
    std::atomic<int> failed{0};
    nd.rt()->storage()->set_apply_hook([&](write_item* const* items, size_t n) {
      return has(items, n, db::outbox, mutation::op::put)
             && failed.fetch_add(1) == 0;
    });
    Fanout f;
    f.set_to("root/r");
    f.set_from(1);
    f.set_count(5);
    ASSERT_FALSE(nd.send("root/p", f));
    ASSERT_TRUE(eventually([&] { return failed.load() > 0; }));
    ASSERT_TRUE(eventually([&] { return saved(nd, "root/r").count() == 5; }))
      << saved(nd, "root/r").count();
    ASSERT_TRUE(eventually([&] { return on_disk(nd, db::outbox) == 0; }));
    nd.rt()->storage()->set_apply_hook({});
    auto r = get(nd, "root/r");
    EXPECT_EQ(r.count(), 5);
    EXPECT_EQ(r.sum(), 15);
    EXPECT_EQ(get(nd, "root/p").count(), 1);
    nd.stop();
  }
  node nd{durable_registry(), with_dir(dir)};
  ASSERT_FALSE(nd.start("root", spec()));
  EXPECT_EQ(get(nd, "root/r").count(), 5);
  EXPECT_EQ(get(nd, "root/p").count(), 1);
  EXPECT_EQ(on_disk(nd, db::outbox), 0u);
}

// A nested supervisor is killed twice; the second time while its new
// durable children's fences wait behind a held commit. The abandoned
// cells end, the third generation owns the paths, nothing is lost or
// doubled, and the writer owns exactly the three paths.
TEST(fencing_paths_test, held_a_killed_supervisor_with_fences_pending) {
  temp_dir dir;
  node nd{durable_registry(), with_dir(dir)};
  open_gates_at_exit guard;
  supervisor_spec inner;
  inner.children = {journaled("a"), journaled("b"), journaled("c")};
  ASSERT_FALSE(nd.start("root", tree({supervisor("in", inner)})));
  for (auto x : {"a", "b", "c"})
    ASSERT_FALSE(nd.send(std::string{"root/in/"} + x, add(1)));
  ASSERT_TRUE(eventually([&] {
    return saved(nd, "root/in/a").count() == 1
           && saved(nd, "root/in/b").count() == 1
           && saved(nd, "root/in/c").count() == 1;
  }));
  auto& held = gates::get().at("hold-k");
  std::atomic<int> applies{0};
  nd.rt()->storage()->set_apply_hook([&](write_item* const*, size_t) {
    if (applies.fetch_add(1) == 0)
      held.pass();
    return false;
  });
  nd.rt()->add_dead_letter("elsewhere", envelope{}, "to hold the writer");
  ASSERT_TRUE(held.arrived());
  auto sup1 = nd.rt()->lookup("root/in");
  auto a1 = nd.rt()->lookup("root/in/a");
  caf::anon_send_exit(sup1, caf::exit_reason::kill);
  // The new supervisor's cells are spawned and fence (pending).
  ASSERT_TRUE(eventually([&] {
    auto s = nd.rt()->lookup("root/in");
    auto a = nd.rt()->lookup("root/in/a");
    return s && s != sup1 && a && a != a1;
  }));
  auto a2 = nd.rt()->lookup("root/in/a");
  auto a2_done = exit_flag(a2);
  auto sup2 = nd.rt()->lookup("root/in");
  caf::anon_send_exit(sup2, caf::exit_reason::kill);
  // sup2 awaits the start of its first child, which waits for its grant:
  // the kill is handled only after that (CAF's await), so let go.
  held.open();
  EXPECT_TRUE(eventually([&] { return a2_done->load(); }, 5s))
    << "a cell whose fence was pending did not end with its parent; it "
       "says: '"
    << cell_state(nd, a2) << "'";
  ASSERT_TRUE(eventually([&] {
    auto s = nd.rt()->lookup("root/in");
    return s && s != sup2 && s != sup1 && status_of(nd, "root", 0) == "running";
  }));
  for (auto x : {"a", "b", "c"})
    ASSERT_FALSE(nd.send(std::string{"root/in/"} + x, add(2)));
  for (auto x : {"a", "b", "c"}) {
    auto path = std::string{"root/in/"} + x;
    ASSERT_TRUE(eventually([&] { return saved(nd, path).count() == 2; }))
      << path << " " << saved(nd, path).count();
    auto t = get(nd, path);
    EXPECT_EQ(t.sum(), 3) << path;
  }
  EXPECT_TRUE(eventually([&] {
    auto st = nd.writer_stats();
    return st && (*st)[7] == 3;
  }, 5s)) << "paths owned: " << (*nd.writer_stats())[7];
  nd.rt()->storage()->set_apply_hook({});
}

// A simple_one_for_one journal child is not resumed at node start (its
// path is an orphan); starting a child of the same name resumes its state
// and its unconsumed journal.
TEST(fencing_paths_test, held_a_dynamic_child_resumes_by_name) {
  temp_dir dir;
  auto spec = [] {
    return dynamic(journaled("t").with_restart(restart_type::temporary));
  };
  {
    node nd{durable_registry(), with_dir(dir)};
    open_gates_at_exit guard;
    ASSERT_FALSE(nd.start("root", spec()));
    auto ci = nd.start_child("root", params{}, "k");
    ASSERT_TRUE(ci);
    ASSERT_FALSE(nd.send("root/k", add(1)));
    ASSERT_TRUE(eventually([&] { return saved(nd, "root/k").count() == 1; }));
    // Accepted, not consumed: the child stops with it in its journal.
    auto& held = gates::get().at("dyn");
    nd.rt()->storage()->set_apply_hook([&](write_item* const* items, size_t n) {
      if (has(items, n, db::snapshots, mutation::op::put))
        held.pass();
      return false;
    });
    ASSERT_FALSE(nd.send("root/k", block("dyn-open", 5)));
    gates::get().at("dyn-open").open();
    ASSERT_TRUE(held.arrived());
    // The consume waits; the node stops (the cell is retired and ends once
    // it is acknowledged).
    std::thread opener{[&] {
      std::this_thread::sleep_for(200ms); // let stop() begin
      held.open();
    }};
    nd.stop();
    opener.join();
    nd.rt()->storage()->set_apply_hook({});
  }
  node nd{durable_registry(), with_dir(dir)};
  open_gates_at_exit guard;
  gates::get().at("dyn-open").open();
  ASSERT_FALSE(nd.start("root", spec()));
  auto orphans = nd.orphans();
  EXPECT_EQ(orphans, std::vector<std::string>{"root/k"});
  ASSERT_TRUE(nd.start_child("root", params{}, "k"));
  auto t = get(nd, "root/k");
  EXPECT_EQ(t.count(), 2);
  EXPECT_EQ(t.sum(), 6);
}

// ---------------------------------------------------------------------------
// Deadlines and the outbox.
// ---------------------------------------------------------------------------

// A request with a 1 s deadline makes P (journal) send Add(1..3) to R
// through its outbox. P commits and replies in time. The outbox entries
// inherit the request's deadline (make_envelope copies current_->deadline),
// so when R, stuck for a little longer, gets them, they are past it: R
// rejects them as dead letters and P counts them as delivered. An effect
// that P committed is never applied. A replay of those dead letters keeps
// the deadline, so after a restart they are rejected again.
TEST(fencing_paths_test, committed_outbox_sends_outlive_the_requests_deadline) {
  temp_dir dir;
  auto spec = [] { return tree({journaled("p"), journaled("r")}); };
  {
    node nd{durable_registry(), with_dir(dir)};
    open_gates_at_exit guard;
    ASSERT_FALSE(nd.start("root", spec()));
    ASSERT_FALSE(nd.send("root/r", block("dl-r", 100)));
    auto& g = gates::get().at("dl-r");
    ASSERT_TRUE(g.arrived());
    Fanout f;
    f.set_to("root/r");
    f.set_from(1);
    f.set_count(3);
    auto t0 = std::chrono::steady_clock::now();
    auto rep = nd.call<Tally>("root/p", f, 1s);
    ASSERT_TRUE(rep) << describe(rep.error()); // committed, answered in time
    // The condition here is the deadline itself having passed.
    ASSERT_TRUE(eventually([&] {
      return std::chrono::steady_clock::now() > t0 + 1200ms;
    }));
    g.open();
    ASSERT_TRUE(eventually([&] { return on_disk(nd, db::outbox) == 0; }));
    auto r = get(nd, "root/r");
    EXPECT_EQ(r.count(), 4) << "dead letters: " << on_disk(nd, db::dead_letters)
                            << "; first reason: "
                            << (nd.dead_letters().empty()
                                  ? std::string{}
                                  : nd.dead_letters()[0].reason);
    nd.stop();
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
    std::cout << "  replayed " << replayed << " dead letters\n";
  }
  node nd{durable_registry(), with_dir(dir)};
  ASSERT_FALSE(nd.start("root", spec()));
  ASSERT_TRUE(eventually([&] { return on_disk(nd, db::journal) == 0; }));
  auto r = get(nd, "root/r");
  EXPECT_EQ(r.count(), 4) << "after the replay: dead letters "
                          << on_disk(nd, db::dead_letters);
  EXPECT_EQ(r.sum(), 106);
}

// ---------------------------------------------------------------------------
// Writes sent between a re-fence and its grant.
// ---------------------------------------------------------------------------

// P (journal) has outbox deliveries in flight to R (not durable, stuck).
// P's next consume fails: P fences again (prev = its epoch E1) and, until
// the grant, still writes with E1. The writer takes the fence first and
// moves the path to E2, so P's outbox deletions (token 0, made when R's
// answers arrive before the grant) are refused as `fenced`. The cell reads
// a fenced refusal as "a newer owner holds the path" and abandons itself,
// although the newer owner is itself: the path is unbound, the cell ends,
// and its supervisor cannot start it again.
TEST(fencing_paths_test, a_write_between_refence_and_grant_does_not_abandon) {
  temp_dir dir;
  auto nc = with_dir(dir);
  nc.writer.max_batch = 1; // every write commits on its own
  node nd{durable_registry(), nc};
  open_gates_at_exit guard;
  ASSERT_FALSE(nd.start("root", tree({journaled("p"), worker("r", "tally")})));
  ASSERT_FALSE(nd.send("root/r", block("rf-r", 0)));
  auto& rg = gates::get().at("rf-r");
  ASSERT_TRUE(rg.arrived());
  Fanout f;
  f.set_to("root/r");
  f.set_from(1);
  f.set_count(3);
  ASSERT_FALSE(nd.send("root/p", f));
  ASSERT_TRUE(eventually([&] { return on_disk(nd, db::outbox) == 3; }));
  auto& h1 = gates::get().at("rf-h1");
  auto& h2 = gates::get().at("rf-h2");
  std::atomic<bool> failed{false};
  nd.rt()->storage()->set_apply_hook([&](write_item* const* items, size_t n) {
    if (has(items, n, db::snapshots, mutation::op::put) && !failed.exchange(true)) {
      h1.pass();
      return true; // P's consume fails
    }
    if (has(items, n, db::dead_letters, mutation::op::append_dead_letter))
      h2.pass(); // holds the writer while P's re-fence queues
    return false;
  });
  auto p_cell = nd.rt()->lookup("root/p");
  ASSERT_FALSE(nd.send("root/p", add(5)));
  ASSERT_TRUE(h1.arrived());
  nd.rt()->add_dead_letter("elsewhere", envelope{}, "holds the writer");
  h1.open();
  ASSERT_TRUE(h2.arrived());
  rg.open(); // R answers P's deliveries; P deletes them (with E1)
  ASSERT_TRUE(eventually([&] {
    auto r = nd.call<Tally>("root/r", Get{}, 2s);
    return r && r->value.count() == 4;
  }));
  ASSERT_FALSE(cell_state(nd, p_cell).empty()); // P took R's answers
  h2.open();
  nd.rt()->storage()->set_apply_hook({});
  caf::expected<reply<Tally>> got{make_error(errc::not_found)};
  EXPECT_TRUE(eventually([&] {
    got = nd.call<Tally>("root/p", Get{}, 1s);
    return static_cast<bool>(got);
  }, 5s)) << "root/p: " << describe(got.error()) << "; the cell says '"
          << cell_state(nd, p_cell) << "', bound: "
          << static_cast<bool>(nd.rt()->lookup("root/p"))
          << ", supervisor: " << status_of(nd, "root", 0);
  if (got)
    EXPECT_EQ(got->value.sum(), 5);
  caf::error why;
  EXPECT_FALSE(nd.wait_for_exit(1s, why)) << "root exited: " << describe(why);
}

// A one_for_all group restart gives up on a stuck journal child (t2),
// pre-spawns its new cell, then fails at the sibling before it (start
// failure) and is retried. Meanwhile the stuck cell returns and forwards
// what queued at it to the pre-spawned cell, which is bound but not
// started. Once the retry succeeds, t2 applies everything exactly once.
TEST(fencing_paths_test, held_a_failed_group_restart_with_a_prespawned_cell) {
  temp_dir dir;
  auto reg = durable_registry();
  reg.add<echo>("echo");
  node nd{reg, with_dir(dir)};
  open_gates_at_exit guard;
  auto spec = tree({journaled("t1"), worker("bad", "echo"), journaled("t2")});
  spec.flags.strategy = strategy::one_for_all;
  spec.flags.backoff.min = 200ms;
  spec.flags.backoff.max = 200ms;
  ASSERT_FALSE(nd.start("root", spec));
  ASSERT_FALSE(nd.send("root/t2", add(1)));
  ASSERT_TRUE(eventually([&] { return saved(nd, "root/t2").count() == 1; }));
  ASSERT_FALSE(nd.send("root/t2", block("pg", 2)));
  auto& g = gates::get().at("pg");
  ASSERT_TRUE(g.arrived());
  auto old_t2 = nd.rt()->lookup("root/t2");
  auto done = exit_flag(old_t2);
  ASSERT_FALSE(nd.send("root/t2", add(3))); // queues at the stuck cell
  switches::get().set_fail("root/bad", true);
  ASSERT_FALSE(nd.send("root/t1", add(-1))); // group restart in 200 ms
  ASSERT_TRUE(eventually([&] {
    auto c = nd.rt()->lookup("root/t2");
    return c && c != old_t2 && status_of(nd, "root", 2) == "stopped";
  })) << status_of(nd, "root", 2);
  g.open(); // the stuck cell forwards Add(3) to the pre-spawned cell
  ASSERT_TRUE(eventually([&] { return done->load(); }));
  switches::get().set_fail("root/bad", false);
  ASSERT_TRUE(eventually([&] {
    return status_of(nd, "root", 0) == "running"
           && status_of(nd, "root", 1) == "running"
           && status_of(nd, "root", 2) == "running";
  }));
  ASSERT_TRUE(eventually([&] { return saved(nd, "root/t2").count() == 3; }))
    << saved(nd, "root/t2").count();
  auto t = get(nd, "root/t2");
  EXPECT_EQ(t.sum(), 6);
  EXPECT_EQ(seen(t), (std::vector<int64_t>{1, 2, 3}));
  switches::get().reset();
}

} // namespace
