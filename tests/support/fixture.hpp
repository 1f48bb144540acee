#pragma once

// A GoogleTest fixture that runs a vigil runtime on CAF's deterministic
// testing scheduler: nothing runs until the test calls run(), and time only
// moves when the test calls advance().

#include <gtest/gtest.h>

#include <caf/all.hpp>
#include <caf/scheduler/test_coordinator.hpp>

#include "support/test_agents.hpp"
#include "vigil/actors/cell.hpp"
#include "vigil/supervision/check.hpp"
#include "vigil/supervision/message_types.hpp"
#include "vigil/supervision/supervisor.hpp"

namespace vigil::test {

class test_config : public caf::actor_system_config {
public:
  test_config() {
    set("scheduler.policy", caf::atom("testing"));
    set("logger.console", caf::atom("none"));
    vigil::add_message_types(*this);
  }
};

class runtime_fixture : public ::testing::Test {
public:
  runtime_fixture()
    : sys(cfg),
      sched(dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler())),
      rt(std::make_shared<runtime>(test_registry())),
      self(sys, true) {
    switches::get().reset();
    switches::get().advance = [this](int64_t ms) {
      // Called from inside a handler: only move the clock, run nothing.
      sched.clock().current_time += std::chrono::milliseconds{ms};
    };
  }

  ~runtime_fixture() override {
    for (auto& s : sups)
      caf::anon_send_exit(s, caf::exit_reason::user_shutdown);
    run();
    for (auto& s : sups)
      caf::anon_send_exit(s, caf::exit_reason::kill);
    run();
    switches::get().reset();
  }

  /// Runs every runnable actor until none is left.
  void run() {
    sched.run();
  }

  /// Moves the test clock, fires due timers and runs.
  void advance(std::chrono::milliseconds d) {
    sched.advance_time(d);
    run();
  }

  /// Spawns and starts a supervisor; returns the start error, if any.
  caf::error start(const std::string& path, supervisor_spec spec,
                   caf::actor* out = nullptr) {
    auto s = spawn_supervisor(sys, rt, std::move(spec), path);
    sups.push_back(s);
    if (out != nullptr)
      *out = s;
    auto r = ask_void(s, start_cmd{});
    return r;
  }

  /// Sends a request, runs the system and returns the answer.
  template <class T, class... Ts>
  caf::expected<T> ask(const caf::actor& dest, Ts&&... xs) {
    auto h = self->request(dest, caf::infinite, std::forward<Ts>(xs)...);
    run();
    if (self->mailbox().empty())
      return make_error(errc::not_found, "test: no reply arrived");
    caf::expected<T> out{caf::error{}};
    std::move(h).receive([&](T& x) { out = std::move(x); },
                         [&](caf::error& e) { out = std::move(e); });
    return out;
  }

  template <class... Ts>
  caf::error ask_void(const caf::actor& dest, Ts&&... xs) {
    auto h = self->request(dest, caf::infinite, std::forward<Ts>(xs)...);
    run();
    if (self->mailbox().empty())
      return make_error(errc::not_found, "test: no reply arrived");
    caf::error out;
    std::move(h).receive([&](caf::error& e) { out = std::move(e); },
                         caf::others >> [](caf::message_view&) -> caf::result<caf::message> {
                           return caf::message{};
                         });
    return out;
  }

  envelope wrap(const google::protobuf::Message& m, int64_t deadline = 0) {
    envelope e;
    e.type = vigil::type_symbol(m);
    m.SerializeToString(&e.payload);
    e.id = rt->next_id();
    e.deadline = deadline;
    return e;
  }

  /// Requests `m` from the agent at `path`; runs; returns the reply.
  caf::expected<envelope> call(const std::string& path,
                               const google::protobuf::Message& m) {
    auto dest = rt->lookup(path);
    if (!dest)
      return make_error(errc::not_found, path);
    return ask<envelope>(dest, wrap(m));
  }

  /// Sends `m` to `path` without waiting, and runs.
  void cast(const std::string& path, const google::protobuf::Message& m) {
    auto dest = rt->lookup(path);
    ASSERT_TRUE(dest) << "no agent at " << path;
    caf::anon_send(dest, wrap(m));
    run();
  }

  caf::actor handle(const std::string& path) {
    return rt->lookup(path);
  }

  std::vector<child_info> which(const caf::actor& sup) {
    auto r = ask<std::vector<child_info>>(sup, which_children_atom::value);
    EXPECT_TRUE(r) << describe(r.error());
    return r ? *r : std::vector<child_info>{};
  }

  child_counts counts(const caf::actor& sup) {
    auto r = ask<child_counts>(sup, count_children_atom::value);
    EXPECT_TRUE(r) << describe(r.error());
    return r ? *r : child_counts{};
  }

  std::string status_of(const caf::actor& sup, const std::string& id) {
    for (auto& ci : which(sup))
      if (ci.id == id)
        return ci.status;
    return "absent";
  }

  /// Crashes the agent at `path` by sending it a Crash (no reply expected).
  void crash(const std::string& path, const std::string& why = "boom") {
    Crash c;
    c.set_why(why);
    cast(path, c);
  }

  void exit_child(const std::string& path, int how) {
    Exit e;
    e.set_how(how);
    cast(path, e);
  }

  /// True while the actor `a` is alive.
  bool alive(const caf::actor& a) {
    auto* ctrl = caf::actor_cast<caf::abstract_actor*>(a);
    return ctrl != nullptr
           && !ctrl->getf(caf::abstract_actor::is_terminated_flag);
  }

  test_config cfg;
  caf::actor_system sys;
  caf::scheduler::test_coordinator& sched;
  std::shared_ptr<runtime> rt;
  caf::scoped_actor self;
  std::vector<caf::actor> sups;
};

/// The Pong in a reply envelope (fails the test if it is something else).
inline Pong pong_of(const envelope& e) {
  Pong p;
  EXPECT_EQ(e.type, Pong::descriptor()->full_name());
  EXPECT_TRUE(p.ParseFromString(e.payload));
  return p;
}

inline Ping ping(int64_t n) {
  Ping p;
  p.set_n(n);
  return p;
}

inline supervisor_spec flags(strategy s, int intensity = 1,
                             int period_ms = 5000) {
  supervisor_spec spec;
  spec.flags.strategy = s;
  spec.flags.intensity = intensity;
  spec.flags.period = std::chrono::milliseconds{period_ms};
  return spec;
}

} // namespace vigil::test
