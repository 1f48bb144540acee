// vigil's built-in agent types (source, counter, sink, flaky, step,
// outcomes), so that a policy can be tried, loaded and broken without
// writing C++; the built-in tool and tool_caller are in builtin_tools.cpp.
// Their messages are in proto/vigil/builtin.proto.

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>

#include "duration.hpp"
#include "param_reader.hpp"
#include "vigil/actors/saga_step.hpp"
#include "vigil/builtin.pb.h"
#include "vigil/cli/app.hpp"

namespace vigil::cli {

namespace {

using builtin::Count;
using builtin::Get;
using builtin::Number;
using builtin::SourceState;
using builtin::OutcomeCount;
using builtin::StepCount;
using builtin::Tick;

void add(Count& c, int64_t n) {
  c.set_count(c.count() + 1);
  c.set_sum(c.sum() + n);
}

// -- source -------------------------------------------------------------------

/// Sends Number{1..count} to `to`, `batch` per Tick, as fast as it can or at
/// `rate` messages per second. Start the receiver before the source (put it
/// earlier among the siblings): a non-durable source's first numbers are
/// dead letters if no agent is bound at `to` yet, while a journal source's
/// outbox retries until the receiver is there.
///
/// It never runs ahead of its receiver: when the receiver's queue is full
/// (its queue_cap), it waits a moment and goes on from the number it could
/// not send (flow control, so nothing is shed).
///
/// As a `journal` agent its sends go through the outbox: each Tick commits
/// the new position together with the numbers it sent, so after a crash no
/// number is skipped, and a redelivered one keeps its message id, which a
/// `journal` receiver drops. Its timer (with a rate) is not durable; the tick
/// chain is started again in on_start/on_restart.
class source : public agent<SourceState> {
public:
  explicit source(const params& ps) {
    param_reader r{ps, "source", {"to", "count", "rate", "batch"}};
    auto* to = r.find("to");
    if (to == nullptr || to->empty())
      r.missing("to", "the path of the agent that gets the numbers, e.g. "
                      "root/counter");
    else
      to_ = *to;
    count_ = r.integer("count", 100, 0);
    rate_ = r.real("rate", 0.0, 0.0, 1e9,
                   "messages per second, a number >= 0 (0: as fast as "
                   "possible)");
    // With a rate, the default batch makes a tick every ~10 ms.
    auto def_batch = rate_ > 0 ? std::max<int64_t>(1, std::llround(rate_ / 100))
                               : int64_t{100};
    batch_ = r.integer("batch", def_batch, 1);
    r.done();
    if (rate_ > 0)
      interval_ = std::chrono::duration_cast<duration>(
        std::chrono::duration<double>(static_cast<double>(batch_) / rate_));
  }

  static void define(handlers<source>& h) {
    h.on<Tick>(&source::tick);
    h.on<Get>(&source::get);
  }

  void on_start(context& ctx) override {
    auto& st = state();
    if (st.next() < 1)
      st.set_next(1);
    st.set_done(st.next() > count_);
    st.set_chain(next_chain(st.chain()));
    to_handle_ = ctx.resolve(to_);
    if (!st.done())
      ctx.send(ctx.path(), tick_of(st.chain()));
  }

  void tick(context& ctx, const Tick& t) {
    auto& st = state();
    if (t.chain() != st.chain() || st.done())
      return; // a tick of an earlier instance
    Number n;
    for (int64_t k = 0; k < batch_ && st.next() <= count_; ++k) {
      n.set_n(st.next());
      if (!ctx.try_send(to_handle_, n)) {
        // The receiver's queue is full: wait for room, then go on from
        // this number (flow control; nothing is shed).
        ctx.send_after(full_pause, ctx.path(), tick_of(st.chain()));
        return;
      }
      st.set_next(st.next() + 1);
    }
    if (st.next() > count_) {
      st.set_done(true);
      return;
    }
    if (rate_ > 0)
      ctx.send_after(interval_, ctx.path(), tick_of(st.chain()));
    else
      ctx.send(ctx.path(), tick_of(st.chain()));
  }

  /// Numbers sent so far and their sum.
  Count get(context&, const Get&) {
    Count c;
    auto sent = std::max<int64_t>(0, state().next() - 1);
    c.set_count(sent);
    c.set_sum(sent * (sent + 1) / 2);
    return c;
  }

private:
  static Tick tick_of(int64_t chain) {
    Tick t;
    t.set_chain(chain);
    return t;
  }

  /// A chain number no earlier instance used: above the last one in the
  /// state, and at least the wall clock in microseconds, because the state
  /// of a non-durable source starts at 0 again after a restart (its old
  /// ticks may still be waiting), and a journal source's chain bump is not
  /// committed until its next tick.
  static int64_t next_chain(int64_t last) {
    auto now = std::chrono::duration_cast<std::chrono::microseconds>(
                 std::chrono::system_clock::now().time_since_epoch())
                 .count();
    return std::max<int64_t>(last + 1, now);
  }

