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

  /// A request that echo's on_start/on_restart makes (to a Ping-answering
  /// path), and what its callback then does.
  struct start_call {
    enum what : uint8_t {
      throw_on_reply, ///< the reply callback throws
      throw_on_error, ///< the error callback throws (e.g. a timeout)
      fail_stop,      ///< the callback asks to stop with an error
      normal_stop,    ///< the callback asks to stop normally
    };
    std::string to;
    int64_t timeout_ms = 0;
    what how = throw_on_reply;
  };
  std::map<std::string, start_call> start_calls; ///< by agent path

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
    start_calls.clear();
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
    switches::start_call call;
    {
      std::lock_guard<std::mutex> g{s.mtx};
      auto i = s.start_calls.find(ctx.path());
      if (i == s.start_calls.end())
        return;
      call = i->second;
    }
    auto act = [&ctx, how = call.how](bool replied) {
      using sc = switches::start_call;
      switch (how) {
        case sc::throw_on_reply:
          if (replied)
            throw std::runtime_error("reply callback throws");
          break;
        case sc::throw_on_error:
          if (!replied)
            throw std::runtime_error("error callback throws");
          break;
        case sc::fail_stop:
          ctx.stop(make_error(errc::handler_failed, "callback stops"));
          break;
        case sc::normal_stop:
          ctx.stop();
          break;
      }
    };
    ctx.request<Pong>(
      ctx.resolve(call.to), ping_of(1),
      std::chrono::milliseconds{call.timeout_ms},
      [act](vigil::reply<Pong>) { act(true); },
      [act](const caf::error&) { act(false); });
  }

  static Ping ping_of(int64_t n) {
    Ping p;
    p.set_n(n);
    return p;
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
