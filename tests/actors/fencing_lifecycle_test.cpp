// One owner per path along more lifecycle paths (continued from
// fencing_paths_test): the node's stop and restart with zombies, nested
// supervisors killed, simple_one_for_one children at node start, deadlines
// and the outbox, writes between a re-fence and its grant, group restarts
// that give up on a stuck child. Found by a second independent review of the
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
// Node lifecycle and zombies.
// ---------------------------------------------------------------------------

// Many give-ups in a row: every zombie ends once its handler returns, the
// writer owns one path at the end, and the node (then a new node on the
// same data dir) sees every envelope applied once.
TEST(fencing_lifecycle_test, held_many_give_ups_leave_no_zombies) {
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
TEST(fencing_lifecycle_test, held_node_stop_with_a_stuck_zombie) {
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
TEST(fencing_lifecycle_test, held_redelivery_across_a_give_up) {
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
TEST(fencing_lifecycle_test, held_outbox_after_a_failed_sender_commit) {
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
TEST(fencing_lifecycle_test, held_a_killed_supervisor_with_fences_pending) {
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
TEST(fencing_lifecycle_test, held_a_dynamic_child_resumes_by_name) {
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
TEST(fencing_lifecycle_test, committed_outbox_sends_outlive_the_requests_deadline) {
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
TEST(fencing_lifecycle_test, a_write_between_refence_and_grant_does_not_abandon) {
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
TEST(fencing_lifecycle_test, held_a_failed_group_restart_with_a_prespawned_cell) {
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
