#pragma once

// The fixture of the durable-saga tests (supervision/saga_durable_test.cpp
// and saga_durable_review_test.cpp): a saga "root/checkout" over journal
// steps reserve, charge and ship of type `ledger_step`, whose effects are
// their committed state (the oracle), on a det_node with a real LMDB data
// dir; an outcome receiver; and the checks both tests share.

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

#include "support/det_node.hpp"
#include "support/saga_fixture.hpp"
#include "vigil/persistence/record.hpp"

namespace vigil::test {

using namespace std::chrono_literals;

/// A journal saga step whose effects are its committed state (count: executes, sum: compensations, seen: +amount / -amount).
class ledger_step : public saga_step<ledger_step, Order, Receipt, Tally> {
public:
  using exec = saga_script::exec;
  using comp = saga_script::comp;

  caf::expected<Receipt> execute(context& ctx, const Order& o) {
    auto& s = saga_script::get();
    auto i = s.execs.find({o.id(), ctx.path()});
    auto what = i != s.execs.end() ? i->second : exec::ok;
    if (what == exec::refuse)
      return make_error(errc::refused, "card declined");
    if (what == exec::crash)
      throw std::runtime_error("payment service crashed");
    ++s.executed[{o.id(), ctx.path()}];
    state().set_count(state().count() + 1);
    state().add_seen(o.amount());
    Receipt r;
    r.set_step(ctx.path());
    r.set_order(o.id());
    return r;
  }

