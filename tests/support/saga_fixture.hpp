#pragma once

// The fixture of the exact-saga tests (supervision/saga_exact_test.cpp and
// saga_lifecycle_test.cpp): a saga "shop/checkout" over steps reserve,
// charge and ship of type `scripted_step`, whose every execute and
// compensation does what a script says per (order, step), and which counts
// the effects that really happened: the oracle of both tests.

#include <algorithm>
#include <deque>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "support/degrade_fixture.hpp"
#include "vigil/actors/saga_step.hpp"
#include "vigil/supervision/saga.hpp"

namespace vigil::test {

/// What scripted steps do and did. Reset by each saga_fixture.
struct saga_script {
  /// execute: run; refuse (return an error); crash (throw); slow (the
  /// handler takes `slow` of test-clock time, then runs).
  enum class exec : uint8_t { ok, refuse, crash, slow };
  /// One compensation attempt: run, throw, or refuse.
  enum class comp : uint8_t { ok, crash, refuse };
  using key = std::pair<std::string, std::string>; // (order id, step path)

  static saga_script& get() {
    static saga_script inst;
    return inst;
  }

  std::map<key, exec> execs;             ///< default ok
  std::map<key, std::deque<comp>> comps; ///< one per attempt; then ok
  int64_t slow_ms = 0;
  /// Effects: executes and compensations that ran to completion.
  std::map<key, int> executed;
  std::map<key, int> compensated;
  /// Compensations that reached the handler (ran, whatever their end).
  std::map<key, int> compensate_calls;
  std::vector<std::string> events;

  int executed_of(const std::string& order, const std::string& path) const {
    auto i = executed.find({order, path});
    return i != executed.end() ? i->second : 0;
  }
  int compensated_of(const std::string& order, const std::string& path) const {
    auto i = compensated.find({order, path});
    return i != compensated.end() ? i->second : 0;
  }
};

/// A saga step over Order -> Receipt that follows saga_script. Crash
/// messages crash it, as any test agent.
class scripted_step
  : public saga_step<scripted_step, Order, Receipt> {
public:
  using base = saga_step<scripted_step, Order, Receipt>;

  static void define(handlers<scripted_step>& h) {
    base::define(h);
    h.on<Crash>([](scripted_step&, context&, const Crash& c) {
      throw std::runtime_error(c.why());
    });
  }

  caf::expected<Receipt> execute(context& ctx, const Order& o) {
    auto& s = saga_script::get();
    saga_script::key k{o.id(), ctx.path()};
    auto i = s.execs.find(k);
    auto what = i != s.execs.end() ? i->second : saga_script::exec::ok;
    s.events.push_back("execute " + o.id() + " " + ctx.path());
    switch (what) {
      case saga_script::exec::refuse:
        return make_error(errc::refused, "card declined");
      case saga_script::exec::crash:
        throw std::runtime_error("payment service crashed");
      case saga_script::exec::slow:
        switches::get().advance(s.slow_ms);
        break;
      case saga_script::exec::ok:
        break;
    }
    ++s.executed[k];
    Receipt r;
    r.set_step(ctx.path());
    r.set_order(o.id());
    return r;
  }

  caf::error compensate(context& ctx, const Order& o, const Receipt& r) {
    auto& s = saga_script::get();
    saga_script::key k{o.id(), ctx.path()};
    ++s.compensate_calls[k];
    auto what = saga_script::comp::ok;
    if (auto& q = s.comps[k]; !q.empty()) {
      what = q.front();
      q.pop_front();
    }
    s.events.push_back("compensate " + o.id() + " " + ctx.path());
    if (r.step() != ctx.path() || r.order() != o.id())
      throw std::logic_error("compensate got another step's receipt");
    switch (what) {
      case saga_script::comp::crash:
        throw std::runtime_error("refund service down");
      case saga_script::comp::refuse:
        return make_error(errc::refused, "refund refused");
      case saga_script::comp::ok:
        break;
    }
    ++s.compensated[k];
    return caf::none;
  }
};

/// A saga step whose compensate refuses (returns) the error in `err`: e.g.
/// the error a downstream refund service answered, passed on.
class erring_step : public saga_step<erring_step, Order, Receipt> {
public:
  static inline caf::error err;
  static inline int calls = 0;

