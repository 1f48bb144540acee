// Shared state in the store: compare-and-swap on versioned keys, the leased
// task queue on an injected clock, and a randomized run against a model.

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <random>
#include <set>

#include "support/seeds.hpp"
#include "support/shared_store.hpp"
#include "support/temp_dir.hpp"
#include "vigil/persistence/record.hpp"
#include "vigil/persistence/shared.hpp"
#include "vigil/persistence/store.hpp"

using namespace vigil;
using records::SharedOp;
using records::SharedResult;

namespace {

class shared_test : public test::shared_store_test {
protected:
  static SharedOp put(std::string key, std::string value, uint64_t expected,
                      std::string writer = "a/w") {
    SharedOp op;
    op.set_kind(SharedOp::KV_PUT);
    op.set_name("config");
    op.set_key(std::move(key));
    op.set_value(std::move(value));
    op.set_expected_version(expected);
    op.set_writer(std::move(writer));
    op.set_writer_id(7);
    return op;
  }

  static SharedOp get(std::string key) {
    SharedOp op;
    op.set_kind(SharedOp::KV_GET);
    op.set_name("config");
    op.set_key(std::move(key));
    return op;
  }

  static SharedOp del(std::string key, uint64_t expected) {
    auto op = get(std::move(key));
    op.set_kind(SharedOp::KV_DELETE);
    op.set_expected_version(expected);
    return op;
  }

  static SharedOp enqueue(std::string payload, uint32_t max_attempts = 0,
                          std::string dedupe = {}) {
    SharedOp op;
    op.set_kind(SharedOp::ENQUEUE);
    op.set_name("jobs");
    op.set_value(std::move(payload));
    op.set_max_attempts(max_attempts);
    op.set_dedupe_key(std::move(dedupe));
    op.set_writer("feeder");
    return op;
  }

