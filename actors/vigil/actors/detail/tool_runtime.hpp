#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <caf/actor_addr.hpp>
#include <caf/message.hpp>

#include "vigil/actors/detail/meters.hpp"
#include "vigil/actors/error.hpp"
#include "vigil/actors/tool.hpp"
#include "vigil/resilience/circuit_breaker.hpp"
#include "vigil/resilience/clock.hpp"
#include "vigil/resilience/token_bucket.hpp"

namespace vigil {

/// Runs one tool's executions: the tool's bulkhead. The runtime gives each
/// tool a `thread_pool` of `bulkhead.max_concurrent` threads; deterministic
/// tests inject one that runs tasks when told to. `submit` is called from
/// any thread and must not block.
class tool_executor {
public:
  virtual ~tool_executor() = default;
  virtual void submit(std::function<void()> task) = 0;
  /// Submits every task of `tasks` in order and empties it. The default
  /// submits them one by one; a pool takes them under one lock.
  virtual void submit_all(std::vector<std::function<void()>>& tasks) {
    for (auto& t : tasks)
      submit(std::move(t));
    tasks.clear();
  }
  /// Whether a task submitted now would start at once and cost its
  /// submitter no wake-up (a caller holding tasks back to submit them
  /// together then does not hold this one).
  virtual bool starved() const noexcept { return false; }
};

/// Makes a tool's executor (node_config::tool_executors); null: the
/// default thread pool.
using tool_executor_factory
  = std::function<std::shared_ptr<tool_executor>(const tool_decl&)>;

/// Counts of one tool's calls on a node, relaxed atomics (read any time).
struct tool_stats {
  /// Written by the executions' threads: a cache line of their own, apart
  /// from the callers' counters below.
  alignas(64) std::atomic<uint64_t> executions{0}; ///< the callable ran
  /// Abandoned attempts whose callable has not returned yet.
  std::atomic<uint64_t> abandoned_running{0};
  alignas(64) std::atomic<uint64_t> calls{0}; ///< call_tool calls admitted
  std::atomic<uint64_t> retries{0};
  std::atomic<uint64_t> succeeded_without_retry{0};
  std::atomic<uint64_t> succeeded_with_retry{0};
  std::atomic<uint64_t> failed_without_retry{0};
  std::atomic<uint64_t> failed_with_retry{0};
  /// Retries refused by the tool's budget or the request's attempt budget.
  std::atomic<uint64_t> budget_refusals{0};
  std::atomic<uint64_t> not_permitted{0}; ///< circuit_open
  std::atomic<uint64_t> bulkhead_full{0};
  std::atomic<uint64_t> rate_limited{0};
  std::atomic<uint64_t> cost_exceeded{0};
  std::atomic<uint64_t> deadline_exceeded{0};
  /// Attempts given up at their timeout while the callable still ran.
  std::atomic<uint64_t> abandoned{0};
  /// Results recorded under their idempotency keys (journal agents).
  std::atomic<uint64_t> recorded{0};
  /// Calls answered from a recorded result, without executing.
  std::atomic<uint64_t> replayed{0};
  /// Calls refused: their key's first call was still running (in_use).
  std::atomic<uint64_t> in_use_refusals{0};
  /// Calls refused: their key was recorded for another request.
  std::atomic<uint64_t> mismatches{0};
  /// Dispatches of effects (context::effect), each a call.
  std::atomic<uint64_t> effects{0};
  /// Calls of this tool that failed over to one of its fallbacks, and
  /// that its declared default answered.
  std::atomic<uint64_t> fallbacks{0};
  std::atomic<uint64_t> defaults{0};
  /// Dry runs started for this tool's calls; failed ones (the real call
  /// did not run).
  std::atomic<uint64_t> dry_runs{0};
  std::atomic<uint64_t> dry_run_failures{0};
  /// Calls that waited for a person's approval; rejected; expired.
  std::atomic<uint64_t> approvals_asked{0};
  std::atomic<uint64_t> approvals_rejected{0};
  std::atomic<uint64_t> approvals_expired{0};
  /// With metrics on: how long each attempt that returned took (ns).
  detail::histogram<detail::duration_bounds.size(), true> attempt_ns;

