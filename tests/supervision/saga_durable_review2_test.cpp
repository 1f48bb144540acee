// Second adversarial review of issue 15 (durable sagas, adc70ee): paths the
// first review (saga_durable_review_test.cpp) did not take. Each test
// states the promise it checks. The deterministic node (det_node) runs a
// real LMDB data dir on CAF's testing scheduler.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>

#include "support/durable_saga_fixture.hpp"
#include "support/temp_dir.hpp"
#include "vigil/actors/detail/envelope_record.hpp"
#include "vigil/persistence/record.hpp"

using namespace std::chrono_literals;
using namespace vigil;
using namespace vigil::test;

namespace {

using exec = saga_script::exec;
using comp = saga_script::comp;

class saga_durable_review2 : public ::testing::Test {
protected:
  void SetUp() override {
    saga_script::get() = saga_script{};
    outcome_sink::handled = 0;
  }
};

/// Puts `value` at `key` of `where` in the (closed) data dir `dir`.
void put_raw(const std::string& dir, db where, const std::string& key,
             const std::string& value) {
  store_options so;
  so.dir = dir;
  std::unique_ptr<store> st;
  ASSERT_FALSE(store::open(so, st));
  write_item item;
  mutation m;
  m.what = mutation::op::put;
  m.where = where;
  m.key = key;
  m.value = value;
  item.muts.push_back(m);
  write_item* items[] = {&item};
  write_result res[1];
  auto s = st->apply(items, 1, res);
  ASSERT_FALSE(s) << s.message();
}

/// The run record of input id `id` in the (closed) data dir `dir`.
records::SagaRun read_run(const std::string& dir, uint64_t id) {
  store_options so;
  so.dir = dir;
  std::unique_ptr<store> st;
  records::SagaRun rec;
  EXPECT_FALSE(store::open(so, st));
  std::string raw;
  bool found = false;
  EXPECT_FALSE(st->get(db::sagas, saga_run_key(saga_at, 0, id), raw, found));
  EXPECT_TRUE(found);
  EXPECT_EQ(decode_record(raw, rec), record_fault::none);
  return rec;
}

/// The committed effects of the order of `amount` at step `id`: its
/// executes (+amount in the step's state) and compensations (-amount).
effects effects_of_amount(det_node& n, const std::string& id, int64_t amount) {
  records::Snapshot snap;
  bool found = false;
  auto st = n.storage().snapshot(step_at(id), snap, found);
  EXPECT_FALSE(st) << st.message();
  effects e;
  Tally t;
  if (!found || !t.ParseFromString(snap.state()))
    return e;
  for (auto x : t.seen()) {
    if (x == amount)
      ++e.executed;
    if (x == -amount)
      ++e.compensated;
  }
  return e;
}

/// As expect_all_or_nothing, for the run of `amount` among several: every
/// step's committed effect at most once, undone unless the run completed,
/// and the outcome's statuses agree.
void expect_all_or_nothing_of(det_node& n, const SagaOutcome& out,
                              int64_t amount, const std::string& seed) {
  for (size_t k = 0; k < step_ids.size(); ++k) {
    auto e = effects_of_amount(n, step_ids[k], amount);
    auto& st = out.steps(static_cast<int>(k)).status();
    auto what = seed + " amount " + std::to_string(amount) + " "
                + step_ids[k] + ": " + outcome_text(out);
    EXPECT_LE(e.executed, 1) << what;
    if (out.completed())
      EXPECT_TRUE(e.executed == 1 && e.compensated == 0) << what;
    else
      EXPECT_EQ(e.compensated, e.executed) << what;
    if (e.executed == 1 && e.compensated == 0)
      EXPECT_EQ(st, "executed") << what;
  }
  EXPECT_FALSE(out.compensation_failed()) << seed << ": " << outcome_text(out);
}

/// A ledger step (its effects are its committed state, as ledger_step's)
/// whose execute of order `hook_order` at path `hook_path` first runs
/// `hook`, once: the test's stand-in for a handler that takes long, during
/// which the node goes on (the hook runs the node's scheduler).
class hooked_step : public saga_step<hooked_step, Order, Receipt, Tally> {
public:
  static inline std::function<void()> hook;
  static inline std::string hook_order, hook_path;

