#pragma once

// A cell's tool calls in flight (see cell_tools.cpp): only a cell that
// called a tool pays for this.

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <queue>
#include <vector>
#include <memory>
#include <new>
#include <string>
#include <thread>
#include <utility>

#include <caf/actor_addr.hpp>
#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <google/protobuf/message.h>

#include "vigil/actors/detail/actor_clock.hpp"
#include "vigil/actors/detail/tool_record.hpp"
#include "vigil/actors/detail/tool_runtime.hpp"
#include "vigil/actors/tool.hpp"
#include "vigil/resilience/backoff.hpp"
#include "vigil/resilience/token_bucket.hpp"

namespace vigil::detail {

/// (tool_done): executions returned; their attempts wait in the cell's
/// inbox. Sent by the one that found the inbox empty, so that a cell
/// whose calls return faster than it runs takes many per message.
using tool_done_atom = caf::atom_constant<caf::atom("vtooldone")>;
/// (tool_timer, seq): the cell's one timer for its calls, armed for the
/// earliest of their deadlines, attempt timeouts and retries (one CAF
/// timer per call would cost a lock, a wake-up of CAF's clock thread and
/// an allocation per call, for timers that almost never fire).
using tool_timer_atom = caf::atom_constant<caf::atom("vtooltime")>;
/// (tool_replay): answers found recorded wait in cell_tools::replays, so
/// that their callbacks run after the handler that called, as a live
/// call's would.
using tool_replay_atom = caf::atom_constant<caf::atom("vtoolrepl")>;
/// (tool_park): the calls waiting for their keys (cell_tools::parked) try
/// again, every 5 ms.
using tool_park_atom = caf::atom_constant<caf::atom("vtoolpark")>;
/// (approval_due, key): the approval timeout of the call waiting under
/// `key` (cell_tools::approving) passed.
using approval_due_atom = caf::atom_constant<caf::atom("vapprdue")>;

/// The attempts whose executions returned, for their cell to take: a
/// lock-free stack (executions push, the cell takes them all at once).
/// Shared by the cell and its executions, so that one returning after the
/// cell went pushes into memory still there; what is left in it when the
/// last one goes is released.
struct tool_inbox {
  tool_inbox(caf::actor_addr cell, std::string caller, bool here)
    : cell(std::move(cell)), caller(std::move(caller)), here(here) {
    // nop
  }
  ~tool_inbox() {
    release(close());
  }
  tool_inbox(const tool_inbox&) = delete;
  tool_inbox& operator=(const tool_inbox&) = delete;

  enum class pushed { first, queued, closed };

  /// Adds `a`, which its `keep` holds: `first` if the inbox was empty (the
  /// caller then rings the cell), `closed` if its cell ended (`a` was not
  /// added: the caller reports its outcome itself).
  pushed push(tool_attempt* a) noexcept {
    auto* h = head.load(std::memory_order_relaxed);
    do {
      if (h == closed_mark())
        return pushed::closed;
      a->next = h;
    } while (!head.compare_exchange_weak(h, a, std::memory_order_release,
                                         std::memory_order_relaxed));
    return h == nullptr ? pushed::first : pushed::queued;
  }

  /// Takes every attempt pushed so far, oldest first (linked by `next`).
  tool_attempt* take() noexcept {
    auto* h = head.load(std::memory_order_relaxed);
    do {
      if (h == nullptr || h == closed_mark())
        return nullptr;
    } while (!head.compare_exchange_weak(h, nullptr, std::memory_order_acquire,
                                         std::memory_order_relaxed));
    return reversed(h);
  }

  /// Takes every attempt pushed so far and refuses any more. Returns once
  /// every execution that pushed before is done with the inbox (`leave`),
  /// so that none rings a cell that is gone.
  tool_attempt* close() noexcept {
    auto* h = head.exchange(closed_mark(), std::memory_order_acq_rel);
    while (pushing.load(std::memory_order_acquire) != 0)
      std::this_thread::yield();
    return h == closed_mark() ? nullptr : reversed(h);
  }

  /// An execution enters before it pushes and leaves when it no longer
  /// uses the inbox: its attempt, which holds the inbox, may be the cell's
  /// (and gone) as soon as it is pushed. Between the two it does not block.
  void enter() noexcept {
    pushing.fetch_add(1, std::memory_order_relaxed); // published by push
  }
  void leave() noexcept {
    pushing.fetch_sub(1, std::memory_order_release);
  }

