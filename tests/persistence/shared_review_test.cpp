// Adversarial review of shared state in the store (exp19): corrupt records
// planted in `db::shared`, many expired leases at once, boundaries of names
// and leases, a lowered kv_history, replays of task dead letters.
//
// The tests marked "found by the review" failed on the first version and
// pass since its fixes; the comment says which guarantee (README, "Shared
// state") each one guards.

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <set>

#include "support/shared_store.hpp"
#include "vigil/persistence/record.hpp"
#include "vigil/persistence/shared.hpp"
#include "vigil/persistence/store.hpp"

using namespace vigil;
using records::SharedOp;
using records::SharedResult;

namespace {

class shared_review : public test::shared_store_test {
protected:
  void SetUp() override {
    open(32);
  }

  static SharedOp put(std::string key, std::string value, uint64_t expected,
                      std::string name = "config") {
    SharedOp op;
    op.set_kind(SharedOp::KV_PUT);
    op.set_name(std::move(name));
    op.set_key(std::move(key));
    op.set_value(std::move(value));
    op.set_expected_version(expected);
    op.set_writer("a/w");
    return op;
  }

  static SharedOp enqueue(std::string payload, uint32_t max_attempts = 0,
                          std::string dedupe = {},
                          std::string queue = "jobs") {
    SharedOp op;
    op.set_kind(SharedOp::ENQUEUE);
    op.set_name(std::move(queue));
    op.set_value(std::move(payload));
    op.set_max_attempts(max_attempts);
    op.set_dedupe_key(std::move(dedupe));
    op.set_writer("feeder");
    return op;
  }

  static SharedOp claim(uint64_t lease_ms, std::string queue = "jobs") {
    SharedOp op;
    op.set_kind(SharedOp::CLAIM);
    op.set_name(std::move(queue));
    op.set_lease_ms(lease_ms);
    op.set_writer("w/1");
    return op;
  }

  static SharedOp settle(SharedOp::Kind k, const records::TaskRecord& t,
                         uint64_t lease_ms = 0) {
    SharedOp op;
    op.set_kind(k);
    op.set_name("jobs");
    op.set_task_id(t.id());
    op.set_lease(t.lease());
    op.set_lease_ms(lease_ms);
    op.set_reason("boom");
    return op;
  }

