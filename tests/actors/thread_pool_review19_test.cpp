// Adversarial review of the tool pool's wake-ups (08bc04d): a spinning
// thread, not the submitter, wakes the others. Seeded (VIGIL_SEED=<n>
// replays one).

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "support/eventually.hpp"
#include "support/tool_chains.hpp"
#include "support/tool_fixture.hpp"
#include "vigil/node/node.hpp"

using namespace vigil;
using namespace vigil::test;
using namespace std::chrono_literals;

// -- thread_pool: wake-ups with a spinner -------------------------------------

namespace {

/// N tasks that must all be running at once: each waits (up to 2 s) for
/// the others.
struct barrier_group {
  explicit barrier_group(int n) : n(n) {
  }
  int n;
  std::mutex m;
  std::condition_variable cv;
  int arrived = 0;
  std::atomic<int> finished{0};
  std::atomic<int> timed_out{0};
  void task() {
    std::unique_lock<std::mutex> g{m};
    ++arrived;
    cv.notify_all();
    if (!cv.wait_for(g, 2s, [&] { return arrived >= n; }))
      ++timed_out;
    g.unlock();
    ++finished;
  }
};

void busy_wait(std::chrono::microseconds d) {
  auto until = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < until) {
  }
}

} // namespace

// Groups of N tasks on an N-thread pool, submitted in random ways (one by
// one with gaps around the 50 us spin, together, as a cell's drain does:
// at once while starved() else held and then submitted together, or from
// inside one of the group's tasks), after random idle gaps: every group
// must run all at once, and every task must run.
TEST(tool_review19_pool_test, groups_as_large_as_the_pool_run_at_once) {
  auto seed = seed_for("groups_as_large_as_the_pool_run_at_once");
  std::mt19937_64 rng{seed};
  auto t_end = std::chrono::steady_clock::now() + 12s;
  int rounds = 0;
  for (int pool_i = 0; pool_i < 6 && std::chrono::steady_clock::now() < t_end;
       ++pool_i) {
    int n = 2 + static_cast<int>(rng() % 3);
    detail::thread_pool pool{static_cast<size_t>(n), "grp"};
    for (int r = 0; r < 150 && std::chrono::steady_clock::now() < t_end;
         ++r, ++rounds) {
      auto gr = std::make_shared<barrier_group>(n);
      int how = static_cast<int>(rng() % 4);
      auto gap = std::chrono::microseconds{rng() % 120};
      switch (how) {
        case 0: // one by one, with gaps
          for (int i = 0; i < n; ++i) {
            pool.submit([gr] { gr->task(); });
            busy_wait(std::chrono::microseconds{rng() % 80});
          }
          break;
        case 1: { // together
          std::vector<std::function<void()>> b;
          for (int i = 0; i < n; ++i)
            b.emplace_back([gr] { gr->task(); });
          pool.submit_all(b);
          break;
        }
        case 2: { // as a drain: at once while starved, else held
          std::vector<std::function<void()>> held;
          for (int i = 0; i < n; ++i) {
            if (pool.starved()) {
              if (!held.empty())
                pool.submit_all(held);
              pool.submit([gr] { gr->task(); });
            } else {
              held.emplace_back([gr] { gr->task(); });
            }
            busy_wait(std::chrono::microseconds{rng() % 30});
          }
          pool.submit_all(held);
          break;
        }
        case 3: { // from inside the group's first task
          bool all = rng() % 2;
          pool.submit([gr, &pool, n, all] {
            if (all) {
              std::vector<std::function<void()>> b;
              for (int i = 1; i < n; ++i)
                b.emplace_back([gr] { gr->task(); });
              pool.submit_all(b);
            } else {
              for (int i = 1; i < n; ++i)
                pool.submit([gr] { gr->task(); });
            }
            gr->task();
          });
          break;
        }
      }
      ASSERT_TRUE(eventually([&] { return gr->finished.load() == n; }, 6s))
        << "seed " << seed << " round " << rounds << " how " << how << " n "
        << n << ": " << gr->finished.load() << " finished (a task left in "
        << "the queue)";
      ASSERT_EQ(gr->timed_out.load(), 0)
        << "seed " << seed << " round " << rounds << " how " << how << " n "
        << n << ": the group did not run at once";
      busy_wait(gap);
      if (rng() % 8 == 0)
        std::this_thread::sleep_for(std::chrono::microseconds{rng() % 400});
    }
  }
  std::cout << rounds << " rounds" << std::endl;
}
