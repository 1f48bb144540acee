#pragma once

// A vigil node on CAF's deterministic testing scheduler, for the randomized
// lifecycle test: nothing runs until the test says so, time is virtual, the
// writer runs on the scheduler (not on a thread of its own), and LMDB runs
// without fsync. A cell can be frozen: it takes no message until thawed,
// which is exactly what a handler stuck past its shutdown timeout looks
// like from outside (CAF cannot preempt a handler). A crash drops the
// writer's uncommitted batch and every actor without letting the writer
// commit anything more, then the store is closed, as a killed process
// would leave it.
//
// Only the node's public surfaces are used: the supervisor's message API
// (vigil/supervision/supervisor.hpp), envelopes sent to paths, the store's
// reads and test hooks.

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <caf/all.hpp>
#include <caf/scheduler/test_coordinator.hpp>

#include "vigil/actors/cell.hpp"
#include "vigil/actors/runtime.hpp"
#include "vigil/actors/writer.hpp"
#include "vigil/supervision/supervisor.hpp"
#include "vigil/supervision/message_types.hpp"

namespace vigil::test {

class det_node {
public:
  struct config : caf::actor_system_config {
    config() {
      set("scheduler.policy", caf::atom("testing"));
      set("logger.console", caf::atom("none"));
      vigil::add_message_types(*this);
    }
  };

  det_node(std::string dir, registry types)
    : dir_(std::move(dir)), types_(std::move(types)) {
    // nop
  }

  ~det_node() {
    if (up_)
      crash();
  }

  /// Opens the data dir and starts the tree; the start's error, if any.
  caf::error start(supervisor_spec spec, writer_options wopts = {}) {
    up_ = std::make_unique<up>(types_);
    auto& u = *up_;
    store_options so;
    so.dir = dir_;
    so.sync = sync_mode::nosync;
    // No structural walk before each start: it runs in a forked child,
    // and a fork of a process under AddressSanitizer, with the copy on
    // write that follows, was most of the lifecycle test's time (30
    // histories: 6.8 s with it, 2.7 s without). The walk has its own tests
    // (integrity_test, review22_test, damage_cli_test).
    so.verify = false;
    std::unique_ptr<store> st;
    if (auto s = store::open(so, st))
      return make_error(errc::storage_failed, s.message());
    std::map<std::string, recovered_agent> found;
    if (auto s = st->recover(found, quarantined_))
      return make_error(errc::storage_failed, s.message());
    u.st = std::shared_ptr<store>{std::move(st)};
    wopts.detached = false;
    wopts.idempotency_retention = std::chrono::milliseconds{0};
    wopts.tool_result_retention = std::chrono::milliseconds{0};
    u.writer = spawn_writer(u.sys, u.st, wopts, std::move(found),
                            u.rt->shared_stats());
    u.rt->attach_store(u.st, u.writer);
    u.root = spawn_supervisor(u.sys, u.rt, std::move(spec), "root");
    u.client = u.sys.spawn(client, &outcomes_);
    return ask_void(u.root, start_cmd{});
  }

  bool running() const {
    return up_ != nullptr;
  }

  caf::actor_system& system() {
    return up_->sys;
  }

  runtime& rt() {
    return *up_->rt;
  }

  store& storage() {
    return *up_->st;
  }

  caf::actor cell(const std::string& path) {
    return up_->rt->lookup(path);
  }

  /// Runs every job except those of frozen actors, until none is left.
  void run() {
    auto& s = sched();
    s.run_jobs_filtered([this](caf::resumable* r) {
      auto* a = dynamic_cast<caf::abstract_actor*>(r);
      return a == nullptr || frozen_.count(a) == 0;
    });
  }

  /// Runs at most `n` jobs (frozen actors aside); the number run. A crash
  /// after it lands between any two messages of the node.
  size_t run_some(size_t n) {
    auto& s = sched();
    size_t done = 0;
    while (done < n && !s.jobs.empty()) {
      auto b = s.jobs.begin();
      auto i = std::find_if(b, s.jobs.end(), [this](caf::resumable* r) {
        auto* a = dynamic_cast<caf::abstract_actor*>(r);
        return a == nullptr || frozen_.count(a) == 0;
      });
      if (i == s.jobs.end())
        break;
      if (i != b)
        std::rotate(b, i, i + 1);
      s.run_once();
      ++done;
    }
    return done;
  }

