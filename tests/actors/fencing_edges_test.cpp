// One owner per path at the edges: failed commits of cells that are
// leaving, stopped or probing; a fence right after a release; refusals
// and grants in order; and lifecycle scenarios that must hold (group
// restarts, requesters through a replacement, start failures with
// pre-spawned cells). Found by an independent review of the fencing
// change. Real threads, real LMDB; stuck handlers and held or failed
// commits are test gates and apply hooks.

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

/// Holds the first batch that holds a consume (a snapshot put) at `g`,
/// then fails it; every other batch passes.
store::apply_hook hold_then_fail_first_consume(gate& g,
                                               std::atomic<int>& failed) {
  return [&g, &failed](write_item* const* items, size_t n) {
    if (!has(items, n, db::snapshots, mutation::op::put))
      return false;
    if (failed.fetch_add(1) != 0)
      return false;
    g.pass();
    return true;
  };
}

/// Sets a flag once `cell` has run its on_exit (attached functors run in
/// the actor's cleanup, after on_exit).
std::shared_ptr<std::atomic<bool>> exit_flag(const caf::actor& cell) {
  auto flag = std::make_shared<std::atomic<bool>>(false);
  cell->attach_functor([flag] { flag->store(true); });
  return flag;
}

/// The cell's mode as it reports it, or "" if it does not answer.
std::string cell_state(node& nd, const caf::actor& cell) {
  caf::scoped_actor self{nd.system()};
  std::string out;
  self->request(cell, std::chrono::seconds{2}, state_atom::value)
    .receive([&](std::string& s) { out = std::move(s); },
             [&](caf::error&) {});
  return out;
}

// ---------------------------------------------------------------------------
// Held replies whose commit fails on a cell that is leaving.
// ---------------------------------------------------------------------------

// A retired cell (terminate_child of a dynamic child) waits for its held
// reply's commit; that commit fails. storage_failure() returns early for a
// leaving cell and on_committed() leaves the reply for a reconcile that
// never comes: the requester is never answered and the cell never ends.
TEST(fencing_edges_test, a_retired_cell_answers_a_reply_whose_commit_failed) {
  temp_dir dir;
  node nd{durable_registry(), with_dir(dir)};
  open_gates_at_exit guard;
  ASSERT_FALSE(nd.start(
    "root", dynamic(journaled("t").with_restart(restart_type::temporary))));
  auto ci = nd.start_child("root", params{}, "a");
  ASSERT_TRUE(ci);
  auto path = ci->path;
  ci = make_error(errc::not_found);
  auto done = exit_flag(nd.rt()->lookup(path));
  auto asked = std::async(std::launch::async, [&] {
    return nd.call<Tally>(path, block("g1", 5), 15s);
  });
  auto& g = gates::get().at("g1");
  ASSERT_TRUE(g.arrived());
  auto& held = gates::get().at("commit1");
  std::atomic<int> failed{0};
  nd.rt()->storage()->set_apply_hook(
    hold_then_fail_first_consume(held, failed));
  g.open();
  ASSERT_TRUE(held.arrived()); // the consume waits in the writer
  ASSERT_FALSE(nd.terminate_child("root", "a")); // stop, retire: leaving
  held.open(); // ... and fails
  EXPECT_EQ(asked.wait_for(5s), std::future_status::ready)
    << "the requester was not answered within 5 s";
  auto r = asked.get(); // at the latest, its own 15 s timeout
  EXPECT_FALSE(r) << "a reply for a commit that failed";
  if (!r)
    std::cout << "  requester got: " << describe(r.error()) << "\n";
  EXPECT_TRUE(eventually([&] { return done->load(); }, 5s))
    << "the retired cell never ended";
  nd.rt()->storage()->set_apply_hook({});
}

