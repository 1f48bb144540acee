// Adversarial review of issue 17 (part 1): idempotency keys, recorded tool
// calls and the envelope a journal agent holds open while its calls run.
// Each test states what the issue promises; a failing one is a defect.

#include <array>
#include <atomic>
#include <random>
#include <chrono>
#include <map>
#include <mutex>
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

using namespace vigil;
using namespace vigil::test;
using namespace std::chrono_literals;

namespace {

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

registry review_types() {
  registry r;
  r.add<holder>("holder");
  r.add<review_sink>("sink");
  r.add<fan>("fan");
  r.add_tool<Ping, Pong>("w", [](const Ping& req, tool_call& c) {
    return review_service::get().call(req, c);
  });
  return r;
}

node_config review_config(const std::string& dir) {
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

child_spec holder_child(params ps, std::string id = "h",
                        uint32_t max_deliveries = 1) {
  child_spec c;
  c.id = std::move(id);
  c.agent = "holder";
  c.params = std::move(ps);
  c.durability.mode = durability_mode::journal;
  c.max_deliveries = max_deliveries;
  return c;
}

supervisor_spec review_tree(std::vector<child_spec> cs) {
  supervisor_spec spec;
  spec.flags.intensity = 100;
  spec.children = std::move(cs);
  return spec;
}

child_spec sink_child() {
  child_spec c;
  c.id = "s";
  c.agent = "sink";
  return c;
}

size_t count(node& n, db d) {
  size_t out = 0;
  return n.rt()->storage()->count(d, out) ? size_t{999999} : out;
}

Ping ping_of(int64_t n) {
  Ping p;
  p.set_n(n);
  return p;
}

caf::expected<Tally> get_tally(node& n, const std::string& path) {
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

} // namespace

// -- sends made by a held envelope's callbacks --------------------------------

// The issue: the held envelope's consume (state, OUTBOX SENDS, reply) is
// committed once its calls are done, "with what their callbacks did". A
// send made in a callback must therefore wait for that commit and, since
// the envelope may be replayed, must not go out again on the replay.
TEST_F(recorded_calls_review,
       a_callbacks_send_waits_for_the_consume_and_is_not_repeated_on_replay) {
  temp_dir dir;
  auto& svc = review_service::get();
  auto& seen = review_seen::get();
  {
    node n{review_types(), review_config(dir.path())};
    ASSERT_FALSE(n.start("root", review_tree({holder_child(
                                   {{"send_to", "root/s"}, {"hang", ""}}),
                                 sink_child()})));
    ASSERT_FALSE(n.send("root/h", ping_of(5)));
    ASSERT_TRUE(eventually([&] { return svc.hanging.load() == 1; }, 5s));
    EXPECT_EQ(count(n, db::journal), 1u); // held: not consumed
    // Give a send that went out at once the time to arrive.
    eventually([&] { return seen.sink_adds.load() > 0; }, 300ms);
    EXPECT_EQ(seen.sink_adds.load(), 0)
      << "the callback's send was delivered before the held envelope's "
         "consume was committed";
    n.stop();
    svc.release = true;
  }
  ASSERT_TRUE(eventually([&] { return svc.hanging.load() == 0; }, 5s));
  node n{review_types(), review_config(dir.path())};
  ASSERT_FALSE(n.start("root", review_tree({holder_child(
                                 {{"send_to", "root/s"}, {"hang", ""}}),
                               sink_child()})));
  ASSERT_TRUE(eventually([&] { return count(n, db::journal) == 0; }, 5s));
  ASSERT_TRUE(eventually([&] { return seen.sink_adds.load() >= 1; }, 5s));
  eventually([&] { return seen.sink_adds.load() > 1; }, 300ms);
  EXPECT_EQ(seen.sink_adds.load(), 1)
    << "the callback's send went out once per run of the envelope";
  auto t = get_tally(n, "root/h");
  ASSERT_TRUE(t) << describe(t.error());
  EXPECT_EQ(t->count(), 1);
  EXPECT_EQ(t->sum(), 50 + 100005);
}

// -- a record whose commit fails ----------------------------------------------

// The record of call 0 fails to commit. The issue: "its callback runs only
// once that record is committed"; the callback does not run, so the held
// envelope must not be consumed as handled without it (its effect would be
// lost): the envelope stays in the journal and a later run applies it.
TEST_F(recorded_calls_review,
       a_failed_record_commit_does_not_consume_the_envelope_without_its_callback) {
  temp_dir dir;
  auto& svc = review_service::get();
  node n{review_types(), review_config(dir.path())};
  std::atomic<int> failed{0};
  ASSERT_FALSE(n.start("root", review_tree({holder_child({})})));
  n.rt()->storage()->set_apply_hook([&](write_item* const* items, size_t k) {
    for (size_t i = 0; i < k; ++i)
      for (auto& m : items[i]->muts)
        if (m.where == db::tool_results && m.what == mutation::op::put) {
          int zero = 0;
          return failed.compare_exchange_strong(zero, 1);
        }
    return false;
  });
  auto r = n.call<Tally>("root/h", ping_of(7), 5s);
  EXPECT_EQ(failed.load(), 1);
  // Whatever the requester heard, the envelope's effect is applied once,
  // eventually (after the cell recovered from its storage failure).
  caf::expected<Tally> t = make_error(errc::not_running, "");
  bool applied = eventually(
    [&] {
      t = get_tally(n, "root/h");
      return t && t->count() == 1;
    },
    5s);
  EXPECT_TRUE(applied) << "requester: "
                       << (r ? "ok" : describe(r.error())) << "; state: "
                       << (t ? std::to_string(t->count()) + " callbacks ran"
                             : describe(t.error()))
                       << "; journal entries left: "
                       << count(n, db::journal)
                       << "; executions: " << svc.executions.load();
  EXPECT_EQ(count(n, db::journal), 0u);
  n.rt()->storage()->set_apply_hook({});
}

// -- lifecycle while held -----------------------------------------------------

// A supervisor restart while the held envelope's call 0.0 still runs. The
// issue: the envelope goes back to the head of the buffer and the next
// instance replays it, its recorded calls answered from their records. The
// call that still runs is neither recorded nor finished: the replay's
// repeat of it must not turn into a failure of the envelope (the effect of
// that call, which does complete and is recorded, would be lost to it).
TEST_F(recorded_calls_review,
       a_restart_while_a_held_call_runs_does_not_lose_that_call) {
  temp_dir dir;
  auto& svc = review_service::get();
  auto& seen = review_seen::get();
  node n{review_types(), review_config(dir.path())};
  auto tree = review_tree({holder_child({{"hang", ""}}), sink_child()});
  tree.flags.strategy = strategy::one_for_all;
  ASSERT_FALSE(n.start("root", tree));
  ASSERT_FALSE(n.send("root/h", ping_of(5)));
  ASSERT_TRUE(eventually([&] { return svc.hanging.load() == 1; }, 5s));
  // The sibling crashes: one_for_all restarts the holder too.
  Add boom;
  boom.set_n(-1);
  ASSERT_FALSE(n.send("root/s", boom));
  // Let the replay run into the running key, then let the call finish.
  eventually([&] { return !seen.all().empty(); }, 1s);
  svc.release = true;
  ASSERT_TRUE(eventually([&] { return svc.hanging.load() == 0; }, 5s));
  ASSERT_TRUE(eventually([&] { return count(n, db::journal) == 0; }, 5s));
  EXPECT_FALSE(seen.has("in_use")) << seen.all();
  auto t = get_tally(n, "root/h");
  ASSERT_TRUE(t) << describe(t.error());
  EXPECT_EQ(t->count(), 1);
  EXPECT_EQ(t->sum(), 50 + 100005)
    << "call 0.0 executed (and was recorded), but the envelope was consumed "
       "without its result";
}

// terminate_child while held, then restart_child once the running call
// has returned: the envelope is still in the journal, and the restart
// replays it from the records (no execution repeats), applied once. The
// late answer of call 0.0 executed (the service applied it): its record
// must be that answer, not an error made up because its caller was gone.
TEST_F(recorded_calls_review,
       terminate_while_held_then_restart_replays_from_the_records) {
  temp_dir dir;
  auto& svc = review_service::get();
  node n{review_types(), review_config(dir.path())};
  ASSERT_FALSE(n.start("root", review_tree({holder_child({{"hang", ""}})})));
  ASSERT_FALSE(n.send("root/h", ping_of(5)));
  ASSERT_TRUE(eventually([&] { return svc.hanging.load() == 1; }, 5s));
  ASSERT_FALSE(n.terminate_child("root", "h"));
  EXPECT_EQ(count(n, db::journal), 1u);
  svc.release = true;
  ASSERT_TRUE(eventually([&] { return svc.hanging.load() == 0; }, 5s));
  // The late answer is recorded (its callbacks are dropped).
  ASSERT_TRUE(eventually([&] { return count(n, db::tool_results) == 2; }, 5s));
  ASSERT_TRUE(n.restart_child("root", "h"));
  ASSERT_TRUE(eventually([&] { return count(n, db::journal) == 0; }, 5s));
  EXPECT_EQ(svc.executions.load(), 2) << "a recorded call executed again";
  EXPECT_EQ(n.rt()->find_tool("w")->stats().replayed.load(), 2u)
    << review_seen::get().all();
  auto t = get_tally(n, "root/h");
  ASSERT_TRUE(t) << describe(t.error());
  EXPECT_EQ(t->count(), 1);
  EXPECT_EQ(t->sum(), 50 + 100005) << review_seen::get().all();
  EXPECT_FALSE(review_seen::get().has("not_running"))
    << "call 0.0 succeeded, but its record says not_running: "
    << review_seen::get().all();
}

// A callback of a held envelope throws: the delivery failed, retried once
// (max_deliveries 2) with call 0 answered from its record, then a dead
// letter. The requester hears exactly one error.
TEST_F(recorded_calls_review,
       a_throwing_callback_fails_the_delivery_and_the_retry_replays) {
  temp_dir dir;
  auto& svc = review_service::get();
  auto& seen = review_seen::get();
  node n{review_types(), review_config(dir.path())};
  ASSERT_FALSE(n.start("root", review_tree({holder_child({{"cb_throw", ""}},
                                                         "h", 2)})));
  auto r = n.call<Tally>("root/h", ping_of(3), 5s);
  ASSERT_FALSE(r);
  // As the control below (a handler that defers and throws) hears.
  EXPECT_TRUE(is(r.error(), errc::poison_message)
              || is(r.error(), errc::reply_dropped))
    << describe(r.error());
  ASSERT_TRUE(eventually([&] { return count(n, db::journal) == 0; }, 5s));
  EXPECT_EQ(seen.cb_throws.load(), 2);
  EXPECT_EQ(svc.executions.load(), 1) << "the retry executed call 0 again";
  EXPECT_EQ(n.rt()->find_tool("w")->stats().replayed.load(), 1u);
  EXPECT_EQ(n.dead_letters().size(), 1u);
  auto t = get_tally(n, "root/h");
  ASSERT_TRUE(t) << describe(t.error());
  EXPECT_EQ(t->count(), 0);
}

// Control for the test above, without tool calls: a handler that defers
// its reply and throws, max_deliveries 2. (What the requester hears there
// is the runtime's established behaviour.)
class defer_thrower : public agent<Tally> {
public:
  explicit defer_thrower(const params&) {
  }
  static void define(handlers<defer_thrower>& h) {
    h.on<Ping>([](defer_thrower&, context& ctx, const Ping&) {
      auto rp = ctx.defer();
      ++review_seen::get().cb_throws;
      throw std::runtime_error("handler throws");
    });
  }
};

TEST_F(recorded_calls_review, control_a_deferring_handler_that_throws) {
  temp_dir dir;
  auto types = review_types();
  types.add<defer_thrower>("defer_thrower");
  node n{std::move(types), review_config(dir.path())};
  auto c = holder_child({}, "h", 2);
  c.agent = "defer_thrower";
  ASSERT_FALSE(n.start("root", review_tree({c})));
  auto r = n.call<Tally>("root/h", ping_of(3), 5s);
  ASSERT_FALSE(r);
  // The runtime's answer here is reply_dropped ("what the handler did
  // stands", though it is redelivered): not issue 17's doing.
  EXPECT_TRUE(is(r.error(), errc::poison_message)
              || is(r.error(), errc::reply_dropped))
    << describe(r.error());
  ASSERT_TRUE(eventually([&] { return count(n, db::journal) == 0; }, 5s));
  EXPECT_EQ(review_seen::get().cb_throws.load(), 2);
}

// A callback stops the agent: the held envelope is committed as handled,
// with the callback's change, and the requester hears its reply once.
TEST_F(recorded_calls_review, a_stop_in_a_callback_commits_the_held_envelope) {
  temp_dir dir;
  node n{review_types(), review_config(dir.path())};
  ASSERT_FALSE(n.start("root", review_tree({holder_child({{"cb_stop", ""}})})));
  auto r = n.call<Tally>("root/h", ping_of(4), 5s);
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_EQ(r->value.count(), 1);
  ASSERT_TRUE(eventually([&] { return count(n, db::journal) == 0; }, 5s));
  caf::expected<Tally> t = make_error(errc::not_running, "");
  ASSERT_TRUE(eventually(
    [&] {
      t = get_tally(n, "root/h");
      return static_cast<bool>(t);
    },
    5s));
  EXPECT_EQ(t->count(), 1);
  EXPECT_EQ(t->sum(), 40);
  EXPECT_EQ(review_service::get().executions.load(), 1);
}

// -- a resend of a held envelope's message id ----------------------------------

// keep_reply (issue 15): a resend of the message id while the envelope
// still waits in the agent's journal "is answered when it is handled". A
// held envelope still waits in the journal (not consumed); the resend must
// get the answer, not `duplicate`.
TEST_F(recorded_calls_review, a_resend_of_a_held_envelope_gets_its_answer) {
  temp_dir dir;
  auto& svc = review_service::get();
  node n{review_types(), review_config(dir.path())};
  ASSERT_FALSE(n.start("root", review_tree({holder_child({{"hang", ""}})})));
  auto make = [] {
    envelope e;
    auto p = ping_of(5);
    e.type = type_symbol(p);
    p.SerializeToString(&e.payload);
    e.id = 777;
    e.flags |= envelope::keep_reply_flag;
    return e;
  };
  auto cell = n.rt()->lookup("root/h");
  ASSERT_TRUE(cell);
  caf::scoped_actor self{n.system()};
  // The first send: nobody waits (a requester that crashed).
  self->send(cell, make());
  ASSERT_TRUE(eventually([&] { return svc.hanging.load() == 1; }, 5s));
  EXPECT_EQ(count(n, db::journal), 1u);
  // The resend, while the envelope is held.
  bool done = false;
  caf::error err;
  envelope rep;
  // (a correct cell answers once the envelope is handled: the wait of 1 s
  // times out, since its call hangs; a `duplicate` comes back at once)
  self->request(cell, caf::duration{1s}, make())
    .receive([&](envelope& e) { done = true; rep = std::move(e); },
             [&](caf::error& e) {
               done = true;
               err = std::move(e);
             });
  ASSERT_TRUE(done);
  EXPECT_FALSE(is(err, errc::duplicate))
    << "the resend of a held (unconsumed) envelope was refused as a "
       "duplicate: "
    << describe(err);
}

// -- the key's size ------------------------------------------------------------

// An agent loop written with callbacks (each step's call made in the
// previous step's callback) nests one index level per step. The key (path,
// origin, id, 4 bytes per level) must still be storable: LMDB refuses keys
// over 511 bytes, so a loop of ~120 steps cannot call a recorded tool.
TEST_F(recorded_calls_review, a_long_callback_loop_still_records_its_calls) {
  temp_dir dir;
  node n{review_types(), review_config(dir.path())};
  ASSERT_FALSE(
    n.start("root", review_tree({holder_child({{"depth", "150"}})})));
  auto r = n.call<Tally>("root/h", ping_of(1), 10s);
  EXPECT_TRUE(r) << describe(r.error()) << " after "
                 << review_service::get().executions.load() << " calls";
  if (r)
    EXPECT_EQ(r->value.count(), 150);
}

// The same with a long path (a durable path may be 400 bytes): a loop of
// only 30 steps.
TEST_F(recorded_calls_review, a_short_loop_at_a_long_path_records_its_calls) {
  temp_dir dir;
  node n{review_types(), review_config(dir.path())};
  std::string id(380, 'x');
  ASSERT_FALSE(
    n.start("root", review_tree({holder_child({{"depth", "30"}}, id)})));
  auto r = n.call<Tally>("root/" + id, ping_of(1), 10s);
  EXPECT_TRUE(r) << describe(r.error()) << " after "
                 << review_service::get().executions.load() << " calls";
  if (r)
    EXPECT_EQ(r->value.count(), 30);
  // Whatever happens to it, the envelope does not run over and over.
  auto& svc = review_service::get();
  int before = svc.executions.load();
  eventually([&] { return svc.executions.load() > before + 50; }, 2s);
  EXPECT_LE(svc.executions.load(), before + 50)
    << "the envelope is replayed and its last call executed again, "
       "without end (" << svc.executions.load() - before
    << " more executions in 2 s; keys of the last: "
    << svc.count(svc.all_keys().back()) << ")";
}

// -- tool_key_text --------------------------------------------------------------

TEST(tool_key_text_review, printable_bounded_and_distinct) {
  std::vector<std::string> paths = {
    "root/a",
    "root/a:b",
    "root/a b",
    "root/\xc3\xa9t\xc3\xa9",
    std::string(250, 'p'),
    std::string(400, 'q'),
    "root/vigil-",
    std::string("root/a\x01", 7),
    std::string("root/a\x7f", 7),
  };
  std::vector<std::string> indexes;
  {
    std::string ix;
    indexes.push_back(ix);
    for (uint32_t v : {0u, 1u, 4294967295u, 10u}) {
      std::string one;
      detail::push_index(one, v);
      indexes.push_back(one);
      ix += one;
      indexes.push_back(ix);
    }
    std::string deep;
    for (int i = 0; i < 150; ++i)
      detail::push_index(deep, static_cast<uint32_t>(i));
    indexes.push_back(deep);
  }
  std::map<std::string, std::string> seen;
  for (auto& p : paths)
    for (uint64_t origin : {0ull, 1ull, ~0ull})
      for (uint64_t id : {0ull, 7ull, 0x1000000000ull})
        for (auto& ix : indexes) {
          auto t = detail::tool_key_text(p, origin, id, ix);
          auto bin = tool_result_key(p, origin, id, ix);
          EXPECT_LE(t.size(), 255u) << p;
          for (char c : t)
            EXPECT_TRUE(c > ' ' && c < 127) << "not printable: " << t;
          auto [it, fresh] = seen.emplace(t, bin);
          EXPECT_TRUE(fresh || it->second == bin) << "collision: " << t;
          // Deterministic.
          EXPECT_EQ(t, detail::tool_key_text(p, origin, id, ix));
        }
}

// -- keys under any order of answers, and their replay (seeded) -------------

// k calls in one handler, each with a child call made in its callback; the
// answers come back in an order the seed picks, one child is left running
// when the node stops. Model: call i's key ends in ":i", its child's in
// ":i.0", whatever the order; the next node replays the envelope, every
// recorded call answered from its record (executed once in all), the one
// left running executed again under the same key, and the state applied
// once.
TEST_F(recorded_calls_review, keys_follow_the_calls_place_whatever_the_order) {
  auto& svc = review_service::get();
  for (uint32_t seed = 1; seed <= 12; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    svc.reset();
    review_seen::get().reset();
    std::mt19937 rng{seed};
    int k = 2 + static_cast<int>(rng() % 3); // 2..4
    // The order in which the 2k gates open; the last one stays closed.
    std::vector<int> order;
    for (int i = 0; i < 2 * k; ++i)
      order.push_back(i);
    std::shuffle(order.begin(), order.end(), rng);
    // A child can only run after its parent: open parents of the last
    // one's... keep it simple: the gate left closed is a child's.
    int left = -1;
    for (auto it = order.rbegin(); it != order.rend(); ++it)
      if (*it % 2 == 1) {
        left = *it;
        break;
      }
    temp_dir dir;
    std::string key_of[16];
    child_spec c;
    c.id = "f";
    c.agent = "fan";
    c.params = {{"k", std::to_string(k)}};
    c.durability.mode = durability_mode::journal;
    {
      svc.gated = true;
      node n{review_types(), review_config(dir.path())};
      ASSERT_FALSE(n.start("root", review_tree({c})));
      ASSERT_FALSE(n.send("root/f", ping_of(1)));
      for (int g : order) {
        if (g == left)
          continue;
        // A child's gate: its parent's answer must have come first.
        if (g % 2 == 1 && !svc.gate[g - 1]) {
          svc.gate[g - 1] = true;
        }
        svc.gate[g] = true;
      }
      // Every call but the one left has executed and been recorded.
      ASSERT_TRUE(eventually(
        [&] { return count(n, db::tool_results) == size_t(2 * k - 1); }, 5s))
        << count(n, db::tool_results);
      ASSERT_TRUE(eventually([&] { return svc.hanging.load() == 1; }, 5s));
      EXPECT_EQ(count(n, db::journal), 1u);
      n.stop();
      svc.release = true;
      ASSERT_TRUE(eventually([&] { return svc.hanging.load() == 0; }, 5s));
    }
    auto keys = svc.all_keys();
    ASSERT_EQ(keys.size(), size_t(2 * k));
    {
      std::lock_guard<std::mutex> guard{svc.mtx};
      (void)guard;
    }
    // The key of each request value: call i ":i", its child ":i.0".
    std::map<std::string, int> expect;
    for (auto& key : keys) {
      auto colon = key.rfind(':');
      ASSERT_NE(colon, std::string::npos) << key;
      expect[key.substr(colon + 1)]++;
    }
    for (int i = 0; i < k; ++i) {
      EXPECT_EQ(expect[std::to_string(i)], 1) << i;
      EXPECT_EQ(expect[std::to_string(i) + ".0"], 1) << i;
    }
    svc.release = true;
    node n{review_types(), review_config(dir.path())};
    ASSERT_FALSE(n.start("root", review_tree({c})));
    ASSERT_TRUE(eventually([&] { return count(n, db::journal) == 0; }, 5s));
    auto all = svc.all_keys();
    ASSERT_EQ(all.size(), size_t(2 * k + 1)) << "recorded calls executed again";
    auto again = all.back();
    EXPECT_EQ(again.substr(again.rfind(':') + 1),
              std::to_string(left / 2) + ".0");
    EXPECT_EQ(n.rt()->find_tool("w")->stats().replayed.load(),
              size_t(2 * k - 1));
    auto t = get_tally(n, "root/f");
    ASSERT_TRUE(t) << describe(t.error());
    int64_t sum = 0;
    for (int i = 0; i < k; ++i)
      sum += 2 * 1000 * (i + 1) + 1;
    EXPECT_EQ(t->sum(), sum) << review_seen::get().all();
    EXPECT_EQ(t->count(), k);
    if (HasFailure()) {
      std::cerr << "failing seed " << seed << "\n";
      break;
    }
  }
}
