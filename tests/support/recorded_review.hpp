#pragma once

// The fixtures of the adversarial review of issue 17's recorded calls
// (recorded_calls_review_test.cpp, recorded_keys_review_test.cpp): a keyed
// write service, the agents that call it, and a node with a data dir.

#include <array>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "support/eventually.hpp"
#include "support/temp_dir.hpp"
#include "support/tool_fixture.hpp"
#include "vigil/actors/detail/tool_record.hpp"
#include "vigil/node/node.hpp"

namespace vigil::test::review17 {

using namespace std::chrono_literals;


/// A write service that counts its executions by idempotency key. A
/// request with n >= 100000 hangs until `release` (bounded).
struct review_service {
  std::mutex mtx;
  std::map<std::string, int> by_key;
  std::vector<std::string> keys;
  std::atomic<int> executions{0};
  std::atomic<int> hanging{0};
  std::atomic<bool> release{false};

  /// fan gates: a request n = 1000 * (i + 1) + level (level 0 or 1)
  /// waits while gate 2 * i + level is closed (and `gated` is set).
  std::atomic<bool> gated{false};
  std::array<std::atomic<bool>, 16> gate{};

  tool_result<Pong> call(const Ping& req, tool_call& c) {
    ++executions;
    if (gated && req.n() >= 1000 && req.n() < 9000) {
      auto idx = (req.n() / 1000 - 1) * 2 + req.n() % 1000;
      ++hanging;
      auto until = std::chrono::steady_clock::now() + 20s;
      while (!gate[idx] && !release && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(1ms);
      --hanging;
    }
    {
      std::lock_guard<std::mutex> guard{mtx};
      ++by_key[c.idempotency_key()];
      keys.push_back(c.idempotency_key());
    }
    if (req.n() >= 100000) {
      ++hanging;
      auto until = std::chrono::steady_clock::now() + 20s;
      while (!release && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(1ms); // a blocking call, as a tool's is
      --hanging;
    }
    Pong p;
    p.set_n(req.n());
    return p;
  }
  int count(const std::string& key) {
    std::lock_guard<std::mutex> guard{mtx};
    auto i = by_key.find(key);
    return i == by_key.end() ? 0 : i->second;
  }
  std::vector<std::string> all_keys() {
    std::lock_guard<std::mutex> guard{mtx};
    return keys;
  }
  void reset() {
    std::lock_guard<std::mutex> guard{mtx};
    by_key.clear();
    keys.clear();
    executions = 0;
    hanging = 0;
    release = false;
    gated = false;
    for (auto& g : gate)
      g = false;
  }
  static review_service& get() {
    static review_service s;
    return s;
  }
};

/// What the agents saw (errors by code name, Adds received by the sink).
struct review_seen {
  std::mutex mtx;
  std::vector<std::string> codes;
  std::atomic<int> sink_adds{0};
  std::atomic<int> cb_throws{0};
  void add(const caf::error& e) {
    std::lock_guard<std::mutex> guard{mtx};
    codes.push_back(e.category() == caf::atom("vigil")
                      ? to_string(static_cast<errc>(e.code()))
                      : describe(e));
  }
  bool has(const std::string& code) {
    std::lock_guard<std::mutex> guard{mtx};
    for (auto& c : codes)
      if (c == code)
        return true;
    return false;
  }
  std::string all() {
    std::lock_guard<std::mutex> guard{mtx};
    std::string out;
    for (auto& c : codes)
      out += c + " ";
    return out;
  }
  void note(std::string x) {
    std::lock_guard<std::mutex> guard{mtx};
    codes.push_back(std::move(x));
  }
  void reset() {
    std::lock_guard<std::mutex> guard{mtx};
    codes.clear();
    sink_adds = 0;
    cb_throws = 0;
  }
  static review_seen& get() {
    static review_seen s;
    return s;
  }
};

/// On Ping n (deferred reply): calls "w" with n * 10; its callback adds the
/// reply to Tally.sum and 1 to Tally.count, then (params)
///   send_to: sends Add{n} to that path;
///   cb_throw: throws (before touching the state);
///   cb_stop: asks to stop;
///   hang: calls "w" with 100000 + n (hangs) and adds its reply to the sum;
///   depth D: a loop of D calls, each made in the previous one's callback
///     (an agent loop written with callbacks), counting them in Tally.count.
/// The reply is the Tally once the last callback ran. Get answers the Tally.
class holder : public agent<Tally> {
public:
  explicit holder(const params& ps) {
    if (auto i = ps.find("send_to"); i != ps.end())
      send_to_ = i->second;
    if (auto i = ps.find("depth"); i != ps.end())
      depth_ = std::stoi(i->second);
    cb_throw_ = ps.count("cb_throw") > 0;
    cb_stop_ = ps.count("cb_stop") > 0;
    hang_ = ps.count("hang") > 0;
  }

  static void define(handlers<holder>& h) {
    h.on<Ping>(&holder::ping);
    h.on<Get>([](holder& self, context&, const Get&) -> Tally {
      return self.state();
    });
  }

  void ping(context& ctx, const Ping& m) {
    auto rp = ctx.defer();
    auto fail = [rp](const caf::error& e) mutable {
      review_seen::get().add(e);
      review_seen::get().note("(" + describe(e) + ")");
      rp.fail(e);
    };
    if (depth_ > 0) {
      loop(ctx, rp, fail, m.n(), 0);
      return;
    }
    Ping req;
    req.set_n(m.n() * 10);
    ctx.call_tool<Pong>(
      "w", req,
      [this, &ctx, rp, fail, n = m.n()](Pong p) mutable {
        if (cb_throw_) {
          ++review_seen::get().cb_throws;
          throw std::runtime_error("callback throws");
        }
        state().set_sum(state().sum() + p.n());
        state().set_count(state().count() + 1);
        review_seen::get().note("cb0:sum=" + std::to_string(state().sum()));
        if (!send_to_.empty()) {
          Add a;
          a.set_n(n);
          ctx.send(send_to_, a);
        }
        if (cb_stop_) {
          rp.deliver(state());
          ctx.stop();
          return;
        }
        if (!hang_) {
          rp.deliver(state());
          return;
        }
        Ping more;
        more.set_n(100000 + n);
        ctx.call_tool<Pong>(
          "w", more,
          [this, rp](Pong q) mutable {
            state().set_sum(state().sum() + q.n());
            review_seen::get().note("cb0.0:sum=" + std::to_string(state().sum()));
            rp.deliver(state());
          },
          fail);
      },
      fail);
  }

  template <class Fail>
  void loop(context& ctx, deferred_reply rp, Fail fail, int64_t n, int step) {
    if (step == depth_) {
      rp.deliver(state());
      return;
    }
    Ping req;
    req.set_n(n * 1000 + step);
    ctx.call_tool<Pong>(
      "w", req,
      [this, &ctx, rp, fail, n, step](Pong) mutable {
        state().set_count(state().count() + 1);
        loop(ctx, rp, fail, n, step + 1);
      },
      fail);
  }

private:
  std::string send_to_;
  int depth_ = 0;
  bool cb_throw_ = false;
  bool cb_stop_ = false;
  bool hang_ = false;
};

/// On Ping: calls "w" k times (param k), call i with 1000 * (i + 1); the
/// callback of each calls "w" with its reply + 1, and adds both replies to
/// Tally.sum, counts the pair in Tally.count and answers once k are done.
class fan : public agent<Tally> {
public:
  explicit fan(const params& ps) {
    if (auto i = ps.find("k"); i != ps.end())
      k_ = std::stoi(i->second);
  }
  static void define(handlers<fan>& h) {
    h.on<Ping>(&fan::ping);
    h.on<Get>([](fan& self, context&, const Get&) -> Tally {
      return self.state();
    });
  }
  void ping(context& ctx, const Ping&) {
    auto rp = ctx.defer();
    auto fail = [rp](const caf::error& e) mutable {
      review_seen::get().add(e);
      rp.fail(e);
    };
    for (int i = 0; i < k_; ++i) {
      Ping req;
      req.set_n(1000 * (i + 1));
      ctx.call_tool<Pong>(
        "w", req,
        [this, &ctx, rp, fail](Pong p) mutable {
          state().set_sum(state().sum() + p.n());
          Ping more;
          more.set_n(p.n() + 1);
          ctx.call_tool<Pong>(
            "w", more,
            [this, rp](Pong q) mutable {
              state().set_sum(state().sum() + q.n());
              state().set_count(state().count() + 1);
              if (state().count() % k_ == 0)
                rp.deliver(state());
            },
            fail);
        },
        fail);
    }
  }

private:
  int k_ = 2;
};

/// Counts the Adds it receives (review_seen::sink_adds).
class review_sink : public agent<Tally> {
public:
  explicit review_sink(const params&) {
  }
  static void define(handlers<review_sink>& h) {
    h.on<Add>([](review_sink& self, context&, const Add& a) -> Tally {
      if (a.n() < 0)
        throw std::runtime_error("sink crashes");
      ++review_seen::get().sink_adds;
      self.state().set_count(self.state().count() + 1);
      self.state().add_seen(a.n());
      return self.state();
    });
  }
};

inline registry review_types() {
  registry r;
  r.add<holder>("holder");
  r.add<review_sink>("sink");
  r.add<fan>("fan");
  r.add_tool<Ping, Pong>("w", [](const Ping& req, tool_call& c) {
    return review_service::get().call(req, c);
  });
  return r;
}

inline node_config review_config(const std::string& dir) {
  node_config cfg;
  cfg.data_dir = dir;
  auto d = decl_of("w", side_effect::idempotent_write);
  d.policy.retry.initial = 1ms;
  d.policy.retry.max = 2ms;
  d.policy.bulkhead.max_concurrent = 8;
  cfg.tools.push_back(d);
  cfg.tool_executors = [](const tool_decl& t) {
    return std::make_shared<detail::thread_pool>(
      t.policy.bulkhead.max_concurrent, t.name, 0ms);
  };
  return cfg;
}

inline child_spec holder_child(params ps, std::string id = "h",
                        uint32_t max_deliveries = 1) {
  child_spec c;
  c.id = std::move(id);
  c.agent = "holder";
  c.params = std::move(ps);
  c.durability.mode = durability_mode::journal;
  c.max_deliveries = max_deliveries;
  return c;
}

inline supervisor_spec review_tree(std::vector<child_spec> cs) {
  supervisor_spec spec;
  spec.flags.intensity = 100;
  spec.children = std::move(cs);
  return spec;
}

inline child_spec sink_child() {
  child_spec c;
  c.id = "s";
  c.agent = "sink";
  return c;
}

inline size_t count(node& n, db d) {
  size_t out = 0;
  return n.rt()->storage()->count(d, out) ? size_t{999999} : out;
}

Ping ping_of(int64_t n) {
  Ping p;
  p.set_n(n);
  return p;
}

inline caf::expected<Tally> get_tally(node& n, const std::string& path) {
  auto r = n.call<Tally>(path, Get{}, 5s);
  if (!r)
    return std::move(r.error());
  return r->value;
}

class recorded_calls_review : public ::testing::Test {
protected:
  void SetUp() override {
    review_service::get().reset();
    review_seen::get().reset();
  }
  void TearDown() override {
    review_service::get().release = true;
    eventually([] { return review_service::get().hanging.load() == 0; }, 5s);
  }
};

} // namespace vigil::test::review17