// The same through abandon: a stuck child whose supervisor gave up on it
// (no restart yet) finishes its handler; the consume fails.
TEST(fencing_edges_test,
     an_abandoned_cell_answers_a_reply_whose_commit_failed) {
  temp_dir dir;
  node nd{durable_registry(), with_dir(dir)};
  open_gates_at_exit guard;
  ASSERT_FALSE(nd.start("root", tree({journaled("t")})));
  auto done = exit_flag(nd.rt()->lookup("root/t"));
  auto asked = std::async(std::launch::async, [&] {
    return nd.call<Tally>("root/t", block("stuck2", 5), 25s);
  });
  auto& stuck = gates::get().at("stuck2");
  ASSERT_TRUE(stuck.arrived());
  ASSERT_FALSE(nd.terminate_child("root", "t")); // times out: abandoned
  auto& held = gates::get().at("commit2");
  std::atomic<int> failed{0};
  nd.rt()->storage()->set_apply_hook(
    hold_then_fail_first_consume(held, failed));
  held.open(); // fail it without holding
  stuck.open();
  ASSERT_TRUE(eventually([&] { return failed.load() > 0; }));
  EXPECT_EQ(asked.wait_for(5s), std::future_status::ready)
    << "the requester was not answered within 5 s";
  EXPECT_TRUE(eventually([&] { return done->load(); }, 5s))
    << "the abandoned cell never ended";
  nd.rt()->storage()->set_apply_hook({});
  // Nothing lost or doubled: the envelope is applied once by the next cell.
  ASSERT_TRUE(nd.restart_child("root", "t"));
  {
    auto t = get(nd, "root/t");
    EXPECT_EQ(t.count(), 1);
    EXPECT_EQ(t.sum(), 5);
  }
  EXPECT_EQ(asked.wait_for(5s), std::future_status::ready)
    << "still not answered after the restart";
  auto r = asked.get(); // at the latest at its own 25 s timeout
  EXPECT_FALSE(r) << "a reply of the abandoned cell";
  if (!r)
    std::cout << "  requester got: " << describe(r.error()) << "\n";
  EXPECT_TRUE(eventually([&] { return done->load(); }, 5s))
    << "the abandoned cell is still there after the restart";
}

// A stopped (not retired) child: terminate_child, then the consume of its
// last handled request fails. reconcile() puts the requester back into the
// buffer of a stopped cell, where it waits for a restart_child that may
// never come, while reject_buffer tells every other requester at once.
TEST(fencing_edges_test, a_stopped_child_answers_a_reply_whose_commit_failed) {
  temp_dir dir;
  node nd{durable_registry(), with_dir(dir)};
  open_gates_at_exit guard;
  ASSERT_FALSE(nd.start("root", tree({journaled("t")})));
  auto asked = std::async(std::launch::async, [&] {
    return nd.call<Tally>("root/t", block("g3", 5), 60s);
  });
  auto& g = gates::get().at("g3");
  ASSERT_TRUE(g.arrived());
  auto& held = gates::get().at("commit3");
  std::atomic<int> failed{0};
  nd.rt()->storage()->set_apply_hook(
    hold_then_fail_first_consume(held, failed));
  g.open();
  ASSERT_TRUE(held.arrived());
  ASSERT_FALSE(nd.terminate_child("root", "t"));
  held.open();
  EXPECT_EQ(asked.wait_for(5s), std::future_status::ready)
    << "the requester waits for a restart of a stopped child";
  nd.rt()->storage()->set_apply_hook({});
  ASSERT_TRUE(nd.restart_child("root", "t"));
  ASSERT_EQ(asked.wait_for(10s), std::future_status::ready);
  auto r = asked.get();
  if (!r)
    std::cout << "  requester got: " << describe(r.error()) << "\n";
  else
    std::cout << "  requester got a Tally, count " << r->value.count()
              << "\n";
  auto t = get(nd, "root/t");
  EXPECT_EQ(t.count(), 1);
  EXPECT_EQ(t.sum(), 5);
}

// ---------------------------------------------------------------------------
// Degrade and half-open probes.
// ---------------------------------------------------------------------------

