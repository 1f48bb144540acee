#pragma once

// Agents that race for one leased task queue and ten compare-and-swap keys
// (shared_race_test in process, shared_kill_child under SIGKILL). What they
// see committed goes to `shared_world::log` as lines:
//   complete <task> <lease>      a completion was accepted
//   expired <task> <lease>       a timely completion found its lease gone
//   late_rejected <task> <lease> a completion sent after the lease expired,
//                                on purpose, was refused (as it must be)
//   late_accepted <task> <lease> ... was accepted (a violation)
//   cas <key> <version>          a compare-and-swap increment was applied
//   cas_gave_up <key>            100 conflicts in a row
//   stall <task> <lease>         a worker holds a task past its lease

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>

#include "proto/shared_test.pb.h"
#include "vigil/actors/agent.hpp"
#include "vigil/actors/registry.hpp"

namespace vigil::test {

/// What the agents do, set before the node starts.
struct shared_world {
  uint64_t seed = 1;
  /// Per mille of Work: the handler throws (first delivery only); the
  /// worker holds the task past its lease, then completes it late.
  uint32_t crash_pm = 50;
  uint32_t stall_pm = 50;
  std::chrono::milliseconds lease{400};
  std::chrono::milliseconds poll{20};
  std::string queue = "jobs";
  std::string store = "counts";
  int keys = 10;
  std::function<void(const std::string&)> log = [](const std::string&) {};
  std::atomic<int64_t> crashes{0};

  static shared_world& get() {
    static shared_world w;
    return w;
  }

  /// A number in [0, 1000) fixed by the seed, the task and the attempt.
  uint32_t roll(uint64_t task, uint32_t attempt) const {
    uint64_t x = seed * 0x9E3779B97F4A7C15ull ^ task * 0xBF58476D1CE4E5B9ull
                 ^ attempt * 0x94D049BB133111EBull;
    x ^= x >> 31;
    x *= 0xD6E8FEB86659FD93ull;
    x ^= x >> 32;
    return static_cast<uint32_t>(x % 1000);
  }
};

/// Enqueues Feed.tasks tasks (payload: the task's number, dedupe key
/// "t<n>") in one handler: one transaction with its own state.
class shared_feeder : public agent<FeederState> {
public:
  static void define(handlers<shared_feeder>& h) {
    h.on<Feed>([](shared_feeder& self, context& ctx, const Feed& f) {
      auto& w = shared_world::get();
      if (self.state().fed() != 0)
        return;
      for (int64_t n = 1; n <= f.tasks(); ++n) {
        enqueue_options o;
        o.max_attempts = f.max_attempts();
        o.dedupe_key = "t" + std::to_string(n);
        ctx.enqueue_task(
          w.queue, std::to_string(n), o, [](uint64_t) {},
          [](const caf::error& e) {
            shared_world::get().log("enqueue_failed " + describe(e));
          });
      }
      self.state().set_fed(f.tasks());
    });
  }
};

/// Claims tasks in a loop; each claimed task is sent to itself as Work,
/// and Work completes the task and increments a key by compare-and-swap.
class shared_worker : public agent<WorkerState> {
public:
  static void define(handlers<shared_worker>& h) {
    h.on<WorkTick>(&shared_worker::tick);
    h.on<Work>(&shared_worker::work);
    h.on<Late>(&shared_worker::late);
    h.on<WorkerGet>(
      [](shared_worker& self, context&, const WorkerGet&) {
        return self.state();
      });
  }

  void on_start(context& ctx) override {
    auto now = std::chrono::duration_cast<std::chrono::microseconds>(
                 std::chrono::system_clock::now().time_since_epoch())
                 .count();
    state().set_chain(std::max<int64_t>(state().chain() + 1, now));
    next(ctx, std::chrono::milliseconds{0});
  }

private:
  void next(context& ctx, std::chrono::milliseconds after) {
    WorkTick t;
    t.set_chain(state().chain());
    if (after.count() > 0)
      ctx.send_after(after, ctx.path(), t);
    else
      ctx.send(ctx.path(), t);
  }

