// Adversarial review of shared state on a real node and through the `vigil`
// binary (exp19): failed commits of operations that commit on their own,
// results that arrive after the calling instance ended, damaged records read
// by an agent, the built-in cas_counter under a failed commit, and
// `vigil inspect shared` / `vigil dead-letters replay` on real data dirs.
//
// The tests marked "found by the review" failed on the first version and
// pass since its fixes; the comment says which guarantee (README, "Shared
// state") each one guards.

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "support/shared_node.hpp"
#include "support/shared_probe.hpp"
#include "support/eventually.hpp"
#include "support/process.hpp"
#include "support/temp_dir.hpp"
#include "vigil/actors/agent.hpp"
#include "vigil/builtin.pb.h"
#include "vigil/cli/app.hpp"
#include "vigil/node/node.hpp"
#include "vigil/persistence/record.hpp"
#include "vigil/persistence/shared.hpp"

using namespace vigil;
using namespace std::chrono_literals;
using test::ProbeOp;
using test::ProbeResult;
using test::ProbeState;

namespace {

registry review_registry() {
  auto r = test::probe_registry();
  cli::add_builtin_shared(r);
  return r;
}

ProbeOp op(std::string kind, std::string key = "k", std::string value = {},
           uint64_t expected = 0) {
  ProbeOp o;
  o.set_op(std::move(kind));
  o.set_key(std::move(key));
  o.set_value(std::move(value));
  o.set_expected(expected);
  return o;
}

/// True if `item` is a shared operation of kind `k` committing on its own
/// (no consume, no snapshot in the same item).
bool alone(const write_item& item, records::SharedOp::Kind k) {
  if (item.muts.empty())
    return false;
  for (auto& m : item.muts) {
    if (m.what != mutation::op::shared)
      return false;
    records::SharedOp op;
    if (!op.ParseFromString(m.value) || op.kind() != k)
      return false;
  }
  return true;
}

bool has_shared(write_item* const* items, size_t n) {
  for (size_t i = 0; i < n; ++i)
    for (auto& m : items[i]->muts)
      if (m.what == mutation::op::shared)
        return true;
  return false;
}

bool has_consume(write_item* const* items, size_t n) {
  for (size_t i = 0; i < n; ++i)
    for (auto& m : items[i]->muts)
      if (m.where == db::journal && m.what == mutation::op::del)
        return true;
  return false;
}

class shared_review_node : public test::shared_node_fixture {
protected:
  void start(std::vector<child_spec> children) {
    start_tree(review_registry(), config(), std::move(children));
  }

