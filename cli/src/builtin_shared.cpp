// vigil's built-in agents over shared state, so that a policy file can use
// the leased task queue and the compare-and-swap store without C++:
// enqueuer (Numbers in, tasks out), task_worker (claims, works, completes)
// and cas_counter (adds to a shared key by compare-and-swap, exactly once).

#include <chrono>
#include <stdexcept>
#include <string>

#include "param_reader.hpp"
#include "vigil/builtin.pb.h"
#include "vigil/cli/app.hpp"

namespace vigil::cli {

namespace {

using builtin::CasCount;
using builtin::CasFlush;
using builtin::EnqueuerCount;
using builtin::Get;
using builtin::Number;
using builtin::TaskWork;
using builtin::Tick;
using builtin::WorkerCount;

std::string required(param_reader& r, std::string_view key,
                     std::string_view what) {
  auto* s = r.find(key);
  if (s == nullptr || s->empty()) {
    r.missing(key, what);
    return {};
  }
  return *s;
}

// -- enqueuer -----------------------------------------------------------------

/// Enqueues every Number it gets as a task of `queue` (payload: the Number;
/// dedupe key: its n, so that a Number delivered twice is one task), with
/// `max_attempts` leases per task (default 5). As a journal agent the
/// enqueue commits with the consumption of the Number.
class enqueuer : public agent<EnqueuerCount> {
public:
  explicit enqueuer(const params& ps) {
    param_reader r{ps, "enqueuer", {"queue", "max_attempts"}};
    queue_ = required(r, "queue", "the name of the task queue, e.g. jobs");
    opts_.max_attempts =
      static_cast<uint32_t>(r.integer("max_attempts", 5, 1));
    r.done();
  }

  static void define(handlers<enqueuer>& h) {
    h.on<Number>([](enqueuer& self, context& ctx, const Number& n) {
      auto o = self.opts_;
      o.dedupe_key = "n" + std::to_string(n.n());
      ctx.enqueue_task(self.queue_, n.SerializeAsString(), o,
                       [](uint64_t) {}, [](const caf::error& e) {
                         throw std::runtime_error("enqueuer: " + describe(e));
                       });
      self.state().set_enqueued(self.state().enqueued() + 1);
    });
    h.on<Get>([](enqueuer& self, context&, const Get&) { return self.state(); });
  }

private:
  std::string queue_;
  enqueue_options opts_;
};

// -- task_worker --------------------------------------------------------------

/// Claims tasks of `queue` under a lease of `lease` (default 30s), one at a
/// time, polling every `poll` (default 100ms) while the queue is empty. A
/// claimed task comes back to the worker as TaskWork, whose handler works
/// it: sends its Number to `to` (if set) under the task's id as message id,
/// so that a journal receiver applies each task once even if two leases
/// worked it, then completes it. As a journal agent the send and the
/// completion commit together with the worker's state.
///
/// Chaos, by the task's Number n: `fail_every: N` gives every n divisible
/// by N back failed on its first `fail_attempts` (default 1) leases;
/// `crash_every: N` throws while working it, on the first delivery;
/// `stall_every: N` holds it past its first lease (it is claimed again,
/// with its attempt count raised).
class task_worker : public agent<WorkerCount> {
public:
  explicit task_worker(const params& ps) {
    param_reader r{ps, "task_worker",
                   {"queue", "to", "lease", "poll", "fail_every",
                    "fail_attempts", "crash_every", "stall_every"}};
    queue_ = required(r, "queue", "the name of the task queue, e.g. jobs");
    if (auto* to = r.find("to"))
      to_ = *to;
    lease_ = r.time("lease");
    if (lease_.count() == 0)
      lease_ = std::chrono::seconds{30};
    poll_ = r.time("poll");
    if (poll_.count() == 0)
      poll_ = std::chrono::milliseconds{100};
    fail_every_ = r.integer("fail_every", 0, 0);
    fail_attempts_ = r.integer("fail_attempts", 1, 1);
    crash_every_ = r.integer("crash_every", 0, 0);
    stall_every_ = r.integer("stall_every", 0, 0);
    r.done();
  }

  static void define(handlers<task_worker>& h) {
    h.on<Tick>(&task_worker::tick);
    h.on<TaskWork>(&task_worker::work);
    h.on<Get>(
      [](task_worker& self, context&, const Get&) { return self.state(); });
  }