// A degraded journal child probes (half_open); the first envelope's accept
// fails. reconcile() drops the probe instance and tells the supervisor,
// which ignores exits of a child it thinks is degraded; no probe is armed
// any more: the child never runs again.
TEST(fencing_edges_test, a_half_open_probe_survives_a_storage_failure) {
  temp_dir dir;
  node nd{durable_registry(), with_dir(dir)};
  auto t = journaled("t").with_failure(on_failure::degrade);
  Tally fb;
  fb.set_count(-1);
  t.degrade.set_fallback(fb);
  t.degrade.probe_min = 50ms;
  t.degrade.probe_max = 50ms;
  auto spec = tree({t});
  spec.flags.intensity = 0;
  ASSERT_FALSE(nd.start("root", spec));
  ASSERT_FALSE(nd.send("root/t", add(-1))); // throws: degrade
  auto cell = nd.rt()->lookup("root/t");
  ASSERT_TRUE(eventually([&] { return cell_state(nd, cell) == "half_open"; }))
    << cell_state(nd, cell);
  std::atomic<int> failed{0};
  nd.rt()->storage()->set_apply_hook([&](write_item* const* items, size_t n) {
    return has(items, n, db::journal, mutation::op::put)
           && failed.fetch_add(1) == 0;
  });
  ASSERT_FALSE(nd.send("root/t", add(1))); // its accept fails
  ASSERT_TRUE(eventually([&] { return failed.load() > 0; }));
  ASSERT_TRUE(eventually([&] {
    auto st = nd.writer_stats();
    return st && (*st)[2] == 1;
  }));
  nd.rt()->storage()->set_apply_hook({});
  // Whatever state it is in now, it answers (fallback or real) and
  // eventually applies what it accepts.
  ASSERT_FALSE(nd.send("root/t", add(2)));
  EXPECT_TRUE(eventually([&] { return saved(nd, "root/t").sum() == 2; }, 5s))
    << "mode " << cell_state(nd, cell) << ", supervisor says "
    << [&] {
         auto kids = nd.which_children("root");
         return kids ? (*kids)[0].status : std::string{"?"};
       }()
    << ", saved sum "
    << saved(nd, "root/t").sum() << ", journal " << on_disk(nd, db::journal);
  auto r = nd.call<Tally>("root/t", Get{}, 3s);
  EXPECT_TRUE(r) << describe(r.error()) << "; mode " << cell_state(nd, cell);
}

// ---------------------------------------------------------------------------
// The writer's grant after a release.
// ---------------------------------------------------------------------------

// A snapshot child saves on its orderly stop and is retired; a new cell at
// the same path fences while that save is still in the writer's batch. The
// release freed the path's slot, so the new slot's `batch` is 0 and the
// grant reads LMDB at once, without the save: the new owner starts on the
// older state and its own saves overwrite the stopped child's.
TEST(fencing_edges_test, a_fence_after_a_release_waits_for_the_last_save) {
  temp_dir dir;
  node nd{durable_registry(), with_dir(dir)};
  open_gates_at_exit guard;
  auto t = worker("t", "tally").with_restart(restart_type::temporary);
  t.durability.mode = durability_mode::snapshot;
  t.durability.every_messages = 1000000; // saves on an orderly stop only
  t.durability.every = 0ms;
  ASSERT_FALSE(nd.start("root", dynamic(t)));
  auto ci = nd.start_child("root", params{}, "a");
  ASSERT_TRUE(ci);
  auto path = ci->path;
  ci = make_error(errc::not_found);
  for (int64_t i = 1; i <= 3; ++i)
    ASSERT_FALSE(nd.send(path, add(i)));
  ASSERT_EQ(get(nd, path).count(), 3);
  auto old_cell = nd.rt()->lookup(path);
  auto done = exit_flag(old_cell);
  // Hold the writer in an unrelated commit, so that what follows queues.
  auto& held = gates::get().at("commit5");
  std::atomic<int> applies{0};
  nd.rt()->storage()->set_apply_hook([&](write_item* const*, size_t) {
    if (applies.fetch_add(1) == 0)
      held.pass();
    return false;
  });
  nd.rt()->add_dead_letter("elsewhere", envelope{}, "to hold the writer");
  ASSERT_TRUE(held.arrived());
  // The orderly stop saves {3, 6} (queued at the writer), then the cell
  // is retired and releases the path (queued behind the save).
  ASSERT_FALSE(nd.terminate_child("root", "a"));
  ASSERT_TRUE(eventually([&] { return done->load(); }));
  old_cell = nullptr;
  // The new cell's fence queues behind both.
  auto started = std::async(std::launch::async, [&] {
    return nd.start_child("root", params{}, "a");
  });
  ASSERT_TRUE(eventually([&] {
    auto c = nd.rt()->lookup(path);
    return c && !cell_state(nd, c).empty();
  }));
  held.open();
  ASSERT_EQ(started.wait_for(10s), std::future_status::ready);
  ASSERT_TRUE(started.get());
  nd.rt()->storage()->set_apply_hook({});
  EXPECT_EQ(saved(nd, path).count(), 3) << "the stop's save is on disk";
  auto now = get(nd, path);
  EXPECT_EQ(now.count(), 3) << "the new owner started without the save";
  EXPECT_EQ(seen(now), (std::vector<int64_t>{1, 2, 3}));
  // Its orderly stop then overwrites the save.
  ASSERT_FALSE(nd.send(path, add(10)));
  // Handled first: the supervisor's stop would overtake a queued send.
  ASSERT_EQ(get(nd, path).count(), 4);
  ASSERT_FALSE(nd.terminate_child("root", "a"));
  EXPECT_TRUE(eventually([&] { return saved(nd, path).sum() == 16; }, 3s))
    << "saved: count " << saved(nd, path).count() << " sum "
    << saved(nd, path).sum();
}