  /// Drops the references of a list taken.
  static void release(tool_attempt* a) noexcept {
    while (a != nullptr) {
      auto* n = std::exchange(a->next, nullptr);
      auto keep = std::move(a->keep); // may free a
      a = n;
    }
  }

  const caf::actor_addr cell;
  /// The cell's path (tool_call::caller).
  const std::string caller;
  /// Whether the thread that rings the cell may run it (see ring).
  const bool here;
  std::atomic<tool_attempt*> head{nullptr};
  /// Executions between enter and leave (on head's cache line, which a
  /// push takes anyway).
  std::atomic<uint32_t> pushing{0};

private:
  static tool_attempt* closed_mark() noexcept {
    static tool_attempt mark;
    return &mark;
  }

  static tool_attempt* reversed(tool_attempt* h) noexcept {
    tool_attempt* out = nullptr;
    while (h != nullptr) {
      auto* n = h->next;
      h->next = out;
      out = h;
      h = n;
    }
    return out;
  }
};

/// The tool calls made on behalf of one envelope: by its handler, and by
/// the callbacks of those calls, and so on. Every call's idempotency key
/// derives from the envelope's id and the call's place in the chain; a
/// `journal` agent holds the envelope open (its consume uncommitted, the
/// next envelope waiting) until none of its calls is left (`open`).
struct call_chain {
  uint64_t origin = 0;
  uint64_t id = 0;
  /// Calls made and not yet answered (their callbacks not yet run).
  uint32_t open = 0;
  /// The cell holds the envelope open for this chain (cell::held_).
  bool held = false;
};

/// The request on whose behalf a handler or a callback calls: its deadline
/// and its retry account. A callback runs with the origin of the handler
/// that made its call, so that a chain of calls never outlives its
/// request and draws from one budget.
struct call_origin {
  int64_t deadline = 0;
  uint64_t account = 0;
  uint32_t budget = 0;
  /// The delivery attempt of the envelope: on a redelivery, even a first
  /// call is a retry of one made before.
  uint32_t attempt = 1;
  /// Keyed: the chain of the envelope (null outside any, and in a
  /// `request` callback, whose calls have no key), this origin's index
  /// path in it (empty: the handler; else the call whose callback runs),
  /// and the calls made from it so far (the next one's number).
  std::shared_ptr<call_chain> chain;
  call_index index;
  mutable uint32_t children = 0;
  /// Keyed (made on behalf of an envelope): the envelope's id, from which
  /// the keys derive. Only a journal agent's origins have a `chain`.
  bool keyed = false;
  uint64_t key_origin = 0;
  uint64_t key_id = 0;
  /// The caller's own key (tool_options::idempotency_key), for this call
  /// alone: calls made in its callbacks derive theirs as before.
  std::string own_key;
};

/// Sets `slot` (the cell's callback origin) for a scope.
struct origin_scope {
  const call_origin*& slot;
  const call_origin* prev;
  origin_scope(const call_origin*& s, const call_origin* now)
    : slot(s), prev(s) {
    slot = now;
  }
  ~origin_scope() {
    slot = prev;
  }
  origin_scope(const origin_scope&) = delete;
  origin_scope& operator=(const origin_scope&) = delete;
};

/// One call_tool in flight.
struct tool_call_state {
  tool_runtime* tool = nullptr;
  std::shared_ptr<tool_ticket> ticket;
  std::shared_ptr<const google::protobuf::Message> request;
  std::function<void(std::unique_ptr<google::protobuf::Message>)> ok;
  std::function<void(const caf::error&)> err;
  call_origin origin;
  uint64_t gen = 0;
  resilience::time_point deadline;
  /// The running attempt's timeout, or max.
  resilience::time_point attempt_due = resilience::time_point::max();
  /// When the next attempt starts after a backoff, or max.
  resilience::time_point retry_due = resilience::time_point::max();
  /// The earliest of the three above that the cell's heap holds an entry
  /// for (max: none), and that entry's number (older ones are stale).
  resilience::time_point scheduled_for = resilience::time_point::max();
  uint32_t due_seq = 0;
  /// The call's number in its cell (the order calls were made).
  uint64_t order = 0;
  resilience::duration attempt_timeout{0};
  uint32_t max_attempts = 1;
  uint32_t attempts = 0;
  std::shared_ptr<tool_attempt> current;
  /// The last real error, for the answer: its code, class and text.
  error_class last_class = error_class::transient;
  std::string last_error;
  bool last_not_executed = false;
  resilience::duration retry_after{0};
  resilience::backoff_track track;
  std::unique_ptr<resilience::backoff> backoff;
  /// Cost charged to this agent's budget for the tool (or null).
  resilience::token_bucket* agent_cost = nullptr;
  /// Its idempotency key (null: none; a recorded call's, a journal
  /// agent's, holds the fingerprint of its request).
  std::shared_ptr<call_key> key;
  bool record = false;
  /// The cell's own call (an effect dispatched from its outbox): answered
  /// whatever became of the instance.
  bool owned = false;
  /// A fallback's call (tool_fallback): the tool called first, and the
  /// place of the next fallback in its list; `executed`: an earlier tool
  /// of the chain ran (its outcome, and so the chain's, is recorded).
  tool_runtime* primary = nullptr;
  uint32_t next_fallback = 0;
  bool executed = false;
  /// Answered by the called tool's declared default.
  bool by_default = false;
  /// A fallback started after `call_tool` returned: a refusal at its
  /// start is answered as a late answer, not within call_tool.
  bool late = false;
};

/// Where a fallback's call starts (cell::start_call).
struct fallback_step {
  tool_runtime* primary = nullptr;
  uint32_t next = 0;
  bool executed = false;
  bool late = false;
};

/// A call waiting for what its tool requires before it runs: its dry run,
/// then a person's approval (cell_guards.cpp).
struct call_guard {
  tool_runtime* tool = nullptr;
  std::unique_ptr<google::protobuf::Message> req;
  tool_options opts;
  std::function<void(std::unique_ptr<google::protobuf::Message>)> ok;
  std::function<void(const caf::error&)> err;
  call_origin origin;
  std::shared_ptr<call_key> key;
  bool record = false;
  bool owned = false;
  uint64_t gen = 0;
  /// The call's deadline, set as it first comes here: its dry run has what
  /// is left of it, and so has the call after the dry run (an approval's
  /// wait, a person's time, starts its timeout over).
  resilience::time_point deadline = resilience::time_point::max();
  bool dry_done = false;
  bool approved = false;
  /// The approval's key (waiting: in cell_tools::approving).
  std::string approval;
};

/// A call's answer waiting for the commit of its record (or, replayed from
/// one, for its turn): its callbacks run then, in the instance that called.
struct recorded_answer {
  std::function<void(std::unique_ptr<google::protobuf::Message>)> ok;
  std::function<void(const caf::error&)> err;
  call_origin origin;
  uint64_t gen = 0;
  caf::error error;
  std::unique_ptr<google::protobuf::Message> reply;
  /// Holds the key claimed until the callbacks ran.
  std::shared_ptr<call_key> key;
  /// The tool called, and who answered if not it (a fallback's name, or
  /// its default: `by_default`); `replayed`: from an earlier record.
  tool_runtime* tool = nullptr;
  std::string by;
  bool by_default = false;
  bool replayed = false;
};

/// When a call next needs its cell: the earliest of its deadline, its
/// attempt's timeout and its next attempt after a backoff. One entry per
/// call is current (its `seq`); entries of calls that moved on stay in the
/// heap until they come up (then they are skipped) or the heap is rebuilt.
struct call_due {
  resilience::time_point due;
  uint64_t id;
  /// The call's number (calls made earlier come first at the same time).
  uint64_t order;
  uint32_t seq;
};

/// Orders the heap earliest first, then in call order.
struct call_due_later {
  bool operator()(const call_due& x, const call_due& y) const noexcept {
    return x.due != y.due ? x.due > y.due : x.order > y.order;
  }
};

/// A cell's calls in flight, in slots reused without allocating: an id is
/// a slot's index and its generation (bumped at each reuse), so an id of a
/// call that ended finds nothing. References stay valid while calls are
/// added (a deque).
class call_table {
public:
  /// A new call: its id and its (default) state.
  std::pair<uint64_t, tool_call_state*> add() {
    uint32_t idx;
    if (!free_.empty()) {
      idx = free_.back();
      free_.pop_back();
      // Made anew in place (`take` moved it out), rather than assigned
      // from a temporary: a call's state is large, and every call makes
      // one. (Made with no allocation, it cannot throw.)
      auto& st = slots_[idx].st;
      st.~tool_call_state();
      new (&st) tool_call_state{};
    } else {
      idx = static_cast<uint32_t>(slots_.size());
      slots_.emplace_back();
    }
    auto& s = slots_[idx];
    s.used = true;
    ++size_;
    return {uint64_t{s.gen} << 32 | idx, &s.st};
  }

