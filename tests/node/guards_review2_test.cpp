// Review of issue 17's guards, continued (see guards_review_test.cpp): bad
// input a node must refuse, and replays of dry runs and approvals.

#include "support/guards_review.hpp"

// -- bad input ------------------------------------------------------------------

// Defect: a child's approval.types naming a type its agent does not handle
// (a typo) is taken as it is: the approval never applies, and the
// envelopes it was meant to stop run unapproved.
TEST_F(guards_review_test, the_node_refuses_approval_types_that_do_not_exist) {
  auto cfg = base_config(dir_);
  cfg.tools = {quick("main")};
  node n{review_types(), cfg};
  auto c = gated();
  c.approval.types = {"vigil.test.Pnig"};
  auto err = n.start("root", tree_of({c}));
  if (!err) {
    auto r = n.call<Pong>("root/g", ping(1), 5s);
    FAIL() << "the node started; a Ping " << (r ? "ran unapproved" : "failed");
  }
  EXPECT_NE(describe(err).find("approval.types"), std::string::npos)
    << describe(err);
  EXPECT_NE(describe(err).find("vigil.test.Pnig"), std::string::npos)
    << describe(err);
}

// Defect: a child whose envelopes need approval on a node without a data
// dir starts, and then refuses every one of its envelopes
// (approval_unavailable); a tool's approval without a data dir is refused
// at the start.
TEST_F(guards_review_test, a_childs_approval_without_a_data_dir_is_refused) {
  node_config cfg;
  cfg.tools = {quick("main")};
  node n{review_types(), cfg};
  auto err = n.start("root", tree_of({gated()}));
  if (!err) {
    auto r = n.call<Pong>("root/g", ping(1), 5s);
    FAIL() << "the node started; a Ping answered "
           << (r ? std::string{"a reply"} : describe(r.error()));
  }
  EXPECT_NE(describe(err).find("data dir"), std::string::npos)
    << describe(err);
}

// Held: the approval timeout's bounds (more than 0, at most 720h) on a
// tool and on a child; a dry run that has a dry run of its own.
TEST_F(guards_review_test, approval_timeouts_out_of_bounds_are_refused) {
  for (auto t : {0ms, std::chrono::milliseconds{721h}}) {
    auto cfg = base_config(dir_);
    auto pay = quick("pay", side_effect::irreversible);
    pay.approval.required = true;
    pay.approval.timeout = t;
    cfg.tools = {pay};
    node n{review_types(), cfg};
    auto err = n.start("root", tree_of({prober_child("c", {})}));
    ASSERT_TRUE(err) << t.count();
    EXPECT_NE(describe(err).find("approval.timeout"), std::string::npos)
      << describe(err);
  }
  for (auto t : {0ms, std::chrono::milliseconds{721h}}) {
    auto cfg = base_config(dir_);
    cfg.tools = {quick("main")};
    node n{review_types(), cfg};
    auto err = n.start("root", tree_of({gated(durability_mode::none, t)}));
    ASSERT_TRUE(err) << t.count();
    EXPECT_NE(describe(err).find("approval.timeout"), std::string::npos)
      << describe(err);
  }
  auto cfg = base_config(dir_);
  auto pay = quick("pay", side_effect::irreversible);
  pay.dry_run = {"check", true};
  auto check = quick("check", side_effect::idempotent_write);
  check.dry_run = {"pay", true};
  cfg.tools = {pay, check};
  node n{review_types(), cfg};
  auto err = n.start("root", tree_of({prober_child("c", {})}));
  ASSERT_TRUE(err);
  EXPECT_NE(describe(err).find("dry_run.tool"), std::string::npos)
    << describe(err);
}

// -- replays ----------------------------------------------------------------------

