// The cascade example's services (README.md, "The cascade at 100
// instances"): a records service and a webhook receiver, each a real
// cpp-httplib server on 127.0.0.1 that stores what it is sent and fails
// a share of the requests as drawn from the seed, and the naive run's task
// table. Both runs use the same servers; `reset` forgets the first run
// before the second, so that the second meets the same faults.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "support/example_support.hpp"

namespace cascade {

/// The faults of the records service and the webhook receiver, each drawn
/// per request from (seed, service, document, k-th request about it): the
/// same in both runs, whatever the order of the requests. The task table
/// has none.
struct fault_model {
  double refused = 0.04;       ///< 503 before storing anything
  double answer_lost = 0.03;   ///< stored, then 503: the caller cannot tell
  double answer_late = 0.03;   ///< stored, then answered after `late_ms`
  int late_ms[2] = {300, 500}; ///< past the callers' 200 ms attempt timeout
  int records_ms[2] = {5, 15};
  int hooks_ms[2] = {3, 10};
  int tasks_ms[2] = {1, 3};
};

/// What the records service (or the webhook receiver) saw in one run.
struct sink_figures {
  int64_t requests = 0;
  int64_t stored = 0;   ///< records inserted (webhooks delivered)
  int64_t distinct = 0; ///< distinct documents among them
  int64_t by_key = 0;   ///< repeats answered from their Idempotency-Key
  int64_t duplicates() const {
    return stored - distinct;
  }
};

/// What the naive run's task table saw.
struct table_figures {
  int64_t requests = 0;
  int64_t claims = 0;
  int64_t claimed_twice = 0; ///< tasks claimed more than once
  int64_t done = 0;          ///< tasks marked done at least once
  int64_t in_progress = 0;   ///< tasks left in progress at the end
};

/// "DOC-0001" for i = 0.
std::string doc_id(size_t i);

/// The three services, started on free ports by the constructor and
/// stopped by the destructor. Thread-safe.
class services {
public:
  /// `documents`: the task table's tasks, DOC-0001 on. `threads`: each
  /// server's threads (a kept-alive connection holds one).
  services(uint64_t seed, fault_model f, size_t documents, size_t threads);
  ~services();
  services(const services&) = delete;
  services& operator=(const services&) = delete;

  /// "127.0.0.1:PORT" of each: records, hooks, tasks.
  std::map<std::string, std::string> addresses() const;
  sink_figures records() const;
  sink_figures hooks() const;
  table_figures tasks() const;

  /// Forgets every request, record, delivery and key, and sets every task
  /// pending again: the next run starts from nothing and meets the same
  /// faults. Call it between runs (a late answer still sleeping changes
  /// nothing: a handler stores before it sleeps).
  void reset();

private:
  /// The records service or the webhook receiver.
  struct sink {
    std::string name;
    const int* ms = nullptr;
    std::atomic<int64_t> requests{0};
    mutable std::mutex mtx;
    std::map<std::string, int64_t> seen;    ///< requests per document
    std::map<std::string, int64_t> stored;  ///< stored per document
    std::map<std::string, std::string> keys; ///< key -> its first answer
    int64_t total = 0;
    int64_t by_key = 0;
  };
  struct task {
    std::string id;
    enum { pending, in_progress, done } status = pending;
    int64_t claims = 0;
    bool done_once = false;
  };

  void serve_sink(sink& s);
  void serve_tasks();
  sink_figures figures(const sink& s) const;

  uint64_t seed_;
  fault_model f_;
  size_t threads_;
  sink records_;
  sink hooks_;
  std::atomic<int64_t> task_requests_{0};
  mutable std::mutex tasks_mtx_;
  std::vector<task> tasks_;
  std::map<std::string, size_t> task_index_;
  size_t oldest_pending_ = 0;
  /// Last: stopped first, while what its handlers use still exists.
  examples::local_services servers_;
};

} // namespace cascade
