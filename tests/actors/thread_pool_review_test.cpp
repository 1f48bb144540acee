// Adversarial review of the tool thread pool's wake-ups (cde7778): tasks
// submitted from inside tasks that wait for them, right after a thread
// was woken (still counted as sleeping) or while another spins, and the
// pool destroyed while a thread spins. Real threads, bounded waits.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>

#include "support/eventually.hpp"
#include "vigil/actors/detail/tool_runtime.hpp"

using namespace vigil;
using namespace vigil::test;
using namespace std::chrono_literals;

namespace {

/// A latch with a bounded wait.
struct latch {
  std::mutex m;
  std::condition_variable cv;
  bool set = false;
  void open() {
    std::lock_guard<std::mutex> g{m};
    set = true;
    cv.notify_all();
  }
  bool wait(std::chrono::milliseconds d) {
    std::unique_lock<std::mutex> g{m};
    return cv.wait_for(g, d, [&] { return set; });
  }
};

} // namespace

// A task submits another and waits for it (a pool of 2: the second must
// get the other thread, woken or spinning), in chains of growing gaps so
// that the idle thread is caught spinning, just asleep, or just woken.
TEST(thread_pool_review_test, a_task_that_waits_for_the_task_it_submits_completes) {
  detail::thread_pool pool{2, "chain"};
  for (int round = 0; round < 3000; ++round) {
    auto inner = std::make_shared<latch>();
    auto outer = std::make_shared<latch>();
    auto ok = std::make_shared<std::atomic<bool>>(false);
    pool.submit([&pool, inner, outer, ok] {
      pool.submit([inner] { inner->open(); });
      ok->store(inner->wait(2s));
      outer->open();
    });
    ASSERT_TRUE(outer->wait(5s)) << "round " << round;
    ASSERT_TRUE(ok->load()) << "round " << round
                            << ": the inner task did not run while the "
                               "outer one waited (one thread idle)";
    // Gaps around the 50 us spin.
    if (round % 3 == 1) {
      auto until = std::chrono::steady_clock::now()
                   + std::chrono::microseconds{round % 97};
      while (std::chrono::steady_clock::now() < until) {
      }
    }
  }
}

// Pools destroyed right after their last task, while an idle thread spins
// (or is about to): the destructor must not hang nor lose the join.
TEST(thread_pool_review_test, a_pool_destroyed_while_a_thread_spins_ends) {
  for (int i = 0; i < 300; ++i) {
    std::atomic<int> ran{0};
    auto t0 = std::chrono::steady_clock::now();
    {
      detail::thread_pool pool{3, "spin", 2000ms};
      for (int k = 0; k < 4; ++k)
        pool.submit([&ran] { ++ran; });
      ASSERT_TRUE(eventually([&] { return ran.load() == 4; }, 5s)) << i;
    }
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 1500ms) << i;
  }
}

// -- spinning or not ----------------------------------------------------------

namespace {

/// Runs `rounds` tasks one after the other (each submitted once the last
/// ran, so that the pool goes idle in between) and reports whether a
/// thread was ever seen spinning idle (`starved`).
bool seen_spinning(detail::thread_pool& pool, int rounds) {
  bool seen = false;
  for (int i = 0; i < rounds && !seen; ++i) {
    std::atomic<bool> ran{false};
    pool.submit([&] { ran = true; });
    // Watched closely (a thread that spins does so for up to 50 µs after
    // its task), within a bound.
    auto limit = std::chrono::steady_clock::now() + 5s;
    while (!ran && std::chrono::steady_clock::now() < limit)
      seen = seen || pool.starved();
    EXPECT_TRUE(ran.load());
    auto until = std::chrono::steady_clock::now() + 200us;
    while (!seen && std::chrono::steady_clock::now() < until)
      seen = pool.starved();
  }
  return seen;
}

} // namespace

TEST(thread_pool_review_test, idle_threads_wait_as_their_pool_says) {
  using mode = detail::thread_pool::idle_mode;
  detail::thread_pool sleeper{2, "sleep", 2000ms, mode::sleep};
  EXPECT_FALSE(seen_spinning(sleeper, 200));
  detail::thread_pool spinner{2, "spin", 2000ms, mode::spin};
  EXPECT_TRUE(seen_spinning(spinner, 200));
  detail::thread_pool yielder{2, "yield", 2000ms, mode::yield};
  EXPECT_TRUE(seen_spinning(yielder, 200));
}
