// vigil::dead_letter_log on its own: the in-memory cap, drop counting in
// the node's counters, sequence numbers, concurrent adds, and the durable
// copy through a real writer on a real LMDB data dir.

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <caf/all.hpp>

#include "support/eventually.hpp"
#include "support/temp_dir.hpp"
#include "vigil/actors/dead_letter_log.hpp"
#include "vigil/actors/writer.hpp"
#include "vigil/persistence/store.hpp"

using namespace vigil;
using namespace vigil::test;
using namespace std::chrono_literals;

namespace {

envelope env_with_id(uint64_t id) {
  envelope e;
  e.id = id;
  return e;
}

TEST(dead_letter_log_test, keeps_every_letter_below_the_cap_in_order) {
  counters c;
  dead_letter_log log{c, 10};
  log.add("a", env_with_id(1), "r1");
  log.add("b", env_with_id(2), "r2", false, true);
  auto all = log.snapshot();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].seq, 1u);
  EXPECT_EQ(all[0].path, "a");
  EXPECT_EQ(all[0].env.id, 1u);
  EXPECT_EQ(all[0].reason, "r1");
  EXPECT_EQ(all[1].seq, 2u);
  EXPECT_EQ(all[1].path, "b");
  EXPECT_EQ(log.size(), 2u);
  EXPECT_EQ(log.dropped(), 0u);
  EXPECT_EQ(c.dead_letters.load(), 2u);
  EXPECT_EQ(c.dead_letters_dropped.load(), 0u);
}

TEST(dead_letter_log_test, drops_the_oldest_past_the_cap_and_counts_them) {
  counters c;
  dead_letter_log log{c, 3};
  EXPECT_EQ(log.cap(), 3u);
  for (uint64_t i = 1; i <= 5; ++i)
    log.add("a/b", env_with_id(i), "reason " + std::to_string(i));
  auto all = log.snapshot();
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all.front().env.id, 3u);
  EXPECT_EQ(all.front().seq, 3u);
  EXPECT_EQ(all.back().env.id, 5u);
  EXPECT_EQ(all.back().seq, 5u);
  EXPECT_EQ(all.back().reason, "reason 5");
  EXPECT_EQ(log.dropped(), 2u);
  EXPECT_EQ(c.dead_letters.load(), 5u);
  EXPECT_EQ(c.dead_letters_dropped.load(), 2u);
}

TEST(dead_letter_log_test, a_cap_of_zero_keeps_none_and_counts_each) {
  counters c;
  dead_letter_log log{c, 0};
  log.add("a", env_with_id(1), "r");
  log.add("a", env_with_id(2), "r");
  EXPECT_EQ(log.size(), 0u);
  EXPECT_TRUE(log.snapshot().empty());
  EXPECT_EQ(log.dropped(), 2u);
  EXPECT_EQ(c.dead_letters_dropped.load(), 2u);
  EXPECT_EQ(c.dead_letters.load(), 2u);
}

TEST(dead_letter_log_test, a_snapshot_is_a_copy) {
  counters c;
  dead_letter_log log{c, 4};
  log.add("a", env_with_id(1), "r");
  auto copy = log.snapshot();
  copy[0].reason = "changed";
  copy.clear();
  ASSERT_EQ(log.snapshot().size(), 1u);
  EXPECT_EQ(log.snapshot()[0].reason, "r");
}

TEST(dead_letter_log_test, concurrent_adds_lose_no_count) {
  counters c;
  dead_letter_log log{c, 100};
  constexpr int threads = 4;
  constexpr int per_thread = 2000;
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i)
        // (Written by the caller: not rate-limited, see below.)
        log.add("t" + std::to_string(t), env_with_id(i), "r", false);
    });
  for (auto& t : ts)
    t.join();
  constexpr uint64_t total = threads * per_thread;
  EXPECT_EQ(log.size(), 100u);
  EXPECT_EQ(log.dropped(), total - 100);
  EXPECT_EQ(c.dead_letters.load(), total);
  EXPECT_EQ(c.dead_letters_dropped.load(), total - 100);
  auto all = log.snapshot();
  EXPECT_EQ(all.back().seq, total) << "every letter got the next seq";
  for (size_t i = 1; i < all.size(); ++i)
    EXPECT_EQ(all[i].seq, all[i - 1].seq + 1);
}

envelope from(std::string sender, uint64_t id) {
  envelope e;
  e.sender = std::move(sender);
  e.id = id;
  return e;
}

/// Letters `all` stands for: each one and its repeats.
uint64_t stood_for(const std::vector<dead_letter>& all) {
  uint64_t n = 0;
  for (auto& dl : all)
    n += 1 + dl.repeats;
  return n;
}

TEST(dead_letter_log_test, a_flood_of_one_kind_is_kept_as_samples_and_a_count) {
  counters c;
  dead_letter_log log{c};
  constexpr uint64_t flood = 1000;
  for (uint64_t i = 1; i <= flood; ++i)
    log.add("root/r", from("root/f", i), "overloaded: full");
  // Every one is counted; a few are kept one by one.
  EXPECT_EQ(c.dead_letters.load(), flood);
  EXPECT_EQ(log.by_reason()["overloaded"], flood);
  EXPECT_LT(log.size(), 50u);
  log.flush();
  auto all = log.snapshot();
  EXPECT_EQ(stood_for(all), flood);
  ASSERT_FALSE(all.empty());
  // The letter standing for the rest is the last of them.
  EXPECT_GT(all.back().repeats, 0u);
  EXPECT_EQ(all.back().env.id, flood);
  log.flush(); // nothing left to close
  EXPECT_EQ(stood_for(log.snapshot()), flood);
}