  /// Moves the virtual clock and fires the due timers, running nothing.
  void advance_clock(std::chrono::milliseconds d) {
    sched().advance_time(d);
  }

  /// Moves the virtual clock, fires the due timers and runs.
  void advance(std::chrono::milliseconds d) {
    sched().advance_time(d);
    run();
  }

  /// From now on, `a` takes no message until `thaw`.
  void freeze(const caf::actor& a) {
    frozen_.insert(caf::actor_cast<caf::abstract_actor*>(a));
    held_.push_back(a); // keeps the pointer valid while frozen
  }

  void thaw_all() {
    frozen_.clear();
    held_.clear();
    run();
  }

  bool any_frozen() const {
    return !frozen_.empty();
  }

  bool frozen(const caf::actor& a) const {
    return frozen_.count(caf::actor_cast<caf::abstract_actor*>(a)) > 0;
  }

  /// Runs only `a` for one activation (it handles what is in its mailbox).
  void step(const caf::actor& a) {
    auto& s = sched();
    if (s.prioritize(a))
      s.run_once();
  }

  /// Asks a supervisor (path "" is the root) and runs until answered.
  template <class T, class... Ts>
  caf::expected<T> ask(const std::string& sup, Ts&&... xs) {
    auto dest = sup.empty() ? up_->root : up_->rt->lookup(sup);
    if (!dest)
      return make_error(errc::not_found, sup);
    auto h = (*up_->self)->request(dest, caf::infinite, std::forward<Ts>(xs)...);
    run();
    if ((*up_->self)->mailbox().empty())
      return make_error(errc::not_found, "det_node: no reply arrived");
    caf::expected<T> out{caf::error{}};
    std::move(h).receive([&](T& x) { out = std::move(x); },
                         [&](caf::error& e) { out = std::move(e); });
    if (out)
      drop_handles(*out);
    return out;
  }

  // Answers keep no actor alive across a crash (a cell would hold the
  // node's runtime and so its store open).
  static void drop_handles(child_info& x) {
    x.handle = nullptr;
  }
  static void drop_handles(std::vector<child_info>& xs) {
    for (auto& x : xs)
      x.handle = nullptr;
  }
  template <class T>
  static void drop_handles(T&) {
    // nop
  }

  template <class... Ts>
  caf::error ask_void(const caf::actor& dest, Ts&&... xs) {
    auto h = (*up_->self)->request(dest, caf::infinite, std::forward<Ts>(xs)...);
    run();
    if ((*up_->self)->mailbox().empty())
      return make_error(errc::not_found, "det_node: no reply arrived");
    caf::error out;
    std::move(h).receive(
      [&](caf::error& e) { out = std::move(e); },
      caf::others >> [](caf::message_view&) -> caf::result<caf::message> {
        return caf::message{};
      });
    return out;
  }

  template <class... Ts>
  caf::error ask_void(const std::string& sup, Ts&&... xs) {
    auto dest = sup.empty() ? up_->root : up_->rt->lookup(sup);
    if (!dest)
      return make_error(errc::not_found, sup);
    return ask_void(dest, std::forward<Ts>(xs)...);
  }

  /// The outcome of a call made with `call`: nothing yet, an answer, or an
  /// error.
  struct outcome {
    bool done = false;
    envelope reply;   ///< the answer of an envelope request
    child_info info;  ///< the answer of start_child / restart_child
    caf::error err;
  };

  /// What a call expects as its answer.
  enum class answer : uint8_t { unit, info, env };

  /// Sends `xs` as a request to the actor `dest` without waiting; the
  /// answer lands in `result(ticket)` when the node runs.
  template <class... Ts>
  uint64_t call(answer kind, const caf::actor& dest, Ts&&... xs) {
    auto ticket = next_ticket_++;
    outcomes_[ticket];
    caf::anon_send(up_->client, call_atom::value, dest, ticket,
                   static_cast<uint8_t>(kind),
                   caf::make_message(std::forward<Ts>(xs)...));
    return ticket;
  }

