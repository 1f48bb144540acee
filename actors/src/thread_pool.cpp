// The tools' thread pool (detail::thread_pool), and how an execution on one
// of its threads rings the cell that called (detail::ring).

#include <algorithm>

#include <pthread.h>

#include <caf/actor_cast.hpp>
#include <caf/actor_control_block.hpp>
#include <caf/execution_unit.hpp>
#include <caf/resumable.hpp>
#include <caf/scheduler/abstract_coordinator.hpp>
#include <caf/send.hpp>

#include "vigil/actors/detail/tool_runtime.hpp"

namespace vigil::detail {

namespace {

/// A pool thread as a CAF execution unit. While a task runs (`open`), the
/// first cell that it rings through `ring` is kept here rather than handed
/// to the scheduler (unless tasks wait for this thread), and runs on this
/// thread once the task returns; any other actor made runnable here (also
/// by that cell while it runs) goes to the scheduler.
class pool_unit final : public caf::execution_unit {
public:
  void exec_later(caf::resumable* r) override {
    bool idle = false;
    if (open && next == nullptr && keeping != nullptr
        && keeping->compare_exchange_strong(idle, true)) {
      next = r; // with the reference that CAF took for it
      return;
    }
    system().scheduler().enqueue(r);
  }

  void use(caf::actor_system& sys) noexcept {
    system_ = &sys;
  }

  /// Runs the cell kept, for a few messages: an idle cell (the usual case:
  /// it waited for this result) runs its callbacks here, and the calls they
  /// make start on this thread, awake already; a cell with more to do
  /// goes back to the scheduler. One message at a time: once a message
  /// has left a task for this thread (`owed`, see kept_here), the run ends
  /// there and the rest goes to the scheduler, so that the task waits for
  /// the message that made it and for no later agent code.
  void run_kept() {
    auto* r = std::exchange(next, nullptr);
    auto res = caf::resumable::resume_later;
    for (size_t i = 0; i < kept_throughput && !owed
                       && res == caf::resumable::resume_later;
         ++i)
      res = r->resume(this, 1);
    owed = false;
    keeping->store(false);
    switch (res) {
      case caf::resumable::resume_later:
        system().scheduler().enqueue(r); // the reference goes with it
        break;
      case caf::resumable::done:
      case caf::resumable::awaiting_message:
        caf::intrusive_ptr_release(r);
        break;
      case caf::resumable::shutdown_execution_unit:
        break; // not an actor's answer
    }
  }

  static constexpr size_t kept_throughput = 4;
  /// The pool's count of tasks waiting: while any wait, this thread takes
  /// the next one instead of running a cell.
  const std::atomic<size_t>* queued = nullptr;
  /// Set while one of the pool's threads keeps a cell: one at a time, so
  /// that the pool's one thread more than its tool's max_concurrent (see
  /// thread_pool) leaves every execution a thread. Null: the pool keeps
  /// none.
  std::atomic<bool>* keeping = nullptr;
  bool open = false;
  caf::resumable* next = nullptr;
  /// The pool this thread serves, and whether it runs a kept cell now (see
  /// kept_here).
  const void* pool = nullptr;
  bool in_kept = false;
  /// A task was submitted counting on this thread (see run_kept).
  bool owed = false;
};

/// This thread's unit, on a thread of a thread_pool.
thread_local pool_unit* this_unit = nullptr;

/// Whether the caller is a thread of `pool` running a kept cell (see
/// thread_pool::shared::to_wake).
bool kept_here(const void* pool) noexcept {
  return this_unit != nullptr && this_unit->in_kept && this_unit->pool == pool;
}

} // namespace

void ring(const caf::actor_addr& cell, caf::message msg, bool here) {
  auto p = caf::actor_cast<caf::strong_actor_ptr>(cell);
  if (!p)
    return;
  auto* u = here ? this_unit : nullptr;
  if (u == nullptr || u->keeping == nullptr || !u->open || u->next != nullptr
      || u->queued->load(std::memory_order_relaxed) != 0) {
    p->enqueue(nullptr, caf::make_message_id(), std::move(msg), nullptr);
    return;
  }
  u->use(*p->home_system);
  p->enqueue(nullptr, caf::make_message_id(), std::move(msg), u);
}

// -- thread_pool --------------------------------------------------------------

struct thread_pool::shared {
  std::mutex mtx;
  std::condition_variable cv;
  std::condition_variable idle;
  std::deque<std::function<void()>> queue;
  size_t threads = 0;
  /// Tasks running, at most `limit` (the tool's max_concurrent).
  size_t running = 0;
  size_t limit = 0;
  /// Threads running a kept cell (0 or 1), outside `running`.
  size_t kept = 0;
  /// Threads blocked in cv.wait (a woken one counts until it runs again).
  size_t sleeping = 0;
  /// An idle thread spins (below); the others sleep. Written under the
  /// lock, read without it by `starved`.
  std::atomic<bool> spinning{false};
  /// How an idle thread waits (see the constructor).
  idle_mode waiting = idle_mode::spin;
  /// Whether a thread keeps a cell now (see pool_unit::keeping).
  std::atomic<bool> keeping{false};
  bool keeps_cells = false;
  bool stop = false;
  /// The queue's length, read without the lock by the spinning thread.
  std::atomic<size_t> queued{0};
  std::atomic<bool> stopping{false};

