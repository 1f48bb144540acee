#pragma once

// What node/held_envelope_fuzz_test.cpp sees of one seed's run, from the
// threads that see it: the tool's executions (its pool's threads), the
// agent's handlers and callbacks (the agent's), the tool records the
// writer commits (the writer's, through the store's apply hook), and the
// stop point the test waits for. One instance, behind one mutex.

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "support/held_script.hpp"
#include "vigil/actors/detail/tool_record.hpp"
#include "vigil/persistence/store.hpp"

namespace vigil::test::held {

/// What the tool, the agents and the writer's hook saw, for one seed.
struct world {
  struct execution {
    int64_t n;
    std::string key;
    int run;
    bool transient;
    bool after_record; ///< its record was committed (or being) already
  };

  std::mutex mtx;
  const script* s = nullptr;
  int run = 0;  ///< the node's number
  int life = 0; ///< the agent's: a new one at each node and each restart
  std::vector<execution> execs;
  std::map<int64_t, int> count; ///< executions by request
  std::map<int64_t, int> callbacks; ///< callbacks run, by request
  std::set<std::string> recorded; ///< text keys the writer committed
  /// The keys of the hook's executions, by effect tag.
  std::map<int64_t, std::vector<std::string>> dispatched;
  std::vector<event> events;
  std::vector<std::string> problems;
  /// The stop point armed: its call, and whether its execution is held
  /// (or the stop waits for its callback).
  int64_t trigger = 0;
  stop_kind kind = stop_kind::held;
  std::atomic<bool> triggered{false};
  /// Held executions: the last one's number, and up to which they are
  /// released.
  int holds = 0;
  std::atomic<int> released{0};
  std::atomic<int> in_flight{0};

  static world& get() {
    static world w;
    return w;
  }
  void reset(const script* run_script) {
    std::lock_guard<std::mutex> guard{mtx};
    s = run_script;
    run = 0;
    life = 0;
    execs.clear();
    count.clear();
    callbacks.clear();
    recorded.clear();
    dispatched.clear();
    events.clear();
    problems.clear();
    trigger = 0;
    triggered = false;
    holds = 0;
    released = 0;
  }
  void problem(std::string what) {
    std::lock_guard<std::mutex> guard{mtx};
    if (problems.size() < 20)
      problems.push_back(std::move(what));
  }
  void log(int64_t k, int call) {
    std::lock_guard<std::mutex> guard{mtx};
    events.push_back(event{life, k, call});
    if (call < 0)
      return;
    auto n = s->env(k).calls[call].n;
    ++callbacks[n];
    if (n == trigger && kind == stop_kind::after_callback) {
      trigger = 0;
      triggered = true;
    }
  }
  /// Arms a stop at `p`; false if it is passed already (the node stops at
  /// once).
  bool arm(const stop_point& p) {
    std::lock_guard<std::mutex> guard{mtx};
    triggered = false;
    bool after = p.kind == stop_kind::after_callback;
    if ((after ? callbacks : count)[p.n] > 0)
      return false;
    trigger = p.n;
    kind = p.kind;
    return true;
  }
  /// Releases the executions held so far.
  void disarm() {
    std::lock_guard<std::mutex> guard{mtx};
    trigger = 0;
    released = holds;
  }

  /// What one execution does.
  struct plan {
    const call_node* c = nullptr;
    bool transient = false;
    int hold = 0; ///< held until `released` reaches it
  };
  plan begin(int64_t n, const std::string& key) {
    std::lock_guard<std::mutex> guard{mtx};
    plan p;
    p.c = s->find(n);
    int before = count[n]++;
    p.transient = p.c != nullptr && before < p.c->transients;
    bool after = recorded.count(key) != 0;
    execs.push_back(execution{n, key, run, p.transient, after});
    if (n == trigger && kind != stop_kind::after_callback) {
      if (kind == stop_kind::held)
        p.hold = ++holds;
      trigger = 0;
      triggered = true;
    }
    return p;
  }
  /// The writer is about to commit these tool records.
  void committing(write_item* const* items, size_t k) {
    std::lock_guard<std::mutex> guard{mtx};
    for (size_t i = 0; i < k; ++i)
      for (auto& m : items[i]->muts)
        if (m.where == db::tool_results && m.what == mutation::op::put)
          recorded.insert(text_key(m.key));
  }
  static std::string text_key(const std::string& bin) {
    std::string_view path, index;
    uint64_t origin = 0, id = 0;
    if (!split_tool_result_key(bin, path, origin, id, index))
      return "(malformed)";
    return vigil::detail::tool_key_text(path, origin, id, index);
  }
};

} // namespace vigil::test::held
