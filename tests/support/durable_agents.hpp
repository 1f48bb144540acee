#pragma once

// Agents for the durability tests and the crash-test child process.

#include <stdexcept>
#include <string>

#include "proto/test.pb.h"
#include "support/gate.hpp"
#include "vigil/actors/registry.hpp"

namespace vigil::test {

/// Counts and sums Add.n, remembering the order; Add(n < 0) throws; Block
/// waits at a test gate, then adds like Add.
class tally : public agent<Tally> {
public:
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
  r.add<courier>("courier");
  return r;
}

} // namespace vigil::test
