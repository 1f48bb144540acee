// Bounded queues (issue 21): every cell counts the envelopes queued for it
// and refuses or holds back senders beyond its queue_cap, on a real node.
// - an agent's sends to a full receiver are shed as dead letters with
//   reason `overloaded`, kept rate-limited (a count plus samples) in memory
//   and on disk, and every one is accounted for: handled + shed = sent;
// - an agent's requests to a full receiver fail with `overloaded`;
// - node::send is refused at once under overflow `shed`, and waits for room
//   under `wait`;
// - a journal agent's outbox never puts more than the receiver's queue_cap
//   into its queue, and delivers everything once there is room;
// - a flooded cell still stops at once (stop requests bypass its queue).
// The receiver holds its first envelope at a gate, so the queue stays full
// exactly as long as the test needs.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "support/eventually.hpp"
#include "support/gate.hpp"
#include "support/overload_agents.hpp"
#include "support/temp_dir.hpp"
#include "proto/test.pb.h"
#include "vigil/actors/cell.hpp"
#include "vigil/node/node.hpp"
#include "vigil/persistence/store.hpp"

using namespace std::chrono_literals;
using namespace vigil;
using namespace vigil::test;

namespace {

struct flood {
  gate hold;                       // the receiver's handler waits here
  std::atomic<int64_t> handled{0}; // envelopes the receiver handled
  std::atomic<int64_t> ok{0};      // requests answered
  std::atomic<int64_t> overloaded{0};
  std::atomic<int64_t> other{0};
  static flood& get() {
    static flood x;
    return x;
  }
  void reset() {
    hold.close();
    handled = 0;
    ok = 0;
    overloaded = 0;
    other = 0;
  }
};

/// Handles Ping after the gate lets it through (bounded), counting it.
class held : public agent<> {
public:
  explicit held(const params&) {
  }
  static void define(handlers<held>& h) {
    h.on<Ping>([](held&, context&, const Ping& p) {
      flood::get().hold.pass();
      ++flood::get().handled;
      Pong out;
      out.set_n(p.n());
      return out;
    });
  }
};

/// Handles Ping in 2 ms, counting it.
class slow : public agent<> {
public:
  explicit slow(const params&) {
  }
  static void define(handlers<slow>& h) {
    h.on<Ping>([](slow&, context&, const Ping& p) {
      std::this_thread::sleep_for(2ms);
      ++flood::get().handled;
      Pong out;
      out.set_n(p.n());
      return out;
    });
  }
};

/// On Start{n, to}: makes n requests to `to` in one handler, counting how
/// each ends.
class asker : public agent<> {
public:
  explicit asker(const params&) {
  }
  static void define(handlers<asker>& h) {
    h.on<Start>([](asker&, context& ctx, const Start& s) {
      Ping p;
      for (int64_t i = 0; i < s.n(); ++i) {
        p.set_n(i);
        ctx.request<Pong>(
          s.to(), p, 30s, [](const reply<Pong>&) { ++flood::get().ok; },
          [](const caf::error& e) {
            if (is(e, errc::overloaded))
              ++flood::get().overloaded;
            else
              ++flood::get().other;
          });
      }
      Pong out;
      out.set_n(s.n());
      return out;
    });
  }
};

registry types() {
  registry r;
  r.add<held>("held");
  r.add<flooder>("flooder");
  r.add<asker>("asker");
  r.add<slow>("slow");
  return r;
}

child_spec child(std::string id, std::string agent, size_t cap = 10000,
                 overflow_policy o = overflow_policy::shed) {
  return queue_child(std::move(id), std::move(agent), cap, o);
}

class overload_test : public ::testing::Test {
protected:
  void SetUp() override {
    flood::get().reset();
  }
  void TearDown() override {
    flood::get().hold.open();
    if (n)
      (void) n->stop();
  }

