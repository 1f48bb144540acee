// vigil_bench CASE IMPL [n] [producers]
//
// Runs one benchmark case on one implementation and prints one JSON line:
//   {"name":..., "impl":"vigil"|"caf-raw", "value":..., "unit":..., "params":{...}}
// bench/run runs every case several times, against every baseline, and
// turns the lines into one JSON document with ratios.
//
// Both implementations run with the same CAF settings: scheduler.max-threads
// = 2 and the "sharing" policy (which stays linear when many actors become
// runnable at once).

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <caf/all.hpp>

#include <sys/resource.h>

#include "bench.pb.h"
#include "measure.hpp"
#include "vigil/actors/cell.hpp"
#include "vigil/node/node.hpp"

using namespace std::chrono;
using vigil::bench::Ball;
using vigil::bench::Crash;
using vigil::bench::Done;
using vigil::bench::Start;

namespace {


using ball_atom = caf::atom_constant<caf::atom("ball")>;
using go_atom = caf::atom_constant<caf::atom("go")>;
using crash_atom = caf::atom_constant<caf::atom("crash")>;

// -- output -------------------------------------------------------------------

using vigil::bench::print;
using vigil::bench::raw_config;
using vigil::bench::result;
using vigil::bench::rss_bytes;
using vigil::bench::threads;

double seconds_since(steady_clock::time_point t0) {
  return duration<double>(steady_clock::now() - t0).count();
}

/// IMPL vigil-metrics: the same node with its metrics endpoint on (every
/// handler timed and counted), for the overhead of metrics.
bool with_metrics = false;

const char* ours_name() {
  return with_metrics ? "vigil-metrics" : "vigil";
}

vigil::node_config node_cfg() {
  vigil::node_config nc;
  nc.threads = threads;
  if (with_metrics)
    nc.metrics = "127.0.0.1:0";
  return nc;
}

template <class T>
T parse_or_die(const caf::expected<T>& x, const char* what) {
  if (!x) {
    std::cerr << what << ": " << vigil::describe(x.error()) << "\n";
    std::exit(1);
  }
  return *x;
}

// -- vigil agents -----------------------------------------------------------------

/// Sends a Ball to its peer and back, n round trips, then answers Start.
class pinger : public vigil::agent<> {
public:
  static void define(vigil::handlers<pinger>& h) {
    h.on<Start>(&pinger::start).on<Ball>(&pinger::ball);
  }
  void start(vigil::context& ctx, const Start& m) {
    peer_ = ctx.resolve(m.peer());
    n_ = m.n();
    done_ = ctx.defer();
    Ball b;
    b.set_n(1);
    ctx.send(peer_, b);
  }
  void ball(vigil::context& ctx, const Ball& m) {
    if (m.n() >= n_) {
      Done d;
      d.set_n(m.n());
      done_.deliver(d);
      return;
    }
    Ball b;
    b.set_n(m.n() + 1);
    ctx.send(peer_, b);
  }

private:
  vigil::handle peer_;
  int64_t n_ = 0;
  vigil::deferred_reply done_;
};

/// Returns every Ball to its sender.
class ponger : public vigil::agent<> {
public:
  static void define(vigil::handlers<ponger>& h) {
    h.on<Ball>(&ponger::ball);
  }
  void ball(vigil::context& ctx, const Ball& m) {
    if (!back_)
      back_ = ctx.resolve(ctx.current()->sender);
    ctx.send(back_, m);
  }

private:
  vigil::handle back_;
};

/// Counts Balls; answers Start once it has seen Start.n of them.
class counter : public vigil::agent<> {
public:
  static void define(vigil::handlers<counter>& h) {
    h.on<Ball>(&counter::ball).on<Start>(&counter::start);
  }
  void ball(vigil::context&, const Ball&) {
    if (++count_ == target_)
      finish();
  }
  void start(vigil::context& ctx, const Start& m) {
    target_ = m.n();
    done_ = ctx.defer();
    if (count_ >= target_)
      finish();
  }

private:
  void finish() {
    Done d;
    d.set_n(count_);
    done_.deliver(d);
  }
  int64_t count_ = 0;
  int64_t target_ = -1;
  vigil::deferred_reply done_;
};

/// Sends Start.n Balls to Start.peer as fast as it can.
class producer : public vigil::agent<> {
public:
  static void define(vigil::handlers<producer>& h) {
    h.on<Start>(&producer::start);
  }
  void start(vigil::context& ctx, const Start& m) {
    auto peer = ctx.resolve(m.peer());
    Ball b;
    for (int64_t i = 0; i < m.n(); ++i) {
      b.set_n(i);
      ctx.send(peer, b);
    }
  }
};

/// Spins `overload_work` per Ball (a consumer much slower than a
/// producer).
constexpr auto overload_work = std::chrono::microseconds{10};

void spin(std::chrono::microseconds d) {
  auto until = steady_clock::now() + d;
  while (steady_clock::now() < until) {
    // busy: the consumer's work
  }
}

class slow_consumer : public vigil::agent<> {
public:
  static void define(vigil::handlers<slow_consumer>& h) {
    h.on<Ball>(&slow_consumer::ball);
  }
  void ball(vigil::context&, const Ball&) {
    spin(overload_work);
  }
};

/// Sends Start.n Balls to Start.peer as fast as it can, without looking
/// at its receiver, and answers Done once they are sent.
class flood_producer : public vigil::agent<> {
public:
  static void define(vigil::handlers<flood_producer>& h) {
    h.on<Start>(&flood_producer::start);
  }
  Done start(vigil::context& ctx, const Start& m) {
    auto peer = ctx.resolve(m.peer());
    Ball b;
    for (int64_t i = 0; i < m.n(); ++i) {
      b.set_n(i);
      ctx.send(peer, b);
    }
    Done d;
    d.set_n(m.n());
    return d;
  }
};

/// Does nothing: the cost of a supervised agent itself.
class idle : public vigil::agent<> {
public:
  static void define(vigil::handlers<idle>&) {
    // no handlers
  }
};

/// Crashes on Crash, answers Ball.
class crashy : public vigil::agent<> {
public:
  static void define(vigil::handlers<crashy>& h) {
    h.on<Crash>(&crashy::crash).on<Ball>(&crashy::ball);
  }
  void crash(vigil::context&, const Crash&) {
    throw std::runtime_error("crash on purpose");
  }
  Ball ball(vigil::context&, const Ball& m) {
    return m;
  }
};

vigil::registry bench_types() {
  vigil::registry r;
  r.add<pinger>("pinger").add<ponger>("ponger").add<counter>("counter");
  r.add<producer>("producer").add<idle>("idle").add<crashy>("crashy");
  r.add<slow_consumer>("slow_consumer").add<flood_producer>("flood");
  return r;
}

vigil::envelope wrap(vigil::runtime& rt, const google::protobuf::Message& m) {
  vigil::envelope e;
  e.type = vigil::type_symbol(m);
  m.SerializeToString(&e.payload);
  e.id = rt.next_id();
  return e;
}

// -- ping_pong ------------------------------------------------------------------

result ping_pong_vigil(int64_t n) {
  vigil::node node{bench_types(), node_cfg()};
  vigil::supervisor_spec tree;
  tree.children = {vigil::worker("pinger", "pinger"),
                   vigil::worker("ponger", "ponger")};
  if (auto err = node.start("bench", tree))
    std::exit(1);
  Start s;
  s.set_n(n);
  s.set_peer("bench/ponger");
  auto t0 = steady_clock::now();
  auto r = node.call<Done>("bench/pinger", s, std::chrono::minutes{10});
  auto secs = seconds_since(t0);
  parse_or_die(r, "ping_pong");
  return {"ping_pong", ours_name(), n / secs, "round_trips/s",
          {{"n", double(n)}}};
}

struct raw_pinger_state {
  caf::actor peer;
  int64_t n = 0;
  caf::response_promise rp;
};

caf::behavior raw_pinger(caf::stateful_actor<raw_pinger_state>* self) {
  return {
    [=](go_atom, int64_t n, caf::actor peer) -> caf::result<int64_t> {
      auto& st = self->state;
      st.n = n;
      st.peer = peer;
      st.rp = self->make_response_promise();
      self->send(peer, ball_atom::value, int64_t{1});
      return caf::delegated<int64_t>{};
    },
    [=](ball_atom, int64_t k) {
      auto& st = self->state;
      if (k >= st.n)
        st.rp.deliver(k);
      else
        self->send(st.peer, ball_atom::value, k + 1);
    },
  };
}

caf::behavior raw_ponger(caf::event_based_actor* self) {
  return {
    [=](ball_atom, int64_t k) {
      self->send(caf::actor_cast<caf::actor>(self->current_sender()),
                 ball_atom::value, k);
    },
  };
}

result ping_pong_raw(int64_t n) {
  raw_config cfg;
  caf::actor_system sys{cfg};
  auto pong = sys.spawn(raw_ponger);
  auto ping = sys.spawn(raw_pinger);
  caf::scoped_actor self{sys};
  auto t0 = steady_clock::now();
  self->request(ping, caf::infinite, go_atom::value, n, pong)
    .receive([](int64_t) {}, [](caf::error&) { std::exit(1); });
  auto secs = seconds_since(t0);
  self->send_exit(ping, caf::exit_reason::user_shutdown);
  self->send_exit(pong, caf::exit_reason::user_shutdown);
  return {"ping_pong", "caf-raw", n / secs, "round_trips/s",
          {{"n", double(n)}}};
}

// -- counting -------------------------------------------------------------------

result counting_vigil(int64_t n, int producers) {
  vigil::node node{bench_types(), node_cfg()};
  vigil::supervisor_spec tree;
  // The producers send all n at once, as the raw CAF and Erlang versions
  // do: the counter's queue holds them all (the default queue_cap would
  // shed the rest).
  auto counter = vigil::worker("counter", "counter");
  counter.queue_cap = static_cast<size_t>(n) + 16;
  tree.children.push_back(counter);
  for (int i = 0; i < producers; ++i)
    tree.children.push_back(
      vigil::worker("producer" + std::to_string(i), "producer"));
  if (auto err = node.start("bench", tree))
    std::exit(1);
  auto t0 = steady_clock::now();
  Start s;
  s.set_n(n / producers);
  s.set_peer("bench/counter");
  for (int i = 0; i < producers; ++i)
    if (node.send("bench/producer" + std::to_string(i), s))
      std::exit(1);
  Start c;
  c.set_n(n / producers * producers);
  auto r = node.call<Done>("bench/counter", c, std::chrono::minutes{10});
  auto secs = seconds_since(t0);
  parse_or_die(r, "counting");
  return {"counting", ours_name(), n / secs, "msgs/s",
          {{"n", double(n)}, {"producers", double(producers)}}};
}

struct raw_counter_state {
  int64_t count = 0;
  int64_t target = -1;
  caf::response_promise rp;
};

caf::behavior raw_counter(caf::stateful_actor<raw_counter_state>* self) {
  return {
    [=](ball_atom, int64_t) {
      auto& st = self->state;
      if (++st.count == st.target)
        st.rp.deliver(st.count);
    },
    [=](go_atom, int64_t target) -> caf::result<int64_t> {
      auto& st = self->state;
      st.target = target;
      if (st.count >= target)
        return st.count;
      st.rp = self->make_response_promise();
      return caf::delegated<int64_t>{};
    },
  };
}

caf::behavior raw_producer(caf::event_based_actor* self) {
  return {
    [=](go_atom, int64_t n, caf::actor counter) {
      for (int64_t i = 0; i < n; ++i)
        self->send(counter, ball_atom::value, i);
    },
  };
}

result counting_raw(int64_t n, int producers) {
  raw_config cfg;
  caf::actor_system sys{cfg};
  auto counter = sys.spawn(raw_counter);
  std::vector<caf::actor> ps;
  for (int i = 0; i < producers; ++i)
    ps.push_back(sys.spawn(raw_producer));
  caf::scoped_actor self{sys};
  auto t0 = steady_clock::now();
  for (auto& p : ps)
    self->send(p, go_atom::value, n / producers, counter);
  self->request(counter, caf::infinite, go_atom::value,
                n / producers * producers)
    .receive([](int64_t) {}, [](caf::error&) { std::exit(1); });
  auto secs = seconds_since(t0);
  for (auto& p : ps)
    self->send_exit(p, caf::exit_reason::user_shutdown);
  self->send_exit(counter, caf::exit_reason::user_shutdown);
  return {"counting", "caf-raw", n / secs, "msgs/s",
          {{"n", double(n)}, {"producers", double(producers)}}};
}

// -- overload ---------------------------------------------------------------------
//
// A producer sends n messages as fast as it can to a consumer that takes
// 10 us each (a tenth or less of the producer's rate); the figure is the
// process's peak RSS once the producer is done. Raw CAF queues them all;
// vigil's consumer holds at most its queue_cap (the default, 10,000) and
// sheds the rest as dead letters (kept rate-limited). Each run is its own
// process (bench/run), so the peak is this case's alone. The process ends
// without draining the consumer's queue.

double peak_rss_mib() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;
}