  static SharedOp claim(uint64_t lease_ms, std::string holder = "w/1") {
    SharedOp op;
    op.set_kind(SharedOp::CLAIM);
    op.set_name("jobs");
    op.set_lease_ms(lease_ms);
    op.set_writer(std::move(holder));
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

};

TEST_F(shared_test, put_is_compare_and_swap_and_conflict_names_the_current) {
  auto r = run(put("k", "v1", 0));
  ASSERT_EQ(r.status(), SharedResult::OK) << r.detail();
  EXPECT_EQ(r.entry().version(), 1u);
  EXPECT_EQ(r.entry().writer(), "a/w");
  EXPECT_EQ(r.entry().writer_id(), 7u);
  EXPECT_EQ(r.entry().written_ms(), now_);
  // create-if-absent again: a conflict carrying version 1 and its value
  r = run(put("k", "other", 0));
  ASSERT_EQ(r.status(), SharedResult::CONFLICT);
  EXPECT_EQ(r.entry().version(), 1u);
  EXPECT_EQ(r.entry().value(), "v1");
  // a stale version conflicts; the current one wins
  r = run(put("k", "v2", 1));
  ASSERT_EQ(r.status(), SharedResult::OK);
  EXPECT_EQ(r.entry().version(), 2u);
  r = run(put("k", "v3", 1));
  ASSERT_EQ(r.status(), SharedResult::CONFLICT);
  EXPECT_EQ(r.entry().value(), "v2");
  r = run(get("k"));
  EXPECT_EQ(r.status(), SharedResult::OK);
  EXPECT_EQ(r.entry().value(), "v2");
  EXPECT_EQ(r.entry().version(), 2u);
  // an absent key reads as version 0
  r = run(get("nope"));
  EXPECT_EQ(r.status(), SharedResult::OK);
  EXPECT_EQ(r.entry().version(), 0u);
}

TEST_F(shared_test, delete_if_version_leaves_a_tombstone_versions_go_on) {
  ASSERT_EQ(run(put("k", "v1", 0)).status(), SharedResult::OK);
  EXPECT_EQ(run(del("k", 2)).status(), SharedResult::CONFLICT);
  auto r = run(del("k", 1));
  ASSERT_EQ(r.status(), SharedResult::OK);
  EXPECT_TRUE(r.entry().deleted());
  EXPECT_EQ(r.entry().version(), 2u);
  // A writer still holding version 1 cannot write over the delete (ABA).
  EXPECT_EQ(run(put("k", "late", 1)).status(), SharedResult::CONFLICT);
  EXPECT_EQ(run(del("k", 2)).status(), SharedResult::CONFLICT);
  // Re-created from exactly that tombstone (a writer who saw it deleted);
  // once re-created, neither the tombstone's version nor 0 matches.
  r = run(put("k", "again", 2));
  ASSERT_EQ(r.status(), SharedResult::OK);
  EXPECT_EQ(r.entry().version(), 3u);
  EXPECT_EQ(run(put("k", "x", 2)).status(), SharedResult::CONFLICT);
  EXPECT_EQ(run(put("k", "x", 0)).status(), SharedResult::CONFLICT);
  // The writer's own last write, whoever wrote since.
  auto other = put("k", "theirs", 3, "b/w");
  ASSERT_EQ(run(other).status(), SharedResult::OK);
  r = run(get("k"));
  EXPECT_EQ(r.mine_version(), 0u); // get() names no writer
  auto mine = get("k");
  mine.set_writer("a/w");
  r = run(mine);
  EXPECT_EQ(r.entry().writer(), "b/w");
  EXPECT_EQ(r.mine_version(), 3u);
  EXPECT_EQ(r.mine_id(), 7u);
}

TEST_F(shared_test, history_keeps_the_last_versions_with_their_writers) {
  uint64_t v = 0;
  for (int i = 1; i <= 10; ++i) {
    auto r = run(put("k", "v" + std::to_string(i), v,
                     "agent/" + std::to_string(i)));
    ASSERT_EQ(r.status(), SharedResult::OK);
    v = r.entry().version();
  }
  std::vector<records::KvRecord> h;
  ASSERT_FALSE(kv_history(*st_, "config", "k", h));
  ASSERT_EQ(h.size(), 4u); // kv_history = 4
  for (size_t i = 0; i < h.size(); ++i) {
    EXPECT_EQ(h[i].version(), 7 + i);
    EXPECT_EQ(h[i].writer(), "agent/" + std::to_string(7 + i));
    EXPECT_EQ(h[i].value(), "v" + std::to_string(7 + i));
  }
  std::vector<kv_listing> all;
  ASSERT_FALSE(kv_list(*st_, all));
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].name, "config");
  EXPECT_EQ(all[0].key, "k");
  EXPECT_EQ(all[0].current.version(), 10u);
}

TEST_F(shared_test, bad_operations_are_refused_naming_the_field) {
  auto op = put("", "v", 0);
  auto r = run(op);
  EXPECT_EQ(r.status(), SharedResult::INVALID);
  EXPECT_NE(r.detail().find("key: empty"), std::string::npos) << r.detail();
  op = put(std::string(300, 'x'), "v", 0);
  EXPECT_NE(run(op).detail().find("at most 256"), std::string::npos);
  op = put(std::string("a\0b", 3), "v", 0);
  EXPECT_NE(run(op).detail().find("NUL"), std::string::npos);
  op = put("k", "v", 0);
  op.set_name("");
  EXPECT_NE(run(op).detail().find("name: empty"), std::string::npos);
  EXPECT_NE(run(del("k", 0)).detail().find("expected_version"),
            std::string::npos);
  EXPECT_NE(run(claim(0)).detail().find("lease_ms"), std::string::npos);
  records::TaskRecord none;
  EXPECT_EQ(run(settle(SharedOp::COMPLETE, none)).status(),
            SharedResult::INVALID);
  // Nothing of them was written.
  size_t n = 1;
  ASSERT_FALSE(st_->count(db::shared, n));
  EXPECT_EQ(n, 0u);
}

