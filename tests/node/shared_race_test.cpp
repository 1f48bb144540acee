// 100 journal agents race for one leased queue of 1,000 tasks and for ten
// compare-and-swap keys, in one node, while some crash (a throw in the
// handler that works a task) and some hold their task past its lease and
// complete it late. Every task must end done, completed under a live lease
// exactly once; no late completion may be accepted; and each key's value
// must equal its version (no increment lost). The kill -9 variant is
// shared_kill_test.

#include <gtest/gtest.h>

#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "support/eventually.hpp"
#include "support/seeds.hpp"
#include "support/shared_agents.hpp"
#include "support/shared_events.hpp"
#include "support/temp_dir.hpp"
#include "vigil/node/node.hpp"
#include "vigil/persistence/shared.hpp"

using namespace vigil;
using namespace std::chrono_literals;

namespace {

struct event_log {
  std::mutex mtx;
  std::vector<std::string> lines;
  void add(const std::string& s) {
    std::lock_guard<std::mutex> g{mtx};
    lines.push_back(s);
  }
  std::vector<std::string> copy() {
    std::lock_guard<std::mutex> g{mtx};
    return lines;
  }
  size_t count(const std::string& prefix) {
    std::lock_guard<std::mutex> g{mtx};
    size_t n = 0;
    for (auto& l : lines)
      n += l.compare(0, prefix.size(), prefix) == 0;
    return n;
  }
};

void race(uint64_t seed, int workers, int tasks) {
  SCOPED_TRACE("seed " + std::to_string(seed)
               + " (replay: VIGIL_SHARED_RACE_SEED=" + std::to_string(seed)
               + ")");
  test::temp_dir dir;
  event_log log;
  auto& w = test::shared_world::get();
  w.seed = seed;
  w.crash_pm = 40;
  w.stall_pm = 40;
  w.lease = 400ms;
  w.crashes = 0;
  w.log = [&log](const std::string& s) { log.add(s); };
  {
    node_config nc;
    nc.data_dir = dir.path();
    nc.sync = sync_mode::nosync;
    nc.threads = 2;
    node nd{test::shared_registry(), nc};
    supervisor_spec spec;
    spec.flags.intensity = 100000;
    spec.flags.period = 1s;
    spec.children.push_back(worker("feeder", "shared_feeder")
                              .with_durability(durability_mode::journal));
    for (int i = 0; i < workers; ++i) {
      auto cs = worker("w" + std::to_string(i), "shared_worker")
                  .with_durability(durability_mode::journal);
      cs.max_deliveries = 3; // a crashed Work is delivered again
      spec.children.push_back(std::move(cs));
    }
    ASSERT_FALSE(nd.start("race", spec));
    test::Feed f;
    f.set_tasks(tasks);
    f.set_max_attempts(50);
    call_options once;
    once.message_id = 1;
    ASSERT_FALSE(nd.send("race/feeder", f, once));
    auto& st = *nd.rt()->storage();
    size_t done = 0;
    auto all_done = test::eventually(
      [&] {
        std::vector<queue_listing> qs;
        if (queue_list(st, qs) || qs.empty())
          return false;
        done = qs[0].done;
        return qs[0].done + qs[0].dead == static_cast<size_t>(tasks);
      },
      120s);
    ASSERT_TRUE(all_done) << done << " of " << tasks << " done";
    // Every stalled task's late completion comes back (refused), except
    // where its worker crashed (another task's Work, attempt 1) between
    // handling the Late and its answer: a crashed instance's callbacks are
    // dropped. Under ASan's timing that happened about 1 run in 3, never
    // with more than 2 answers missing.
    bool all_late = test::eventually(
      [&] { return log.count("late_") == log.count("stall "); }, 10s);
    ASSERT_TRUE(all_late || log.count("late_") + 2 >= log.count("stall "))
      << log.count("late_") << " late answers for " << log.count("stall ")
      << " stalls; " << [&] {
           // each "T L" whose "stall" lines and "late_*" lines differ in
           // number, with what its worker did
           auto v = log.copy();
           std::map<std::string, std::pair<int, int>> n; // stalls, lates
           std::map<std::string, std::string> by;
           for (auto& l : v) {
             if (l.rfind("stall ", 0) == 0)
               ++n[l.substr(6)].first;
             else if (l.rfind("late_", 0) == 0)
               ++n[l.substr(l.find(' ') + 1)].second;
             else if (l.rfind("stall_by ", 0) == 0) {
               std::istringstream in{l.substr(9)};
               std::string path, task;
               in >> path >> task;
               by[task] = path;
             }
           }
           std::string out;
           for (auto& [tl, c] : n) {
             if (c.first == c.second)
               continue;
             auto task = tl.substr(0, tl.find(' '));
             out += "\n  " + tl + ": " + std::to_string(c.first)
                    + " stalls, " + std::to_string(c.second)
                    + " late answers; its worker " + by[task] + ":";
             for (auto& k : v)
               if (!by[task].empty() && k.find(by[task] + " ") != std::string::npos)
                 out += " | " + k;
           }
           return out;
         }();
    ASSERT_FALSE(nd.stop());
  }
  // What the data dir holds, read after the node stopped.
  std::unique_ptr<store> st;
  store_options so;
  so.dir = dir.path();
  ASSERT_FALSE(store::open_read_only(so, st));
  std::vector<records::TaskRecord> ts;
  ASSERT_FALSE(queue_tasks(*st, w.queue, ts));
  ASSERT_EQ(ts.size(), static_cast<size_t>(tasks));
  for (auto& t : ts) {
    EXPECT_EQ(t.state(), "done") << "task " << t.id();
    // Completed under a lease that was live then.
    EXPECT_LT(t.done_ms(), t.lease_expires_ms()) << "task " << t.id();
  }
  auto ev = test::check_events(log.copy());
  auto& completes = ev.completes;
  auto& cas_versions = ev.cas;
  auto late_rejected = ev.late_rejected;
  // Callbacks of a crashed instance are dropped, so a few completions may
  // be unseen; most are seen.
  EXPECT_GE(completes.size(), static_cast<size_t>(tasks) * 8 / 10);
  EXPECT_GT(late_rejected, 0u) << "no late completion was tried";
  EXPECT_GT(w.crashes.load(), 0) << "no worker crashed";
  std::vector<kv_listing> keys;
  ASSERT_FALSE(kv_list(*st, keys));
  uint64_t versions = 0;
  for (auto& k : keys) {
    ASSERT_TRUE(k.readable) << k.problem;
    EXPECT_EQ(k.current.value(), std::to_string(k.current.version()))
      << "key " << k.key << ": an increment was lost";
    EXPECT_LE(cas_versions[k.key].size(), k.current.version());
    versions += k.current.version();
  }
  EXPECT_EQ(keys.size(), static_cast<size_t>(w.keys));
  // Each increment seen is a version of its own; most tasks worked bumped
  // a key (a crash drops its instance's pending callbacks).
  EXPECT_GE(versions, log.count("cas "));
  EXPECT_GT(versions, static_cast<uint64_t>(tasks) / 2);
  std::printf("shared_race: seed %llu: %zu tasks done, %lld crashes, %zu "
              "late completions refused, %llu increments, %zu completions "
              "seen\n",
              static_cast<unsigned long long>(seed), ts.size(),
              static_cast<long long>(w.crashes.load()), late_rejected,
              static_cast<unsigned long long>(versions), completes.size());
  w.log = [](const std::string&) {};
}

TEST(shared_race_test, hundred_agents_thousand_tasks_ten_keys) {
  test::for_seeds("VIGIL_SHARED_RACE_SEED", "VIGIL_SHARED_RACE_SEEDS", 1, 1,
                  [](uint64_t seed) { race(seed, 100, 1000); });
}

} // namespace