[[noreturn]] void print_and_exit(const result& r) {
  print(r);
  std::fflush(stdout);
  std::cout.flush();
  std::_Exit(0);
}

[[noreturn]] void overload_vigil(int64_t n) {
  vigil::node node{bench_types(), node_cfg()};
  vigil::supervisor_spec tree;
  tree.children.push_back(vigil::worker("consumer", "slow_consumer"));
  tree.children.push_back(vigil::worker("producer", "flood"));
  if (auto err = node.start("bench", tree))
    std::exit(1);
  Start s;
  s.set_n(n);
  s.set_peer("bench/consumer");
  auto t0 = steady_clock::now();
  auto r = node.call<Done>("bench/producer", s, std::chrono::minutes{10});
  auto secs = seconds_since(t0);
  parse_or_die(r, "overload");
  auto* g = node.rt()->lookup_bound("bench/consumer").gauge;
  print_and_exit({"overload", "vigil", peak_rss_mib(), "MiB",
                  {{"n", double(n)},
                   {"send_s", secs},
                   {"queued", double(g->queued.load())},
                   {"taken", double(g->taken.load())},
                   {"shed", double(g->shed.load())},
                   {"dead_letters_kept", double(node.rt()->dead_letters().size())},
                   {"work_us", double(overload_work.count())}}});
}