// Held: a journal agent's call with a dry run and an approval; the node
// stops while it waits for the approval, after the dry run was recorded.
// The replay does not run the dry run again, finds the same approval, and
// the real call runs once, when it is approved.
TEST_F(guards_review_test, a_replay_repeats_neither_the_dry_run_nor_the_ask) {
  auto& w = world::get();
  auto cfg = base_config(dir_);
  auto pay = quick("pay", side_effect::irreversible);
  pay.dry_run = {"check", true};
  pay.approval.required = true;
  cfg.tools = {pay, quick("check")};
  auto tree = tree_of({prober_child("c", {{"tool", "pay"}},
                                    durability_mode::journal)});
  std::vector<std::string> ids;
  {
    node n{review_types(), cfg};
    ASSERT_FALSE(n.start("root", tree));
    ASSERT_FALSE(n.send("root/c", ping(11)));
    ASSERT_TRUE(
      eventually([&] { return (ids = pending_ids(dir_)).size() == 1; }, 10s));
    n.stop();
  }
  EXPECT_EQ(w.count("check"), 1);
  node n{review_types(), cfg};
  ASSERT_FALSE(n.start("root", tree));
  ASSERT_TRUE(eventually(
    [&] {
      return n.rt()->find_tool("pay")->stats().approvals_asked.load() == 1;
    },
    10s)); // the replayed call waits again
  EXPECT_EQ(pending_ids(dir_), ids);
  EXPECT_EQ(w.count("check"), 1) << "the recorded dry run ran again";
  ASSERT_EQ(vigil_cmd(dir_, {"approvals", "approve", ids[0]}).exit_code, 0);
  ASSERT_TRUE(eventually([&] { return w.count("pay") == 1; }, 10s));
  size_t left = 1;
  ASSERT_TRUE(eventually([&] {
    return !n.rt()->storage()->count(db::journal, left) && left == 0;
  }, 10s));
  EXPECT_EQ(w.count("pay"), 1);
  EXPECT_EQ(w.count("check"), 1);
}

// Held: a node restart while an effect waits for its approval; the effect
// (in the outbox) asks again under the same key, finds the same approval,
// and is sent once when it is approved.
TEST_F(guards_review_test, an_effect_waits_for_its_approval_across_a_restart) {
  auto& w = world::get();
  auto cfg = base_config(dir_);
  auto pay = quick("pay", side_effect::idempotent_write);
  pay.approval.required = true;
  cfg.tools = {pay};
  auto tree = tree_of({prober_child("c", {{"tool", "pay"}, {"effect", ""}},
                                    durability_mode::journal)});
  std::vector<std::string> ids;
  {
    node n{review_types(), cfg};
    ASSERT_FALSE(n.start("root", tree));
    ASSERT_TRUE(n.call<Pong>("root/c", ping(12), 10s));
    ASSERT_TRUE(
      eventually([&] { return (ids = pending_ids(dir_)).size() == 1; }, 10s));
    n.stop();
  }
  node n{review_types(), cfg};
  ASSERT_FALSE(n.start("root", tree));
  ASSERT_TRUE(eventually(
    [&] { return n.rt()->find_tool("pay")->stats().effects.load() == 1; },
    10s));
  EXPECT_EQ(pending_ids(dir_), ids);
  ASSERT_EQ(vigil_cmd(dir_, {"approvals", "approve", ids[0]}).exit_code, 0);
  ASSERT_TRUE(eventually([&] { return w.count("pay") == 1; }, 10s));
  size_t outbox = 1;
  ASSERT_TRUE(eventually([&] {
    return !n.rt()->storage()->count(db::outbox, outbox) && outbox == 0;
  }, 10s));
  EXPECT_EQ(w.count("pay"), 1);
}

// Defect (fixed): an effect whose approval expired (nobody decided in
// time) is a dead letter, and `vigil dead-letters replay` puts it back into
// the outbox under the same key; the approval under that key was decided
// (expired) for good, so the replayed effect failed at once with
// approval_expired and was a dead letter again: no person could ever be
// asked again. The replay now drops a rejected or expired approval of the
// effect it puts back (and says so): the next dispatch asks a person, who
// approves it, and it runs once.
TEST_F(guards_review_test, a_replayed_expired_effect_asks_again) {
  auto& w = world::get();
  auto cfg = base_config(dir_);
  auto pay = quick("pay", side_effect::idempotent_write);
  pay.approval.required = true;
  pay.approval.timeout = 200ms;
  cfg.tools = {pay};
  auto tree = tree_of({prober_child("c", {{"tool", "pay"}, {"effect", ""}},
                                    durability_mode::journal)});
  {
    node n{review_types(), cfg};
    ASSERT_FALSE(n.start("root", tree));
    ASSERT_TRUE(n.call<Pong>("root/c", ping(13), 10s));
    ASSERT_TRUE(
      eventually([&] { return n.rt()->dead_letter_count() == 1; }, 10s));
    n.stop();
  }
  auto replay = vigil_cmd(dir_, {"dead-letters", "replay", "--all"});
  ASSERT_EQ(replay.exit_code, 0) << replay.out << replay.err;
  EXPECT_NE(replay.out.find("was expired"), std::string::npos) << replay.out;
  EXPECT_NE(replay.out.find("its next dispatch asks again"),
            std::string::npos)
    << replay.out;
  ASSERT_EQ(vigil_cmd(dir_, {"dead-letters", "list"}).out.find("approval_"),
            std::string::npos); // (back in the outbox)
  // This time a person has time to decide (200 ms could pass between the
  // check below and the approval under ASan).
  cfg.tools[0].approval.timeout = 30s;
  node n{review_types(), cfg};
  ASSERT_FALSE(n.start("root", tree));
  EXPECT_TRUE(eventually([&] { return pending_ids(dir_).size() == 1; }, 10s))
    << "the replayed effect was not offered for approval again: "
    << [&] {
         auto l = n.rt()->dead_letters();
         return l.empty() ? std::string{"no dead letter"} : l.back().reason;
       }();
  EXPECT_EQ(w.count("pay"), 0);
  // Approved this time, it runs once, and leaves no dead letter.
  auto ids = pending_ids(dir_);
  ASSERT_EQ(ids.size(), 1u);
  ASSERT_EQ(vigil_cmd(dir_, {"approvals", "approve", ids[0]}).exit_code, 0);
  ASSERT_TRUE(eventually([&] { return w.count("pay") == 1; }, 10s));
  size_t outbox = 1;
  ASSERT_TRUE(eventually([&] {
    return !n.rt()->storage()->count(db::outbox, outbox) && outbox == 0;
  }, 10s));
  EXPECT_EQ(w.count("pay"), 1);
  EXPECT_EQ(n.rt()->dead_letter_count(), 0u);
}