  static void bump(std::atomic<uint64_t>& c, uint64_t n = 1) noexcept {
    c.fetch_add(n, std::memory_order_relaxed);
  }
};

namespace detail {

/// Sends `msg` to `cell` (a tool's result waits for it). With `here`, on a
/// thread of a thread_pool that keeps cells, inside a task, with no other
/// task waiting for the pool and no other thread of it keeping one: an
/// idle cell is not handed to the scheduler but runs on this thread once
/// the task returns, for at most 4 messages (its callbacks, and the calls
/// they make, start on a thread already awake; a cell with more to do goes
/// back to the scheduler). `here` is false on CAF's deterministic test
/// scheduler, which must run every actor itself.
void ring(const caf::actor_addr& cell, caf::message msg, bool here);

/// A fixed pool of threads fed from one queue. Its destructor waits up to
/// `grace` for the tasks running; a task still running then (a hung tool
/// that ignores its cancellation) is left to finish on its own thread,
/// which keeps what it uses alive. One idle thread at a time waits up to
/// 50 µs for the next task before it sleeps (a wake-up costs a system call
/// and a context switch, more than a short call), as `idle` says: `spin`
/// on the core (for short, CPU-bound calls), `yield` it to whatever else
/// is runnable meanwhile (for calls that wait on I/O, which needs the
/// core), or not at all (`sleep`); but none spins once `busy_at` threads
/// are busy (running a task or a cell; 0: as many as the machine's cores),
/// where a spinner only takes a core from the work or the I/O under way.
/// With
/// `keeps_cells`, a cell rung from one of its tasks may run on that thread
/// (see ring), one such at a time, and the pool has one thread more than
/// `threads`, so that `threads` remain for the tasks whatever the agent's
/// code does meanwhile; from `busy_at` on, a task that such a cell submits
/// waits for its thread instead of waking another: that thread hands the
/// cell back to the scheduler once the message that submitted it is
/// handled, and takes the task.
class thread_pool final : public tool_executor {
public:
  enum class idle_mode : uint8_t { spin, yield, sleep };

  thread_pool(size_t threads, std::string name,
              std::chrono::milliseconds grace = std::chrono::seconds{5},
              idle_mode idle = idle_mode::spin, bool keeps_cells = false,
              size_t busy_at = 0);
  ~thread_pool() override;
  void submit(std::function<void()> task) override;
  void submit_all(std::vector<std::function<void()>>& tasks) override;
  bool starved() const noexcept override;
  /// How many times a thread was woken for a task so far.
  uint64_t wake_ups() const noexcept;

private:
  struct shared;
  std::shared_ptr<shared> sh_;
  std::vector<std::thread> threads_;
  std::chrono::milliseconds grace_;
};

/// What a tool's running executions touch after they return: the bulkhead
/// count, the counters, and the gate through which they tell their caller
/// (closed when the tool goes, so that a hung call returning after the
/// node stopped tells nobody). Shared by the tool and its executions, so
/// that an execution that outlives the node touches nothing freed.
struct tool_shared {
  /// The tool's callable.
  tool_fn fn;
  uint32_t capacity = 0;
  alignas(64) std::atomic<uint32_t> in_use{0};
  tool_stats stats;
  /// The gate, without a lock that every execution would contend for: an
  /// execution enters (`users`), tells its caller only while `open`, and
  /// leaves; closing waits until no execution is inside. Both sides use
  /// sequentially consistent operations, so an execution either entered
  /// before the close (and is waited for) or sees it closed.
  alignas(64) std::atomic<uint32_t> users{0};
  std::atomic<bool> open{true};

  /// Runs `f` if the gate is open; true if it ran.
  template <class F>
  bool through_gate(F&& f) {
    users.fetch_add(1);
    bool ran = open.load();
    if (ran)
      f();
    users.fetch_sub(1);
    return ran;
  }

  /// Closes the gate and waits for the executions inside it.
  void close_gate() {
    open.store(false);
    while (users.load() != 0)
      std::this_thread::yield();
  }