  void on_start(context& ctx) override {
    auto now = std::chrono::duration_cast<std::chrono::microseconds>(
                 std::chrono::system_clock::now().time_since_epoch())
                 .count();
    state().set_chain(std::max<int64_t>(state().chain() + 1, now));
    next(ctx, duration{0});
  }

private:
  void next(context& ctx, duration after) {
    Tick t;
    t.set_chain(state().chain());
    if (after.count() > 0)
      ctx.send_after(after, ctx.path(), t);
    else
      ctx.send(ctx.path(), t);
  }

  void tick(context& ctx, const Tick& t) {
    if (t.chain() != state().chain())
      return; // a tick of an earlier instance
    auto chain = t.chain();
    ctx.claim_task(
      queue_, lease_,
      [this, &ctx, chain](std::optional<claimed_task> task) {
        if (chain != state().chain())
          return;
        if (!task) {
          next(ctx, poll_);
          return;
        }
        TaskWork w;
        w.set_task(task->lease.task);
        w.set_lease(task->lease.number);
        w.set_expires_ms(task->lease.expires_ms);
        w.set_payload(std::move(task->payload));
        w.set_attempts(task->attempts);
        ctx.send(ctx.path(), w);
      },
      [this, &ctx](const caf::error&) { next(ctx, poll_); });
  }

  static bool hits(int64_t n, int64_t every) {
    return every > 0 && n % every == 0;
  }

  void work(context& ctx, const TaskWork& w) {
    Number n;
    if (!n.ParseFromString(w.payload()))
      n.set_n(0);
    lease l{queue_, w.task(), w.lease(), w.expires_ms()};
    next(ctx, duration{0}); // the next claim, committed with this work
    if (hits(n.n(), crash_every_) && ctx.current()->attempt == 1
        && w.attempts() == 1)
      throw std::runtime_error("task_worker: crash_every "
                               + std::to_string(crash_every_) + " (n="
                               + std::to_string(n.n()) + ")");
    if (hits(n.n(), stall_every_) && w.attempts() == 1) {
      state().set_stalled(state().stalled() + 1);
      return; // held past its lease: claimed again later
    }
    if (hits(n.n(), fail_every_)
        && w.attempts() <= static_cast<uint32_t>(fail_attempts_)) {
      state().set_failed(state().failed() + 1);
      ctx.fail_task(l, "task_worker: fail_every " + std::to_string(fail_every_),
                    [](bool) {}, [](const caf::error&) {});
      return;
    }
    if (!to_.empty()) {
      call_options o;
      o.message_id = w.task();
      o.message_origin = task_origin;
      ctx.send(to_, n, o);
    }
    state().set_completed(state().completed() + 1);
    ctx.complete_task(l, [] {}, [this](const caf::error& e) {
      if (is(e, errc::lease_expired))
        state().set_expired(state().expired() + 1);
    });
  }

  /// The origin of the message ids a task_worker sends: a task's id is
  /// unique in its queue, so (origin, id) names the task's work.
  static constexpr uint64_t task_origin = 0x7461736b; // "task"

  std::string queue_;
  std::string to_;
  duration lease_{0};
  duration poll_{0};
  int64_t fail_every_ = 0;
  int64_t fail_attempts_ = 1;
  int64_t crash_every_ = 0;
  int64_t stall_every_ = 0;
};

// -- cas_counter --------------------------------------------------------------

/// On each Number n, adds n to the shared key `key` (default "count") of
/// store `store` (default "counters"), whose value is a decimal integer, by
/// compare-and-swap, exactly once, with any number of writers on the key.
///
/// Increments wait in the state (`pending`) until a put carries them. At
/// most one put is in flight; it adds every pending increment to the value
/// last seen and commits with the consumption of the message whose handler
/// made it (as a journal agent), with the state that says it is in flight
/// and what it adds. Its callback learns the outcome: applied (the amount
/// leaves `pending`) or a conflict (the value there now is the new base),
/// and a CasFlush puts what is left. If the agent restarts before that
/// callback's state is committed, the put's outcome is read back from the
/// key: `my_message_id` says whether this agent's last write of the key was
/// that put. So no increment is lost and none is counted twice, across
/// conflicts, deletes and resets of the key by others, crashes and kill -9.
/// A value that is not an integer stops the counting (its increments wait,
/// and Get's `error` says why); it is tried again every second.
class cas_counter : public agent<CasCount> {
public:
  explicit cas_counter(const params& ps) {
    param_reader r{ps, "cas_counter", {"store", "key"}};
    auto* s = r.find("store");
    store_ = s != nullptr && !s->empty() ? *s : "counters";
    auto* k = r.find("key");
    key_ = k != nullptr && !k->empty() ? *k : "count";
    r.done();
  }

