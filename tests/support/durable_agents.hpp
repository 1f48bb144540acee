#pragma once

// Agents for the durability tests and the crash-test child process.

#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>

#include "proto/test.pb.h"
#include "support/gate.hpp"
#include "vigil/actors/registry.hpp"

namespace vigil::test {

/// How the next restarted instance of a path misbehaves in on_restart (set
/// by the randomized lifecycle test to make probes fail in each way).
struct probe_faults {
  enum mode : uint8_t {
    none,
    hook,      ///< on_restart throws
    on_reply,  ///< it asks root/a for Get; the reply callback throws
    on_error,  ///< it asks the root supervisor (an error); that callback throws
    timeout,   ///< it asks root/b with a 50 ms timeout; a timeout throws
    stop,      ///< it asks root/a; the reply callback stops with an error
  };
  static constexpr int modes = 6;

  static probe_faults& get() {
    static probe_faults inst;
    return inst;
  }

  void set(const std::string& path, mode m) {
    std::lock_guard<std::mutex> g{mtx};
    by_path[path] = m;
  }

  void reset() {
    std::lock_guard<std::mutex> g{mtx};
    by_path.clear();
  }

  /// Runs the fault set for the restarted instance at `ctx.path()`.
  void apply(context& ctx) {
    mode m = none;
    {
      std::lock_guard<std::mutex> g{mtx};
      auto i = by_path.find(ctx.path());
      if (i != by_path.end())
        m = i->second;
    }
    using namespace std::chrono_literals;
    auto boom = [](const char* what) { throw std::runtime_error(what); };
    switch (m) {
      case none:
        return;
      case hook:
        boom("on_restart fault");
        return;
      case on_reply:
        ctx.request<Tally>(
          "root/a", Get{}, 100ms,
          [boom](reply<Tally>) { boom("reply callback fault"); },
          [boom](const caf::error&) { boom("error callback fault"); });
        return;
      case on_error:
        ctx.request<Tally>(
          "root", Get{}, 100ms, [](reply<Tally>) {},
          [boom](const caf::error&) { boom("error callback fault"); });
        return;
      case timeout:
        ctx.request<Tally>(
          "root/b", Get{}, 50ms, [](reply<Tally>) {},
          [boom](const caf::error&) { boom("timeout callback fault"); });
        return;
      case stop:
        ctx.request<Tally>(
          "root/a", Get{}, 100ms,
          [&ctx](reply<Tally>) {
            ctx.stop(make_error(errc::handler_failed, "callback stops"));
          },
          [](const caf::error&) {});
        return;
    }
  }

  std::mutex mtx;
  std::map<std::string, mode> by_path;
};

/// What memory-only agents (mtally) handled, by path: the value of each
/// Add, once per handling. Survives the crash of a simulated node.
struct handled_log {
  static handled_log& get() {
    static handled_log inst;
    return inst;
  }
  void add(const std::string& path, int64_t n) {
    std::lock_guard<std::mutex> g{mtx};
    by_path[path].insert(n);
  }
  std::multiset<int64_t> of(const std::string& path) {
    std::lock_guard<std::mutex> g{mtx};
    return by_path[path];
  }
  void reset() {
    std::lock_guard<std::mutex> g{mtx};
    by_path.clear();
  }
  std::mutex mtx;
  std::map<std::string, std::multiset<int64_t>> by_path;
};

/// Counts and sums Add.n, remembering the order; Add(n < 0) throws; Block
/// waits at a test gate, then adds like Add.
class tally : public agent<Tally> {
public:
  void on_restart(context& ctx, const caf::error&) override {
    probe_faults::get().apply(ctx);
  }