TEST_F(shared_test, a_corrupt_key_record_is_reported_not_interpreted) {
  ASSERT_EQ(run(put("k", "v1", 0)).status(), SharedResult::OK);
  write_item item;
  item.muts.push_back({mutation::op::put, db::shared,
                       shared_key::kv("config", "k"), "\x02garbage"});
  write_item* p = &item;
  write_result wr;
  ASSERT_FALSE(st_->apply(&p, 1, &wr));
  auto r = run(put("k", "v2", 1));
  EXPECT_EQ(r.status(), SharedResult::CORRUPT);
  EXPECT_NE(r.detail().find("config"), std::string::npos) << r.detail();
}

TEST_F(shared_test, claim_gives_each_task_once_in_order_then_empty) {
  for (int i = 0; i < 3; ++i)
    ASSERT_EQ(run(enqueue("p" + std::to_string(i))).status(),
              SharedResult::OK);
  std::vector<uint64_t> ids;
  for (int i = 0; i < 3; ++i) {
    auto r = run(claim(1000));
    ASSERT_EQ(r.status(), SharedResult::OK);
    EXPECT_EQ(r.task().payload(), "p" + std::to_string(i));
    EXPECT_EQ(r.task().attempts(), 1u);
    EXPECT_EQ(r.task().holder(), "w/1");
    EXPECT_EQ(r.task().lease_expires_ms(), now_ + 1000);
    ids.push_back(r.task().id());
  }
  EXPECT_EQ(run(claim(1000)).status(), SharedResult::EMPTY);
  EXPECT_EQ(ids, (std::vector<uint64_t>{1, 2, 3}));
}

TEST_F(shared_test, expiry_and_extension_on_the_injected_clock) {
  ASSERT_EQ(run(enqueue("p")).status(), SharedResult::OK);
  auto c = run(claim(1000));
  ASSERT_EQ(c.status(), SharedResult::OK);
  auto t = c.task();
  now_ += 999; // still live: extend by 1000 from now
  auto e = run(settle(SharedOp::EXTEND, t, 1000));
  ASSERT_EQ(e.status(), SharedResult::OK) << e.detail();
  EXPECT_EQ(e.task().lease_expires_ms(), now_ + 1000);
  now_ += 999; // past the first expiry, inside the extension
  EXPECT_EQ(run(claim(1000)).status(), SharedResult::EMPTY);
  now_ += 1; // exactly at the expiry: over
  auto c2 = run(claim(500, "w/2"));
  ASSERT_EQ(c2.status(), SharedResult::OK);
  EXPECT_EQ(c2.task().id(), t.id());
  EXPECT_EQ(c2.task().attempts(), 2u);
  EXPECT_EQ(c2.task().holder(), "w/2");
  EXPECT_NE(c2.task().last_error().find("expired"), std::string::npos);
  // The first holder's late completion and extension are refused.
  auto late = run(settle(SharedOp::COMPLETE, t));
  EXPECT_EQ(late.status(), SharedResult::LEASE_EXPIRED) << late.detail();
  EXPECT_EQ(run(settle(SharedOp::EXTEND, t, 1000)).status(),
            SharedResult::LEASE_EXPIRED);
  // The live lease completes once; again is refused.
  EXPECT_EQ(run(settle(SharedOp::COMPLETE, c2.task())).status(),
            SharedResult::OK);
  EXPECT_EQ(run(settle(SharedOp::COMPLETE, c2.task())).status(),
            SharedResult::LEASE_EXPIRED);
  // An expired lease that nobody claimed since is refused as well.
  ASSERT_EQ(run(enqueue("q")).status(), SharedResult::OK);
  auto c3 = run(claim(100));
  now_ += 100;
  EXPECT_EQ(run(settle(SharedOp::COMPLETE, c3.task())).status(),
            SharedResult::LEASE_EXPIRED);
}