  static child_spec probe(std::string id, durability_mode mode) {
    auto cs = worker(std::move(id), "probe").with_durability(mode);
    cs.max_deliveries = 3;
    return cs;
  }

};

// Holds: an operation of an agent without a journal (`none`, `snapshot`)
// whose own commit fails is reported to its error callback (storage_failed)
// and nothing of it is applied; the agent's next put is applied once.
//
// Observed on the way (not asserted as a defect): the snapshot agent's next
// put, handled while its cell re-fences after the failure, is sent to the
// writer unfenced (cell_shared.cpp, shared_raw: `dur_->ready() ?
// dur_->owner : owner_ref{}`, and ready() is false while re-fencing), so it
// is applied although reconcile then discards that instance; its caller
// hears reply_dropped ("what the handler did stands").
TEST_F(shared_review_node, a_failed_own_commit_reaches_the_error_callback) {
  start({probe("n", durability_mode::none),
         probe("s", durability_mode::snapshot)});
  for (auto who : {"n", "s"}) {
    std::string key = std::string{"k-"} + who;
    std::atomic<int> failing{1};
    nd_->rt()->storage()->set_apply_hook(
      [&](write_item* const* items, size_t n) {
        for (size_t i = 0; i < n; ++i)
          if (alone(*items[i], records::SharedOp::KV_PUT)
              && failing.fetch_sub(1) > 0)
            return true;
        return false;
      });
    auto r = call(who, op("put", key, "v", 0));
    EXPECT_EQ(r.error(), "storage_failed") << who << ": " << r.value();
    EXPECT_FALSE(r.applied());
    nd_->rt()->storage()->set_apply_hook({});
    bool found = true;
    kv("s", key, &found);
    EXPECT_FALSE(found) << who << ": the failed put was applied";
    // The next put (create-if-absent), until one is answered: applied, or
    // a conflict because an earlier try stands (reply_dropped).
    ProbeResult again;
    std::string seen;
    EXPECT_TRUE(test::eventually([&] {
      again = call(who, op("put", key, "v2", 0));
      seen += " [" + again.error() + "|applied="
              + std::to_string(again.applied()) + "|v"
              + std::to_string(again.version()) + "]";
      return again.error().empty();
    }, 10s)) << who << ":" << seen;
    auto rec = kv("s", key, &found);
    EXPECT_TRUE(found);
    EXPECT_EQ(rec.version(), 1u) << who << ":" << seen;
    EXPECT_EQ(rec.value(), "v2");
    if (std::string{who} == "n")
      EXPECT_TRUE(again.applied()) << seen; // no re-fence without a journal
    else
      std::printf("snapshot agent's tries:%s\n", seen.c_str());
  }
}

// Holds (guarantee 3, "only in the instance that called"): a result that
// arrives after the calling instance was restarted is dropped; its requester
// hears reply_dropped, not the dead instance's answer; the operation itself
// was committed.
TEST_F(shared_review_node, a_result_after_a_restart_is_dropped) {
  start({probe("n", durability_mode::none)});
  std::mutex mtx;
  std::condition_variable cv;
  bool entered = false, release = false;
  nd_->rt()->storage()->set_apply_hook([&](write_item* const* items,
                                           size_t n) {
    if (!has_shared(items, n))
      return false;
    std::unique_lock<std::mutex> lk{mtx};
    entered = true;
    cv.notify_all();
    cv.wait_for(lk, 20s, [&] { return release; });
    return false;
  });
  ProbeResult first;
  std::thread t{[&] { first = call("n", op("put", "k", "v", 0)); }};
  {
    std::unique_lock<std::mutex> lk{mtx};
    ASSERT_TRUE(cv.wait_for(lk, 10s, [&] { return entered; }));
  }
  // Restart the instance: a get (read at once, no writer) that throws on
  // its first delivery; the redelivery answers.
  auto g = op("get", "k");
  g.set_throw_first(true);
  auto got = call("n", g); // its deferred reply dies with the instance
  EXPECT_NE(got.error().find("reply_dropped"), std::string::npos)
    << got.error();
  {
    std::lock_guard<std::mutex> lk{mtx};
    release = true;
  }
  cv.notify_all();
  t.join();
  nd_->rt()->storage()->set_apply_hook({});
  EXPECT_FALSE(first.applied())
    << "the put's callback ran in the restarted instance";
  EXPECT_NE(first.error().find("reply_dropped"), std::string::npos)
    << first.error() << " " << first.value();
  EXPECT_EQ(kv("s", "k").version(), 1u);
}

// Holds (guarantee 4): a damaged record read or written by an agent gives
// it a clear error (storage_failed naming the record); the agent goes on.
TEST_F(shared_review_node, damaged_records_give_an_agent_an_error) {
  start({probe("j", durability_mode::journal)});
  ASSERT_TRUE(call("j", op("put", "k", "v", 0)).applied());
  ASSERT_TRUE(call("j", op("enqueue", "", "p")).error().empty());
  {
    write_item item;
    item.muts.push_back({mutation::op::put, db::shared,
                         shared_key::kv("s", "k"), "\x02garbage"});
    item.muts.push_back({mutation::op::put, db::shared,
                         shared_key::task("jobs", 1), "\x02garbage"});
    write_item* p = &item;
    write_result wr;
    ASSERT_FALSE(nd_->rt()->storage()->apply(&p, 1, &wr));
  }
  auto r = call("j", op("get", "k"));
  EXPECT_EQ(r.error(), "storage_failed") << r.value();
  r = call("j", op("put", "k", "w", 1));
  EXPECT_EQ(r.error(), "storage_failed") << r.value();
  EXPECT_NE(r.value().find("cannot be read"), std::string::npos) << r.value();
  auto c = op("claim");
  c.set_lease_ms(1000);
  r = call("j", c);
  EXPECT_TRUE(r.error().empty()) << r.error();
  EXPECT_TRUE(r.empty()); // the damaged task is not handed out
  auto f = op("fail");
  f.set_task(1);
  f.set_lease(1);
  r = call("j", f);
  EXPECT_EQ(r.error(), "storage_failed") << r.value();
  EXPECT_TRUE(call("j", op("put", "other", "v", 0)).applied());
}

// Found by the review (README: "three cas_counters ... lose no
// increment"): the built-in cas_counter consumed its Number in the handler
// and made its compare-and-swap in a kv_get callback, which committed on its
// own; when that commit failed, the Number was consumed and never added.
// Now the put commits with the Number's consumption (and a conflict's retry
// with a CasFlush's): here every commit that holds a put fails once, and
// the total must still be exact.
TEST_F(shared_review_node, cas_counter_adds_once_across_failed_commits) {
  auto cs = worker("c", "cas_counter")
              .with_durability(durability_mode::journal)
              .with_param("store", "counters")
              .with_param("key", "total");
  cs.max_deliveries = 5;
  start({cs});
  auto total = [&] {
    bool found = false;
    auto r = kv("counters", "total", &found);
    return found ? std::stoll(r.value()) : int64_t{0}; // TOTAL|marks
  };
  std::atomic<int> failures{0};
  std::atomic<bool> fail_next{true};
  nd_->rt()->storage()->set_apply_hook([&](write_item* const* items,
                                           size_t n) {
    for (size_t i = 0; i < n; ++i)
      for (auto& m : items[i]->muts)
        if (m.what == mutation::op::shared && fail_next.exchange(false)) {
          ++failures;
          return true; // this commit fails: nothing of it applied
        }
    return false;
  });
  int64_t sent = 0;
  for (int64_t n = 1; n <= 20; ++n) {
    builtin::Number num;
    num.set_n(n);
    // Sent until accepted: the cell may be re-fencing after a failure.
    ASSERT_TRUE(test::eventually([&] { return !nd_->send("t/c", num); }, 10s));
    sent += n;
    ASSERT_TRUE(test::eventually([&] { return total() == sent; }, 10s))
      << "total " << total() << " after sending " << sent;
    fail_next = true; // the next commit with a put fails once
  }
  nd_->rt()->storage()->set_apply_hook({});
  EXPECT_GE(failures.load(), 10);
  EXPECT_EQ(total(), sent);
}

// -- `vigil` on data dirs ----------------------------------------------------

test::process_result vigil_cmd(std::vector<std::string> args) {
  args.insert(args.begin(), VIGIL_BIN);
  return test::run_process(args, 60s);
}

std::unique_ptr<store> open_store(const std::string& dir) {
  store_options o;
  o.dir = dir;
  o.sync = sync_mode::nosync;
  std::unique_ptr<store> st;
  EXPECT_FALSE(store::open(o, st));
  return st;
}

records::SharedResult run_op(store& st, const records::SharedOp& op) {
  write_item item;
  mutation m;
  m.what = mutation::op::shared;
  m.where = db::shared;
  op.SerializeToString(&m.value);
  item.muts.push_back(std::move(m));
  write_item* p = &item;
  write_result wr;
  EXPECT_FALSE(st.apply(&p, 1, &wr));
  records::SharedResult r;
  EXPECT_TRUE(r.ParseFromString(item.muts[0].key));
  return r;
}

// Found by the review in the first version, fixed since (guarantee 4: "never a
// crash"): `vigil inspect shared` aborts on a value (or key) that is not valid
// UTF-8. value_json (inspect_shared.cpp) returns such a value as a JSON string
// when it has no control byte, and nlohmann::json::dump() then throws
// type_error 316, which nothing catches: std::terminate, SIGABRT, for both
// --json and the text form. Shared values are bytes (`bytes value = 2`), so
// any Latin-1 or binary value does it.
TEST(shared_review_cli, inspect_shared_survives_values_that_are_not_utf8) {
  test::temp_dir d;
  {
    auto st = open_store(d.path());
    ASSERT_TRUE(st);
    records::SharedOp op;
    op.set_kind(records::SharedOp::KV_PUT);
    op.set_name("config");
    op.set_key("city");
    op.set_value("Z\xfcrich"); // Latin-1 ü
    op.set_writer("t/a");
    ASSERT_EQ(run_op(*st, op).status(), records::SharedResult::OK);
  }
  auto j = vigil_cmd({"inspect", "--data-dir", d.path(), "shared", "--json"});
  EXPECT_EQ(j.signal, 0) << "killed by signal " << j.signal << "\n" << j.err;
  EXPECT_EQ(j.exit_code, 0) << j.err;
  auto t = vigil_cmd({"inspect", "--data-dir", d.path(), "shared", "config"});
  EXPECT_EQ(t.signal, 0) << "killed by signal " << t.signal << "\n" << t.err;
  EXPECT_EQ(t.exit_code, 0) << t.err;
  EXPECT_NE(t.out.find("city"), std::string::npos) << t.out;
}

// Holds: on a data dir with a damaged shared record, `vigil inspect shared`
// names it and exits non-zero; on a missing data dir it says so, no crash.
TEST(shared_review_cli, inspect_shared_on_damaged_and_missing_data_dirs) {
  test::temp_dir d;
  {
    auto st = open_store(d.path());
    ASSERT_TRUE(st);
    records::SharedOp op;
    op.set_kind(records::SharedOp::KV_PUT);
    op.set_name("config");
    op.set_key("k");
    op.set_value("v");
    ASSERT_EQ(run_op(*st, op).status(), records::SharedResult::OK);
    write_item item;
    item.muts.push_back({mutation::op::put, db::shared,
                         shared_key::kv("config", "bad"), "\x02zz"});
    item.muts.push_back({mutation::op::put, db::shared,
                         shared_key::task("jobs", 1), "\x02zz"});
    write_item* p = &item;
    write_result wr;
    ASSERT_FALSE(st->apply(&p, 1, &wr));
  }
  auto r = vigil_cmd({"inspect", "--data-dir", d.path(), "shared"});
  EXPECT_EQ(r.signal, 0) << r.err;
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("UNREADABLE"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("unreadable=1"), std::string::npos) << r.out;
  auto m = vigil_cmd(
    {"inspect", "--data-dir", d.path() + "/nope", "shared", "--json"});
  EXPECT_EQ(m.signal, 0) << m.err;
  EXPECT_NE(m.exit_code, 0);
  EXPECT_FALSE(m.err.empty());
}

// Holds: `vigil dead-letters replay` of a task's dead letter puts the task
// back, ready with its attempts reset; `vigil inspect shared` shows it.
TEST(shared_review_cli, dead_letters_replay_readies_a_task) {
  test::temp_dir d;
  {
    auto st = open_store(d.path());
    ASSERT_TRUE(st);
    records::SharedOp e;
    e.set_kind(records::SharedOp::ENQUEUE);
    e.set_name("jobs");
    e.set_value("payload");
    e.set_max_attempts(1);
    ASSERT_EQ(run_op(*st, e).status(), records::SharedResult::OK);
    records::SharedOp c;
    c.set_kind(records::SharedOp::CLAIM);
    c.set_name("jobs");
    c.set_lease_ms(60'000);
    auto cl = run_op(*st, c);
    ASSERT_EQ(cl.status(), records::SharedResult::OK);
    records::SharedOp f;
    f.set_kind(records::SharedOp::FAIL);
    f.set_name("jobs");
    f.set_task_id(cl.task().id());
    f.set_lease(cl.task().lease());
    auto fr = run_op(*st, f);
    ASSERT_TRUE(fr.dead());
  }
  auto list = vigil_cmd({"dead-letters", "list", "--data-dir", d.path()});
  EXPECT_EQ(list.signal, 0) << list.err;
  EXPECT_EQ(list.exit_code, 0) << list.err;
  auto rp = vigil_cmd({"dead-letters", "replay", "--data-dir", d.path(),
                       "--all"});
  EXPECT_EQ(rp.exit_code, 0) << rp.err << rp.out;
  EXPECT_NE(rp.out.find("replayed 1"), std::string::npos) << rp.out;
  auto in = vigil_cmd({"inspect", "--data-dir", d.path(), "shared"});
  EXPECT_EQ(in.exit_code, 0) << in.err;
  EXPECT_NE(in.out.find("queue jobs  ready=1  leased=0  done=0  dead=0"),
            std::string::npos)
    << in.out;
}

} // namespace
