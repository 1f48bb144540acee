// vigil::counters: every field listed once with a name and a meaning, each
// description reading its own field, lock-free adds from many threads, and
// the parts of a node that count into it (runtime, dead-letter log, writer).

#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <caf/all.hpp>

#include "support/eventually.hpp"
#include "support/temp_dir.hpp"
#include "vigil/actors/counters.hpp"
#include "vigil/actors/runtime.hpp"
#include "vigil/actors/writer.hpp"

using namespace vigil;
using namespace vigil::test;

namespace {

TEST(counters_test, every_field_has_a_unique_name_and_a_meaning) {
  std::set<std::string> names;
  std::set<const void*> fields;
  counters c;
  size_t n = 0;
  c.for_each([&](std::string_view name, std::string_view help,
                 counters::kind, uint64_t value) {
    ++n;
    EXPECT_FALSE(name.empty());
    EXPECT_FALSE(help.empty()) << name;
    EXPECT_EQ(value, 0u) << name << " does not start at 0";
    EXPECT_TRUE(names.emplace(name).second) << name << " twice";
  });
  EXPECT_EQ(n, counters::size);
  for (auto& d : counters::descriptions())
    EXPECT_TRUE(fields.insert(&(c.*d.field)).second)
      << d.name << " reads a field listed before";
}

// Each description must read its own field: give every field a distinct
// value through its member, then find each value under the field's name.
TEST(counters_test, each_name_reads_its_own_field) {
  counters c;
  c.handled = 1;
  c.restarts = 2;
  c.dead_letters = 3;
  c.dead_letters_dropped = 4;
  c.writer_items = 5;
  c.writer_commits = 6;
  c.writer_failures = 7;
  c.writer_largest_batch = 8;
  c.writer_compacted = 9;
  c.writer_compact_failures = 10;
  c.writer_compact_passes = 11;
  c.writer_owned_paths = 12;
  c.writer_refused = 13;
  c.stand_in_answers = 14;
  c.saga_completed = 15;
  c.saga_compensated = 16;
  c.saga_compensation_failed = 17;
  c.saga_resumed = 18;
  c.saga_outcomes_resent = 19;
  std::map<std::string, uint64_t> seen;
  c.for_each([&](std::string_view name, std::string_view, counters::kind,
                 uint64_t value) { seen.emplace(name, value); });
  std::map<std::string, uint64_t> want{
    {"handled", 1},
    {"restarts", 2},
    {"dead_letters", 3},
    {"dead_letters_dropped", 4},
    {"writer_items", 5},
    {"writer_commits", 6},
    {"writer_failures", 7},
    {"writer_largest_batch", 8},
    {"writer_compacted", 9},
    {"writer_compact_failures", 10},
    {"writer_compact_passes", 11},
    {"writer_owned_paths", 12},
    {"writer_refused", 13},
    {"stand_in_answers", 14},
    {"saga_completed", 15},
    {"saga_compensated", 16},
    {"saga_compensation_failed", 17},
    {"saga_resumed", 18},
    {"saga_outcomes_resent", 19}};
  EXPECT_EQ(seen, want);
}

TEST(counters_test, bump_adds_to_one_field_only) {
  counters c;
  counters::bump(c.restarts);
  counters::bump(c.restarts, 4);
  uint64_t sum = 0;
  c.for_each([&](std::string_view, std::string_view, counters::kind,
                 uint64_t value) { sum += value; });
  EXPECT_EQ(c.restarts.load(), 5u);
  EXPECT_EQ(sum, 5u);
}

TEST(counters_test, the_documented_names_and_kinds) {
  std::vector<std::string> names;
  std::vector<std::string> gauges;
  counters{}.for_each([&](std::string_view name, std::string_view,
                          counters::kind k, uint64_t) {
    names.emplace_back(name);
    if (k == counters::kind::gauge)
      gauges.emplace_back(name);
  });
  EXPECT_EQ(names, (std::vector<std::string>{
                     "handled", "restarts", "stand_in_answers",
                     "dead_letters",
                     "dead_letters_dropped", "writer_items", "writer_commits",
                     "writer_failures", "writer_largest_batch",
                     "writer_compacted", "writer_compact_failures",
                     "writer_compact_passes", "writer_owned_paths",
                     "writer_refused", "saga_completed", "saga_compensated",
                     "saga_compensation_failed", "saga_resumed",
                     "saga_outcomes_resent"}));
  EXPECT_EQ(gauges, (std::vector<std::string>{"writer_largest_batch",
                                              "writer_owned_paths"}));
}

TEST(counters_test, concurrent_adds_lose_nothing) {
  counters c;
  constexpr int threads = 4;
  constexpr uint64_t per_thread = 100000;
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&] {
      for (uint64_t i = 0; i < per_thread; ++i)
        counters::bump(c.handled);
    });
  for (auto& t : ts)
    t.join();
  EXPECT_EQ(c.handled.load(), threads * per_thread);
  EXPECT_EQ(c.restarts.load(), 0u);
}