caf::behavior raw_slow_consumer(caf::event_based_actor*) {
  return {
    [=](ball_atom, int64_t) { spin(overload_work); },
  };
}

caf::behavior raw_flood(caf::event_based_actor* self) {
  return {
    [=](go_atom, int64_t n, caf::actor consumer) {
      for (int64_t i = 0; i < n; ++i)
        self->send(consumer, ball_atom::value, i);
      return n;
    },
  };
}

[[noreturn]] void overload_raw(int64_t n) {
  raw_config cfg;
  auto* sys = new caf::actor_system{cfg}; // never drained: see above
  auto consumer = sys->spawn(raw_slow_consumer);
  auto producer = sys->spawn(raw_flood);
  caf::scoped_actor self{*sys};
  auto t0 = steady_clock::now();
  self->request(producer, caf::infinite, go_atom::value, n, consumer)
    .receive([](int64_t) {}, [](caf::error&) { std::exit(1); });
  auto secs = seconds_since(t0);
  print_and_exit({"overload", "caf-raw", peak_rss_mib(), "MiB",
                  {{"n", double(n)},
                   {"send_s", secs},
                   {"work_us", double(overload_work.count())}}});
}

// -- spawn ----------------------------------------------------------------------

result spawn_vigil(int64_t n) {
  vigil::node node{bench_types(), node_cfg()};
  vigil::supervisor_spec tree;
  tree.flags.strategy = vigil::strategy::simple_one_for_one;
  tree.children.push_back(vigil::worker("a", "idle"));
  if (auto err = node.start("bench", tree))
    std::exit(1);
  auto sup = node.rt()->lookup("bench");
  caf::scoped_actor self{node.system()};
  auto rss0 = rss_bytes();
  auto t0 = steady_clock::now();
  // start_child is a synchronous call, as in OTP: the supervisor answers
  // after the child's start. A driver actor makes the calls one after the
  // other, as the Erlang peer's process does and as the raw baseline spawns
  // from inside an actor. (`window` > 1 keeps more calls outstanding.)
  auto driver = node.system().spawn([sup, n](caf::event_based_actor* me) {
    constexpr int64_t window = 1;
    auto sent = std::make_shared<int64_t>(0);
    auto done = std::make_shared<int64_t>(0);
    auto rp = std::make_shared<caf::response_promise>();
    auto next = std::make_shared<std::function<void()>>();
    *next = [=] {
      ++*sent;
      me->request(sup, caf::infinite, vigil::start_child_atom::value,
                  vigil::params{}, std::string{})
        .then(
          [=](vigil::child_info&) {
            if (++*done == n) {
              rp->deliver(*done);
              *next = nullptr; // breaks the cycle
              me->quit();
            } else if (*sent < n) {
              (*next)();
            }
          },
          [=](caf::error& e) {
            std::cerr << vigil::describe(e) << "\n";
            std::exit(1);
          });
    };
    return caf::behavior{[=](go_atom) {
      *rp = me->make_response_promise();
      while (*sent < std::min(n, window))
        (*next)();
      return caf::delegated<int64_t>{};
    }};
  });
  self->request(driver, caf::infinite, go_atom::value)
    .receive([](int64_t) {}, [](caf::error&) { std::exit(1); });
  auto rss1 = rss_bytes();
  auto err = node.stop();
  auto secs = seconds_since(t0);
  if (err)
    std::exit(1);
  return {"spawn", "vigil", n / secs, "agents/s",
          {{"n", double(n)}, {"bytes_per_agent", (rss1 - rss0) / n}}};
}

