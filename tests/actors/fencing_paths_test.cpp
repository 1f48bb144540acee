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
#include "support/fencing_paths_support.hpp"

using namespace vigil;
using namespace vigil::test;
using namespace vigil::test::fencing_paths;
using namespace std::chrono_literals;

namespace {

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

} // namespace
