// Idempotency compaction on real LMDB files: which records a pass deletes,
// which it keeps, and how it resumes between steps.

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "persistence/store_support.hpp"
#include "vigil/persistence/store.hpp"

namespace {

using namespace vigil;
using namespace vigil::test;

// Compaction drops idempotency records older than the cutoff whose
// envelope left the journal. It keeps newer ones, those without a time,
// those that do not parse and those still pending, and resumes where the
// previous step stopped.
// Over 2,000 records span many LMDB pages, so deletes cross page
// boundaries.
TEST_F(store_test, compaction_drops_old_idempotency_records_in_steps) {
  auto s = open();
  ASSERT_NE(s, nullptr);
  std::vector<write_item> items;
  std::set<std::string> kept;
  auto add = [&](const std::string& path, uint64_t id, uint64_t at) {
    records::IdempotencyRecord rec;
    rec.set_format(store::format);
    rec.set_seq(id);
    rec.set_accepted_ms(at);
    write_item item;
    item.guard = guard_key(path, 0, id);
    item.guard_value = bytes(rec);
    items.push_back(std::move(item));
  };
  // "a" and "b/c": ids accepted in time order; the cutoff is 600.
  for (auto path : {"a", "b/c"})
    for (uint64_t id = 1; id <= 1000; ++id) {
      add(path, id, id);
      if (id >= 600)
        kept.insert(guard_key(path, 0, id));
    }
  // "a": ids 10 and 20 are old but their envelopes still wait.
  items.back().muts.push_back(
    put(db::journal, path_key("a", 10), bytes(journal_entry(10))));
  items.back().muts.push_back(
    put(db::journal, path_key("a", 20), bytes(journal_entry(20))));
  kept.insert(guard_key("a", 0, 10));
  kept.insert(guard_key("a", 0, 20));
  // "d": 100 records without a time (kept), then 100 old ones.
  for (uint64_t id = 1; id <= 200; ++id) {
    add("d", id, id <= 100 ? 0 : 1);
    if (id <= 100)
      kept.insert(guard_key("d", 0, id));
  }
  // "e": ids do not sort by time (a producer may choose its own); a new
  // one first does not keep the older ones after it.
  add("e", 1, 900);
  for (uint64_t id = 2; id <= 10; ++id)
    add("e", id, 1);
  kept.insert(guard_key("e", 0, 1));
  ASSERT_TRUE(apply(*s, items).ok());
  s.reset(); // LMDB allows one environment handle per file and process
  ASSERT_EQ(raw_env{dir_}.put("idempotency", guard_key("a", 0, 999999),
                              "not a record"),
            0);
  kept.insert(guard_key("a", 0, 999999));
  s = open();
  ASSERT_NE(s, nullptr);
  size_t total_records = 2 * 1000 + 200 + 10 + 1;
  std::string from;
  std::string next;
  size_t deleted = 0;
  size_t total = 0;
  int steps = 0;
  do {
    ASSERT_TRUE(s->compact_idempotency(600, from, 250, next, deleted).ok());
    total += deleted;
    from = next;
    ASSERT_LT(++steps, 100) << "compaction does not reach the end";
  } while (!next.empty());
  EXPECT_GE(steps, 5);
  EXPECT_EQ(total, total_records - kept.size());
  EXPECT_EQ(count(*s, db::idempotency), kept.size());
  // A second pass finds nothing more to do.
  ASSERT_TRUE(s->compact_idempotency(600, "", 100000, next, deleted).ok());
  EXPECT_EQ(deleted, 0u);
  EXPECT_TRUE(next.empty());
  // A later cutoff takes the rest of the old ones.
  ASSERT_TRUE(s->compact_idempotency(1000, "", 100000, next, deleted).ok());
  EXPECT_EQ(deleted, 2u * 400 + 1);
  kept.clear();
  kept.insert(guard_key("a", 0, 1000));
  kept.insert(guard_key("b/c", 0, 1000));
  kept.insert(guard_key("a", 0, 10));
  kept.insert(guard_key("a", 0, 20));
  kept.insert(guard_key("a", 0, 999999));
  for (uint64_t id = 1; id <= 100; ++id)
    kept.insert(guard_key("d", 0, id));
  EXPECT_EQ(count(*s, db::idempotency), kept.size());
  // A compacted id is new again: its guard no longer stops it.
  std::vector<write_item> again(1);
  again[0].guard = guard_key("b/c", 0, 1);
  std::vector<write_result> res;
  ASSERT_TRUE(apply(*s, again, &res).ok());
  EXPECT_EQ(res, std::vector<write_result>{write_result::applied});
  kept.insert(guard_key("b/c", 0, 1));
  // The survivors are exactly the expected keys.
  s.reset();
  raw_env raw{dir_};
  for (auto& key : kept)
    EXPECT_TRUE(raw.get("idempotency", key).has_value()) << key.size();
}

// A replayed dead letter waits in the journal under a new seq; its id's
// guard follows it there, so compaction keeps the guard and a redelivery
// of the id stays a duplicate.
TEST_F(store_test, replayed_envelope_keeps_its_guard_through_compaction) {
  auto s = open();
  ASSERT_NE(s, nullptr);
  constexpr uint64_t id = 4242;
  auto snap = snapshot("p", 5);
  snap.set_durability(2);
  snap.set_next_seq(6);
  records::DeadLetter dl;
  dl.set_format(store::format);
  dl.set_path("p");
  dl.mutable_env()->set_type("vigil.test.Ping");
  dl.mutable_env()->set_id(id);
  dl.set_reason("handler_failed");
  dl.set_consumed_seq(5); // as the consume that made it writes it
  records::IdempotencyRecord rec;
  rec.set_format(store::format);
  rec.set_seq(5); // accepted at seq 5, then consumed as a dead letter
  rec.set_accepted_ms(1);
  std::vector<write_item> items(1);
  items[0].guard = guard_key("p", 0, id);
  items[0].guard_value = bytes(rec);
  items[0].muts = {put(db::snapshots, "p", bytes(snap)),
                   mutation{mutation::op::append_dead_letter,
                            db::dead_letters, {}, bytes(dl)}};
  ASSERT_TRUE(apply(*s, items).ok());
  std::vector<std::string> problems;
  size_t replayed = 0;
  ASSERT_TRUE(s->replay_dead_letters({}, true, problems, replayed).ok());
  ASSERT_EQ(replayed, 1u);
  ASSERT_EQ(count(*s, db::journal), 1u);
  // Every id counts as old for this cutoff; the pending one stays.
  std::string next;
  size_t deleted = 0;
  ASSERT_TRUE(
    s->compact_idempotency(UINT64_MAX, "", 1000, next, deleted).ok());
  EXPECT_EQ(deleted, 0u);
  EXPECT_EQ(count(*s, db::idempotency), 1u);
  std::vector<write_item> again(1);
  again[0].guard = guard_key("p", 0, id);
  std::vector<write_result> res;
  ASSERT_TRUE(apply(*s, again, &res).ok());
  EXPECT_EQ(res, std::vector<write_result>{write_result::duplicate});
}

} // namespace
