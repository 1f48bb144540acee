// vigil's built-in agents over shared state, so that a policy file can use
// the leased task queue and the compare-and-swap store without C++:
// enqueuer (Numbers in, tasks out), task_worker (claims, works, completes)
// and cas_counter (adds to a shared key by compare-and-swap, exactly once).

#include <algorithm>
#include <chrono>
#include <map>
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

/// A shared counter's value: "TOTAL" or "TOTAL|PATH=SEQ,PATH=SEQ,...", the
/// total and, per cas_counter that wrote it, the number of its last
/// increment in the total.
struct counter_value {
  int64_t total = 0;
  std::map<std::string, int64_t> marks;

  static counter_value parse(const std::string& v, const std::string& where) {
    counter_value out;
    auto bar = v.find('|');
    auto bad = [&] {
      return std::runtime_error("cas_counter: " + where + " holds \"" + v
                                + "\", not TOTAL[|PATH=SEQ,...]");
    };
    try {
      size_t used = 0;
      auto head = v.substr(0, bar);
      out.total = std::stoll(head, &used);
      if (used != head.size())
        throw bad();
      if (bar == std::string::npos)
        return out;
      std::string rest = v.substr(bar + 1);
      size_t i = 0;
      while (i < rest.size()) {
        auto comma = rest.find(',', i);
        auto item = rest.substr(i, comma == std::string::npos ? std::string::npos
                                                              : comma - i);
        auto eq = item.rfind('=');
        if (eq == std::string::npos || eq == 0)
          throw bad();
        out.marks[item.substr(0, eq)] = std::stoll(item.substr(eq + 1));
        if (comma == std::string::npos)
          break;
        i = comma + 1;
      }
    } catch (const std::runtime_error&) {
      throw;
    } catch (const std::exception&) {
      throw bad();
    }
    return out;
  }

  std::string render() const {
    auto out = std::to_string(total);
    char sep = '|';
    for (auto& [path, seq] : marks) {
      out += sep + path + "=" + std::to_string(seq);
      sep = ',';
    }
    return out;
  }
};

/// On each Number n, adds n to the shared key `key` (default "count") of
/// store `store` (default "counters") by compare-and-swap, exactly once,
/// with any number of cas_counters on one key.
///
/// The increment is numbered and kept in the state as unapplied; the put
/// (the last value seen plus every unapplied increment, and this counter's
/// mark: the number of its newest increment) commits with that state and
/// with the consumption of the Number. A conflict returns the value there
/// now: the increments its mark covers are dropped (they are in, e.g.
/// applied just before a crash), the rest are put again from a CasFlush.
/// After a restart, unapplied increments are flushed again. So none is
/// lost and none is counted twice, across conflicts, crashes and kill -9
/// (as a journal agent).
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
      auto& st = self.state();
      st.set_seq(st.seq() + 1);
      auto* inc = st.add_unapplied();
      inc->set_seq(st.seq());
      inc->set_n(n.n());
      self.attempt(ctx);
    });
    h.on<CasFlush>(
      [](cas_counter& self, context& ctx, const CasFlush&) { self.attempt(ctx); });
    h.on<Get>([](cas_counter& self, context&, const Get&) { return self.state(); });
  }

  void on_start(context& ctx) override {
    if (state().unapplied_size() > 0)
      ctx.send(ctx.path(), CasFlush{});
  }

private:
  std::string where() const {
    return store_ + "/" + key_;
  }

  /// Puts the last value seen plus every unapplied increment.
  void attempt(context& ctx) {
    auto& st = state();
    if (st.unapplied_size() == 0)
      return;
    auto v = st.base_version() == 0
               ? counter_value{}
               : counter_value::parse(st.base_value(), where());
    for (auto& inc : st.unapplied())
      v.total += inc.n();
    v.marks[ctx.path()] = st.seq();
    ctx.kv_put(
      store_, key_, v.render(), st.base_version(),
      [this, &ctx](kv_result r) { settled(ctx, r); },
      [](const caf::error& e) {
        throw std::runtime_error("cas_counter: " + describe(e));
      });
  }

  /// What the key holds now (the put's new version, or a conflict's):
  /// drop the increments its mark covers, retry the rest.
  void settled(context& ctx, const kv_result& r) {
    auto& st = state();
    if (r.applied)
      st.set_applied(st.applied() + 1);
    else
      st.set_conflicts(st.conflicts() + 1);
    // An absent or deleted key is created again (expected version 0).
    st.set_base_version(r.entry.found ? r.entry.version : 0);
    st.set_base_value(r.entry.found ? r.entry.value : std::string{});
    int64_t mark = 0;
    if (r.entry.found) {
      auto v = counter_value::parse(r.entry.value, where());
      if (auto i = v.marks.find(ctx.path()); i != v.marks.end())
        mark = i->second;
    }
    auto* un = st.mutable_unapplied();
    un->erase(std::remove_if(un->begin(), un->end(),
                             [mark](auto& inc) { return inc.seq() <= mark; }),
              un->end());
    if (!r.applied && st.unapplied_size() > 0)
      ctx.send(ctx.path(), CasFlush{});
  }

  std::string store_;
  std::string key_;
};

} // namespace

void add_builtin_shared(registry& types) {
  types.add<enqueuer>("enqueuer")
    .add<task_worker>("task_worker")
    .add<cas_counter>("cas_counter");
}

} // namespace vigil::cli