  /// The call `id`, or null if it ended.
  tool_call_state* find(uint64_t id) noexcept {
    auto idx = static_cast<uint32_t>(id);
    if (idx >= slots_.size())
      return nullptr;
    auto& s = slots_[idx];
    return s.used && s.gen == static_cast<uint32_t>(id >> 32) ? &s.st
                                                             : nullptr;
  }

  /// Ends the call `id` (which must be there): moves its state out.
  tool_call_state take(uint64_t id) {
    auto idx = static_cast<uint32_t>(id);
    auto& s = slots_[idx];
    auto out = std::move(s.st);
    s.used = false;
    ++s.gen;
    free_.push_back(idx);
    --size_;
    return out;
  }

  size_t size() const noexcept {
    return size_;
  }

  /// Calls f(id, state) for each call.
  template <class F>
  void for_each(F f) {
    for (uint32_t idx = 0; idx < slots_.size(); ++idx)
      if (auto& s = slots_[idx]; s.used)
        f(uint64_t{s.gen} << 32 | idx, s.st);
  }

  /// Ends every call (their states are dropped).
  void clear() {
    for_each([this](uint64_t id, tool_call_state&) { (void)take(id); });
  }

private:
  struct slot {
    tool_call_state st;
    uint32_t gen = 1;
    bool used = false;
  };
  std::deque<slot> slots_;
  std::vector<uint32_t> free_;
  size_t size_ = 0;
};

/// Everything a cell keeps of its tool calls.
struct cell_tools {
  cell_tools(caf::actor_clock& clk, const std::string& path,
             caf::actor_addr self, bool here)
    : clock(clk),
      inbox(std::make_shared<tool_inbox>(std::move(self), path, here)) {
    // nop
  }
  /// The attempts left in the inbox hold it: closed (normally already by
  /// end_tool_calls), so that none is left.
  ~cell_tools() {
    tool_inbox::release(inbox->close());
  }
  cell_tools(const cell_tools&) = delete;
  cell_tools& operator=(const cell_tools&) = delete;
  actor_clock_view clock;
  /// Where the executions of this cell's calls leave their attempts.
  std::shared_ptr<tool_inbox> inbox;
  /// While the cell takes its inbox, the executions its callbacks start
  /// wait here, for their executor (submitted together at the end).
  bool batching = false;
  tool_executor* batch_to = nullptr;
  std::vector<std::function<void()>> batch;