TEST(dead_letter_log_test, senders_paths_and_reasons_are_limited_apart) {
  counters c;
  dead_letter_log log{c};
  constexpr uint32_t k = dead_letter_log::samples_per_second;
  for (uint64_t i = 0; i < k; ++i) {
    log.add("root/r", from("root/a", i), "overloaded: x");
    log.add("root/r", from("root/b", i), "overloaded: x");
    log.add("root/q", from("root/a", i), "overloaded: x");
    log.add("root/r", from("root/a", i), "not_found: x");
  }
  // Each kind is still within its samples: all kept one by one.
  EXPECT_EQ(log.size(), 4u * k);
  log.flush();
  EXPECT_EQ(log.size(), 4u * k);
}

TEST(dead_letter_log_test, a_burst_is_closed_by_a_letter_after_its_second) {
  counters c;
  dead_letter_log log{c};
  constexpr uint32_t k = dead_letter_log::samples_per_second;
  for (uint64_t i = 1; i <= k + 5; ++i)
    log.add("root/r", from("root/f", i), "overloaded: full");
  EXPECT_EQ(log.size(), k);
  // The rate limit's window is one second of the steady clock: this test
  // is about time passing.
  std::this_thread::sleep_for(1100ms);
  log.add("root/r", from("root/f", 99), "overloaded: full");
  auto all = log.snapshot();
  ASSERT_EQ(all.size(), k + 2u);
  EXPECT_EQ(all[k].repeats, 4u);
  EXPECT_EQ(all[k].env.id, k + 5u);
  EXPECT_EQ(all[k + 1].env.id, 99u);
  EXPECT_EQ(all[k + 1].repeats, 0u);
}

/// A log attached to a real writer on a real LMDB data dir.
class dead_letter_log_writer_test : public ::testing::Test {
public:
  dead_letter_log_writer_test() : sys(cfg) {
    store_options so;
    so.dir = dir.path();
    so.sync = sync_mode::nosync;
    std::unique_ptr<store> s;
    auto status = store::open(so, s);
    EXPECT_FALSE(status) << status.message();
    st = std::move(s);
    w = spawn_writer(sys, st, writer_options{});
  }

  ~dead_letter_log_writer_test() override {
    caf::anon_send_exit(w, caf::exit_reason::user_shutdown);
  }

  std::vector<records::DeadLetter> stored() {
    std::vector<records::DeadLetter> out;
    auto status = st->dead_letters(out);
    EXPECT_FALSE(status) << status.message();
    return out;
  }

  temp_dir dir;
  caf::actor_system_config cfg;
  caf::actor_system sys;
  std::shared_ptr<store> st;
  caf::actor w;
  counters c;
};

TEST_F(dead_letter_log_writer_test, without_a_writer_nothing_is_written) {
  dead_letter_log log{c, 10};
  log.add("mem", env_with_id(1), "kept in memory only");
  // Attached afterwards: the next letter is the first that reaches LMDB.
  log.attach(w);
  log.add("disk", env_with_id(2), "written");
  ASSERT_TRUE(eventually([&] { return !stored().empty(); }, 5s));
  auto all = stored();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].path(), "disk");
  EXPECT_EQ(log.size(), 2u);
}

TEST_F(dead_letter_log_writer_test, persist_false_leaves_lmdb_to_the_caller) {
  dead_letter_log log{c, 10};
  log.attach(w);
  log.add("caller", env_with_id(1), "written by its cell", false);
  // Sent after it from this thread: once it is on disk, the first letter
  // would be too, had it been sent.
  log.add("log", env_with_id(2), "written by the log", true, true);
  ASSERT_TRUE(eventually([&] { return !stored().empty(); }, 5s));
  auto all = stored();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].path(), "log");
  EXPECT_EQ(all[0].reason(), "written by the log");
  EXPECT_EQ(all[0].env().id(), 2u);
  EXPECT_TRUE(all[0].journal());
  EXPECT_EQ(log.size(), 2u) << "both are in memory";
}

TEST_F(dead_letter_log_writer_test, lmdb_keeps_letters_past_the_cap) {
  dead_letter_log log{c, 1};
  log.attach(w);
  for (uint64_t i = 1; i <= 3; ++i)
    log.add("p", env_with_id(i), "r" + std::to_string(i));
  ASSERT_TRUE(eventually([&] { return stored().size() == 3; }, 5s));
  auto all = stored();
  EXPECT_EQ(all[0].reason(), "r1");
  EXPECT_EQ(all[2].reason(), "r3");
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log.snapshot()[0].reason, "r3");
  EXPECT_EQ(c.dead_letters_dropped.load(), 2u);
}

TEST_F(dead_letter_log_writer_test, a_flood_is_written_as_samples_and_a_count) {
  dead_letter_log log{c};
  log.attach(w);
  constexpr uint64_t flood = 5000;
  for (uint64_t i = 1; i <= flood; ++i)
    log.add("root/r", from("root/f", i), "overloaded: full");
  log.flush();
  auto kept = log.snapshot();
  ASSERT_TRUE(
    eventually([&] { return stored().size() == kept.size(); }, 5s));
  uint64_t on_disk = 0;
  for (auto& dl : stored())
    on_disk += 1 + dl.repeats();
  EXPECT_EQ(on_disk, flood);
  EXPECT_LT(kept.size(), 100u) << "one write per letter";
}

} // namespace