caf::behavior raw_idle(caf::event_based_actor*) {
  return {[](ball_atom) {}};
}

struct raw_spawner_state {
  std::vector<caf::actor> children;
  int64_t down = 0;
  caf::response_promise rp;
};

/// Spawns n idle actors (from inside an actor, as a supervisor would), then
/// on `crash_atom` stops them all and answers once every one is down.
caf::behavior raw_spawner(caf::stateful_actor<raw_spawner_state>* self) {
  self->set_down_handler([self](caf::down_msg&) {
    auto& st = self->state;
    if (++st.down == static_cast<int64_t>(st.children.size())) {
      st.children.clear();
      st.rp.deliver(st.down);
      self->quit();
    }
  });
  return {
    [=](go_atom, int64_t n) {
      auto& st = self->state;
      st.children.reserve(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i)
        st.children.push_back(self->spawn<caf::monitored>(raw_idle));
      return n;
    },
    [=](crash_atom) -> caf::result<int64_t> {
      auto& st = self->state;
      st.rp = self->make_response_promise();
      for (auto& c : st.children)
        self->send_exit(c, caf::exit_reason::user_shutdown);
      return caf::delegated<int64_t>{};
    },
  };
}

result spawn_raw(int64_t n) {
  raw_config cfg;
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys, true};
  auto rss0 = rss_bytes();
  auto t0 = steady_clock::now();
  auto spawner = sys.spawn(raw_spawner);
  self->request(spawner, caf::infinite, go_atom::value, n)
    .receive([](int64_t) {}, [](caf::error&) { std::exit(1); });
  auto rss1 = rss_bytes();
  self->request(spawner, caf::infinite, crash_atom::value)
    .receive([](int64_t) {}, [](caf::error&) { std::exit(1); });
  auto secs = seconds_since(t0);
  return {"spawn", "caf-raw", n / secs, "agents/s",
          {{"n", double(n)}, {"bytes_per_agent", (rss1 - rss0) / n}}};
}