TEST_F(shared_test, failing_max_attempts_makes_a_dead_letter) {
  ASSERT_EQ(run(enqueue("p", 2)).status(), SharedResult::OK);
  auto c = run(claim(1000));
  auto f = run(settle(SharedOp::FAIL, c.task()));
  ASSERT_EQ(f.status(), SharedResult::OK);
  EXPECT_FALSE(f.dead());
  EXPECT_EQ(f.task().state(), "ready");
  c = run(claim(1000));
  ASSERT_EQ(c.status(), SharedResult::OK);
  EXPECT_EQ(c.task().attempts(), 2u);
  now_ += 1000; // the second lease expires: attempts spent
  auto r = run(claim(1000));
  EXPECT_EQ(r.status(), SharedResult::EMPTY);
  std::vector<records::DeadLetter> dls;
  ASSERT_FALSE(st_->dead_letters(dls));
  ASSERT_EQ(dls.size(), 1u);
  EXPECT_EQ(dls[0].queue(), "jobs");
  EXPECT_EQ(dls[0].task().payload(), "p");
  EXPECT_NE(dls[0].reason().find("2 of 2"), std::string::npos)
    << dls[0].reason();
  std::vector<queue_listing> qs;
  ASSERT_FALSE(queue_list(*st_, qs));
  ASSERT_EQ(qs.size(), 1u);
  EXPECT_EQ(qs[0].dead, 1u);
  EXPECT_EQ(qs[0].ready + qs[0].leased, 0u);
  // A late completion of the dead task is refused.
  EXPECT_EQ(run(settle(SharedOp::COMPLETE, c.task())).status(),
            SharedResult::LEASE_EXPIRED);
  // `vigil dead-letters replay`: ready again, attempts reset, once.
  std::vector<std::string> problems;
  size_t replayed = 0;
  ASSERT_FALSE(st_->replay_dead_letters({dls[0].seq()}, false, problems,
                                        replayed));
  EXPECT_EQ(replayed, 1u);
  EXPECT_TRUE(problems.empty());
  ASSERT_FALSE(st_->dead_letters(dls));
  EXPECT_TRUE(dls.empty());
  auto again = run(claim(1000));
  ASSERT_EQ(again.status(), SharedResult::OK);
  EXPECT_EQ(again.task().payload(), "p");
  EXPECT_EQ(again.task().attempts(), 1u);
  EXPECT_GT(again.task().lease(), c.task().lease()); // old leases stay stale
}

TEST_F(shared_test, enqueue_with_a_dedupe_key_adds_the_task_once) {
  auto a = run(enqueue("p", 0, "order-1"));
  auto b = run(enqueue("other", 0, "order-1"));
  ASSERT_EQ(b.status(), SharedResult::OK);
  EXPECT_EQ(b.detail(), "duplicate");
  EXPECT_EQ(b.task().id(), a.task().id());
  EXPECT_EQ(b.task().payload(), "p");
  std::vector<records::TaskRecord> ts;
  ASSERT_FALSE(queue_tasks(*st_, "jobs", ts));
  EXPECT_EQ(ts.size(), 1u);
}

TEST_F(shared_test, completed_tasks_leave_after_their_retention) {
  ASSERT_EQ(run(enqueue("a", 0, "key-a")).status(), SharedResult::OK);
  ASSERT_EQ(run(enqueue("b")).status(), SharedResult::OK);
  ASSERT_EQ(run(enqueue("c", 1)).status(), SharedResult::OK);
  ASSERT_EQ(run(enqueue("d")).status(), SharedResult::OK);
  auto a = run(claim(1000)).task();
  auto b = run(claim(1000)).task();
  auto c = run(claim(1000)).task();
  ASSERT_EQ(run(settle(SharedOp::COMPLETE, a)).status(), SharedResult::OK);
  now_ += 10;
  ASSERT_EQ(run(settle(SharedOp::COMPLETE, b)).status(), SharedResult::OK);
  ASSERT_TRUE(run(settle(SharedOp::FAIL, c)).dead()); // c: dead, kept
  // Cutoff between a's and b's completion, one record per step.
  std::string from, next;
  size_t deleted = 0, total = 0;
  int steps = 0;
  do {
    ASSERT_FALSE(st_->compact_tasks(now_ - 5, from, 1, next, deleted));
    total += deleted;
    from = next;
    ASSERT_LT(++steps, 20);
  } while (!from.empty());
  EXPECT_EQ(total, 1u);
  std::vector<records::TaskRecord> ts;
  ASSERT_FALSE(queue_tasks(*st_, "jobs", ts));
  ASSERT_EQ(ts.size(), 3u); // b (done since the cutoff), c (dead), d (ready)
  EXPECT_EQ(ts[0].payload(), "b");
  EXPECT_EQ(ts[1].state(), "dead");
  EXPECT_EQ(ts[2].state(), "ready");
  // a's dedupe key went with it: the same key adds a task again.
  auto again = run(enqueue("a2", 0, "key-a"));
  ASSERT_EQ(again.status(), SharedResult::OK);
  EXPECT_NE(again.detail(), "duplicate");
  EXPECT_EQ(again.task().id(), 5u);
  // The rest goes once everything is past the cutoff; dead and ready stay.
  ASSERT_FALSE(st_->compact_tasks(now_ + 1, "", 100, next, deleted));
  EXPECT_EQ(deleted, 1u);
  EXPECT_TRUE(next.empty());
  ASSERT_FALSE(queue_tasks(*st_, "jobs", ts));
  EXPECT_EQ(ts.size(), 3u); // c, d, a2
}