  const outcome& result(uint64_t ticket) const {
    return outcomes_.at(ticket);
  }

  /// Sends `e` to whatever is bound at `path` now (false: nothing).
  bool send(const std::string& path, envelope e) {
    auto dest = up_->rt->lookup(path);
    if (!dest)
      return false;
    caf::anon_send(dest, std::move(e));
    return true;
  }

  /// An orderly stop: the tree stops in reverse start order, then the
  /// writer commits what it holds and ends; the store is closed.
  void stop() {
    auto& u = *up_;
    thaw_all();
    static_cast<void>(ask_void(u.root, stop_cmd{}));
    caf::anon_send_exit(u.root, caf::exit_reason::user_shutdown);
    run();
    caf::anon_send_exit(u.writer, caf::exit_reason::user_shutdown);
    run();
    down();
  }

  /// A crash: the writer ends first, dropping what it has not committed;
  /// then every actor ends. Nothing more reaches the disk.
  void crash() {
    auto& u = *up_;
    frozen_.clear();
    held_.clear();
    (*u.self)->send<caf::message_priority::high>(u.writer, crash_atom::value);
    sched().prioritize(u.writer);
    run();
    caf::anon_send_exit(u.root, caf::exit_reason::kill);
    run();
    down();
  }

  std::vector<quarantined> quarantine() const {
    return quarantined_;
  }

private:
  using call_atom = caf::atom_constant<caf::atom("dcall")>;

  /// Makes the requests of `call` and files their answers.
  static caf::behavior client(caf::event_based_actor* self,
                              std::map<uint64_t, outcome>* out) {
    return {
      [=](call_atom, caf::actor& dest, uint64_t ticket, uint8_t kind,
          caf::message& msg) {
        auto fail = [=](caf::error& err) {
          auto& o = (*out)[ticket];
          o.done = true;
          o.err = std::move(err);
        };
        auto req = self->request(dest, caf::infinite, std::move(msg));
        switch (static_cast<answer>(kind)) {
          case answer::unit:
            std::move(req).then([=] { (*out)[ticket].done = true; }, fail);
            break;
          case answer::info:
            std::move(req).then(
              [=](child_info& ci) {
                auto& o = (*out)[ticket];
                o.done = true;
                o.info = std::move(ci);
                o.info.handle = nullptr; // keeps no cell alive
              },
              fail);
            break;
          case answer::env:
            std::move(req).then(
              [=](envelope& e) {
                auto& o = (*out)[ticket];
                o.done = true;
                o.reply = std::move(e);
              },
              fail);
            break;
        }
      },
    };
  }

  struct up {
    explicit up(const registry& types)
      : sys(cfg),
        rt(std::make_shared<runtime>(types)),
        self(std::make_unique<caf::scoped_actor>(sys, true)) {
      // nop
    }
    config cfg;
    caf::actor_system sys;
    std::shared_ptr<runtime> rt;
    std::unique_ptr<caf::scoped_actor> self;
    std::shared_ptr<store> st;
    caf::actor writer;
    caf::actor root;
    caf::actor client;
  };

  caf::scheduler::test_coordinator& sched() {
    return dynamic_cast<caf::scheduler::test_coordinator&>(
      up_->sys.scheduler());
  }

  /// Ends this node's run: every actor is gone, then the store closes.
  void down() {
    auto& u = *up_;
    run();
    u.self.reset();
    caf::anon_send_exit(u.client, caf::exit_reason::kill);
    run();
    u.client = nullptr;
    u.root = nullptr;
    u.writer = nullptr;
    std::weak_ptr<store> st = u.st;
    u.st = nullptr;
    u.rt = nullptr;
    up_.reset(); // the actor system's destructor runs what is left
    if (!st.expired())
      ADD_FAILURE() << "det_node: the store outlived the node's actors";
  }

  std::string dir_;
  registry types_;
  std::unique_ptr<up> up_;
  std::set<caf::abstract_actor*> frozen_;
  std::vector<caf::actor> held_;
  std::vector<quarantined> quarantined_;
  std::map<uint64_t, outcome> outcomes_;
  uint64_t next_ticket_ = 1;
};

} // namespace vigil::test
