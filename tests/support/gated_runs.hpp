#pragma once

// A tool's executions held by the test: the i-th execution (from 1) waits
// until gate i is open (bounded by 20 s), so that a test decides when each
// call returns (tests/node/review20_test.cpp, review20b_test.cpp).

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>

namespace vigil::test {

struct gated_runs {
  std::mutex mtx;
  std::condition_variable cv;
  std::map<int, bool> open;
  int started = 0;
  std::atomic<int> delivered{0};       // answers given in agents' callbacks
  std::atomic<bool> throw_once{false}; // the next result callback throws

  /// The one instance the tools and agents of a test binary share.
  static gated_runs& get() {
    static gated_runs x;
    return x;
  }
  void reset() {
    std::lock_guard<std::mutex> g{mtx};
    open.clear();
    started = 0;
    delivered = 0;
    throw_once = false;
  }
  /// Opens gate i: the i-th execution returns (or will, once begun).
  void release(int i) {
    std::lock_guard<std::mutex> g{mtx};
    open[i] = true;
    cv.notify_all();
  }
  /// How many executions have begun.
  int begun() {
    std::lock_guard<std::mutex> g{mtx};
    return started;
  }
  /// Called by the tool: waits for this execution's gate.
  void run() {
    std::unique_lock<std::mutex> g{mtx};
    int i = ++started;
    cv.wait_for(g, std::chrono::seconds{20}, [&] { return open[i]; });
  }
};

} // namespace vigil::test