  void compensate(context& ctx, const Order& o, const Receipt& r) {
    auto& s = saga_script::get();
    if (auto& q = s.comps[{o.id(), ctx.path()}]; !q.empty()) {
      auto what = q.front();
      q.pop_front();
      if (what == comp::crash)
        throw std::runtime_error("refund service down");
    }
    if (r.step() != ctx.path())
      throw std::logic_error("compensate got another step's receipt");
    ++s.compensated[{o.id(), ctx.path()}];
    state().set_sum(state().sum() + 1);
    state().add_seen(-o.amount());
  }
};

/// An outcome receiver (outcome_to): counts every SagaOutcome it handles
/// in its state (a journal agent: committed).
class outcome_sink : public agent<Tally> {
public:
  static inline int handled = 0;
  static void define(handlers<outcome_sink>& h) {
    h.on<SagaOutcome>([](outcome_sink& self, context&, const SagaOutcome&) {
      ++handled;
      self.state().set_count(self.state().count() + 1);
    });
  }
};

inline registry durable_types() {
  registry r = degrade_registry();
  r.add<ledger_step>("ledger");
  r.add<scripted_step>("scripted");
  r.add<outcome_sink>("sink");
  r.add<outcome_sink>("outcome_sink");
  return r;
}

inline constexpr const char* saga_at = "root/checkout";
inline const std::vector<std::string> step_ids = {"reserve", "charge", "ship"};

inline std::string step_at(const std::string& id) {
  return std::string{saga_at} + "/" + id;
}

struct tree_opts {
  saga_spec saga;
  bool journal = true;
  std::string agent = "ledger";
  std::vector<std::string> steps = step_ids;
  strategy root_strategy = strategy::one_for_one;
  /// Siblings of the saga under root, before and after it.
  std::vector<child_spec> before, siblings;
  shutdown_spec saga_shutdown;
};

inline supervisor_spec make_tree(const tree_opts& o) {
  std::vector<child_spec> steps;
  for (auto& id : o.steps) {
    auto c = worker(id, o.agent);
    if (o.journal)
      c.with_durability(durability_mode::journal);
    c.restart = restart_type::permanent;
    steps.push_back(c);
  }
  auto opts = o.saga;
  if (opts.step_timeout == milliseconds{30000})
    opts.step_timeout = milliseconds{60000};
  auto sg = saga("checkout", std::move(steps), opts);
  sg.with_durability(durability_mode::journal);
  sg.shutdown = o.saga_shutdown;
  supervisor_spec root;
  root.flags.intensity = 1000;
  root.flags.strategy = o.root_strategy;
  for (auto& c : o.before)
    root.children.push_back(c);
  root.children.push_back(sg);
  for (auto& c : o.siblings)
    root.children.push_back(c);
  return root;
}

inline envelope order_input(const std::string& id, int64_t amount, uint64_t msg_id) {
  Order o;
  o.set_id(id);
  o.set_amount(amount);
  envelope e;
  e.type = type_symbol(o);
  o.SerializeToString(&e.payload);
  e.id = msg_id;
  return e;
}

inline envelope crash_input() {
  Crash c;
  c.set_why("bomb");
  envelope e;
  e.type = type_symbol(c);
  c.SerializeToString(&e.payload);
  return e;
}

struct effects {
  int64_t executed = 0, compensated = 0;
};

inline effects effects_of(det_node& n, const std::string& id) {
  records::Snapshot snap;
  bool found = false;
  auto st = n.storage().snapshot(step_at(id), snap, found);
  EXPECT_FALSE(st) << st.message();
  if (!found)
    return {};
  Tally t;
  EXPECT_TRUE(t.ParseFromString(snap.state()));
  return {t.count(), t.sum()};
}

inline caf::expected<SagaOutcome> parse_outcome(const det_node::outcome& r) {
  if (r.err)
    return r.err;
  SagaOutcome out;
  if (!out.ParseFromString(r.reply.payload))
    return make_error(errc::bad_payload, "not a SagaOutcome");
  return out;
}

/// Runs (moving the clock) until ticket `t` is answered, at most 20 s.
inline bool run_until(det_node& n, uint64_t t) {
  for (int i = 0; i < 400 && !n.result(t).done; ++i)
    n.advance(50ms);
  return n.result(t).done;
}

inline caf::expected<SagaOutcome> ask_saga(det_node& n, const envelope& input) {
  auto dest = n.cell(saga_at);
  if (!dest)
    return make_error(errc::not_found, saga_at);
  auto t = n.call(det_node::answer::env, dest, input);
  if (!run_until(n, t))
    return make_error(errc::not_found, "the saga did not answer in 20 s");
  return parse_outcome(n.result(t));
}

inline size_t compensation_letters(det_node& n) {
  std::vector<records::DeadLetter> dls;
  EXPECT_FALSE(n.storage().dead_letters(dls));
  size_t k = 0;
  for (auto& d : dls)
    if (d.env().type() == "vigil.SagaCompensate"
        && (d.reason().rfind("compensation_failed", 0) == 0
            || d.reason().rfind("in_doubt", 0) == 0))
      ++k;
  return k;
}

inline std::string outcome_text(const SagaOutcome& o) {
  std::string s = o.completed() ? "completed" : "failed at " + o.failed_step();
  for (auto& st : o.steps())
    s += " [" + st.path() + ": " + st.status()
         + (st.error().empty() ? "" : " (" + st.error() + ")") + "]";
  return s;
}

/// Every step ran once (fails_at == 3), or the ones before fails_at ran and
/// were undone once each, and the outcome says so.
inline void expect_exact(det_node& n, const SagaOutcome& out, size_t fails_at,
                  const std::string& seed) {
  size_t steps = step_ids.size();
  EXPECT_EQ(out.completed(), fails_at == steps)
    << seed << ": " << outcome_text(out);
  for (size_t k = 0; k < steps; ++k) {
    auto e = effects_of(n, step_ids[k]);
    EXPECT_EQ(e.executed, k < fails_at ? 1 : 0)
      << seed << " " << step_ids[k] << ": " << outcome_text(out);
    EXPECT_EQ(e.compensated, k < fails_at && fails_at < steps ? 1 : 0)
      << seed << " " << step_ids[k] << ": " << outcome_text(out);
    auto& st = out.steps(static_cast<int>(k)).status();
    if (fails_at == steps)
      EXPECT_EQ(st, "executed") << seed << ": " << outcome_text(out);
    else if (k < fails_at)
      EXPECT_EQ(st, "compensated") << seed << ": " << outcome_text(out);
  }
  EXPECT_EQ(compensation_letters(n), 0u) << seed << ": " << outcome_text(out);
  EXPECT_FALSE(out.compensation_failed()) << seed << ": " << outcome_text(out);
}

/// Weaker than expect_exact, for histories where a restart may fail the
/// run at any step: fully done (every step once, none undone) or fully
/// undone (every step that ran undone once, none ran twice), no letter,
/// and the outcome's statuses agree with the effects.
inline void expect_all_or_nothing(det_node& n, const SagaOutcome& out,
                           const std::string& seed) {
  for (size_t k = 0; k < step_ids.size(); ++k) {
    auto e = effects_of(n, step_ids[k]);
    auto& st = out.steps(static_cast<int>(k)).status();
    if (out.completed()) {
      EXPECT_EQ(e.executed, 1) << seed << " " << step_ids[k] << ": "
                               << outcome_text(out);
      EXPECT_EQ(e.compensated, 0) << seed << " " << step_ids[k] << ": "
                                  << outcome_text(out);
    } else {
      EXPECT_LE(e.executed, 1) << seed << " " << step_ids[k] << ": "
                               << outcome_text(out);
      EXPECT_EQ(e.compensated, e.executed)
        << seed << " " << step_ids[k] << ": " << outcome_text(out);
      if (e.executed == 1)
        EXPECT_EQ(st, "compensated") << seed << " " << step_ids[k] << ": "
                                     << outcome_text(out);
    }
  }
  EXPECT_EQ(compensation_letters(n), 0u) << seed << ": " << outcome_text(out);
  EXPECT_FALSE(out.compensation_failed()) << seed << ": " << outcome_text(out);
}

} // namespace vigil::test