  /// The idempotency keys of this tool's calls running now, from every
  /// agent of the node (see call_key): a key claimed twice is `in_use`.
  bool claim_key(const std::string& key) {
    std::lock_guard<std::mutex> guard{keys_mtx};
    return running_keys.insert(key).second;
  }
  void release_key(const std::string& key) noexcept {
    std::lock_guard<std::mutex> guard{keys_mtx};
    running_keys.erase(key);
  }
  std::mutex keys_mtx;
  std::unordered_set<std::string> running_keys;
};

/// A keyed call's idempotency key: binary (db::tool_results) and as the
/// tool sees it. Held by the call and by each of its executions; a key
/// claimed in its tool (`sh` set) is released by the last of them, so that
/// a repeat is `in_use` until no execution of the first one runs.
struct call_key {
  std::string key;
  std::string text;
  /// A recorded call's (a journal agent's): the fingerprint of its request.
  std::string fingerprint;
  std::shared_ptr<tool_shared> sh;
  /// An attempt under this key started (set by the cell that owns the
  /// call, on its thread): an effect's dispatch that ends in a refusal
  /// after one ran is a failed dispatch, not one that reached nobody.
  bool attempted = false;
  call_key() = default;
  call_key(const call_key&) = delete;
  call_key& operator=(const call_key&) = delete;
  ~call_key() {
    if (sh)
      sh->release_key(key);
  }
};

/// A call's place in its tool's bulkhead, held by the call and by each of
/// its executions still running; the last one gives it back.
struct tool_ticket {
  explicit tool_ticket(std::shared_ptr<tool_shared> sh) : sh(std::move(sh)) {
    // nop
  }
  ~tool_ticket() {
    sh->in_use.fetch_sub(1, std::memory_order_relaxed);
  }
  tool_ticket(const tool_ticket&) = delete;
  tool_ticket& operator=(const tool_ticket&) = delete;
  std::shared_ptr<tool_shared> sh;
};

/// What one call attempt shares between the calling cell and the thread
/// that executes it. `phase` decides who ends the attempt: the execution
/// (running -> finished) or the caller's attempt timeout (running ->
/// abandoned); whoever loses the race does nothing.
struct tool_inbox;
class tool_runtime;

struct tool_attempt {
  enum : int { running, finished, abandoned };
  std::atomic<int> phase{running};
  std::atomic<bool> cancelled{false};
  tool_outcome result;
  resilience::duration elapsed{0};
  resilience::circuit_breaker::permit permit;
  uint32_t number = 1;
  /// The call it belongs to, in its cell, and its tool (used by the
  /// execution only through the tool's gate).
  uint64_t call = 0;
  tool_runtime* tool = nullptr;
  /// What its execution needs, released with the attempt: if it outlives
  /// its cell (or the node), it touches only these.
  std::shared_ptr<tool_ticket> ticket;
  std::shared_ptr<const google::protobuf::Message> request;
  std::shared_ptr<tool_inbox> inbox;
  /// The call's idempotency key (null: the call has none).
  std::shared_ptr<const call_key> key;
  resilience::time_point deadline;
  /// Whether the execution is timed (only for a slow-call rule).
  bool timed = false;
  /// While in its cell's inbox (cell_tools.hpp): the next one, and the
  /// reference that keeps it alive until the cell takes it.
  tool_attempt* next = nullptr;
  std::shared_ptr<tool_attempt> keep;
};

/// One declared tool on one node, shared by every agent that calls it:
/// its implementation, its breaker, its retry budget, its rate and cost
/// limiters (behind one mutex, held for a few arithmetic steps), its
/// bulkhead count (an atomic) and its executor. Thread-safe; owned by the
/// runtime.
class tool_runtime {
public:
  /// `clk` is kept alive by the tool (its mechanisms read it).
  tool_runtime(tool_decl decl, tool_type impl,
               std::shared_ptr<const resilience::clock> clk,
               std::shared_ptr<tool_executor> ex);
  ~tool_runtime();