  static void define(handlers<cas_counter>& h) {
    h.on<Number>([](cas_counter& self, context& ctx, const Number& n) {
      self.state().set_pending(self.state().pending() + n.n());
      self.step(ctx);
    });
    h.on<CasFlush>(
      [](cas_counter& self, context& ctx, const CasFlush&) { self.step(ctx); });
    h.on<Get>([](cas_counter& self, context&, const Get&) { return self.state(); });
  }

  void on_start(context& ctx) override {
    if (state().inflight() || state().pending() != 0)
      ctx.send(ctx.path(), CasFlush{});
  }

private:
  /// In a handler: puts the pending increments, unless a put is in flight.
  /// One in flight whose callback is gone (a restart) is looked up first.
  void step(context& ctx) {
    auto& st = state();
    if (st.inflight()) {
      if (!resolving_ && !callback_due_)
        resolve(ctx);
      return;
    }
    if (st.pending() == 0)
      return;
    auto* cur = ctx.current();
    st.set_inflight(true);
    st.set_inflight_origin(cur->origin);
    st.set_inflight_id(cur->id);
    st.set_inflight_amount(st.pending());
    callback_due_ = true;
    ctx.kv_put(
      store_, key_, std::to_string(st.base_total() + st.pending()),
      st.base_version(),
      [this, &ctx, id = cur->id, origin = cur->origin](kv_result r) {
        callback_due_ = false;
        if (state().inflight() && state().inflight_id() == id
            && state().inflight_origin() == origin)
          settled(ctx, r.applied, r.entry);
      },
      [this, &ctx](const caf::error& e) {
        // Not committed (with its envelope, which runs again) or refused.
        callback_due_ = false;
        state().set_error(describe(e));
        ctx.send_after(std::chrono::seconds{1}, ctx.path(), CasFlush{});
      });
  }

  /// After a restart: did the put in flight apply? This agent's last write
  /// of the key says.
  void resolve(context& ctx) {
    resolving_ = true;
    ctx.kv_get(
      store_, key_,
      [this, &ctx](kv_entry e) {
        resolving_ = false;
        auto& st = state();
        bool applied = e.my_message_id == st.inflight_id()
                       && e.my_message_origin == st.inflight_origin()
                       && e.my_version != 0;
        settled(ctx, applied, e);
      },
      [this, &ctx](const caf::error& e) {
        resolving_ = false;
        state().set_error(describe(e));
        ctx.send_after(std::chrono::seconds{1}, ctx.path(), CasFlush{});
      });
  }

  /// The put in flight applied (its amount leaves `pending`) or not; `e`
  /// is the key now. What is pending is put again from a CasFlush.
  void settled(context& ctx, bool applied, const kv_entry& e) {
    auto& st = state();
    if (applied) {
      st.set_applied(st.applied() + 1);
      st.set_pending(st.pending() - st.inflight_amount());
    } else {
      st.set_conflicts(st.conflicts() + 1);
    }
    st.set_inflight(false);
    st.set_inflight_amount(0);
    auto retry = std::chrono::milliseconds{0};
    if (!e.found) {
      st.set_base_version(0); // absent or deleted: from 0 again
      st.set_base_total(0);
      st.clear_error();
    } else {
      try {
        size_t used = 0;
        auto total = std::stoll(e.value, &used);
        if (used != e.value.size())
          throw std::invalid_argument("trailing bytes");
        st.set_base_version(e.version);
        st.set_base_total(total);
        st.clear_error();
      } catch (const std::exception&) {
        // The base stays: a put over a value it cannot read would lose it.
        st.set_error(where() + " holds \"" + e.value.substr(0, 64)
                     + "\", not an integer; " + std::to_string(st.pending())
                     + " waits until it is one");
        retry = std::chrono::seconds{1};
      }
    }
    if (st.pending() != 0) {
      if (retry.count() > 0)
        ctx.send_after(retry, ctx.path(), CasFlush{});
      else
        ctx.send(ctx.path(), CasFlush{});
    }
  }

  std::string where() const {
    return store_ + "/" + key_;
  }

  std::string store_;
  std::string key_;
  /// This instance's put or lookup is under way (its callback will come).
  bool callback_due_ = false;
  bool resolving_ = false;
};

} // namespace

void add_builtin_shared(registry& types) {
  types.add<enqueuer>("enqueuer")
    .add<task_worker>("task_worker")
    .add<cas_counter>("cas_counter");
}

} // namespace vigil::cli