  caf::expected<Receipt> execute(context& ctx, const Order& o) {
    if (hook && o.id() == hook_order && ctx.path() == hook_path) {
      auto f = std::move(hook);
      hook = nullptr;
      f();
    }
    ++saga_script::get().executed[{o.id(), ctx.path()}];
    state().set_count(state().count() + 1);
    state().add_seen(o.amount());
    Receipt r;
    r.set_step(ctx.path());
    r.set_order(o.id());
    return r;
  }

  void compensate(context& ctx, const Order& o, const Receipt&) {
    ++saga_script::get().compensated[{o.id(), ctx.path()}];
    state().set_sum(state().sum() + 1);
    state().add_seen(-o.amount());
  }
};

registry review_types() {
  auto r = durable_types();
  r.add<hooked_step>("hooked");
  return r;
}

// -- the outcome outbox across a re-fence ---------------------------------------

/// outcome_to's receiver is not there yet, so the outcome's delivery waits
/// for its retry timer. Meanwhile another run's commit fails and the saga
/// re-fences its path. The retry timer fires while the re-fence is under
/// way. Promise (README, Durable sagas, Outcomes): every run's outcome is
/// delivered at least once; once the receiver runs, it gets it.
TEST_F(saga_durable_review2, outcome_retry_during_a_refence_is_not_lost) {
  temp_dir dir;
  det_node n{dir.path(), durable_types()};
  tree_opts o;
  o.saga.outcome_to = "root/late";
  ASSERT_FALSE(n.start(make_tree(o)));
  // Run 1 finishes; its outcome finds no receiver and waits for a retry
  // timer (retry_delay * 2 = 200 ms). The clock does not move.
  auto t1 = n.call(det_node::answer::env, n.cell(saga_at),
                   order_input("o", 5, 1));
  n.run();
  ASSERT_TRUE(n.result(t1).done);
  ASSERT_FALSE(n.result(t1).err) << describe(n.result(t1).err);
  // Run 2's first commit fails; the writer is held (frozen) right after,
  // so the saga's re-fence waits there.
  auto writer = n.rt().writer();
  bool failed = false;
  n.storage().set_apply_hook([&](write_item* const*, size_t) {
    if (failed)
      return false;
    failed = true;
    n.freeze(writer);
    return true;
  });
  auto t2 = n.call(det_node::answer::env, n.cell(saga_at),
                   order_input("p", 7, 2));
  n.run();
  ASSERT_TRUE(failed);
  n.storage().set_apply_hook({});
  // The outbox's retry timer fires during the re-fence.
  n.advance(1000ms);
  writer = nullptr;
  n.thaw_all(); // the re-fence is granted
  n.advance(100ms);
  (void) t2;
  // The receiver starts; from here on the outcome must reach it.
  auto ci = n.ask<child_info>(
    "", start_child_atom::value,
    worker("late", "sink").with_durability(durability_mode::journal));
  ASSERT_TRUE(ci) << describe(ci.error());
  for (int i = 0; i < 240 && outcome_sink::handled == 0; ++i)
    n.advance(500ms);
  EXPECT_EQ(outcome_sink::handled, 1)
    << "run 1's outcome never reached outcome_to within 2 min";
  if (outcome_sink::handled == 0) {
    // Diagnosis: it waits in the outbox, undispatched; another run's
    // outcome dispatches the outbox again and takes it along.
    std::vector<std::pair<std::string, std::string>> rows;
    std::string prefix = saga_at;
    prefix.push_back('\0');
    ASSERT_FALSE(n.storage().scan_prefix(db::outbox, prefix, rows));
    bool found = rows.size() == 1;
    auto more = ask_saga(n, order_input("z", 1, 3));
    ASSERT_TRUE(more) << describe(more.error());
    for (int i = 0; i < 20 && outcome_sink::handled < 2; ++i)
      n.advance(500ms);
    ADD_FAILURE() << "diagnosis: run 1's outcome "
                  << (found ? "is" : "is not")
                  << " still in [outbox]; after another run ended, the "
                     "receiver has taken "
                  << outcome_sink::handled << " outcome(s)";
  }
  n.stop();
}

// -- a hand-written run record ------------------------------------------------

/// Starts a node on `dir` (which resumes what is there), asks for input 41's
/// outcome, runs another input, and exits 0 if it all worked (for a death
/// test).
[[noreturn]] void start_and_serve(const std::string& dir) {
  det_node n{dir, durable_types()};
  if (n.start(make_tree({})))
    std::exit(2);
  n.advance(1000ms);
  auto out = ask_saga(n, order_input("o", 5, 41));
  if (out && out->steps_size() != 3)
    std::exit(3);
  // The node still serves other inputs.
  auto other = ask_saga(n, order_input("q", 5, 42));
  if (!other || !other->completed())
    std::exit(4);
  n.stop();
  std::exit(0);
}

/// A SagaRun record (valid encoding) whose `next` is beyond the saga's
/// steps, written into the data dir by hand. Promise (README, Durable
/// sagas, and the first review's corrupt-record test): a record that cannot
/// be resumed is left as it is and named; the node starts and keeps
/// running.
TEST_F(saga_durable_review2, a_run_record_with_next_out_of_range_is_refused) {
  temp_dir dir;
  {
    det_node n{dir.path(), durable_types()};
    ASSERT_FALSE(n.start(make_tree({})));
    // A run that stays at ship (frozen), so that a record exists.
    n.freeze(n.cell(step_at("ship")));
    auto t = n.call(det_node::answer::env, n.cell(saga_at),
                    order_input("o", 5, 41));
    for (int i = 0; i < 20; ++i)
      n.advance(10ms);
    ASSERT_FALSE(n.result(t).done);
    n.crash();
  }
  auto rec = read_run(dir.path(), 41);
  ASSERT_EQ(rec.call_step(), 2u);
  // No call in flight, and the next step is past the end.
  rec.set_call_kind(0);
  rec.set_next(7);
  std::string raw;
  encode_record(rec, raw);
  put_raw(dir.path(), db::sagas, saga_run_key(saga_at, 0, 41), raw);
  // In a child process: the start resumes the run; a crash of the node
  // there fails this test instead of the test binary.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto path = dir.path();
  EXPECT_EXIT(start_and_serve(path), ::testing::ExitedWithCode(0), "")
    << "a node whose data dir holds a run record with next = 7 (3 steps) "
       "did not start and serve";
}

// -- a failed commit while other runs are live ---------------------------------

/// Two runs go on at once; the k-th write batch fails, for each k. The
/// failed run is resumed after a re-fence; the other run's commits never
/// failed. Promise (README, Durable sagas): a run whose commit fails is
/// resumed from its last record; both runs end, exactly, within a bounded
/// time; a resend gets each outcome.
TEST_F(saga_durable_review2, a_failed_commit_with_two_live_runs_settles) {
  for (int k = 1; k < 120; ++k) {
    std::string seed = "write batch " + std::to_string(k) + " fails";
    saga_script::get() = saga_script{};
    temp_dir dir;
    det_node n{dir.path(), durable_types()};
    ASSERT_FALSE(n.start(make_tree({}))) << seed;
    auto applies = std::make_shared<int>(0);
    auto hit = std::make_shared<bool>(false);
    n.storage().set_apply_hook([applies, hit, k](write_item* const*, size_t) {
      if (++*applies == k) {
        *hit = true;
        return true;
      }
      return false;
    });
    auto a = order_input("a", 5, 301);
    auto b = order_input("b", 6, 302);
    auto ta = n.call(det_node::answer::env, n.cell(saga_at), a);
    auto tb = n.call(det_node::answer::env, n.cell(saga_at), b);
    run_until(n, ta);
    run_until(n, tb);
    n.storage().set_apply_hook({});
    n.advance(2000ms);
    auto resumed = n.rt().stats().saga_resumed.load();
    auto oa = ask_saga(n, a);
    auto ob = ask_saga(n, b);
    ASSERT_TRUE(oa) << seed << ": a: " << describe(oa.error())
                    << "; resumed " << resumed;
    ASSERT_TRUE(ob) << seed << ": b: " << describe(ob.error())
                    << "; resumed " << resumed;
    expect_all_or_nothing_of(n, *oa, 5, seed);
    expect_all_or_nothing_of(n, *ob, 6, seed);
    EXPECT_LE(resumed, 4u) << seed << ": runs resumed " << resumed
                           << " times after one failed batch";
    n.stop();
    if (::testing::Test::HasFailure())
      return;
    if (!*hit)
      return;
  }
}

/// Run A waits for ship (its cell frozen) when run B's commit fails: the
/// saga re-fences its path and resumes B. Then ship answers A, whose own
/// commits never failed. Promise (README, Durable sagas, Outcomes): "The
/// requester of a run gets its outcome if it still waits"; a failed commit
/// of one run is resumed from its record, and does not keep the other
/// runs from ending: both end, exactly, and neither is resumed again and
/// again.
TEST_F(saga_durable_review2, another_runs_failed_commit_spares_a_live_run) {
  temp_dir dir;
  det_node n{dir.path(), durable_types()};
  ASSERT_FALSE(n.start(make_tree({})));
  auto a = order_input("a", 5, 401);
  auto b = order_input("b", 6, 402);
  n.freeze(n.cell(step_at("ship")));
  auto ta = n.call(det_node::answer::env, n.cell(saga_at), a);
  for (int i = 0; i < 20; ++i)
    n.advance(10ms);
  ASSERT_FALSE(n.result(ta).done);
  // B's first commit fails.
  auto hit = std::make_shared<bool>(false);
  n.storage().set_apply_hook([hit](write_item* const*, size_t) {
    if (*hit)
      return false;
    *hit = true;
    return true;
  });
  auto tb = n.call(det_node::answer::env, n.cell(saga_at), b);
  n.run();
  ASSERT_TRUE(*hit);
  n.storage().set_apply_hook({});
  auto after_b = n.rt().stats().saga_resumed.load();
  n.thaw_all(); // ship answers A
  bool a_done = run_until(n, ta);
  run_until(n, tb);
  n.advance(2000ms);
  auto resumed = n.rt().stats().saga_resumed.load();
  ASSERT_TRUE(a_done) << "A's requester got no answer";
  auto ra = parse_outcome(n.result(ta));
  EXPECT_TRUE(ra) << "A's requester was told "
                  << (ra ? std::string{} : describe(ra.error()))
                  << ", though A's own commits never failed (runs resumed: "
                  << after_b << " after B's failure, " << resumed
                  << " in all)";
  auto oa = ask_saga(n, a);
  auto ob = ask_saga(n, b);
  ASSERT_TRUE(oa) << describe(oa.error());
  ASSERT_TRUE(ob) << describe(ob.error());
  expect_all_or_nothing_of(n, *oa, 5, "A");
  expect_all_or_nothing_of(n, *ob, 6, "B");
  EXPECT_TRUE(oa->completed()) << outcome_text(*oa);
  EXPECT_LE(resumed, 2u) << "runs resumed " << resumed
                         << " times after one failed batch";
  n.stop();
}

/// As above, but B's j-th write batch fails (j = 1..8), so that B has a
/// record and is resumed, live, when A is thawed. Promise: a failed commit
/// costs the runs a resume each, not a chain of re-fences in which every
/// run is cut down at its next commit; both runs end within 20 s of
/// virtual time, exactly.
TEST_F(saga_durable_review2, a_failed_commit_does_not_start_a_refence_chain) {
  for (int j = 1; j <= 8; ++j) {
    std::string seed = "B's write batch " + std::to_string(j) + " fails";
    saga_script::get() = saga_script{};
    temp_dir dir;
    det_node n{dir.path(), durable_types()};
    ASSERT_FALSE(n.start(make_tree({}))) << seed;
    auto a = order_input("a", 5, 501);
    auto b = order_input("b", 6, 502);
    n.freeze(n.cell(step_at("ship")));
    auto ta = n.call(det_node::answer::env, n.cell(saga_at), a);
    for (int i = 0; i < 20; ++i)
      n.advance(10ms);
    ASSERT_FALSE(n.result(ta).done) << seed;
    auto applies = std::make_shared<int>(0);
    auto hit = std::make_shared<bool>(false);
    n.storage().set_apply_hook([applies, hit, j](write_item* const*, size_t) {
      if (++*applies == j) {
        *hit = true;
        return true;
      }
      return false;
    });
    auto tb = n.call(det_node::answer::env, n.cell(saga_at), b);
    // B goes on (ship is frozen, so B stops at ship as well).
    for (int i = 0; i < 20; ++i)
      n.advance(10ms);
    n.storage().set_apply_hook({});
    if (!*hit)
      break;
    n.advance(500ms); // B resumes after its failure
    n.thaw_all();
    run_until(n, ta);
    run_until(n, tb);
    n.advance(2000ms);
    auto resumed = n.rt().stats().saga_resumed.load();
    auto oa = ask_saga(n, a);
    auto ob = ask_saga(n, b);
    ASSERT_TRUE(oa) << seed << ": A: " << describe(oa.error())
                    << "; runs resumed " << resumed << " times";
    ASSERT_TRUE(ob) << seed << ": B: " << describe(ob.error())
                    << "; runs resumed " << resumed << " times";
    expect_all_or_nothing_of(n, *oa, 5, seed + " A");
    expect_all_or_nothing_of(n, *ob, 6, seed + " B");
    EXPECT_LE(resumed, 3u) << seed << ": runs resumed " << resumed
                           << " times after one failed batch";
    n.stop();
    if (::testing::Test::HasFailure())
      return;
  }
}

// -- a step's cell replaced while its handler runs --------------------------------

/// charge's handler of the saga's execute takes long (the hook). Meanwhile
/// charge is terminated: its cell does not stop in time, so its supervisor
/// gives up on it, and restart_child starts a new cell, which finds the
/// execute in charge's journal and applies it. Then the old handler returns;
/// its commit is refused (a newer owner holds the path). Promise (README,
/// Sagas, Lost answers): "a journal agent's cell replaced with the envelope
/// in its journal ... is reported in_doubt" (for a durable saga: asked
/// again, and the kept answer decides); never `failed` while the effect
/// landed: a step that ran is compensated, or the outcome says it is in
/// doubt.
TEST_F(saga_durable_review2, a_replaced_step_cell_does_not_hide_its_effect) {
  temp_dir dir;
  det_node n{dir.path(), review_types()};
  tree_opts o;
  o.agent = "hooked";
  ASSERT_FALSE(n.start(make_tree(o)));
  hooked_step::hook_order = "o";
  hooked_step::hook_path = step_at("charge");
  auto term = std::make_shared<uint64_t>(0);
  hooked_step::hook = [&n, term] {
    auto sup = n.cell(saga_at);
    *term = n.call(det_node::answer::unit, sup, terminate_child_atom::value,
                   std::string{"charge"});
    // The stop waits for this handler; the supervisor gives up after the
    // step's shutdown timeout (5 s).
    for (int i = 0; i < 70; ++i)
      n.advance(100ms);
    auto r = n.call(det_node::answer::info, sup, restart_child_atom::value,
                    std::string{"charge"});
    for (int i = 0; i < 10; ++i)
      n.advance(100ms);
    EXPECT_TRUE(n.result(r).done && !n.result(r).err)
      << "restart_child: " << describe(n.result(r).err);
  };
  auto in = order_input("o", 5, 601);
  auto t = n.call(det_node::answer::env, n.cell(saga_at), in);
  ASSERT_TRUE(run_until(n, t));
  ASSERT_TRUE(n.result(*term).done);
  auto first = parse_outcome(n.result(t));
  n.advance(2000ms);
  auto out = ask_saga(n, in);
  ASSERT_TRUE(out) << describe(out.error());
  auto e = effects_of(n, "charge");
  EXPECT_EQ(e.executed, 1) << outcome_text(*out);
  auto& st = out->steps(1);
  if (e.executed == 1 && e.compensated == 0)
    EXPECT_TRUE(st.status() == "executed" || st.status() == "in_doubt")
      << "charge's effect landed and is not compensated, but the outcome "
         "says: "
      << outcome_text(*out) << " (the first requester got: "
      << (first ? outcome_text(*first) : describe(first.error())) << ")";
  n.stop();
}

} // namespace
