// A tool's thread pool (its bulkhead): it wakes a sleeping thread only when
// the threads awake cannot take the tasks waiting, and one idle thread
// spins a little before it sleeps. Neither may lose a task or a thread's
// worth of parallelism. Real threads, seeded: VIGIL_POOL_SEEDS sets the
// number of seeds (default 40), VIGIL_POOL_SEED replays one.

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <memory>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "support/eventually.hpp"
#include "vigil/actors/detail/tool_runtime.hpp"

using namespace std::chrono_literals;
using vigil::detail::thread_pool;
using vigil::test::eventually;

namespace {

/// Tasks that each wait until all of their group have started: a group as
/// large as the pool completes only if every thread runs at once.
struct group {
  explicit group(int size) : size(size) {
    // nop
  }
  const int size;
  std::atomic<int> started{0};
  std::atomic<int> finished{0};
  std::atomic<int> timed_out{0};

  void task() {
    ++started;
    auto until = std::chrono::steady_clock::now() + 10s;
    while (started.load() < size)
      if (std::chrono::steady_clock::now() > until) {
        ++timed_out;
        break;
      } else {
        std::this_thread::yield();
      }
    ++finished;
  }
};

/// Counts the tasks running at once, and the most ever.
struct gauge {
  std::atomic<int> now{0};
  std::atomic<int> most{0};
  std::atomic<int> runs{0};

  void enter() {
    auto n = ++now;
    auto m = most.load();
    while (n > m && !most.compare_exchange_weak(m, n)) {
      // retry
    }
  }
  void leave() {
    --now;
    ++runs;
  }
};

void spin_for(std::chrono::microseconds d) {
  auto until = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < until) {
    // spin
  }
}

/// One seed: rounds of tasks submitted in bursts with gaps (some longer
/// than the 50 µs an idle thread spins, so that threads sleep and must be
/// woken), short tasks of random length, and now and then a group as large
/// as the pool. Returns "" or what went wrong.
std::string run_seed(uint64_t seed) {
  std::mt19937_64 rng{seed};
  auto pick = [&](int lo, int hi) {
    return std::uniform_int_distribution<int>{lo, hi}(rng);
  };
  int threads = pick(1, 8);
  gauge g;
  std::vector<std::unique_ptr<group>> groups;
  int submitted = 0;
  {
    thread_pool pool{static_cast<size_t>(threads), "pool-test"};
    for (int round = 0; round < 30; ++round) {
      if (pick(0, 5) == 0) {
        groups.push_back(std::make_unique<group>(threads));
        auto* gr = groups.back().get();
        for (int i = 0; i < threads; ++i)
          pool.submit([gr] { gr->task(); });
      }
      int burst = pick(1, 20);
      // A burst goes one by one, or at once (as a cell's batch does).
      bool at_once = pick(0, 1) == 1;
      std::vector<std::function<void()>> batch;
      for (int i = 0; i < burst; ++i) {
        auto us = std::chrono::microseconds{pick(0, 3) == 0 ? pick(0, 100) : 0};
        auto task = [&g, us] {
          g.enter();
          spin_for(us);
          g.leave();
        };
        if (at_once)
          batch.emplace_back(task);
        else
          pool.submit(task);
        ++submitted;
      }
      if (at_once)
        pool.submit_all(batch);
      auto gap = pick(0, 3);
      if (gap == 1)
        spin_for(std::chrono::microseconds{pick(0, 40)});
      else if (gap == 2)
        std::this_thread::sleep_for(std::chrono::microseconds{pick(60, 400)});
    }
    if (!eventually([&] {
          if (g.runs.load() != submitted)
            return false;
          for (auto& gr : groups)
            if (gr->finished.load() != gr->size)
              return false;
          return true;
        },
                    20s)) {
      std::ostringstream os;
      os << "after 20 s, " << g.runs.load() << " of " << submitted
         << " tasks ran on " << threads << " threads";
      return os.str();
    }
  }
  std::ostringstream os;
  if (g.most.load() > threads)
    os << g.most.load() << " tasks ran at once on " << threads
       << " threads; ";
  for (auto& gr : groups)
    if (gr->timed_out.load() > 0)
      os << "a group of " << gr->size << " did not run at once on "
         << threads << " threads; ";
  return os.str();
}

} // namespace