// -- restart --------------------------------------------------------------------

result latency_result(const char* impl, std::vector<int64_t>& ns,
                      double secs) {
  std::sort(ns.begin(), ns.end());
  auto pct = [&](double p) {
    return ns.empty() ? 0.0
                      : ns[std::min(ns.size() - 1,
                                    static_cast<size_t>(p * ns.size()))]
                          / 1000.0;
  };
  auto n = static_cast<double>(ns.size());
  return {"restart", impl, n / secs, "restarts/s",
          {{"n", n}, {"p50_us", pct(0.50)}, {"p99_us", pct(0.99)}}};
}

result restart_vigil(int64_t n) {
  vigil::node node{bench_types(), node_cfg()};
  vigil::supervisor_spec tree;
  tree.flags.intensity = 1000000000;
  tree.flags.period = std::chrono::milliseconds{1000};
  tree.children.push_back(vigil::worker("w", "crashy"));
  if (auto err = node.start("bench", tree))
    std::exit(1);
  auto& rt = *node.rt();
  auto cell = rt.lookup("bench/w");
  caf::scoped_actor self{node.system()};
  std::vector<int64_t> ns;
  ns.reserve(static_cast<size_t>(n));
  Crash crash;
  Ball ball;
  auto t_all = steady_clock::now();
  for (int64_t i = 0; i < n; ++i) {
    auto t0 = steady_clock::now();
    self->request(cell, caf::infinite, wrap(rt, crash))
      .receive([](vigil::envelope&) { std::exit(1); }, [](caf::error&) {});
    // Buffered by the cell until the new instance serves it.
    self->request(cell, caf::infinite, wrap(rt, ball))
      .receive([](vigil::envelope&) {},
               [](caf::error& e) {
                 std::cerr << vigil::describe(e) << "\n";
                 std::exit(1);
               });
    ns.push_back(duration_cast<nanoseconds>(steady_clock::now() - t0).count());
  }
  auto secs = seconds_since(t_all);
  return latency_result("vigil", ns, secs);
}

