#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_set>
#include <vector>

#include "vigil/actors/detail/queue_gauge.hpp"

namespace vigil::detail {

/// A counter with one writer at a time (an actor, or the thread its
/// scheduler runs it on) and any number of readers: the writer adds with a
/// relaxed load and store, not a locked read-modify-write, so counting
/// costs what an ordinary increment does. Readers see a recent value.
struct owned_counter {
  std::atomic<uint64_t> v{0};
  void add(uint64_t n = 1) noexcept {
    v.store(v.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  uint64_t get() const noexcept {
    return v.load(std::memory_order_relaxed);
  }
};

/// Upper bounds of a histogram's buckets, in nanoseconds or items; the
/// last bucket (+Inf) is implicit.
template <size_t N>
using bounds = std::array<uint64_t, N>;

/// Handling and tool-call durations (ns): 100 µs .. 10 s, Prometheus's
/// default buckets with two finer ones below 5 ms.
inline constexpr bounds<16> duration_bounds = {
  100'000,     250'000,     500'000,       1'000'000,
  2'500'000,   5'000'000,   10'000'000,    25'000'000,
  50'000'000,  100'000'000, 250'000'000,   500'000'000,
  1'000'000'000, 2'500'000'000, 5'000'000'000, 10'000'000'000};

/// Items per commit: powers of two up to 4096.
inline constexpr bounds<13> batch_bounds = {1,   2,   4,    8,    16,   32,  64,
                                            128, 256, 512, 1024, 2048, 4096};

/// A histogram's counts as a reader sees them: per bucket (not cumulative;
/// the last one is +Inf), and the sum of the observations.
struct histogram_counts {
  std::vector<uint64_t> buckets;
  uint64_t sum = 0;
  void add(const histogram_counts& x) {
    if (buckets.size() < x.buckets.size())
      buckets.resize(x.buckets.size(), 0);
    for (size_t i = 0; i < x.buckets.size(); ++i)
      buckets[i] += x.buckets[i];
    sum += x.sum;
  }
};

/// A histogram with one writer at a time (see owned_counter); `Shared`
/// makes each observation a relaxed atomic add instead, for several
/// writers (a tool's callers).
template <size_t N, bool Shared = false>
struct histogram {
  std::array<std::atomic<uint64_t>, N + 1> counts{};
  std::atomic<uint64_t> sum{0};

  void observe(uint64_t x, const bounds<N>& b) noexcept {
    size_t i = 0;
    while (i < N && x > b[i])
      ++i;
    bump(counts[i], 1);
    bump(sum, x);
  }

  histogram_counts read() const {
    histogram_counts out;
    out.buckets.reserve(N + 1);
    for (auto& c : counts)
      out.buckets.push_back(c.load(std::memory_order_relaxed));
    out.sum = sum.load(std::memory_order_relaxed);
    return out;
  }

private:
  static void bump(std::atomic<uint64_t>& c, uint64_t n) noexcept {
    if constexpr (Shared)
      c.fetch_add(n, std::memory_order_relaxed);
    else
      c.store(c.load(std::memory_order_relaxed) + n,
              std::memory_order_relaxed);
  }
};

/// How an agent's handler ended with an envelope (cell::outcome's order).
enum class handling : uint8_t { replied, rejected, refused, failed };
inline constexpr size_t handling_kinds = 4;
inline constexpr std::array<const char*, handling_kinds> handling_names
  = {"replied", "rejected", "refused", "failed"};

/// One cell's counts, written by the cell alone. Lives in the cell; the
/// node's meter board reads it while the cell lives and folds it into its
/// agent type's totals when the cell goes.
struct cell_meter {
  std::array<owned_counter, handling_kinds> handled;
  histogram<duration_bounds.size()> seconds;
  void observe(handling h, std::chrono::nanoseconds d) noexcept {
    handled[static_cast<size_t>(h)].add();
    seconds.observe(static_cast<uint64_t>(d.count()), duration_bounds);
  }
};

/// One supervisor's counts, by its path; kept by the board for the node's
/// life, so that a supervisor restarted at the same path counts on.
struct sup_meter {
  std::atomic<uint64_t> restarts{0};
  std::atomic<uint64_t> escalations{0};
  /// Gauge: children running degraded now.
  std::atomic<int64_t> degraded{0};
};

/// What the board reports of one agent type.
struct type_totals {
  std::array<uint64_t, handling_kinds> handled{};
  histogram_counts seconds;
  uint64_t shed = 0;
  uint64_t queued = 0;  ///< gauge
  uint64_t running = 0; ///< gauge: live cells
};

/// The node's meters: every live cell's counts by agent type, the totals
/// of cells gone, and each supervisor's counts. Thread-safe; the lock is
/// taken when a cell comes and goes (with metrics on) and on a scrape,
/// never per envelope.
class meter_board {
public:
  /// Supervisor paths beyond this many count under "other": a path is a
  /// label, and a tree of dynamic supervisors must not make it unbounded.
  static constexpr size_t max_supervisors = 256;

  /// Metrics on: cells time their handlers and enroll. Set by the node
  /// before the tree starts.
  void enable() noexcept {
    on_ = true;
  }
  bool on() const noexcept {
    return on_;
  }

  /// A cell of `type` comes (its meter and queue live until `retire`).
  void enroll(const std::string* type, const cell_meter* m,
              const queue_gauge* q);
  /// The cell goes: its counts join its type's totals.
  void retire(const cell_meter* m);

  /// Every agent type's totals now (live cells and gone ones).
  std::map<std::string, type_totals> by_type() const;

  /// The meter of the supervisor at `path` (made on first use). Below a
  /// simple_one_for_one supervisor (`dynamic`) a child's id is not a
  /// label: its supervisors all count under PARENT/*.
  sup_meter& supervisor(const std::string& path);

  /// The supervisor at `path` is simple_one_for_one: its children's ids
  /// are dynamic.
  void dynamic(const std::string& path);
  /// Every supervisor's meter, by path.
  std::map<std::string, const sup_meter*> supervisors() const;

  /// Supervisors escalating now (between giving up and exiting): the
  /// node is not ready while any is.
  std::atomic<int64_t> escalating{0};

private:
  struct entry {
    const std::string* type;
    const queue_gauge* queue;
  };
  bool on_ = false;
  mutable std::mutex mtx_;
  std::map<const cell_meter*, entry> live_;
  std::map<std::string, type_totals> gone_;
  std::map<std::string, std::unique_ptr<sup_meter>> sups_;
  std::set<std::string> dynamic_;
};

} // namespace vigil::detail