  /// How long the source waits when its receiver's queue is full.
  static constexpr auto full_pause = std::chrono::milliseconds{2};

  std::string to_;
  handle to_handle_;
  int64_t count_ = 100;
  double rate_ = 0;
  int64_t batch_ = 100;
  duration interval_{0};
};

// -- counter and sink ---------------------------------------------------------

/// Counts and sums Numbers and answers each with its Count. As a `journal`
/// agent it applies every message id once: the runtime drops a redelivered
/// id (e.g. from a journal source's outbox) before this handler runs.
class counter : public agent<Count> {
public:
  explicit counter(const params& ps) {
    param_reader{ps, "counter", {}}.done();
  }

  static void define(handlers<counter>& h) {
    h.on<Number>([](counter& self, context&, const Number& n) {
      add(self.state(), n.n());
      return self.state();
    });
    h.on<Get>([](counter& self, context&, const Get&) { return self.state(); });
  }
};

/// Like counter, but a Number gets no reply (a void handler).
class sink : public agent<Count> {
public:
  explicit sink(const params& ps) {
    param_reader{ps, "sink", {}}.done();
  }

  static void define(handlers<sink>& h) {
    h.on<Number>(
      [](sink& self, context&, const Number& n) { add(self.state(), n.n()); });
    h.on<Get>([](sink& self, context&, const Get&) { return self.state(); });
  }
};

/// Counts the saga outcomes it gets (a durable saga's outcome_to), by
/// kind. As a journal agent it counts each run's outcome once: the saga's
/// outbox redelivers under the same id.
class outcomes : public agent<OutcomeCount> {
public:
  explicit outcomes(const params& ps) {
    param_reader{ps, "outcomes", {}}.done();
  }

  static void define(handlers<outcomes>& h) {
    h.on<SagaOutcome>([](outcomes& self, context&, const SagaOutcome& o) {
      auto& s = self.state();
      if (o.completed())
        s.set_completed(s.completed() + 1);
      else if (o.compensation_failed())
        s.set_compensation_failed(s.compensation_failed() + 1);
      else
        s.set_compensated(s.compensated() + 1);
    });
    h.on<Get>(
      [](outcomes& self, context&, const Get&) { return self.state(); });
  }
};

// -- flaky --------------------------------------------------------------------

/// Chaos: counts Numbers like counter and echoes each, failing on purpose
/// as its params say. For each Number, in this order: count it, sleep
/// `delay`, apply the crash rules (crash_every, crash_after,
/// crash_probability), forward it to `to`, reply (or corrupt the reply),
/// then stop if `exit_after` is reached. Get is never affected. Counters of
/// crash_every, exit_after and corrupt_every are per instance: they start
/// at 0 after each restart.
class flaky : public agent<Count> {
public:
  explicit flaky(const params& ps) {
    param_reader r{ps, "flaky",
                   {"crash_every", "crash_after", "crash_probability",
                    "seed", "exit_after", "delay", "corrupt_every", "to"}};
    crash_every_ = r.integer("crash_every", 0, 0);
    crash_after_ = r.time("crash_after");
    crash_probability_ = r.real("crash_probability", 0.0, 0.0, 1.0,
                                "a number in [0, 1]");
    seed_ = static_cast<uint64_t>(r.integer("seed", 0, 0));
    exit_after_ = r.integer("exit_after", 0, 0);
    delay_ = r.time("delay");
    corrupt_every_ = r.integer("corrupt_every", 0, 0);
    if (auto* to = r.find("to"))
      to_ = *to;
    r.done();
  }

  static void define(handlers<flaky>& h) {
    h.on<Number>(&flaky::number);
    h.on<Get>([](flaky& self, context&, const Get&) { return self.state(); });
  }

  void on_start(context& ctx) override {
    started_ = ctx.now();
  }