TEST(counters_test, the_runtime_counts_into_its_counters) {
  runtime rt{registry{}, 2};
  rt.count_handled();
  rt.count_handled();
  rt.count_restart();
  for (int i = 0; i < 3; ++i)
    rt.add_dead_letter("p", envelope{}, "r");
  auto& c = rt.stats();
  EXPECT_EQ(c.handled.load(), 2u);
  EXPECT_EQ(rt.handled(), 2u);
  EXPECT_EQ(c.restarts.load(), 1u);
  EXPECT_EQ(rt.restarts(), 1u);
  EXPECT_EQ(c.dead_letters.load(), 3u);
  EXPECT_EQ(c.dead_letters_dropped.load(), 1u);
  EXPECT_EQ(rt.dead_letters_dropped(), 1u);
  EXPECT_EQ(rt.dead_letter_count(), 2u);
  EXPECT_EQ(rt.shared_stats().get(), &c);
}

// The writer's own statistics (stats_atom) and the node's counters are the
// same numbers.
TEST(counters_test, the_writer_counts_into_shared_counters) {
  temp_dir dir;
  store_options so;
  so.dir = dir.path();
  so.sync = sync_mode::nosync;
  std::unique_ptr<store> s;
  ASSERT_FALSE(store::open(so, s));
  std::shared_ptr<store> st{std::move(s)};
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  auto c = std::make_shared<counters>();
  auto w = spawn_writer(sys, st, writer_options{}, {}, c);
  caf::scoped_actor self{sys, true};
  fence_grant g;
  self->request(w, caf::infinite, fence_atom::value, std::string{"p"},
                uint64_t{0})
    .receive([&](fence_grant& x) { g = std::move(x); },
             [&](caf::error& err) { FAIL() << caf::to_string(err); });
  EXPECT_EQ(c->writer_owned_paths.load(), 1u);
  for (int i = 0; i < 3; ++i) {
    write_item item;
    item.muts.push_back(
      mutation{mutation::op::put, db::meta, "k" + std::to_string(i), "v"});
    self->send(w, write_atom::value, uint64_t{0},
               owned_write{g.owner, std::move(item)});
  }
  // A write of an owner the writer never granted is refused.
  self->send(w, write_atom::value, uint64_t{0},
             owned_write{owner_ref::make(7, 99), write_item{}});
  self->request(w, caf::infinite, flush_atom::value)
    .receive([] {}, [&](caf::error& err) { FAIL() << caf::to_string(err); });
  std::vector<uint64_t> stats;
  self->request(w, caf::infinite, stats_atom::value)
    .receive(
      [&](uint64_t items, uint64_t commits, uint64_t failures,
          uint64_t largest, uint64_t compacted, uint64_t compact_failures,
          uint64_t passes, uint64_t owners, uint64_t refused) {
        stats = {items,     commits,          failures, largest, compacted,
                 compact_failures, passes, owners,   refused};
      },
      [&](caf::error& err) { FAIL() << caf::to_string(err); });
  ASSERT_EQ(stats.size(), 9u);
  EXPECT_EQ(stats[0], 3u);
  EXPECT_EQ(c->writer_items.load(), 3u);
  EXPECT_GE(stats[1], 1u);
  EXPECT_EQ(c->writer_commits.load(), stats[1]);
  EXPECT_EQ(c->writer_failures.load(), 0u);
  EXPECT_EQ(c->writer_largest_batch.load(), stats[3]);
  EXPECT_EQ(c->writer_owned_paths.load(), 1u);
  EXPECT_EQ(stats[7], 1u);
  EXPECT_EQ(c->writer_refused.load(), 1u);
  EXPECT_EQ(stats[8], 1u);
  self->send(w, release_atom::value, std::string{"p"});
  self->request(w, caf::infinite, flush_atom::value)
    .receive([] {}, [](caf::error&) {});
  EXPECT_EQ(c->writer_owned_paths.load(), 0u) << "released";
  caf::anon_send_exit(w, caf::exit_reason::user_shutdown);
}

} // namespace