TEST_F(shared_test, operations_of_one_apply_see_each_other_and_survive_reopen) {
  auto rs = run_all({put("k", "1", 0), put("k", "2", 1), put("k", "x", 1),
                     enqueue("p"), claim(5000)});
  EXPECT_EQ(rs[0].status(), SharedResult::OK);
  EXPECT_EQ(rs[1].status(), SharedResult::OK);
  EXPECT_EQ(rs[2].status(), SharedResult::CONFLICT);
  EXPECT_EQ(rs[4].status(), SharedResult::OK);
  open();
  auto r = run(get("k"));
  EXPECT_EQ(r.entry().value(), "2");
  std::vector<queue_listing> qs;
  ASSERT_FALSE(queue_list(*st_, qs));
  ASSERT_EQ(qs.size(), 1u);
  ASSERT_EQ(qs[0].live_leases.size(), 1u);
  EXPECT_EQ(qs[0].live_leases[0].holder(), "w/1");
}

TEST_F(shared_test, a_failed_batch_applies_none_of_its_operations) {
  st_->fail_apply_after(0);
  write_item item;
  mutation m;
  m.what = mutation::op::shared;
  m.where = db::shared;
  put("k", "v", 0).SerializeToString(&m.value);
  item.muts.push_back(m);
  write_item* p = &item;
  write_result wr;
  EXPECT_TRUE(st_->apply(&p, 1, &wr));
  EXPECT_EQ(run(get("k")).entry().version(), 0u);
}