  static void define(handlers<tally>& h) {
    h.on<Add>([](tally& self, context&, const Add& a) {
      if (a.n() < 0)
        throw std::runtime_error("negative add");
      auto& st = self.state();
      st.set_count(st.count() + 1);
      st.set_sum(st.sum() + a.n());
      st.add_seen(a.n());
    });
    h.on<Get>([](tally& self, context&, const Get&) { return self.state(); });
    h.on<Block>([](tally& self, context&, const Block& b) {
      auto& g = gates::get().at(b.gate());
      if (!(b.first_only() ? g.pass_first() : g.pass()))
        throw std::runtime_error("gate " + b.gate() + " was never opened");
      auto& st = self.state();
      st.set_count(st.count() + 1);
      st.set_sum(st.sum() + b.n());
      st.add_seen(b.n());
      return st;
    });
    h.on<Fanout>([](tally& self, context& ctx, const Fanout& f) {
      for (int64_t i = 0; i < f.count(); ++i) {
        Add a;
        a.set_n(f.from() + i);
        ctx.send(f.to(), a);
      }
      self.state().set_count(self.state().count() + 1);
    });
  }
};

/// A memory-only tally: each Add it handles goes to the handled_log;
/// Add(n < 0) throws; Get answers the (per instance) state.
class mtally : public agent<Tally> {
public:
  void on_restart(context& ctx, const caf::error&) override {
    probe_faults::get().apply(ctx);
  }

  static void define(handlers<mtally>& h) {
    h.on<Add>([](mtally& self, context& ctx, const Add& a) {
      if (a.n() < 0)
        throw std::runtime_error("negative add");
      handled_log::get().add(ctx.path(), a.n());
      auto& st = self.state();
      st.set_count(st.count() + 1);
      st.set_sum(st.sum() + a.n());
      return st;
    });
    h.on<Get>([](mtally& self, context&, const Get&) { return self.state(); });
  }
};

/// Count and sum only (no order list), for large runs.
class counter : public agent<Counter> {
public:
  static void define(handlers<counter>& h) {
    h.on<Add>([](counter& self, context&, const Add& a) {
      auto& st = self.state();
      st.set_count(st.count() + 1);
      st.set_sum(st.sum() + a.n());
    });
    h.on<Get>(
      [](counter& self, context&, const Get&) { return self.state(); });
  }
};

/// Sends Add(1..n) to `to`, `batch` per Tick, through the outbox: each Tick
/// commits the new position with the sends it made, so a crash neither
/// skips nor repeats a number (the receiver drops redelivered ids).
class source : public agent<SourceState> {
public:
  static void define(handlers<source>& h) {
    h.on<Start>([](source& self, context& ctx, const Start& s) {
      auto& st = self.state();
      if (st.n() != 0)
        return; // started before
      st.set_n(s.n());
      st.set_to(s.to());
      st.set_batch(s.batch() > 0 ? s.batch() : 100);
      st.set_next(1);
      ctx.send(ctx.path(), Tick{});
    });
    h.on<Tick>([](source& self, context& ctx, const Tick&) {
      auto& st = self.state();
      int64_t k = 0;
      for (; k < st.batch() && st.next() <= st.n(); ++k) {
        Add a;
        a.set_n(st.next());
        ctx.send(st.to(), a);
        st.set_next(st.next() + 1);
      }
      if (st.next() <= st.n())
        ctx.send(ctx.path(), Tick{});
    });
    h.on<Get>([](source& self, context&, const Get&) {
      Counter c;
      c.set_count(self.state().next() - 1);
      return c;
    });
  }
};

/// Forwards every Add to the path in its `to` parameter through a handle it
/// resolves once, as a long-lived agent caches its peers.
class courier : public agent<> {
public:
  static void define(handlers<courier>& h) {
    h.on<Add>([](courier& self, context& ctx, const Add& a) {
      if (!self.to_)
        self.to_ = ctx.resolve(ctx.parameters().at("to"));
      ctx.send(self.to_, a);
    });
  }

private:
  handle to_;
};

inline registry durable_registry() {
  registry r;
  r.add<tally>("tally").add<counter>("counter").add<source>("source");
  r.add<mtally>("mtally");
  r.add<courier>("courier");
  return r;
}

} // namespace vigil::test
