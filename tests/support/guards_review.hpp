#pragma once

// Shared by the review tests of issue 17's guards (guards_review_test,
// guards_review2_test): tools whose behaviour each test sets, an agent
// that calls them, and a node with a data dir and approvals.

#include <atomic>
#include <chrono>
#include <future>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/approval_cli.hpp"
#include "support/eventually.hpp"
#include "support/temp_dir.hpp"
#include "support/tool_fixture.hpp"
#include "vigil/node/node.hpp"

using namespace vigil;
using namespace vigil::test;
using namespace std::chrono_literals;

namespace {

/// What each tool does (by name) and what it saw.
struct world {
  enum class mode { ok, transient, hang, late_transient };
  std::mutex mtx;
  std::map<std::string, mode> modes;
  std::map<std::string, int> runs;
  std::map<std::string, std::vector<std::string>> keys;
  std::vector<std::string> notes;
  std::atomic<bool> release{false};

  static world& get() {
    static world w;
    return w;
  }
  void reset() {
    std::lock_guard<std::mutex> guard{mtx};
    modes.clear();
    runs.clear();
    keys.clear();
    notes.clear();
    release = false;
  }
  void set(const std::string& tool, mode m) {
    std::lock_guard<std::mutex> guard{mtx};
    modes[tool] = m;
  }
  int count(const std::string& tool) {
    std::lock_guard<std::mutex> guard{mtx};
    return runs[tool];
  }
  std::vector<std::string> keys_of(const std::string& tool) {
    std::lock_guard<std::mutex> guard{mtx};
    return keys[tool];
  }
  void note(std::string s) {
    std::lock_guard<std::mutex> guard{mtx};
    notes.push_back(std::move(s));
  }
  std::vector<std::string> noted() {
    std::lock_guard<std::mutex> guard{mtx};
    return notes;
  }
  tool_result<Pong> call(const std::string& tool, const Ping& req,
                         tool_call& c) {
    mode m;
    {
      std::lock_guard<std::mutex> guard{mtx};
      ++runs[tool];
      keys[tool].push_back(c.idempotency_key());
      m = modes[tool];
    }
    if (m == mode::transient)
      return tool_error::transient("503 from " + tool);
    if (m == mode::late_transient) {
      // Past the caller's 200 ms, ignoring cancellation, then a 503.
      std::this_thread::sleep_for(250ms);
      return tool_error::transient("late 503 from " + tool);
    }
    if (m == mode::hang) {
      // Blocks (as a real blocking call) until released, or 20 s.
      auto until = std::chrono::steady_clock::now() + 20s;
      while (!release && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(1ms);
    }
    Pong p;
    p.set_n(req.n());
    p.set_from(tool);
    return p;
  }
};

std::string code_of(const caf::error& e) {
  return e.category() == caf::atom("vigil")
           ? to_string(static_cast<errc>(e.code()))
           : describe(e);
}

/// On Ping n: calls param `tool` (default "main") and answers Pong{n, from:
/// who answered} or the error. Params: `effect` (sends the Ping as an
/// effect, answers at once), `timeout_ms` (the call's own timeout),
/// `throw_on_error` (the error callback throws), `again` (the error
/// callback calls "main" once more, and answers when it returns). On Order:
/// answers Receipt{order: id} (a type no approval covers).
class prober : public agent<> {
public:
  explicit prober(const params& ps) {
    if (auto i = ps.find("tool"); i != ps.end())
      tool_ = i->second;
    if (auto i = ps.find("timeout_ms"); i != ps.end())
      opts_.timeout = std::chrono::milliseconds{std::stoll(i->second)};
    effect_ = ps.count("effect") > 0;
    throw_ = ps.count("throw_on_error") > 0;
    again_ = ps.count("again") > 0;
  }