  void tick(context& ctx, const WorkTick& t) {
    if (t.chain() != state().chain())
      return; // a tick of an earlier instance
    auto& w = shared_world::get();
    auto chain = t.chain();
    ctx.claim_task(
      w.queue, w.lease,
      [this, &ctx, chain](std::optional<claimed_task> task) {
        if (chain != state().chain())
          return;
        if (!task) {
          next(ctx, shared_world::get().poll);
          return;
        }
        Work wk;
        wk.set_task(task->lease.task);
        wk.set_lease(task->lease.number);
        wk.set_expires_ms(task->lease.expires_ms);
        wk.set_payload(task->payload);
        wk.set_attempts(task->attempts);
        ctx.send(ctx.path(), wk);
      },
      [this, &ctx](const caf::error&) { next(ctx, shared_world::get().poll); });
  }

  void work(context& ctx, const Work& wk) {
    auto& w = shared_world::get();
    auto r = w.roll(wk.task(), wk.attempts());
    lease l{w.queue, wk.task(), wk.lease(), wk.expires_ms()};
    if (r < w.crash_pm && ctx.current()->attempt == 1) {
      ++w.crashes;
      w.log("crash_by " + std::string{ctx.path()} + " " + std::to_string(wk.task()) + " ");
      throw std::runtime_error("worker crash on task "
                               + std::to_string(wk.task()));
    }
    if (r < w.crash_pm + w.stall_pm) {
      // Hold the task past its lease, then complete it: must be refused.
      state().set_stalled(state().stalled() + 1);
      w.log("stall " + std::to_string(wk.task()) + " "
            + std::to_string(wk.lease()));
      w.log("stall_by " + std::string{ctx.path()} + " " + std::to_string(wk.task()) + " ");
      Late lt;
      lt.set_task(wk.task());
      lt.set_lease(wk.lease());
      lt.set_expires_ms(wk.expires_ms());
      ctx.send_after(w.lease + std::chrono::milliseconds{150}, ctx.path(), lt);
      next(ctx, std::chrono::milliseconds{0});
      return;
    }
    state().set_worked(state().worked() + 1);
    auto tag = std::to_string(wk.task()) + " " + std::to_string(wk.lease());
    ctx.complete_task(
      l, [tag] { shared_world::get().log("complete " + tag); },
      [tag](const caf::error& e) {
        if (is(e, errc::lease_expired))
          shared_world::get().log("expired " + tag);
        else
          shared_world::get().log("complete_error " + tag + " "
                                  + describe(e));
      });
    bump(ctx, "k" + std::to_string(wk.task() % w.keys));
    next(ctx, std::chrono::milliseconds{0});
  }

  void late(context& ctx, const Late& lt) {
    auto& w = shared_world::get();
    auto tag = std::to_string(lt.task()) + " " + std::to_string(lt.lease());
    ctx.complete_task(
      lease{w.queue, lt.task(), lt.lease(), lt.expires_ms()},
      [tag] { shared_world::get().log("late_accepted " + tag); },
      [tag](const caf::error& e) {
        shared_world::get().log(
          (is(e, errc::lease_expired) ? "late_rejected " : "late_error ")
          + tag);
      });
  }

  /// Increments `key` by one: read, then compare-and-swap from what the
  /// conflict says is there, up to 100 times.
  void bump(context& ctx, std::string key) {
    auto& w = shared_world::get();
    ctx.kv_get(
      w.store, key,
      [this, &ctx, key](kv_entry e) { put(ctx, key, e, 100); },
      [key](const caf::error& e) {
        shared_world::get().log("cas_error " + key + " " + describe(e));
      });
  }

  void put(context& ctx, const std::string& key, const kv_entry& e,
           int left) {
    auto& w = shared_world::get();
    auto v = e.found ? std::stoll(e.value) : 0;
    ctx.kv_put(
      w.store, key, std::to_string(v + 1), e.found ? e.version : 0,
      [this, &ctx, key, left](kv_result r) {
        if (r.applied) {
          shared_world::get().log("cas " + key + " "
                                  + std::to_string(r.entry.version));
        } else if (left > 1) {
          put(ctx, key, r.entry, left - 1);
        } else {
          shared_world::get().log("cas_gave_up " + key);
        }
      },
      [key](const caf::error& e) {
        shared_world::get().log("cas_error " + key + " " + describe(e));
      });
  }
};

inline registry shared_registry() {
  registry r;
  r.add<shared_feeder>("shared_feeder").add<shared_worker>("shared_worker");
  return r;
}

} // namespace vigil::test