// -- the caller's deadline ----------------------------------------------------------

// Defect: a call that waits for approval outlives its envelope's deadline:
// the approval stays pending (60 s here) after the caller gave up, and a
// person who approves it then approves a call that can no longer run
// (start_call refuses it, deadline_exceeded).
TEST_F(guards_review_test, a_calls_approval_ends_at_the_callers_deadline) {
  auto& w = world::get();
  auto cfg = base_config(dir_);
  auto pay = quick("pay", side_effect::irreversible);
  pay.approval.required = true;
  cfg.tools = {pay};
  node n{review_types(), cfg};
  ASSERT_FALSE(
    n.start("root", tree_of({prober_child("c", {{"tool", "pay"}})})));
  auto r = n.call<Pong>("root/c", ping(14), 500ms);
  ASSERT_FALSE(r);
  EXPECT_TRUE(eventually([&] { return pending_ids(dir_).empty(); }, 10s))
    << "the approval of a call whose caller gave up is still offered";
  auto all = vigil_cmd(dir_, {"approvals", "list", "--json", "--all"});
  EXPECT_NE(all.out.find("deadline"), std::string::npos) << all.out;
  EXPECT_EQ(w.count("pay"), 0);
}

// Held: the called tool's breaker and its fallback's are both open (the
// chain is refused within call_tool): the default answers, nothing runs,
// and a journal agent records who answered; its held envelope is released
// once (the agent goes on with the next envelope).
TEST_F(guards_review_test, open_breakers_down_the_chain_reach_the_default) {
  auto& w = world::get();
  auto cfg = base_config(dir_);
  for (auto name : {"main", "backup"}) {
    auto d = quick(name, side_effect::idempotent_write);
    d.policy.retry.max_attempts = 1;
    d.policy.breaker.enabled = true;
    d.policy.breaker.consecutive_failures = 1;
    d.policy.breaker.open_for = 600s;
    cfg.tools.push_back(d);
  }
  cfg.tools[0].fallback.tools = {"backup"};
  cfg.tools[0].fallback.default_type = "vigil.test.Pong";
  Pong def;
  def.set_n(-1);
  def.SerializeToString(&cfg.tools[0].fallback.default_payload);
  node n{review_types(), cfg};
  ASSERT_FALSE(n.start(
    "root", tree_of({prober_child("trip", {{"tool", "backup"}}),
                     prober_child("c", {{"tool", "main"}},
                                  durability_mode::journal)})));
  w.set("main", world::mode::transient);
  w.set("backup", world::mode::transient);
  ASSERT_FALSE(n.call<Pong>("root/trip", ping(1), 5s)); // backup opens
  auto r1 = n.call<Pong>("root/c", ping(2), 5s); // main opens, backup open
  ASSERT_TRUE(r1) << describe(r1.error());
  EXPECT_EQ(r1->value.from(), "main+default");
  int main_runs = w.count("main"), backup_runs = w.count("backup");
  auto r2 = n.call<Pong>("root/c", ping(3), 5s); // refused within call_tool
  ASSERT_TRUE(r2) << describe(r2.error());
  EXPECT_EQ(r2->value.from(), "main+default");
  EXPECT_EQ(r2->value.n(), -1);
  EXPECT_EQ(w.count("main"), main_runs);
  EXPECT_EQ(w.count("backup"), backup_runs);
  size_t left = 1;
  ASSERT_TRUE(eventually([&] {
    return !n.rt()->storage()->count(db::journal, left) && left == 0;
  }, 10s));
}
