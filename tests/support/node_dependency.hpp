// A dependency for tool calls on a real node (tool_node_test and its
// review): the tool "dep" (Ping -> Pong) with knobs, and a tree of one
// tool_caller that calls it.
#pragma once

#include <atomic>
#include <chrono>
#include <thread>

#include "support/tool_fixture.hpp"
#include "vigil/node/node.hpp"

namespace vigil::test {

/// Takes `delay_ms` (returning early once its call is cancelled, or, with
/// `ignore_cancel`, once `release` is set), fails while `down`, and counts
/// its executions, those running, the most that ran at once, the
/// cancellations it saw and the returns.
struct dependency {
  std::atomic<int> delay_ms{0};
  std::atomic<bool> down{false};
  std::atomic<bool> ignore_cancel{false};
  std::atomic<bool> release{false};
  std::atomic<int> executions{0};
  std::atomic<int> running{0};
  std::atomic<int> max_running{0};
  std::atomic<int> cancelled_seen{0};
  std::atomic<int> returned{0};

  tool_result<Pong> call(const Ping& req, tool_call& c) {
    ++executions;
    auto now = ++running;
    auto seen = max_running.load();
    while (now > seen && !max_running.compare_exchange_weak(seen, now)) {
    }
    auto until = std::chrono::steady_clock::now()
                 + std::chrono::milliseconds{delay_ms.load()};
    while (std::chrono::steady_clock::now() < until) {
      if (ignore_cancel ? release.load() : c.cancelled()) {
        if (!ignore_cancel)
          ++cancelled_seen;
        break;
      }
      // A blocking call, as a tool's is.
      std::this_thread::sleep_for(std::chrono::milliseconds{1});
    }
    --running;
    ++returned;
    if (down)
      return tool_error::transient("503 from the dependency");
    Pong p;
    p.set_n(req.n());
    return p;
  }

  static dependency& get() {
    static dependency d;
    return d;
  }
  void reset() {
    delay_ms = 0;
    down = false;
    ignore_cancel = false;
    release = false;
    executions = 0;
    running = 0;
    max_running = 0;
    cancelled_seen = 0;
    returned = 0;
  }
};

/// tool_caller and the tool "dep" (dependency::get()).
inline registry dependency_types() {
  registry r;
  r.add<tool_caller>("tool_caller");
  r.add_tool<Ping, Pong>("dep", [](const Ping& req, tool_call& c) {
    return dependency::get().call(req, c);
  });
  return r;
}

/// One tool_caller "c" calling "dep" (intensity 1000).
inline supervisor_spec dependency_caller_tree() {
  child_spec c;
  c.id = "c";
  c.agent = "tool_caller";
  c.params = {{"tool", "dep"}};
  supervisor_spec spec;
  spec.flags.intensity = 1000;
  spec.children.push_back(c);
  return spec;
}

} // namespace vigil::test
