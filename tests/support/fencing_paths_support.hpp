#pragma once

// Agents and helpers of the fencing path tests (fencing_paths_test,
// fencing_lifecycle_test): agents that fail, get stuck or stop after their
// supervisor gave up on them, and reads of a node's children and cells.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include <caf/all.hpp>

#include "support/fencing_support.hpp"
#include "support/test_agents.hpp"
#include "vigil/actors/cell.hpp"

namespace vigil::test::fencing_paths {

using namespace std::chrono_literals;


/// Invocations of `flaky`'s Block handler, by gate name.
struct calls {
  static calls& get() {
    static calls inst;
    return inst;
  }
  std::mutex mtx;
  std::map<std::string, int> n;
  int bump(const std::string& g) {
    std::lock_guard<std::mutex> guard{mtx};
    return ++n[g];
  }
  int at(const std::string& g) {
    std::lock_guard<std::mutex> guard{mtx};
    return n[g];
  }
};

/// Like tally, but its Block handler throws on the first arrival at the
/// gate once the gate opens (a stuck handler that then fails); later
/// arrivals add. Fanout sends Adds through the outbox, then waits at gate
/// `to + "!"` if that gate exists in `calls` (see below).
class flaky : public agent<Tally> {
public:
  static void define(handlers<flaky>& h) {
    h.on<Add>([](flaky& self, context&, const Add& a) {
      if (a.n() < 0)
        throw std::runtime_error("negative add");
      auto& st = self.state();
      st.set_count(st.count() + 1);
      st.set_sum(st.sum() + a.n());
      st.add_seen(a.n());
    });
    h.on<Get>([](flaky& self, context&, const Get&) { return self.state(); });
    h.on<Block>([](flaky& self, context&, const Block& b) {
      auto k = calls::get().bump(b.gate());
      auto& g = gates::get().at(b.gate());
      if (!g.pass_first())
        throw std::runtime_error("gate " + b.gate() + " was never opened");
      if (k == 1)
        throw std::runtime_error("first run of " + b.gate() + " fails");
      auto& st = self.state();
      st.set_count(st.count() + 1);
      st.set_sum(st.sum() + b.n());
      st.add_seen(b.n());
      return st;
    });
  }
};

/// A journal agent whose Fanout handler sends through the outbox, then
/// waits at the gate named in Fanout.to + "#" on its first run (a sender
/// stuck after ctx.send).
class stuck_sender : public agent<Tally> {
public:
  static void define(handlers<stuck_sender>& h) {
    h.on<Fanout>([](stuck_sender& self, context& ctx, const Fanout& f) {
      for (int64_t i = 0; i < f.count(); ++i) {
        Add a;
        a.set_n(f.from() + i);
        ctx.send(f.to(), a);
      }
      auto& g = gates::get().at("sender#" + ctx.path());
      if (!g.pass_first())
        throw std::runtime_error("sender gate was never opened");
      self.state().set_count(self.state().count() + 1);
    });
    h.on<Get>(
      [](stuck_sender& self, context&, const Get&) { return self.state(); });
  }
};

/// tally's Block (waits at its gate on the first arrival, then adds) and
/// an on_stop that counts its calls and tells the agent at param "to".
class stopper : public agent<Tally> {
public:
  static void define(handlers<stopper>& h) {
    h.on<Block>([](stopper& self, context&, const Block& b) {
      auto& g = gates::get().at(b.gate());
      if (!g.pass_first())
        throw std::runtime_error("gate " + b.gate() + " was never opened");
      auto& st = self.state();
      st.set_count(st.count() + 1);
      st.set_sum(st.sum() + b.n());
      return st;
    });
    h.on<Get>([](stopper& self, context&, const Get&) { return self.state(); });
  }
  void on_stop(context& ctx) override {
    calls::get().bump("stop:" + ctx.path());
    auto& ps = ctx.parameters();
    if (auto i = ps.find("to"); i != ps.end())
      ctx.send(i->second, add(1000));
  }
};

/// Block: on the first run passes its gate (first arrival waits) and
/// adds; the second run throws; later runs add.
class second_fails : public agent<Tally> {
public:
  static void define(handlers<second_fails>& h) {
    h.on<Block>([](second_fails& self, context&, const Block& b) {
      auto k = calls::get().bump(b.gate());
      auto& g = gates::get().at(b.gate());
      if (!g.pass_first())
        throw std::runtime_error("gate " + b.gate() + " was never opened");
      if (k == 2)
        throw std::runtime_error("second run of " + b.gate() + " fails");
      auto& st = self.state();
      st.set_count(st.count() + 1);
      st.set_sum(st.sum() + b.n());
      return st;
    });
    h.on<Get>(
      [](second_fails& self, context&, const Get&) { return self.state(); });
  }
};

inline registry round2_registry() {
  auto r = durable_registry();
  r.add<flaky>("flaky");
  r.add<stuck_sender>("stuck_sender");
  r.add<stopper>("stopper");
  r.add<second_fails>("second_fails");
  return r;
}

inline std::shared_ptr<std::atomic<bool>> exit_flag(const caf::actor& cell) {
  auto flag = std::make_shared<std::atomic<bool>>(false);
  cell->attach_functor([flag] { flag->store(true); });
  return flag;
}

inline std::string cell_state(node& nd, const caf::actor& cell) {
  caf::scoped_actor self{nd.system()};
  std::string out;
  self->request(cell, std::chrono::seconds{2}, state_atom::value)
    .receive([&](std::string& s) { out = std::move(s); },
             [&](caf::error&) {});
  return out;
}

inline child_spec snapshotted(std::string id, uint32_t every = 1) {
  auto t = worker(std::move(id), "tally")
             .with_shutdown(shutdown_spec::after(50ms));
  t.durability.mode = durability_mode::snapshot;
  t.durability.every_messages = every;
  t.durability.every = 0ms;
  return t;
}

inline std::string status_of(node& nd, const std::string& sup, size_t i) {
  auto kids = nd.which_children(sup);
  return kids && kids->size() > i ? (*kids)[i].status : std::string{"?"};
}

inline int64_t sum_of(int64_t from, int64_t to) {
  return (from + to) * (to - from + 1) / 2;
}

} // namespace vigil::test::fencing_paths