// ---------------------------------------------------------------------------
// Refusals told after the re-fence was granted.
// ---------------------------------------------------------------------------

// One failed commit must cost one reload and one restart. The writer
// defers refusals while its batch holds other writes (refuse() ->
// refusals_, sent after the next flush) but grants a re-fence at once when
// the batch holds no write of the path: the grant overtakes the refusals
// of the writes the owner sent between the failed commit and its fence.
// Each late refusal (here of token-0 outbox deletions) then reads as a new
// storage failure: the cell fences and reloads again and fails its
// freshly restarted instance a second time.
/// Drives P ("root/p") to one failed consume while P's token-0 outbox
/// deletions queue at the writer behind another path's write; returns once
/// the failure is let go.
void late_refusals(node& nd) {
  auto& rg = gates::get().at("r6");
  ASSERT_FALSE(nd.send("root/r", block("r6", 0))); // R is stuck
  ASSERT_TRUE(rg.arrived());
  Fanout f;
  f.set_to("root/r");
  f.set_from(1);
  f.set_count(3);
  ASSERT_FALSE(nd.send("root/p", f)); // P's deliveries wait at R
  ASSERT_TRUE(eventually([&] { return on_disk(nd, db::outbox) == 3; }));
  auto& pg = gates::get().at("p6");
  ASSERT_FALSE(nd.send("root/p", block("p6", 5)));
  ASSERT_TRUE(pg.arrived());
  auto& held = gates::get().at("commit6");
  static std::atomic<int> failed;
  failed = 0;
  nd.rt()->storage()->set_apply_hook(
    hold_then_fail_first_consume(held, failed));
  pg.open();
  ASSERT_TRUE(held.arrived()); // P's consume is being committed
  // Another path's write, then P's outbox deletions, queue behind it.
  nd.rt()->add_dead_letter("elsewhere", envelope{}, "another write");
  rg.open();
  ASSERT_TRUE(eventually([&] {
    auto r = nd.call<Tally>("root/r", Get{}, 2s);
    return r && r->value.count() == 4;
  }));
  ASSERT_FALSE(cell_state(nd, nd.rt()->lookup("root/p")).empty());
  held.open(); // the consume fails
}

node_config latent(const temp_dir& dir) {
  auto nc = with_dir(dir);
  nc.writer.max_latency = std::chrono::milliseconds{500};
  return nc;
}

TEST(fencing_edges_test, one_failed_commit_costs_one_restart) {
  temp_dir dir;
  node nd{durable_registry(), latent(dir)};
  open_gates_at_exit guard;
  ASSERT_FALSE(nd.start("root", tree({journaled("p"), worker("r", "tally")})));
  late_refusals(nd);
  ASSERT_TRUE(eventually([&] {
    auto st = nd.writer_stats();
    return st && (*st)[8] >= 3; // the three deletions were refused
  }, 5s));
  ASSERT_TRUE(eventually([&] { return on_disk(nd, db::outbox) == 0; }, 10s));
  ASSERT_TRUE(eventually([&] {
    auto kids = nd.which_children("root");
    return kids && (*kids)[0].status == "running";
  }));
  auto st = nd.writer_stats();
  ASSERT_TRUE(st);
  EXPECT_EQ((*st)[2], 1u) << "commits failed";
  auto kids = nd.which_children("root");
  ASSERT_TRUE(kids);
  EXPECT_EQ((*kids)[0].restarts, 1u)
    << "one failed commit restarted the child " << (*kids)[0].restarts
    << " times; writes refused: " << (*st)[8];
  nd.rt()->storage()->set_apply_hook({});
  auto t = get(nd, "root/p");
  EXPECT_EQ(t.count(), 2);
  EXPECT_EQ(t.sum(), 5);
}

// The same with OTP's default intensity (1 restart per 5 s): the second,
// spurious restart escalates and the whole tree stops.
TEST(fencing_edges_test, one_failed_commit_does_not_escalate_at_intensity_1) {
  temp_dir dir;
  node nd{durable_registry(), latent(dir)};
  open_gates_at_exit guard;
  auto spec = tree({journaled("p"), worker("r", "tally")});
  spec.flags.intensity = 1;
  ASSERT_FALSE(nd.start("root", spec));
  late_refusals(nd);
  caf::error why;
  EXPECT_FALSE(nd.wait_for_exit(3s, why)) << "root exited: " << describe(why);
  nd.rt()->storage()->set_apply_hook({});
}
// ---------------------------------------------------------------------------
// Held: scenarios that behaved as promised.
// ---------------------------------------------------------------------------