  /// Wake-ups made (for tests: see thread_pool::wake_ups).
  std::atomic<uint64_t> wakes{0};

  void wake_one() {
    wakes.fetch_add(1, std::memory_order_relaxed);
    cv.notify_one();
  }

  /// The threads busy (running a task or a kept cell) from which the
  /// pool counts as saturating the machine (its cores, by default).
  size_t busy_at = 1;

  /// Whether the calls under way likely use every core, with the I/O they
  /// wait for: as many threads busy as cores (8 http calls in flight to a
  /// local server on 2 cores). Then no idle thread spins, and a thread
  /// keeping a cell takes the task that cell submits (to_wake).
  bool saturated() const noexcept {
    return running + kept >= busy_at;
  }

  /// Whether a thread may take the next task now: one waits, and fewer
  /// than `limit` run.
  bool takeable() const noexcept {
    return !queue.empty() && running < limit;
  }

  /// How many sleeping threads to wake for the tasks waiting: those that
  /// may start now (below `limit`) beyond the threads awake and free.
  /// `from_kept`: the caller is a thread of this pool keeping a cell. When
  /// saturated, that thread counts as free: it ends the cell's run after
  /// the message being handled (see pool_unit::run_kept) and takes the
  /// next task itself, so a result, its callback and the call that
  /// callback makes stay on one awake thread, without the wake-up (a
  /// system call and a context switch on cores the I/O needs).
  /// Unsaturated, a wake-up starts the call at once instead. Under the
  /// lock.
  size_t to_wake(bool from_kept = false) const noexcept {
    auto free = threads - sleeping - running - kept
                + (from_kept && saturated() ? 1 : 0);
    auto startable = std::min(queue.size(), limit - running);
    return startable > free ? std::min(sleeping, startable - free) : 0;
  }