  void start(std::vector<child_spec> children, bool with_dir = false) {
    node_config cfg;
    if (with_dir)
      cfg.data_dir = dir.path();
    n = std::make_unique<node>(types(), cfg);
    supervisor_spec spec;
    spec.children = std::move(children);
    ASSERT_FALSE(n->start("root", std::move(spec)));
  }

  /// The receiver's queue count.
  detail::queue_gauge* gauge(const std::string& path) {
    return n->rt()->lookup_bound(path).gauge;
  }

  Start start_msg(int64_t count, std::string to) {
    Start s;
    s.set_n(count);
    s.set_to(std::move(to));
    return s;
  }

  temp_dir dir;
  std::unique_ptr<node> n;
};

TEST_F(overload_test, sends_beyond_the_cap_are_shed_and_every_one_is_counted) {
  constexpr int64_t sent = 5000;
  constexpr uint32_t cap = 100;
  start({child("r", "held", cap), child("f", "flooder")}, true);
  auto r = n->call<Pong>("root/f", start_msg(sent, "root/r"), 20s);
  ASSERT_TRUE(r) << describe(r.error());
  auto* g = gauge("root/r");
  ASSERT_NE(g, nullptr);
  // The receiver holds its first envelope; at most `cap` more wait.
  EXPECT_LE(g->queued.load(), cap);
  auto shed = static_cast<int64_t>(g->shed.load());
  EXPECT_GE(shed, sent - cap - 1);
  flood::get().hold.open();
  ASSERT_TRUE(eventually(
    [&] { return flood::get().handled.load() + shed == sent; }, 20s))
    << "handled " << flood::get().handled << ", shed " << shed;
  EXPECT_EQ(g->queued.load(), 0u);
  // Every shed envelope is a dead letter `overloaded`, counted one by one,
  // kept rate-limited: at most a few samples a second plus one letter
  // standing for the rest.
  auto reasons = n->rt()->dead_log().by_reason();
  EXPECT_EQ(static_cast<int64_t>(reasons["overloaded"]), shed);
  n->rt()->dead_log().flush();
  int64_t stood_for = 0;
  size_t letters = 0;
  for (auto& dl : n->rt()->dead_letters()) {
    if (dl.reason.rfind("overloaded", 0) != 0)
      continue;
    ++letters;
    stood_for += 1 + static_cast<int64_t>(dl.repeats);
    EXPECT_EQ(dl.path, "root/r");
    EXPECT_EQ(dl.env.sender, "root/f");
  }
  EXPECT_EQ(stood_for, shed);
  EXPECT_LT(letters, 100u) << "the flood became one letter each";
  // On disk: the same letters, written once the writer has them.
  auto path = dir.path();
  ASSERT_FALSE(n->stop());
  n.reset();
  store_options so;
  so.dir = path;
  std::unique_ptr<store> st;
  ASSERT_TRUE(store::open(so, st).ok());
  std::vector<records::DeadLetter> stored;
  ASSERT_TRUE(st->dead_letters(stored).ok());
  int64_t on_disk = 0;
  size_t records = 0;
  for (auto& dl : stored)
    if (dl.reason().rfind("overloaded", 0) == 0) {
      ++records;
      on_disk += 1 + static_cast<int64_t>(dl.repeats());
    }
  EXPECT_EQ(on_disk, shed);
  EXPECT_EQ(records, letters);
}

TEST_F(overload_test, requests_to_a_full_receiver_fail_overloaded) {
  constexpr int64_t sent = 300;
  constexpr uint32_t cap = 50;
  start({child("r", "held", cap), child("a", "asker")});
  auto r = n->call<Pong>("root/a", start_msg(sent, "root/r"), 20s);
  ASSERT_TRUE(r) << describe(r.error());
  auto& f = flood::get();
  EXPECT_GE(f.overloaded.load(), sent - cap - 1);
  f.hold.open();
  ASSERT_TRUE(eventually(
    [&] { return f.ok.load() + f.overloaded.load() + f.other.load() == sent; },
    20s))
    << "ok " << f.ok << ", overloaded " << f.overloaded << ", other "
    << f.other;
  EXPECT_EQ(f.other.load(), 0);
  EXPECT_EQ(f.ok.load(), f.handled.load());
  EXPECT_EQ(f.overloaded.load(),
            static_cast<int64_t>(gauge("root/r")->shed.load()));
}

TEST_F(overload_test, node_send_is_refused_at_once_under_shed) {
  constexpr uint32_t cap = 20;
  start({child("r", "held", cap)});
  Ping p;
  int accepted = 0;
  int refused = 0;
  for (int i = 0; i < 200; ++i) {
    p.set_n(i);
    auto err = n->send("root/r", p);
    if (!err)
      ++accepted;
    else if (is(err, errc::overloaded))
      ++refused;
    else
      ADD_FAILURE() << describe(err);
  }
  EXPECT_LE(accepted, static_cast<int>(cap) + 1);
  EXPECT_EQ(accepted + refused, 200);
  // A refused message stays the caller's: no dead letter.
  EXPECT_EQ(n->rt()->dead_log().by_reason().count("overloaded"), 0u);
  flood::get().hold.open();
  ASSERT_TRUE(
    eventually([&] { return flood::get().handled.load() == accepted; }, 20s));
}

TEST_F(overload_test, node_send_waits_for_room_under_wait) {
  constexpr uint32_t cap = 20;
  constexpr int sent = 300;
  start({child("r", "held", cap, overflow_policy::wait)});
  std::atomic<int> accepted{0};
  std::atomic<int> failed{0};
  std::thread t{[&] {
    Ping p;
    for (int i = 0; i < sent; ++i) {
      p.set_n(i);
      if (n->send("root/r", p))
        ++failed;
      else
        ++accepted;
    }
  }};
  auto* g = gauge("root/r");
  // The queue fills, and the sender waits instead of failing.
  ASSERT_TRUE(eventually([&] { return g->queued.load() == cap; }, 10s));
  EXPECT_LT(accepted.load(), sent);
  EXPECT_EQ(failed.load(), 0);
  flood::get().hold.open();
  t.join();
  EXPECT_EQ(accepted.load(), sent);
  EXPECT_EQ(failed.load(), 0);
  ASSERT_TRUE(
    eventually([&] { return flood::get().handled.load() == sent; }, 20s));
  EXPECT_EQ(g->shed.load(), 0u);
}

TEST_F(overload_test, a_call_under_wait_gives_up_at_its_timeout) {
  start({child("r", "held", 1, overflow_policy::wait)});
  Ping p;
  ASSERT_FALSE(n->send("root/r", p)); // taken up, held at the gate
  ASSERT_TRUE(flood::get().hold.arrived(1));
  ASSERT_FALSE(n->send("root/r", p)); // fills the queue
  auto t0 = std::chrono::steady_clock::now();
  auto r = n->call<Pong>("root/r", p, 300ms);
  auto took = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(r);
  EXPECT_TRUE(is(r.error(), errc::overloaded)) << describe(r.error());
  EXPECT_GE(took, 250ms);
  EXPECT_LT(took, 5s);
}

TEST_F(overload_test, a_flooded_cell_stops_at_once) {
  // 10000 envelopes wait, 2 ms each: a stop request queued behind them
  // would wait 20 s. It bypasses the queue, and is taken up after the
  // envelope being handled.
  start({child("r", "slow", 10000), child("f", "flooder")});
  auto r = n->call<Pong>("root/f", start_msg(10000, "root/r"), 20s);
  ASSERT_TRUE(r) << describe(r.error());
  ASSERT_TRUE(eventually([] { return flood::get().handled.load() > 0; }, 10s));
  auto t0 = std::chrono::steady_clock::now();
  auto err = n->terminate_child("root", "r");
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_FALSE(err) << describe(err);
  EXPECT_LT(took, 2s);
  EXPECT_LT(flood::get().handled.load(), 5000);
}

} // namespace