  const tool_decl& decl() const noexcept {
    return decl_;
  }
  const tool_type& impl() const noexcept {
    return impl_;
  }
  tool_executor& executor() noexcept {
    return *ex_;
  }

  // -- bulkhead ---------------------------------------------------------------

  /// Admits one call if fewer than max_concurrent + queue are in the
  /// bulkhead: its ticket holds the place; null if the bulkhead is full.
  [[nodiscard]] std::shared_ptr<tool_ticket> try_admit();
  uint32_t in_use() const noexcept {
    return sh_->in_use.load(std::memory_order_relaxed);
  }
  const std::shared_ptr<tool_shared>& shared() const noexcept {
    return sh_;
  }
  tool_stats& stats() noexcept {
    return sh_->stats;
  }

  // -- one attempt ------------------------------------------------------------

  /// May an attempt go now? Asks the breaker, then the rate limiter, then
  /// the node's cost budget. errc::none (with the breaker's permit in `p`)
  /// or the code that refuses it. A `first` attempt that goes deposits in
  /// the retry budget.
  errc admit_attempt(resilience::circuit_breaker::permit& p, bool first);

  /// The attempt made under `p` ended: `failure` says what the breaker
  /// counts, `ignored` that it says nothing about the dependency; `cost`
  /// is charged to the node's budget.
  void on_outcome(const resilience::circuit_breaker::permit& p, bool failure,
                  bool ignored, bool slow, double cost);

  /// An execution returned that no caller takes (its call ended, or its
  /// cell did): its outcome still tells the breaker about the dependency
  /// (and ends a probe) and is charged to the node's cost budget. One
  /// given up earlier (abandoned) only pays its cost: the breaker heard.
  void on_returned(const tool_attempt& a);

  /// Draws a retry from the tool's shared budget (false: spent).
  [[nodiscard]] bool try_retry();

  // -- breaker state ----------------------------------------------------------

  struct view {
    resilience::breaker_state state = resilience::breaker_state::closed;
    uint32_t consecutive_failures = 0;
    double failure_rate = 0.0;
    resilience::duration retry_after{0};
    uint64_t openings = 0;
    double budget_balance = 0.0;
    double cost_available = -1.0; ///< -1: no cost limit
    uint32_t in_use = 0;
  };
  view look();

  /// Called (under the tool's lock, so calls arrive in order) whenever
  /// the breaker opened or closed; the node keeps the snapshot in LMDB.
  void on_breaker_change(std::function<void(const resilience::breaker_snapshot&)> f) {
    persist_ = std::move(f);
  }

  /// Takes a breaker state kept by an earlier run of the node.
  void restore(const resilience::breaker_snapshot& s);

private:
  void changed(resilience::breaker_state before, uint64_t openings_before);

  tool_decl decl_;
  tool_type impl_;
  std::shared_ptr<const resilience::clock> clock_;
  std::shared_ptr<tool_shared> sh_;
  std::shared_ptr<tool_executor> ex_;
  std::mutex mtx_;
  resilience::circuit_breaker breaker_;
  resilience::retry_budget budget_;
  std::unique_ptr<resilience::rate_limiter> rate_;
  std::unique_ptr<resilience::token_bucket> cost_;
  std::function<void(const resilience::breaker_snapshot&)> persist_;
};

/// The attempt budgets of requests on this node: how many retries each
/// request tree spent (every layer draws from one account), so that 3
/// layers of 3 attempts make at most 3 real calls, not 27. Bounded: the
/// oldest accounts are forgotten beyond `cap`. Thread-safe.
class budget_ledger {
public:
  explicit budget_ledger(size_t cap = size_t{1} << 16) : cap_(cap) {
    // nop
  }

  /// Draws one retry from `account`, whose request allows `attempts` in
  /// all (the first is free); false when they are spent.
  [[nodiscard]] bool take(uint64_t account, uint32_t attempts);

  /// Retries drawn from `account` so far.
  uint32_t spent(uint64_t account) const;

private:
  mutable std::mutex mtx_;
  size_t cap_;
  std::unordered_map<uint64_t, uint32_t> spent_;
  std::deque<uint64_t> order_;
};

} // namespace detail
} // namespace vigil