  static void define(handlers<prober>& h) {
    h.on<Ping>(&prober::ping);
    h.on<Crash>([](prober&, context&, const Crash& c) -> Pong {
      throw std::runtime_error(c.why());
    });
    h.on<Slow>([](prober&, context&, const Slow& s) -> Pong {
      // Keeps the cell busy (a long handler).
      auto until = std::chrono::steady_clock::now()
                   + std::chrono::milliseconds{s.ms()};
      while (std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(1ms);
      return Pong{};
    });
    h.on<Order>([](prober&, context&, const Order& o) -> Receipt {
      world::get().note("order:" + o.id());
      Receipt r;
      r.set_order(o.id());
      return r;
    });
  }

  void ping(context& ctx, const Ping& m) {
    if (effect_) {
      if (auto err = ctx.effect(tool_, m))
        throw tool_failure{err};
      return ctx.defer().deliver(Pong{});
    }
    auto rp = ctx.defer();
    ctx.call_tool<Pong>(
      tool_, m, opts_,
      [rp](Pong p, const tool_answer& a) mutable {
        p.set_from(std::string{a.tool} + (a.by_default ? "+default" : "")
                   + (a.replayed ? "+replayed" : ""));
        rp.deliver(p);
      },
      [this, &ctx, rp](const caf::error& e) mutable {
        world::get().note("error:" + code_of(e));
        if (throw_)
          throw std::runtime_error("callback refuses " + code_of(e));
        if (!again_)
          return rp.fail(e);
        ctx.call_tool<Pong>(
          "main", vigil::test::ping(1),
          [rp](Pong p) mutable { rp.deliver(p); },
          [rp](const caf::error& e2) mutable { rp.fail(e2); });
      });
  }

private:
  std::string tool_ = "main";
  tool_options opts_;
  bool effect_ = false;
  bool throw_ = false;
  bool again_ = false;
};

registry review_types() {
  registry r;
  r.add<prober>("prober");
  for (auto name : {"main", "backup", "check", "pay", "peek"})
    r.add_tool<Ping, Pong>(name, [name = std::string{name}](const Ping& req,
                                                           tool_call& c) {
      return world::get().call(name, req, c);
    });
  return r;
}

tool_decl quick(std::string name, side_effect fx = side_effect::read_only) {
  auto d = decl_of(std::move(name), fx);
  d.policy.retry.max_attempts = fx == side_effect::irreversible ? 1 : 2;
  d.policy.retry.initial = 1ms;
  d.policy.retry.max = 2ms;
  d.policy.breaker.enabled = false;
  return d;
}

node_config base_config(const std::string& dir) {
  node_config cfg;
  cfg.data_dir = dir;
  cfg.sync = sync_mode::nosync;
  cfg.approvals_poll = 20ms;
  // A stop does not wait for a hung execution.
  cfg.tool_executors = [](const tool_decl& t) {
    return std::make_shared<detail::thread_pool>(
      t.policy.bulkhead.max_concurrent, t.name, 0ms);
  };
  return cfg;
}

child_spec prober_child(std::string id, params ps,
                        durability_mode mode = durability_mode::none) {
  child_spec c;
  c.id = std::move(id);
  c.agent = "prober";
  c.params = std::move(ps);
  c.durability.mode = mode;
  return c;
}

supervisor_spec tree_of(std::vector<child_spec> children) {
  supervisor_spec spec;
  spec.flags.intensity = 100;
  spec.children = std::move(children);
  return spec;
}

std::vector<std::string> pending_ids(const std::string& dir) {
  std::vector<std::string> out;
  for (auto& x : pending_approvals(dir))
    out.push_back(x.value("id", ""));
  return out;
}

Order order(std::string id) {
  Order o;
  o.set_id(std::move(id));
  return o;
}


/// A child whose Pings wait for approval (Orders do not).
child_spec gated(durability_mode mode = durability_mode::none,
                 std::chrono::milliseconds timeout = 120s) {
  auto c = prober_child("g", {{"tool", "main"}}, mode);
  c.approval.required = true;
  c.approval.timeout = timeout;
  c.approval.types = {"vigil.test.Ping"};
  return c;
}



/// A node whose "pay" needs approval, with a sibling "k" that fails on
/// Crash (one_for_all: the caller "c" restarts with it).
supervisor_spec pay_tree(durability_mode mode) {
  auto spec = tree_of({prober_child("c", {{"tool", "pay"}}, mode),
                       prober_child("k", {})});
  spec.flags.strategy = strategy::one_for_all;
  return spec;
}

Crash crash(std::string why) {
  Crash c;
  c.set_why(std::move(why));
  return c;
}


class guards_review_test : public ::testing::Test {
protected:
  void SetUp() override {
    world::get().reset();
  }
  void TearDown() override {
    world::get().release = true;
  }
  temp_dir tmp_;
  std::string dir_ = tmp_.path() + "/data";
};

} // namespace