  Receipt execute(context& ctx, const Order& o) {
    Receipt r;
    r.set_step(ctx.path());
    r.set_order(o.id());
    return r;
  }

  caf::error compensate(context&, const Order&, const Receipt&) {
    ++calls;
    return err;
  }
};

class saga_fixture : public degrade_fixture {
public:
  static constexpr const char* saga_path = "shop/checkout";
  static constexpr const char* steps[] = {"reserve", "charge", "ship"};

  saga_fixture() {
    registry r = degrade_registry();
    r.add<scripted_step>("scripted");
    r.add<erring_step>("erring");
    erring_step::calls = 0;
    erring_step::err = caf::error{};
    rt = std::make_shared<runtime>(std::move(r));
    saga_script::get() = saga_script{};
    saga_script::get().slow_ms = 0;
  }

  static std::string step_path(const std::string& id) {
    return std::string{saga_path} + "/" + id;
  }

  /// The saga's steps (memory agents unless `journal`), in order.
  static std::vector<child_spec> step_specs(bool journal = false) {
    std::vector<child_spec> out;
    for (auto* id : steps) {
      auto c = worker(id, "scripted");
      if (journal)
        c.with_durability(durability_mode::journal);
      out.push_back(c);
    }
    return out;
  }

  /// Starts "shop" with the saga "checkout" over `children` (a writer
  /// first if `writer`); they restart after `backoff` (a constant), at
  /// most `intensity` times in 5 s.
  caf::actor start_custom(std::vector<child_spec> children,
                          saga_spec opts = {},
                          std::chrono::milliseconds backoff = {},
                          bool writer = false, int intensity = 1000) {
    if (writer && !writer_)
      with_writer();
    supervisor_spec sg;
    sg.flags.intensity = intensity;
    sg.flags.backoff.min = backoff;
    sg.flags.backoff.max = backoff;
    sg.children = std::move(children);
    opts.enabled = true;
    sg.saga = opts;
    supervisor_spec root;
    root.flags.intensity = 1000;
    root.children.push_back(supervisor("checkout", std::move(sg)));
    caf::actor shop;
    auto err = start("shop", root, &shop);
    EXPECT_FALSE(err) << describe(err);
    return shop;
  }

  /// The saga over reserve, charge and ship (journal agents if `journal`).
  caf::actor start_shop(saga_spec opts = {},
                        std::chrono::milliseconds backoff = {},
                        bool journal = false, int intensity = 1000) {
    return start_custom(step_specs(journal), opts, backoff, journal,
                        intensity);
  }

  /// Compensation dead letters of `order_id` at step `id`: the saga's own
  /// and a journal step's.
  size_t comp_letters(const std::string& order_id, const std::string& id) {
    size_t n = 0;
    for (auto& d : rt->dead_letters()) {
      if (d.path != step_path(id) || d.env.type != "vigil.SagaCompensate")
        continue;
      SagaCompensate c;
      Order o;
      if (c.ParseFromString(d.env.payload) && o.ParseFromString(c.input())
          && o.id() == order_id)
        ++n;
    }
    return n;
  }

  /// The scheduler job of actor `a`.
  static caf::resumable* job_of(const caf::actor& a) {
    return dynamic_cast<caf::resumable*>(
      caf::actor_cast<caf::abstract_actor*>(a));
  }

  /// Runs every job but `skip` (which keeps its mailbox: a cell whose
  /// handler is stuck), until none is left.
  void run_except(caf::resumable* skip) {
    for (int n = 0; n < 100000; ++n) {
      auto& jobs = sched.jobs;
      auto i = std::find_if(jobs.begin(), jobs.end(),
                            [&](caf::resumable* j) { return j != skip; });
      if (i == jobs.end())
        return;
      auto* j = *i;
      jobs.erase(i);
      jobs.push_front(j);
      sched.run_once();
    }
    ADD_FAILURE() << "run_except did not settle";
  }