// HELD. one_for_all: a sibling's crash restarts the group; the stuck
// journal sibling is given up (abandoned), a new cell takes its path, and
// what queued at the stuck one is forwarded once its handler returns.
// Exact counts and sums, also after a restart of the node.
TEST(fencing_edges_test, held_group_restart_with_a_stuck_journal_sibling) {
  temp_dir dir;
  {
    node nd{durable_registry(), with_dir(dir)};
    open_gates_at_exit guard;
    auto spec = tree({journaled("a"), journaled("b")});
    spec.flags.strategy = strategy::one_for_all;
    ASSERT_FALSE(nd.start("root", spec));
    ASSERT_FALSE(nd.send("root/a", add(1)));
    ASSERT_FALSE(nd.send("root/b", add(10)));
    ASSERT_TRUE(eventually([&] { return saved(nd, "root/a").count() == 1; }));
    auto& ga = gates::get().at("ga");
    ASSERT_FALSE(nd.send("root/a", block("ga", 2)));
    ASSERT_TRUE(ga.arrived());
    ASSERT_FALSE(nd.send("root/a", add(3))); // queue at the stuck cell
    ASSERT_FALSE(nd.send("root/a", add(4)));
    auto old_a = nd.rt()->lookup("root/a");
    ASSERT_FALSE(nd.send("root/b", add(-1))); // group restart
    ASSERT_TRUE(eventually([&] {
      auto c = nd.rt()->lookup("root/a");
      return c && c != old_a;
    }));
    ASSERT_TRUE(eventually([&] {
      auto kids = nd.which_children("root");
      return kids && (*kids)[0].status == "running"
             && (*kids)[1].status == "running";
    }));
    ASSERT_FALSE(nd.send("root/a", add(5)));
    ga.open();
    ASSERT_TRUE(
      eventually([&] { return saved(nd, "root/a").count() == 5; }, 10s))
      << "count " << saved(nd, "root/a").count();
    auto a = get(nd, "root/a");
    EXPECT_EQ(a.count(), 5);
    EXPECT_EQ(a.sum(), 15);
    auto b = get(nd, "root/b");
    EXPECT_EQ(b.count(), 1);
    EXPECT_EQ(b.sum(), 10);
    nd.stop();
  }
  node nd{durable_registry(), with_dir(dir)};
  auto spec = tree({journaled("a"), journaled("b")});
  spec.flags.strategy = strategy::one_for_all;
  ASSERT_FALSE(nd.start("root", spec));
  auto a = get(nd, "root/a");
  EXPECT_EQ(a.count(), 5);
  EXPECT_EQ(a.sum(), 15);
  EXPECT_EQ(get(nd, "root/b").count(), 1);
}

// HELD. Requesters of a journal child that is given up and replaced:
// each gets exactly one answer, and every envelope is applied once.
TEST(fencing_edges_test, held_requesters_through_a_replacement) {
  temp_dir dir;
  node nd{durable_registry(), with_dir(dir)};
  open_gates_at_exit guard;
  ASSERT_FALSE(nd.start("root", tree({journaled("t")})));
  gates::get().at("open8").open();
  auto first = std::async(std::launch::async, [&] {
    return nd.call<Tally>("root/t", block("stuck8", 1), 15s);
  });
  auto& stuck = gates::get().at("stuck8");
  ASSERT_TRUE(stuck.arrived());
  // Three more requests queue at the stuck cell (enqueued on this thread,
  // answered below).
  auto old_cell = nd.rt()->lookup("root/t");
  caf::scoped_actor self{nd.system()};
  using handle_t = decltype(self->request(old_cell, caf::duration{15s},
                                          envelope{}));
  std::vector<handle_t> rest;
  for (int64_t i = 2; i <= 4; ++i) {
    envelope e;
    e.type = type_symbol<Block>();
    e.payload = block("open8", i, false).SerializeAsString();
    e.id = nd.rt()->next_id();
    rest.push_back(self->request(old_cell, caf::duration{15s}, std::move(e)));
  }
  ASSERT_FALSE(nd.terminate_child("root", "t"));
  ASSERT_TRUE(nd.restart_child("root", "t"));
  stuck.open();
  int ok = 0;
  ASSERT_EQ(first.wait_for(10s), std::future_status::ready);
  if (auto r = first.get())
    ++ok;
  else
    std::cout << "  first: " << describe(r.error()) << "\n";
  for (auto& h : rest) {
    int answers = 0;
    h.receive([&](envelope&) { ++ok, ++answers; },
              [&](caf::error& err) {
                ++answers;
                std::cout << "  queued: " << caf::to_string(err) << "\n";
              });
    EXPECT_EQ(answers, 1);
  }
  auto t = get(nd, "root/t");
  EXPECT_EQ(t.count(), 4);
  EXPECT_EQ(t.sum(), 10);
  EXPECT_GE(ok, 3);
}