TEST(thread_pool_test, as_many_tasks_as_threads_run_at_once) {
  for (int round = 0; round < 20; ++round) {
    group gr{8};
    {
      thread_pool pool{8, "pool-test"};
      for (int i = 0; i < 8; ++i)
        pool.submit([&gr] { gr.task(); });
      ASSERT_TRUE(eventually([&] { return gr.finished.load() == 8; }, 20s))
        << "round " << round << ": " << gr.started.load() << " started";
    }
    EXPECT_EQ(gr.timed_out.load(), 0) << "round " << round;
  }
}

TEST(thread_pool_test, a_batch_as_large_as_the_pool_runs_at_once) {
  for (int round = 0; round < 20; ++round) {
    group gr{8};
    {
      thread_pool pool{8, "pool-test"};
      std::vector<std::function<void()>> batch;
      for (int i = 0; i < 8; ++i)
        batch.emplace_back([&gr] { gr.task(); });
      pool.submit_all(batch);
      EXPECT_TRUE(batch.empty());
      ASSERT_TRUE(eventually([&] { return gr.finished.load() == 8; }, 20s))
        << "round " << round << ": " << gr.started.load() << " started";
    }
    EXPECT_EQ(gr.timed_out.load(), 0) << "round " << round;
  }
}

TEST(thread_pool_test, a_task_after_the_threads_slept_runs) {
  thread_pool pool{2, "pool-test"};
  for (int i = 0; i < 20; ++i) {
    std::atomic<bool> ran{false};
    pool.submit([&ran] { ran = true; });
    ASSERT_TRUE(eventually([&] { return ran.load(); }, 10s)) << "task " << i;
    // Longer than an idle thread spins: both threads are asleep again.
    std::this_thread::sleep_for(std::chrono::microseconds{200 + 50 * i});
  }
}

TEST(thread_pool_test, tasks_left_in_the_queue_are_dropped_with_what_they_hold) {
  struct flags {
    std::atomic<bool> started{false};
    std::atomic<bool> release{false};
    std::atomic<bool> done{false};
  };
  auto f = std::make_shared<flags>();
  auto held = std::make_shared<int>(7);
  {
    // A hung task: the destructor waits 100 ms for it, then leaves it.
    thread_pool pool{1, "pool-test", 100ms};
    pool.submit([f] {
      f->started = true;
      (void)eventually([&] { return f->release.load(); }, 10s);
      f->done = true;
    });
    ASSERT_TRUE(eventually([&] { return f->started.load(); }, 10s));
    for (int i = 0; i < 3; ++i)
      pool.submit([held] { ADD_FAILURE() << "a queued task ran after the stop"; });
    EXPECT_EQ(held.use_count(), 4);
  }
  EXPECT_EQ(held.use_count(), 1);
  f->release = true;
  EXPECT_TRUE(eventually([&] { return f->done.load(); }, 10s));
}

TEST(thread_pool_test, random_bursts_lose_no_task_and_no_parallelism) {
  uint64_t first = 1;
  int count = 40;
  if (auto* s = std::getenv("VIGIL_POOL_SEEDS"))
    count = std::atoi(s);
  if (auto* s = std::getenv("VIGIL_POOL_SEED")) {
    first = std::strtoull(s, nullptr, 10);
    count = 1;
  }
  for (uint64_t seed = first; seed < first + static_cast<uint64_t>(count);
       ++seed) {
    auto why = run_seed(seed);
    ASSERT_EQ(why, "") << "seed " << seed
                       << " (replay: VIGIL_POOL_SEED=" << seed << ")";
  }
}