  /// Waits up to 50 µs for a task (or the stop) without sleeping
  /// (idle_mode::spin or yield).
  void spin() {
    auto until = std::chrono::steady_clock::now() + std::chrono::microseconds{50};
    for (unsigned i = 1;; ++i) {
      if (queued.load(std::memory_order_relaxed) != 0
          || stopping.load(std::memory_order_relaxed))
        return;
      if (waiting == idle_mode::yield) {
        // Gives the core to whatever else is runnable (the I/O that the
        // calls wait for), and takes it back when nothing is.
        if (std::chrono::steady_clock::now() >= until)
          return;
        std::this_thread::yield();
        continue;
      }
      if (i % 64 == 0 && std::chrono::steady_clock::now() >= until)
        return;
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
  }
};

thread_pool::thread_pool(size_t threads, std::string name,
                         std::chrono::milliseconds grace, idle_mode idle,
                         bool keeps_cells, size_t busy_at)
  : sh_(std::make_shared<shared>()), grace_(grace) {
  sh_->waiting = idle;
  sh_->busy_at = busy_at > 0 ? busy_at
                             : std::max(1u, std::thread::hardware_concurrency());
  sh_->keeps_cells = keeps_cells;
  // A thread that keeps a cell runs agent code, for as long as that takes:
  // one thread more, so that the executions always have `threads`.
  sh_->limit = std::max<size_t>(threads, 1);
  threads = sh_->limit + (keeps_cells ? 1 : 0);
  sh_->threads = threads;
  threads_.reserve(threads);
  for (size_t i = 0; i < threads; ++i) {
    threads_.emplace_back([sh = sh_] {
      pool_unit unit;
      unit.queued = &sh->queued;
      unit.keeping = sh->keeps_cells ? &sh->keeping : nullptr;
      unit.pool = sh.get();
      this_unit = &unit;
      std::unique_lock<std::mutex> guard{sh->mtx};
      for (;;) {
        bool spun = false;
        while (!sh->stop && !sh->takeable()) {
          if (sh->waiting != idle_mode::sleep && !spun
              && sh->running < sh->limit && !sh->saturated()
              && !sh->spinning.load(std::memory_order_relaxed)) {
            // One idle thread at a time waits a little for the next task
            // before it sleeps: a short call submitted meanwhile needs no
            // wake-up (a system call and a context switch, which cost
            // more than the call). Not when saturated: the spinner would
            // only take a core from the I/O that the calls wait for.
            spun = true;
            sh->spinning.store(true, std::memory_order_relaxed);
            guard.unlock();
            sh->spin();
            guard.lock();
            sh->spinning.store(false, std::memory_order_relaxed);
            continue;
          }
          ++sh->sleeping;
          sh->cv.wait(guard);
          --sh->sleeping;
          spun = false;
        }
        if (!sh->takeable())
          break; // stopping, nothing left to start
        auto task = std::move(sh->queue.front());
        sh->queue.pop_front();
        sh->queued.store(sh->queue.size(), std::memory_order_relaxed);
        ++sh->running;
        // More waiting than the threads awake can start: this thread (not
        // the submitter, see submit) wakes as many as they need.
        auto wake = sh->to_wake();
        guard.unlock();
        for (size_t w = 0; w < wake; ++w)
          sh->wake_one();
        unit.open = true;
        task();
        unit.open = false;
        task = nullptr; // what it held goes before the count drops
        guard.lock();
        --sh->running;
        if (unit.next != nullptr) {
          // The cell that the task rang, if it was idle, runs here, as
          // long as its code takes: this thread is not counted free, and
          // another takes the next task (the pool's destructor waits for
          // the cell as for a task).
          ++sh->kept;
          auto wake = sh->to_wake();
          guard.unlock();
          if (wake > 0)
            sh->wake_one();
          unit.in_kept = true;
          unit.run_kept();
          unit.in_kept = false;
          guard.lock();
          --sh->kept;
        }
        sh->idle.notify_all();
      }
    });
    // Named after the tool (15 characters at most), so that a stack dump
    // or `top -H` tells whose thread hangs.
    auto short_name = ("t:" + name).substr(0, 15);
    pthread_setname_np(threads_.back().native_handle(), short_name.c_str());
  }
}

thread_pool::~thread_pool() {
  auto self = std::this_thread::get_id();
  bool inside = std::any_of(threads_.begin(), threads_.end(),
                            [&](const std::thread& t) {
                              return t.get_id() == self;
                            });
  std::unique_lock<std::mutex> guard{sh_->mtx};
  sh_->stop = true;
  sh_->stopping.store(true, std::memory_order_relaxed);
  // Tasks not started are dropped: their callers were answered, or will be
  // at their deadline, and each task's owner releases what it held.
  auto dropped = std::move(sh_->queue);
  sh_->cv.notify_all();
  // Destroyed by one of its own tasks (which held the last reference),
  // it cannot wait for itself: its threads end on their own.
  bool settled = !inside
                 && sh_->idle.wait_for(guard, grace_,
                                       [&] {
                                         return sh_->running == 0
                                                && sh_->kept == 0;
                                       });
  guard.unlock();
  dropped.clear();
  for (auto& t : threads_) {
    if (settled)
      t.join();
    else
      t.detach(); // a hung tool: its thread ends when the call returns
  }
}

void thread_pool::submit(std::function<void()> task) {
  bool wake;
  bool self = kept_here(sh_.get());
  {
    std::lock_guard<std::mutex> guard{sh_->mtx};
    if (sh_->stop)
      return;
    sh_->queue.push_back(std::move(task));
    sh_->queued.store(sh_->queue.size(), std::memory_order_relaxed);
    // Wakes a thread only if the threads awake and not running a task
    // (each looks at the queue before it sleeps) are fewer than the tasks
    // waiting: a wake-up is a system call and a context switch, which for
    // a short call cost more than the call. With a thread spinning, the
    // submitter wakes nobody: the spinner takes the task and wakes the
    // next thread if more wait (the submitter is usually an agent's
    // thread, which a wake-up would stall or even preempt).
    wake = !sh_->spinning.load(std::memory_order_relaxed)
           && sh_->to_wake(self) > 0;
    if (self && sh_->saturated())
      this_unit->owed = true;
  }
  if (wake)
    sh_->wake_one();
}

void thread_pool::submit_all(std::vector<std::function<void()>>& tasks) {
  size_t wake = 0;
  bool self = kept_here(sh_.get());
  {
    std::lock_guard<std::mutex> guard{sh_->mtx};
    if (!sh_->stop) {
      for (auto& t : tasks)
        sh_->queue.push_back(std::move(t));
      sh_->queued.store(sh_->queue.size(), std::memory_order_relaxed);
      // As submit: as many wake-ups as the threads awake cannot cover.
      if (!sh_->spinning.load(std::memory_order_relaxed))
        wake = sh_->to_wake(self);
      if (self && sh_->saturated())
        this_unit->owed = true;
    }
  }
  tasks.clear();
  for (size_t i = 0; i < wake; ++i)
    sh_->wake_one();
}

uint64_t thread_pool::wake_ups() const noexcept {
  return sh_->wakes.load(std::memory_order_relaxed);
}

bool thread_pool::starved() const noexcept {
  // A thread spins and nothing waits: the next task starts at once, and
  // its submitter wakes nobody.
  return sh_->spinning.load(std::memory_order_relaxed)
         && sh_->queued.load(std::memory_order_relaxed) == 0;
}

} // namespace vigil::detail