struct raw_parent_state {
  caf::actor child;
  bool down = true;
  std::vector<std::pair<caf::response_promise, int64_t>> waiting;
};

caf::behavior raw_child(caf::event_based_actor* self) {
  return {
    [=](crash_atom) { self->quit(caf::sec::runtime_error); },
    [=](ball_atom, int64_t k) { return k; },
  };
}

/// The raw CAF baseline: a parent that monitors its child, respawns it when
/// it dies, and holds requests while it has none.
caf::behavior raw_parent(caf::stateful_actor<raw_parent_state>* self) {
  auto respawn = [self] {
    auto& st = self->state;
    st.child = self->spawn<caf::monitored>(raw_child);
    st.down = false;
    for (auto& w : st.waiting)
      w.first.delegate(st.child, ball_atom::value, w.second);
    st.waiting.clear();
  };
  self->set_down_handler([self, respawn](caf::down_msg& dm) {
    if (dm.source == self->state.child.address())
      respawn();
  });
  respawn();
  return {
    [=](crash_atom) {
      self->send(self->state.child, crash_atom::value);
      self->state.down = true;
    },
    [=](ball_atom, int64_t k) -> caf::result<int64_t> {
      auto& st = self->state;
      auto rp = self->make_response_promise();
      if (st.down)
        st.waiting.emplace_back(rp, k);
      else
        rp.delegate(st.child, ball_atom::value, k);
      return caf::delegated<int64_t>{};
    },
  };
}

result restart_raw(int64_t n) {
  raw_config cfg;
  caf::actor_system sys{cfg};
  auto parent = sys.spawn(raw_parent);
  caf::scoped_actor self{sys};
  std::vector<int64_t> ns;
  ns.reserve(static_cast<size_t>(n));
  auto t_all = steady_clock::now();
  for (int64_t i = 0; i < n; ++i) {
    auto t0 = steady_clock::now();
    self->send(parent, crash_atom::value);
    self->request(parent, caf::infinite, ball_atom::value, i)
      .receive([](int64_t) {}, [](caf::error&) { std::exit(1); });
    ns.push_back(duration_cast<nanoseconds>(steady_clock::now() - t0).count());
  }
  auto secs = seconds_since(t_all);
  self->send_exit(parent, caf::exit_reason::user_shutdown);
  return latency_result("caf-raw", ns, secs);
}

int usage() {
  std::cerr << "usage: vigil_bench CASE IMPL [N] [PRODUCERS]\n"
               "  CASE: ping_pong | counting | overload | spawn | restart\n"
               "  IMPL: vigil | caf-raw | vigil-metrics (ping_pong, "
               "counting: the node with its metrics on)\n"
               "example: vigil_bench counting vigil 1000000 2\n";
  return 2;
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 3)
    return usage();
  std::string name = argv[1];
  std::string impl = argv[2];
  with_metrics = impl == "vigil-metrics"
                 && (name == "ping_pong" || name == "counting");
  bool ours = impl == "vigil" || with_metrics;
  if (!ours && impl != "caf-raw")
    return usage();
  int64_t n = argc > 3 ? std::stoll(argv[3]) : 0;
  int producers = argc > 4 ? std::stoi(argv[4]) : 1;
  if (name == "ping_pong")
    print(ours ? ping_pong_vigil(n ? n : 1000000)
               : ping_pong_raw(n ? n : 1000000));
  else if (name == "counting")
    print(ours ? counting_vigil(n ? n : 10000000, producers)
               : counting_raw(n ? n : 10000000, producers));
  else if (name == "overload")
    ours ? overload_vigil(n ? n : 2000000) : overload_raw(n ? n : 2000000);
  else if (name == "spawn")
    print(ours ? spawn_vigil(n ? n : 1000000) : spawn_raw(n ? n : 1000000));
  else if (name == "restart")
    print(ours ? restart_vigil(n ? n : 100000)
               : restart_raw(n ? n : 100000));
  else
    return usage();
  return 0;
}
