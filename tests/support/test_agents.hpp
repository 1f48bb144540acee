#pragma once

// Agents and switches shared by the runtime tests.

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>

#include "proto/test.pb.h"
#include "vigil/actors/registry.hpp"

namespace vigil::test {

/// Switches that tests flip to make agents misbehave, keyed by agent path.
struct switches {
  static switches& get() {
    static switches inst;
    return inst;
  }
  std::mutex mtx;
  std::map<std::string, bool> fail_start;   ///< on_start throws
  std::map<std::string, int> starts;        ///< on_start/on_restart calls
  std::map<std::string, int> stops;         ///< on_stop calls
  std::function<void(int64_t)> advance;     ///< advances the test clock
  std::function<void()> on_stop_hook;       ///< runs inside on_stop

  bool failing(const std::string& path) {
    std::lock_guard<std::mutex> g{mtx};
    return fail_start[path];
  }
  void set_fail(const std::string& path, bool x) {
    std::lock_guard<std::mutex> g{mtx};
    fail_start[path] = x;
  }
  int start_count(const std::string& path) {
    std::lock_guard<std::mutex> g{mtx};
    return starts[path];
  }
  int stop_count(const std::string& path) {
    std::lock_guard<std::mutex> g{mtx};
    return stops[path];
  }
  void reset() {
    std::lock_guard<std::mutex> g{mtx};
    fail_start.clear();
    starts.clear();
    stops.clear();
    advance = nullptr;
    on_stop_hook = nullptr;
  }
};

/// Replies to Ping, crashes on Crash, exits on Exit, runs long on Slow.
class echo : public agent<Counter> {
public:
  static void define(handlers<echo>& h) {
    h.on<Ping>(&echo::ping);
    h.on<Crash>(&echo::crash);
    h.on<Exit>(&echo::exit);
    h.on<Slow>(&echo::slow);
  }

  void on_start(context& ctx) override {
    auto& s = switches::get();
    {
      std::lock_guard<std::mutex> g{s.mtx};
      ++s.starts[ctx.path()];
    }
    if (s.failing(ctx.path()))
      throw std::runtime_error("fail_start is set");
  }

  void on_stop(context& ctx) override {
    auto& s = switches::get();
    if (s.on_stop_hook)
      s.on_stop_hook();
    std::lock_guard<std::mutex> g{s.mtx};
    ++s.stops[ctx.path()];
  }

  Pong ping(context& ctx, const Ping& m) {
    state().set_count(state().count() + 1);
    Pong p;
    p.set_n(m.n());
    p.set_from(ctx.path());
    p.set_attempt(ctx.current()->attempt);
    p.set_seen(state().count());
    return p;
  }

  void crash(context&, const Crash& m) {
    throw std::runtime_error(m.why());
  }

  void exit(context& ctx, const Exit& m) {
    switch (m.how()) {
      case 0: ctx.stop(); break;
      case 1: ctx.stop(caf::exit_reason::user_shutdown); break;
      case 3:
        ctx.stop(); // then fail: the failure wins, the stop must not linger
        throw std::runtime_error("failed after stop");
      default: ctx.stop(make_error(errc::handler_failed, "asked to fail"));
    }
  }

  Pong slow(context& ctx, const Slow& m) {
    if (switches::get().advance)
      switches::get().advance(m.ms());
    Pong p;
    p.set_from(ctx.path());
    return p;
  }
};

/// Forwards a Relay as a Ping to `to` through a cached handle, with a
/// deadline, and answers its own requester from the callback.
class relay : public agent<> {
public:
  static void define(handlers<relay>& h) {
    h.on<Relay>(&relay::forward);
    h.on<Crash>([](relay&, context&, const Crash& m) {
      throw std::runtime_error(m.why());
    });
  }

  void forward(context& ctx, const Relay& m) {
    auto& h = handles_[m.to()];
    if (!h)
      h = ctx.resolve(m.to());
    Ping p;
    p.set_n(m.n());
    auto reply = ctx.defer();
    ctx.request<Pong>(
      h, p, std::chrono::milliseconds{m.timeout_ms()},
      [reply](vigil::reply<Pong> r) mutable { reply.deliver(r.value); },
      [reply](const caf::error& err) mutable { reply.fail(err); });
  }

private:
  std::map<std::string, handle> handles_;
};

inline registry test_registry() {
  registry r;
  r.add<echo>("echo");
  r.add<relay>("relay");
  return r;
}

} // namespace vigil::test