// HELD. A start failure in the middle of the start sequence leaves no
// pre-spawned cell behind: nothing bound, no path owned, and the data
// dir starts cleanly afterwards.
TEST(fencing_edges_test, held_a_start_failure_leaves_no_prespawned_cell) {
  temp_dir dir;
  auto reg = durable_registry();
  reg.add<echo>("echo");
  {
    node nd{reg, with_dir(dir)};
    switches::get().set_fail("root/bad", true);
    std::vector<child_spec> kids{journaled("t1"), worker("bad", "echo")};
    for (int i = 2; i <= 80; ++i)
      kids.push_back(journaled("t" + std::to_string(i)));
    auto err = nd.start("root", tree(kids));
    EXPECT_TRUE(err);
    EXPECT_TRUE(eventually([&] { return nd.rt()->paths().empty(); }, 5s))
      << nd.rt()->paths().size() << " paths still bound";
    EXPECT_TRUE(eventually([&] {
      auto st = nd.writer_stats();
      return st && (*st)[7] == 0;
    }, 5s)) << "paths still owned";
    switches::get().reset();
  }
  node nd{reg, with_dir(dir)};
  ASSERT_FALSE(nd.start("root", tree({journaled("t1"), journaled("t2")})));
  ASSERT_FALSE(nd.send("root/t2", add(3)));
  EXPECT_TRUE(eventually([&] { return saved(nd, "root/t2").sum() == 3; }));
}

// HELD. A degraded journal child (no instance, probe pending) whose accept
// fails reloads from the disk, stays degraded, and applies what it kept
// once its probe succeeds.
TEST(fencing_edges_test, held_a_degraded_child_reloads_and_recovers) {
  temp_dir dir;
  node nd{durable_registry(), with_dir(dir)};
  auto t = journaled("t").with_failure(on_failure::degrade);
  Tally fb;
  fb.set_count(-1);
  t.degrade.set_fallback(fb);
  t.degrade.probe_min = 1500ms;
  t.degrade.probe_max = 1500ms;
  auto spec = tree({t});
  spec.flags.intensity = 0;
  ASSERT_FALSE(nd.start("root", spec));
  ASSERT_FALSE(nd.send("root/t", add(1)));
  ASSERT_TRUE(eventually([&] { return saved(nd, "root/t").count() == 1; }));
  ASSERT_FALSE(nd.send("root/t", add(-1))); // throws: degrade
  auto cell = nd.rt()->lookup("root/t");
  ASSERT_TRUE(eventually([&] { return cell_state(nd, cell) == "degraded"; }));
  ASSERT_FALSE(nd.send("root/t", add(2))); // kept in the journal
  ASSERT_TRUE(eventually([&] { return on_disk(nd, db::journal) == 1; }));
  std::atomic<int> failed{0};
  nd.rt()->storage()->set_apply_hook([&](write_item* const* items, size_t n) {
    return has(items, n, db::journal, mutation::op::put)
           && failed.fetch_add(1) == 0;
  });
  ASSERT_FALSE(nd.send("root/t", add(100))); // its accept fails
  ASSERT_TRUE(eventually([&] {
    auto st = nd.writer_stats();
    return st && (*st)[2] == 1;
  }));
  nd.rt()->storage()->set_apply_hook({});
  auto r = nd.call<Tally>("root/t", Get{}, 2s);
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_TRUE(r->degraded);
  ASSERT_FALSE(nd.send("root/t", add(3)));
  EXPECT_TRUE(eventually([&] { return saved(nd, "root/t").count() == 3; }, 8s))
    << "saved count " << saved(nd, "root/t").count() << ", mode "
    << cell_state(nd, cell);
  auto got = get(nd, "root/t");
  EXPECT_EQ(got.sum(), 6);
  EXPECT_EQ(seen(got), (std::vector<int64_t>{1, 2, 3}));
}

} // namespace