  std::map<uint64_t, records::TaskRecord> tasks(const std::string& q = "jobs") {
    std::vector<records::TaskRecord> ts;
    EXPECT_FALSE(queue_tasks(*st_, q, ts));
    std::map<uint64_t, records::TaskRecord> out;
    for (auto& t : ts)
      out[t.id()] = t;
    return out;
  }
};

// Found by the review in the first version, fixed since (guarantee 4, and "no
// task lost"): a damaged next-id record (`n` key) is not reported: enqueue()
// falls back to id 1 (shared.cpp, enqueue: `if (rc == MDB_SUCCESS && v.mv_size
// == 8) ... ` else id stays 1) and overwrites task 1's record and its dedupe
// mapping, so task 1 is lost.
TEST_F(shared_review, damaged_next_id_never_overwrites_an_existing_task) {
  ASSERT_EQ(run(enqueue("first")).status(), SharedResult::OK);
  ASSERT_EQ(run(enqueue("second")).status(), SharedResult::OK);
  auto c = run(claim(60'000)); // task 1 is leased by w/1
  ASSERT_EQ(c.status(), SharedResult::OK);
  ASSERT_EQ(c.task().id(), 1u);
  plant(shared_key::next_id("jobs"), "xyz"); // 3 bytes: not a be64
  auto r = run(enqueue("third"));
  // Either reported as corrupt, or added under a fresh id: never id 1 again.
  if (r.status() == SharedResult::OK)
    EXPECT_GT(r.task().id(), 2u) << "enqueue reused an existing task id";
  else
    EXPECT_EQ(r.status(), SharedResult::CORRUPT) << r.detail();
  auto ts = tasks();
  ASSERT_TRUE(ts.count(1));
  EXPECT_EQ(ts[1].payload(), "first")
    << "task 1 was overwritten by the enqueue (state now " << ts[1].state()
    << ")";
  EXPECT_EQ(ts[1].state(), "leased");
  // The holder of task 1 can still complete it.
  auto done = run(settle(SharedOp::COMPLETE, c.task()));
  EXPECT_EQ(done.status(), SharedResult::OK) << done.detail();
}

// Found by the review in the first version, fixed since (guarantee 4; dedupe):
// a damaged dedupe record (value not 8 bytes) is silently ignored (shared.cpp,
// enqueue: `if (rc == MDB_SUCCESS && v.mv_size == 8)`), so a repeated dedupe
// key adds a second task instead of returning the first or reporting the
// damage.
TEST_F(shared_review, damaged_dedupe_record_is_reported_not_ignored) {
  auto a = run(enqueue("p", 0, "order-1"));
  ASSERT_EQ(a.status(), SharedResult::OK);
  plant(shared_key::dedupe("jobs", "order-1"), "garbage");
  auto b = run(enqueue("p-again", 0, "order-1"));
  if (b.status() == SharedResult::OK)
    EXPECT_EQ(b.task().id(), a.task().id())
      << "a repeated dedupe key added task " << b.task().id();
  else
    EXPECT_EQ(b.status(), SharedResult::CORRUPT) << b.detail();
  EXPECT_EQ(tasks().size(), 1u);
}

// Found by the review in the first version, fixed since (guarantee 2, "the
// next claim takes the task again"): expire() stops after 256 lease index
// entries per claim (shared.cpp, expire: `for (int n = 0; n < 256; ++n)`).
// When those 256 all turn into dead letters, a claim answers EMPTY although
// another task's lease has expired and the task is claimable.
TEST_F(shared_review, a_claim_takes_an_expired_task_even_behind_256_others) {
  for (int i = 0; i < 256; ++i)
    ASSERT_EQ(run(enqueue("one-shot", 1)).status(), SharedResult::OK);
  ASSERT_EQ(run(enqueue("retryable", 5)).status(), SharedResult::OK);
  for (int i = 0; i < 256; ++i)
    ASSERT_EQ(run(claim(100)).status(), SharedResult::OK);
  auto last = run(claim(200));
  ASSERT_EQ(last.status(), SharedResult::OK);
  ASSERT_EQ(last.task().payload(), "retryable");
  now_ += 1000; // every lease is over
  auto r = run(claim(1000));
  EXPECT_EQ(r.status(), SharedResult::OK)
    << "claim answered " << to_string(r.status())
    << " while task " << last.task().id() << "'s lease had expired";
  if (r.status() == SharedResult::OK) {
    EXPECT_EQ(r.task().id(), last.task().id());
    EXPECT_EQ(r.task().attempts(), 2u);
  }
  // Whatever the claim said: every task is somewhere, none lost.
  auto ts = tasks();
  EXPECT_EQ(ts.size(), 257u);
  std::vector<records::DeadLetter> dls;
  ASSERT_FALSE(st_->dead_letters(dls));
  EXPECT_EQ(dls.size(), 256u);
}

// Found by the review in the first version, fixed since (guarantee 1: "the
// last kv_history versions"): a data dir reopened with a smaller kv_history
// keeps the older history entries for ever; kv_write deletes only version (new
// - keep) (shared.cpp, kv_write).
TEST_F(shared_review, history_honours_a_lowered_kv_history) {
  uint64_t v = 0;
  for (int i = 0; i < 10; ++i) {
    auto r = run(put("k", "v" + std::to_string(i), v));
    ASSERT_EQ(r.status(), SharedResult::OK);
    v = r.entry().version();
  }
  open(4);
  auto r = run(put("k", "last", v));
  ASSERT_EQ(r.status(), SharedResult::OK);
  std::vector<records::KvRecord> h;
  ASSERT_FALSE(kv_history(*st_, "config", "k", h));
  EXPECT_EQ(h.size(), 4u) << "history keeps versions " << h.front().version()
                          << ".." << h.back().version();
}

// -- paths that hold -----------------------------------------------------------

// A damaged task record under the ready index is skipped by claim (never
// handed out as a task), the next task is claimed, and a settle of it is
// reported as corrupt.
TEST_F(shared_review, damaged_task_is_skipped_and_reported) {
  ASSERT_EQ(run(enqueue("p1")).status(), SharedResult::OK);
  ASSERT_EQ(run(enqueue("p2")).status(), SharedResult::OK);
  plant(shared_key::task("jobs", 1), "\x02garbage-garbage");
  auto c = run(claim(1000));
  ASSERT_EQ(c.status(), SharedResult::OK) << c.detail();
  EXPECT_EQ(c.task().id(), 2u);
  EXPECT_EQ(c.task().payload(), "p2");
  EXPECT_EQ(run(claim(1000)).status(), SharedResult::EMPTY);
  records::TaskRecord t1;
  t1.set_id(1);
  t1.set_lease(1);
  auto s = run(settle(SharedOp::COMPLETE, t1));
  EXPECT_EQ(s.status(), SharedResult::CORRUPT);
  EXPECT_NE(s.detail().find("cannot be read"), std::string::npos);
  std::vector<queue_listing> qs;
  ASSERT_FALSE(queue_list(*st_, qs));
  ASSERT_EQ(qs.size(), 1u);
  EXPECT_EQ(qs[0].unreadable, 1u);
  EXPECT_EQ(qs[0].leased, 1u);
}

// Foreign keys in the lease and ready indexes (wrong sizes, stale entries)
// are never read as a lease or a task: a live lease is not ended by them,
// and a done task is not handed out again.
TEST_F(shared_review, stray_index_entries_are_never_interpreted) {
  ASSERT_EQ(run(enqueue("p1")).status(), SharedResult::OK);
  ASSERT_EQ(run(enqueue("p2")).status(), SharedResult::OK);
  auto c1 = run(claim(60'000));
  ASSERT_EQ(c1.status(), SharedResult::OK);
  // A stale lease index entry for task 1 (expired long ago) and a short key.
  plant(shared_key::lease("jobs", 5, 1), "");
  plant(std::string{"ljobs\0", 6} + "xx", "");
  // A ready entry for task 1 (leased) and one for a task that does not exist.
  plant(shared_key::ready("jobs", 1), "");
  plant(shared_key::ready("jobs", 99), "");
  plant(std::string{"rjobs\0", 6} + "short", "");
  auto c2 = run(claim(1000));
  ASSERT_EQ(c2.status(), SharedResult::OK) << c2.detail();
  EXPECT_EQ(c2.task().id(), 2u);
  EXPECT_EQ(run(claim(1000)).status(), SharedResult::EMPTY);
  // Task 1's lease is still live.
  auto done = run(settle(SharedOp::COMPLETE, c1.task()));
  EXPECT_EQ(done.status(), SharedResult::OK) << done.detail();
  auto ts = tasks();
  EXPECT_EQ(ts[1].state(), "done");
  EXPECT_EQ(ts[1].attempts(), 1u);
}

// Names, keys and dedupe keys at their limits work; one byte more, a NUL
// byte, a zero lease, a zero lease number, an unknown kind or bytes that do
// not parse are refused, nothing written.
TEST_F(shared_review, limits_and_bad_operations) {
  std::string name(max_shared_name, 'n');
  std::string key(max_kv_key, '\xff');
  auto r = run(put(key, "v", 0, name));
  ASSERT_EQ(r.status(), SharedResult::OK) << r.detail();
  r = run(put(key, "v2", 1, name));
  ASSERT_EQ(r.status(), SharedResult::OK) << r.detail();
  std::vector<records::KvRecord> h;
  ASSERT_FALSE(kv_history(*st_, name, key, h));
  EXPECT_EQ(h.size(), 2u);
  auto e = run(enqueue("p", 0, std::string(max_kv_key, 'd'), name));
  ASSERT_EQ(e.status(), SharedResult::OK) << e.detail();
  auto c = run(claim(1000, name));
  ASSERT_EQ(c.status(), SharedResult::OK) << c.detail();
  size_t before = 0;
  ASSERT_FALSE(st_->count(db::shared, before));

  EXPECT_EQ(run(put("k", "v", 0, name + "n")).status(), SharedResult::INVALID);
  EXPECT_EQ(run(put(key + "k", "v", 0)).status(), SharedResult::INVALID);
  EXPECT_EQ(run(put("k", "v", 0, std::string("a\0b", 3))).status(),
            SharedResult::INVALID);
  EXPECT_EQ(run(enqueue("p", 0, std::string("d\0", 2))).status(),
            SharedResult::INVALID);
  EXPECT_EQ(run(enqueue("p", 0, std::string(max_kv_key + 1, 'd'))).status(),
            SharedResult::INVALID);
  EXPECT_EQ(run(claim(0)).status(), SharedResult::INVALID);
  EXPECT_EQ(run(claim(uint64_t{400} * 24 * 3600 * 1000)).status(),
            SharedResult::INVALID);
  auto ext = settle(SharedOp::EXTEND, c.task(), 0);
  ext.set_name(name);
  EXPECT_EQ(run(ext).status(), SharedResult::INVALID);
  auto bad_lease = settle(SharedOp::COMPLETE, c.task());
  bad_lease.set_name(name);
  bad_lease.set_lease(0);
  EXPECT_EQ(run(bad_lease).status(), SharedResult::INVALID);
  SharedOp unknown = claim(10);
  unknown.set_kind(static_cast<SharedOp::Kind>(42));
  EXPECT_EQ(run(unknown).status(), SharedResult::INVALID);
  // Bytes that are not a SharedOp.
  write_item item;
  item.muts.push_back({mutation::op::shared, db::shared, {}, "\xff\xff\xff"});
  write_item* p = &item;
  write_result wr;
  ASSERT_FALSE(st_->apply(&p, 1, &wr));
  SharedResult res;
  ASSERT_TRUE(res.ParseFromString(item.muts[0].key));
  EXPECT_EQ(res.status(), SharedResult::INVALID);
  size_t after = 0;
  ASSERT_FALSE(st_->count(db::shared, after));
  EXPECT_EQ(after, before);
}

// A lease is live strictly before its expiry: at the expiry instant a
// completion is refused and a claim takes the task again; a completion of
// a lease of a task that became a dead letter is refused; the dead letter's
// replay puts it back once, and a second replay is skipped.
TEST_F(shared_review, expiry_boundary_dead_letter_and_replay) {
  ASSERT_EQ(run(enqueue("p", 2)).status(), SharedResult::OK);
  auto c1 = run(claim(100));
  ASSERT_EQ(c1.status(), SharedResult::OK);
  now_ += 99;
  auto ext = run(settle(SharedOp::EXTEND, c1.task(), 1));
  ASSERT_EQ(ext.status(), SharedResult::OK);
  now_ += 1; // == the extended expiry
  EXPECT_EQ(run(settle(SharedOp::COMPLETE, ext.task())).status(),
            SharedResult::LEASE_EXPIRED);
  auto c2 = run(claim(100));
  ASSERT_EQ(c2.status(), SharedResult::OK);
  EXPECT_EQ(c2.task().attempts(), 2u);
  auto f = run(settle(SharedOp::FAIL, c2.task()));
  ASSERT_EQ(f.status(), SharedResult::OK);
  EXPECT_TRUE(f.dead());
  EXPECT_EQ(run(settle(SharedOp::COMPLETE, c2.task())).status(),
            SharedResult::LEASE_EXPIRED);
  EXPECT_EQ(run(claim(100)).status(), SharedResult::EMPTY);
  std::vector<records::DeadLetter> dls;
  ASSERT_FALSE(st_->dead_letters(dls));
  ASSERT_EQ(dls.size(), 1u);
  auto seq = dls[0].seq();
  // A second copy of the same letter (as if replayed from a backup): the
  // first replay readies the task, the second is skipped.
  write_item item;
  item.muts.push_back({mutation::op::append_dead_letter, db::dead_letters, {},
                       encode_record(dls[0])});
  write_item* p = &item;
  write_result wr;
  ASSERT_FALSE(st_->apply(&p, 1, &wr));
  std::vector<std::string> problems;
  size_t replayed = 0;
  ASSERT_FALSE(st_->replay_dead_letters({}, true, problems, replayed));
  EXPECT_EQ(replayed, 1u);
  EXPECT_EQ(problems.size(), 1u);
  auto c3 = run(claim(100));
  ASSERT_EQ(c3.status(), SharedResult::OK);
  EXPECT_EQ(c3.task().attempts(), 1u);
  EXPECT_EQ(run(claim(100)).status(), SharedResult::EMPTY);
  EXPECT_EQ(run(settle(SharedOp::COMPLETE, c3.task())).status(),
            SharedResult::OK);
  (void) seq;
}

// Delete then re-create continues the versions; the history shows the
// tombstone between; a put naming the version before the delete conflicts,
// one naming the tombstone's re-creates the key.
TEST_F(shared_review, delete_recreate_history_and_no_aba) {
  auto a = run(put("k", "1", 0));
  SharedOp d;
  d.set_kind(SharedOp::KV_DELETE);
  d.set_name("config");
  d.set_key("k");
  d.set_expected_version(1);
  ASSERT_EQ(run(d).status(), SharedResult::OK);
  EXPECT_EQ(run(put("k", "x", 1)).status(), SharedResult::CONFLICT);
  auto b = run(put("k", "2", 2)); // from exactly that tombstone
  ASSERT_EQ(b.status(), SharedResult::OK);
  EXPECT_EQ(b.entry().version(), 3u);
  d.set_expected_version(3);
  ASSERT_EQ(run(d).status(), SharedResult::OK);
  d.set_expected_version(4);
  EXPECT_EQ(run(d).status(), SharedResult::CONFLICT); // a tombstone
  std::vector<records::KvRecord> h;
  ASSERT_FALSE(kv_history(*st_, "config", "k", h));
  ASSERT_EQ(h.size(), 4u);
  EXPECT_FALSE(h[0].deleted());
  EXPECT_TRUE(h[1].deleted());
  EXPECT_FALSE(h[2].deleted());
  EXPECT_TRUE(h[3].deleted());
  // A damaged history entry is skipped, the current record stands.
  plant(shared_key::history("config", "k", 2), "\x02xx");
  ASSERT_FALSE(kv_history(*st_, "config", "k", h));
  EXPECT_EQ(h.size(), 3u);
  auto c = run(put("k", "3", 0));
  EXPECT_EQ(c.entry().version(), 5u);
}

// Two FAILs that spend their tasks' attempts in one
// transaction get two distinct dead-letter seqs (both kept).
TEST_F(shared_review, two_dead_letters_in_one_transaction) {
  ASSERT_EQ(run(enqueue("a", 1)).status(), SharedResult::OK);
  ASSERT_EQ(run(enqueue("b", 1)).status(), SharedResult::OK);
  auto ca = run(claim(100));
  auto cb = run(claim(100));
  auto rs = run_all({settle(SharedOp::FAIL, ca.task()),
                     settle(SharedOp::FAIL, cb.task())});
  EXPECT_TRUE(rs[0].dead());
  EXPECT_TRUE(rs[1].dead());
  std::vector<records::DeadLetter> dls;
  ASSERT_FALSE(st_->dead_letters(dls));
  ASSERT_EQ(dls.size(), 2u);
  EXPECT_NE(dls[0].seq(), dls[1].seq());
  std::set<uint64_t> ids{dls[0].task().id(), dls[1].task().id()};
  EXPECT_EQ(ids, (std::set<uint64_t>{1, 2}));
}

} // namespace