  /// Step `id`'s cell is stuck (its job `stuck` is not run): terminates
  /// the step, lets its `shutdown` timeout pass so that the supervisor
  /// gives up on the cell, restarts the step in a new cell, and returns
  /// that cell.
  caf::actor replace_stuck(const std::string& id, caf::resumable* stuck,
                           std::chrono::milliseconds shutdown) {
    caf::anon_send(handle(saga_path), terminate_child_atom::value, id);
    run_except(stuck);
    sched.advance_time(shutdown + std::chrono::milliseconds{1});
    run_except(stuck);
    caf::anon_send(handle(saga_path), restart_child_atom::value, id);
    run_except(stuck);
    return handle(step_path(id));
  }

  /// Waits (bounded) for an answer in the mailbox.
  void settle(int ticks = 100,
              std::chrono::milliseconds tick = std::chrono::milliseconds{100}) {
    run();
    for (int i = 0; i < ticks && self->mailbox().empty(); ++i)
      advance(tick);
  }

  Order order(const std::string& id) {
    Order o;
    o.set_id(id);
    o.set_amount(42);
    return o;
  }

  /// Sends one saga request for `id` (not run yet).
  auto submit(const std::string& id) {
    return self->request(handle(saga_path), caf::infinite, wrap(order(id)));
  }

  /// The outcome of `h`, which must have arrived.
  template <class Handle>
  SagaOutcome outcome_of(Handle& h) {
    SagaOutcome out;
    if (self->mailbox().empty()) {
      ADD_FAILURE() << "no saga outcome arrived";
      return out;
    }
    std::move(h).receive(
      [&](envelope& e) {
        EXPECT_EQ(e.type, "vigil.SagaOutcome");
        EXPECT_TRUE(out.ParseFromString(e.payload));
      },
      [&](caf::error& err) { ADD_FAILURE() << describe(err); });
    return out;
  }

  /// Runs a saga for `id` to its end (advancing `tick`s of time up to
  /// `max_ticks` times until the outcome is there).
  SagaOutcome run_saga(const std::string& id,
                       std::chrono::milliseconds tick =
                         std::chrono::milliseconds{100},
                       int max_ticks = 100) {
    auto h = submit(id);
    run();
    for (int i = 0; i < max_ticks && self->mailbox().empty(); ++i)
      advance(tick);
    return outcome_of(h);
  }

  static const SagaStep& step_in(const SagaOutcome& o, const std::string& id) {
    for (auto& s : o.steps())
      if (s.path() == step_path(id))
        return s;
    static SagaStep none;
    ADD_FAILURE() << "no step " << id << " in the outcome";
    return none;
  }

  int executed(const std::string& order, const std::string& id) {
    return saga_script::get().executed_of(order, step_path(id));
  }

  int compensated(const std::string& order, const std::string& id) {
    return saga_script::get().compensated_of(order, step_path(id));
  }

  /// Compensations of step `id` for `order` that reached the handler.
  int compensate_calls(const std::string& order, const std::string& id) {
    return saga_script::get().compensate_calls[{order, step_path(id)}];
  }

  void script_exec(const std::string& order, const std::string& id,
                   saga_script::exec x) {
    saga_script::get().execs[{order, step_path(id)}] = x;
  }

  void script_comps(const std::string& order, const std::string& id,
                    std::deque<saga_script::comp> xs) {
    saga_script::get().comps[{order, step_path(id)}] = std::move(xs);
  }

  /// Restarts of child `id` of the saga supervisor.
  uint64_t restarts(const std::string& id) {
    for (auto& ci : which(handle(saga_path)))
      if (ci.id == id)
        return ci.restarts;
    return 0;
  }
};

} // namespace vigil::test