  /// Submits what waits in `batch`.
  void flush() {
    if (!batch.empty())
      batch_to->submit_all(batch);
  }

  /// Submits `task` to `ex`, or keeps it for the batch.
  void submit(tool_executor& ex, std::function<void()> task) {
    // Not held back if the executor can start it at once for nothing (a
    // pool with a thread spinning): it runs while the cell goes on taking
    // its inbox.
    if (!batching || ex.starved()) {
      flush();
      return ex.submit(std::move(task));
    }
    if (batch_to != &ex)
      flush();
    batch_to = &ex;
    batch.push_back(std::move(task));
  }
  uint64_t next_id = 0;
  uint64_t seed = 0;
  /// The one CAF timer armed: its due time (max: none) and its number (a
  /// timer superseded by an earlier one is ignored when it fires).
  resilience::time_point armed_for = resilience::time_point::max();
  uint64_t armed_seq = 0;
  /// Every pending due time, earliest on top.
  std::priority_queue<call_due, std::vector<call_due>, call_due_later> dues;
  call_table calls;
  /// Answers waiting for the commit of their records, by write token.
  std::map<uint64_t, std::vector<recorded_answer>> recording;
  /// Answers found recorded, delivered in order by tool_replay_atom.
  std::deque<recorded_answer> replays;
  /// Recorded calls whose key an execution of the last instance still
  /// holds (a replay after a restart): they wait for it.
  struct parked_call {
    tool_runtime* tool = nullptr;
    std::unique_ptr<google::protobuf::Message> req;
    tool_options opts;
    std::function<void(std::unique_ptr<google::protobuf::Message>)> ok;
    std::function<void(const caf::error&)> err;
    call_origin origin;
    uint64_t gen = 0;
    resilience::time_point since;
  };
  std::vector<parked_call> parked;
  /// Calls waiting for a person's approval, by the approval's key.
  std::map<std::string, std::shared_ptr<call_guard>> approving;
  /// Per tool: this agent's cost budget, made at its first call.
  std::map<std::string, std::unique_ptr<resilience::token_bucket>, std::less<>>
    costs;
};

} // namespace vigil::detail