  Number number(context& ctx, const Number& n) {
    add(state(), n.n());
    ++handled_;
    if (delay_.count() > 0)
      std::this_thread::sleep_for(delay_); // a slow handler, on purpose
    if (crash_every_ > 0 && handled_ % crash_every_ == 0)
      throw std::runtime_error("flaky: crash_every "
                               + std::to_string(crash_every_) + " (message "
                               + std::to_string(handled_)
                               + " of this instance)");
    if (crash_after_.count() > 0 && ctx.now() - started_ >= crash_after_)
      throw std::runtime_error("flaky: crash_after reached");
    if (crash_probability_ > 0 && draw(ctx, n) < crash_probability_)
      throw std::runtime_error("flaky: crash_probability hit on n="
                               + std::to_string(n.n()));
    if (!to_.empty()) {
      // Forwarded under the incoming message id: when the same number is
      // delivered again (an outbox redelivery), a journal receiver sees a
      // duplicate instead of a new message.
      vigil::call_options same;
      if (auto* cur = ctx.current())
        same.same_id_as(*cur);
      ctx.send(to_, n, same);
    }
    ++replies_;
    if (corrupt_every_ > 0 && replies_ % corrupt_every_ == 0)
      ctx.defer().deliver_bytes(Number::descriptor()->full_name(),
                                "\xff\xff garbage");
    if (exit_after_ > 0 && handled_ >= exit_after_)
      ctx.stop(); // a normal exit: a transient child stays down
    return n;
  }

private:
  /// A number in [0, 1) that depends only on the seed, the Number and its
  /// delivery attempt, so that the same input crashes the same way in every
  /// run, independent of timing and restarts. (Seeding one generator per
  /// instance would not do: a non-durable instance restarts with a count of
  /// 0, so every instance would draw the same first number.)
  double draw(context& ctx, const Number& n) const {
    auto* cur = ctx.current();
    uint64_t attempt = cur != nullptr ? cur->attempt : 1;
    auto x = static_cast<uint64_t>(n.n());
    std::seed_seq seq{static_cast<uint32_t>(seed_),
                      static_cast<uint32_t>(seed_ >> 32),
                      static_cast<uint32_t>(x), static_cast<uint32_t>(x >> 32),
                      static_cast<uint32_t>(attempt)};
    std::mt19937_64 gen{seq};
    return static_cast<double>(gen() >> 11) * 0x1.0p-53;
  }

  int64_t crash_every_ = 0;
  duration crash_after_{0};
  double crash_probability_ = 0;
  uint64_t seed_ = 0;
  int64_t exit_after_ = 0;
  duration delay_{0};
  int64_t corrupt_every_ = 0;
  std::string to_;
  time_point started_{};
  int64_t handled_ = 0;
  int64_t replies_ = 0;
};

// -- step ---------------------------------------------------------------------

/// A saga step over Number (the saga's input, e.g. from a source): its
/// execute answers the Number and counts it, its compensate counts the
/// undo. Chaos, decided by the Number alone (so every delivery and every
/// run of the same input behaves the same): `refuse_every: N` refuses the
/// execute of every n divisible by N (a declined card: the saga fails at
/// this step, nothing restarts); `crash_every: N` throws in it instead (a
/// crash: restarted); `delay` sleeps in execute (past the saga's
/// step_timeout the step ran late and is compensated);
/// `compensate_crash_every: N` throws in the compensation of every such n
/// (the saga retries it, then keeps a dead letter).
class step : public saga_step<step, Number, Number, StepCount> {
public:
  explicit step(const params& ps) {
    param_reader r{ps, "step",
                   {"refuse_every", "crash_every", "delay",
                    "compensate_crash_every"}};
    refuse_every_ = r.integer("refuse_every", 0, 0);
    crash_every_ = r.integer("crash_every", 0, 0);
    delay_ = r.time("delay");
    compensate_crash_every_ = r.integer("compensate_crash_every", 0, 0);
    r.done();
  }

  static void define(handlers<step>& h) {
    saga_step::define(h);
    h.on<Get>([](step& self, context&, const Get&) { return self.state(); });
  }

  caf::expected<Number> execute(context& ctx, const Number& n) {
    if (hits(n, refuse_every_)) {
      state().set_refused(state().refused() + 1);
      return make_error(errc::refused,
                        ctx.path() + ": refuse_every "
                          + std::to_string(refuse_every_)
                          + " (n=" + std::to_string(n.n()) + ")");
    }
    if (hits(n, crash_every_))
      throw std::runtime_error("step: crash_every "
                               + std::to_string(crash_every_) + " (n="
                               + std::to_string(n.n()) + ")");
    if (delay_.count() > 0)
      std::this_thread::sleep_for(delay_); // a slow step, on purpose
    state().set_executed(state().executed() + 1);
    return n;
  }

  void compensate(context&, const Number& n, const Number&) {
    if (hits(n, compensate_crash_every_))
      throw std::runtime_error("step: compensate_crash_every "
                               + std::to_string(compensate_crash_every_)
                               + " (n=" + std::to_string(n.n()) + ")");
    state().set_compensated(state().compensated() + 1);
  }

private:
  static bool hits(const Number& n, int64_t every) {
    return every > 0 && n.n() % every == 0;
  }

  int64_t refuse_every_ = 0;
  int64_t crash_every_ = 0;
  duration delay_{0};
  int64_t compensate_crash_every_ = 0;
};

} // namespace

void add_builtin_agents(registry& types) {
  types.add<source>("source")
    .add<counter>("counter")
    .add<sink>("sink")
    .add<flaky>("flaky")
    .add<step>("step")
    .add<outcomes>("outcomes");
  add_builtin_tools(types);
  add_builtin_shared(types);
}

} // namespace vigil::cli