// A model of the queue and the store, driven by random operations on a
// random clock: every result must be the model's.
TEST_F(shared_test, random_operations_match_the_model) {
  test::for_seeds("VIGIL_SHARED_SEED", "VIGIL_SHARED_SEEDS", 20, 1,
                  [&](uint64_t seed) {
    SCOPED_TRACE("seed " + std::to_string(seed)
                 + " (replay: VIGIL_SHARED_SEED=" + std::to_string(seed)
                 + ")");
    st_.reset();
    test::temp_dir seed_dir;
    open(3, &seed_dir.path());
    struct closer {
      std::unique_ptr<store>& st;
      ~closer() { st.reset(); }
    } close_first{st_};
    std::mt19937_64 rng{seed};
    auto pick = [&](uint64_t n) { return rng() % n; };
    struct mtask {
      std::string state = "ready";
      uint32_t attempts = 0, max = 3;
      uint64_t lease = 0, expires = 0;
    };
    std::map<uint64_t, mtask> tasks;
    std::map<std::string, std::pair<uint64_t, bool>> keys; // version, live
    std::vector<records::TaskRecord> held; // leases handed out
    uint64_t next_id = 1;
    size_t dead = 0;
    auto expire = [&] {
      for (auto& [id, t] : tasks)
        if (t.state == "leased" && t.expires <= now_) {
          t.state = t.attempts >= t.max ? "dead" : "ready";
          dead += t.state == "dead";
        }
    };
    for (int step = 0; step < 400; ++step) {
      auto what = pick(7);
      if (what == 0) {
        now_ += pick(1500);
      } else if (what == 1) {
        auto r = run(enqueue("p", 3));
        ASSERT_EQ(r.status(), SharedResult::OK);
        ASSERT_EQ(r.task().id(), next_id);
        tasks[next_id++] = mtask{};
      } else if (what == 2) {
        expire();
        uint64_t want = 0;
        for (auto& [id, t] : tasks)
          if (t.state == "ready") {
            want = id;
            break;
          }
        auto r = run(claim(100 + pick(1000)));
        if (want == 0) {
          ASSERT_EQ(r.status(), SharedResult::EMPTY) << "step " << step;
          continue;
        }
        ASSERT_EQ(r.status(), SharedResult::OK) << "step " << step;
        ASSERT_EQ(r.task().id(), want) << "step " << step;
        auto& t = tasks[want];
        t.state = "leased";
        ++t.attempts;
        t.lease = r.task().lease();
        t.expires = r.task().lease_expires_ms();
        ASSERT_EQ(r.task().attempts(), t.attempts);
        held.push_back(r.task());
      } else if (what <= 4 && !held.empty()) {
        auto i = pick(held.size());
        auto kind = what == 3 ? (pick(2) ? SharedOp::COMPLETE : SharedOp::FAIL)
                              : SharedOp::EXTEND;
        auto r = run(settle(kind, held[i], 100 + pick(1000)));
        auto& t = tasks[held[i].id()];
        bool live = t.state == "leased" && t.lease == held[i].lease()
                    && t.expires > now_;
        if (!live) {
          ASSERT_EQ(r.status(), SharedResult::LEASE_EXPIRED) << "step " << step;
          continue;
        }
        ASSERT_EQ(r.status(), SharedResult::OK) << "step " << step;
        if (kind == SharedOp::EXTEND) {
          t.expires = r.task().lease_expires_ms();
          held[i] = r.task();
        } else if (kind == SharedOp::COMPLETE) {
          t.state = "done";
        } else {
          t.state = t.attempts >= t.max ? "dead" : "ready";
          dead += t.state == "dead";
          ASSERT_EQ(r.dead(), t.state == "dead");
        }
      } else {
        auto key = "k" + std::to_string(pick(3));
        auto& [ver, live] = keys[key];
        auto guess = pick(3) == 0 ? ver + pick(3) : ver; // often right
        bool erase = pick(4) == 0 && guess != 0;
        auto r = run(erase ? del(key, guess) : put(key, "v", live ? guess : 0));
        bool ok = erase ? live && guess == ver : live ? guess == ver : true;
        if (!erase && live && guess != ver)
          ok = false;
        ASSERT_EQ(r.status() == SharedResult::OK, ok) << "step " << step;
        if (ok) {
          ++ver;
          live = !erase;
          ASSERT_EQ(r.entry().version(), ver);
        } else {
          ASSERT_EQ(r.entry().version(), ver);
        }
      }
    }
    // What the store holds is the model's.
    std::vector<records::TaskRecord> ts;
    ASSERT_FALSE(queue_tasks(*st_, "jobs", ts));
    ASSERT_EQ(ts.size(), tasks.size());
    for (auto& t : ts) {
      auto& m = tasks[t.id()];
      // An expiry the store has not seen yet (no claim since) is still
      // "leased" there, and the model knows it expired.
      if (t.state() == "leased" && m.state != "leased")
        EXPECT_LE(t.lease_expires_ms(), now_);
      else
        EXPECT_EQ(t.state(), m.state) << "task " << t.id();
      EXPECT_EQ(t.attempts(), m.attempts);
    }
    std::vector<records::DeadLetter> dls;
    ASSERT_FALSE(st_->dead_letters(dls));
    EXPECT_EQ(dls.size(), dead);
  });
}

} // namespace
