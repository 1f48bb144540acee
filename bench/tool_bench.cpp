// tool_bench CASE IMPL [N] [key=value ...] (see usage()): the tool-call
// cases of bench/README.md, one case on one implementation per run, printing
// one JSON line as vigil_bench does.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <new>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <caf/all.hpp>

#include "bench.pb.h"
#include "inline_executor.hpp"
#include "measure.hpp"
#include "vigil/actors/detail/tool_runtime.hpp"
#include "vigil/actors/tool.hpp"
#include "vigil/node/node.hpp"

using namespace std::chrono;
using vigil::bench::Ball;
using vigil::bench::Done;
using vigil::bench::Start;

// -- allocation counter -------------------------------------------------------

// Counts operator new calls of every thread while `g_count_allocs` is set
// (only in a separate pass, after the timed one).
namespace {
std::atomic<bool> g_count_allocs{false};
std::atomic<uint64_t> g_allocs{0};
} // namespace

void* operator new(size_t n) {
  if (g_count_allocs.load(std::memory_order_relaxed))
    g_allocs.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1))
    return p;
  throw std::bad_alloc{};
}

void operator delete(void* p) noexcept {
  std::free(p);
}

void operator delete(void* p, size_t) noexcept {
  std::free(p);
}

namespace {

using vigil::bench::inline_executor;
using vigil::bench::print;
using vigil::bench::process_cpu_ns;
using vigil::bench::raw_config;
using vigil::bench::result;
using vigil::bench::rss_bytes;
using vigil::bench::thread_cpu_ns;
using vigil::bench::threads;

[[noreturn]] void die(const std::string& what) {
  vigil::bench::die("tool_bench", what);
}

std::string param_of(const vigil::params& ps, const char* key,
                     const char* fallback) {
  auto i = ps.find(key);
  return i != ps.end() ? i->second : fallback;
}

/// Microseconds each `work` execution spins (tool_throughput's work_us).
int64_t g_work_us = 0;

/// The trivial tool: answers its request's n + 1. Not inlined, so that the
/// direct baseline calls it as the stack does.
[[gnu::noinline]] vigil::tool_result<Ball> noop_tool(const Ball& req,
                                                     vigil::tool_call&) {
  Ball b;
  b.set_n(req.n() + 1);
  return b;
}

/// The throughput tool: spins g_work_us microseconds, then answers.
[[gnu::noinline]] vigil::tool_result<Ball> work_tool(const Ball& req,
                                                     vigil::tool_call&) {
  if (g_work_us > 0) {
    auto until = steady_clock::now() + microseconds{g_work_us};
    while (steady_clock::now() < until) {
      // spin
    }
  }
  Ball b;
  b.set_n(req.n() + 1);
  return b;
}

/// A service that is 100% down and counts every call it gets, per request.
struct down_service {
  std::mutex mtx;
  std::vector<uint32_t> per_request;
  uint64_t calls = 0;

  vigil::tool_result<Ball> call(const Ball& req) {
    {
      std::lock_guard<std::mutex> guard{mtx};
      ++calls;
      auto n = static_cast<size_t>(req.n());
      if (per_request.size() <= n)
        per_request.resize(n + 1);
      ++per_request[n];
    }
    return vigil::tool_error::transient("503 service unavailable");
  }

  uint64_t count() {
    std::lock_guard<std::mutex> guard{mtx};
    return calls;
  }

  uint32_t max_per_request() {
    std::lock_guard<std::mutex> guard{mtx};
    uint32_t m = 0;
    for (auto k : per_request)
      m = std::max(m, k);
    return m;
  }
};

down_service g_down;

/// On Start{n}: makes n calls of tool `tool`, `window` in flight, and
/// answers Done{elapsed ns} after the last result callback. With param
/// `direct`, calls noop_tool itself n times instead.
class caller : public vigil::agent<> {
public:
  explicit caller(const vigil::params& ps)
    : tool_(param_of(ps, "tool", "noop")),
      window_(std::stoll(param_of(ps, "window", "64"))),
      direct_(ps.count("direct") > 0) {
    // nop
  }

  static void define(vigil::handlers<caller>& h) {
    h.on<Start>(&caller::start);
  }

  void start(vigil::context& ctx, const Start& m) {
    n_ = m.n();
    issued_ = finished_ = failed_ = 0;
    done_ = ctx.defer();
    t0_ = steady_clock::now();
    if (direct_) {
      std::atomic<bool> cancelled{false};
      vigil::tool_call call{cancelled, t0_ + seconds{10}, 1, ctx.path()};
      for (int64_t i = 0; i < n_; ++i) {
        Ball b;
        b.set_n(i);
        auto r = noop_tool(b, call);
        if (auto* rep = std::get_if<Ball>(&r.value))
          on_result(*rep);
        else
          ++failed_;
      }
      finish();
      return;
    }
    while (issued_ < n_ && issued_ < window_)
      issue(ctx);
  }

private:
  void issue(vigil::context& ctx) {
    Ball b;
    b.set_n(issued_++);
    ctx.call_tool<Ball>(
      tool_, b, vigil::tool_options{},
      [this, &ctx](const Ball& rep) {
        on_result(rep);
        next(ctx);
      },
      [this, &ctx](const caf::error& e) {
        ++failed_;
        last_error_ = e;
        next(ctx);
      });
  }

  void on_result(const Ball& rep) {
    sum_ += rep.n();
    ++finished_;
  }

  void next(vigil::context& ctx) {
    if (failed_ + finished_ == n_)
      finish();
    else if (issued_ < n_)
      issue(ctx);
  }

  void finish() {
    auto ns = duration_cast<nanoseconds>(steady_clock::now() - t0_).count();
    if (failed_ > 0) {
      done_.fail(last_error_);
      return;
    }
    Done d;
    d.set_n(ns);
    done_.deliver(d);
  }

  std::string tool_;
  int64_t window_;
  bool direct_;
  int64_t n_ = 0;
  int64_t issued_ = 0;
  int64_t finished_ = 0;
  int64_t failed_ = 0;
  int64_t sum_ = 0;
  caf::error last_error_;
  steady_clock::time_point t0_;
  vigil::deferred_reply done_;
};

/// One layer of a request stack: on Ball, asks the agent at param `next`
/// and, when that fails, retries while the request's attempt budget allows
/// (ctx.take_retry()), 3 attempts at most; without `next`, calls tool
/// "down" once (its own 3 attempts are this layer's retries).
class layer : public vigil::agent<> {
public:
  explicit layer(const vigil::params& ps) : next_(param_of(ps, "next", "")) {
    // nop
  }

  static void define(vigil::handlers<layer>& h) {
    h.on<Ball>(&layer::ball);
  }

  void ball(vigil::context& ctx, const Ball& m) {
    attempt(ctx, m, ctx.defer(), 1);
  }

private:
  void attempt(vigil::context& ctx, const Ball& m, vigil::deferred_reply rp,
               int n) {
    if (next_.empty()) {
      ctx.call_tool<Ball>(
        "down", m, vigil::tool_options{},
        [rp](const Ball& x) mutable { rp.deliver(x); },
        [rp](const caf::error& e) mutable { rp.fail(e); });
      return;
    }
    ctx.request<Ball>(
      next_, m, seconds{60},
      [rp](vigil::reply<Ball> x) mutable { rp.deliver(x.value); },
      [this, &ctx, m, rp, n](const caf::error& e) mutable {
        if (n < 3 && ctx.take_retry())
          attempt(ctx, m, rp, n + 1);
        else
          rp.fail(e);
      });
  }

  std::string next_;
};

vigil::registry tool_types() {
  vigil::registry r;
  r.add<caller>("caller").add<layer>("layer");
  r.add_tool<Ball, Ball>("noop", &noop_tool);
  r.add_tool<Ball, Ball>("work", &work_tool);
  r.add_tool<Ball, Ball>("down", [](const Ball& req, vigil::tool_call&) {
    return g_down.call(req);
  });
  return r;
}

vigil::child_spec child(std::string id, std::string agent,
                        vigil::params ps = {}) {
  auto c = vigil::worker(std::move(id), std::move(agent));
  c.params = std::move(ps);
  return c;
}

void start_or_die(vigil::node& node, vigil::supervisor_spec tree) {
  if (auto err = node.start("bench", std::move(tree)))
    die("node start: " + vigil::describe(err));
}

/// Asks the caller at `path` for n calls; the elapsed ns it measured.
int64_t run_caller(vigil::node& node, const std::string& path, int64_t n) {
  Start s;
  s.set_n(n);
  auto r = node.call<Done>(path, s, minutes{10});
  if (!r)
    die(path + ": " + vigil::describe(r.error()));
  return r->value.n();
}

// -- tool_stack ---------------------------------------------------------------

result tool_stack(bool ours, int64_t n, int64_t window) {
  vigil::node_config nc;
  nc.threads = threads;
  vigil::tool_decl d;
  d.name = "noop";
  d.effect = vigil::side_effect::read_only; // the default policy otherwise
  nc.tools.push_back(d);
  nc.tool_executors = [](const vigil::tool_decl&) {
    return std::make_shared<inline_executor>();
  };
  vigil::node node{tool_types(), nc};
  vigil::params ps{{"window", std::to_string(window)}};
  if (!ours)
    ps["direct"] = "1";
  vigil::supervisor_spec tree;
  tree.children.push_back(child("c", "caller", ps));
  start_or_die(node, tree);
  auto warm = std::min<int64_t>(n, 10000);
  run_caller(node, "bench/c", warm);
  auto rss0 = rss_bytes();
  auto cpu0 = process_cpu_ns();
  auto ns = run_caller(node, "bench/c", n);
  auto cpu1 = process_cpu_ns();
  auto rss1 = rss_bytes();
  // A separate, smaller pass counts allocations (of every thread).
  constexpr int64_t alloc_n = 10000;
  g_allocs = 0;
  g_count_allocs = true;
  run_caller(node, "bench/c", alloc_n);
  g_count_allocs = false;
  auto allocs = static_cast<double>(g_allocs.load());
  if (ours) {
    auto ran = node.rt()->find_tool("noop")->stats().executions.load();
    if (ran != static_cast<uint64_t>(warm + n + alloc_n))
      die("tool_stack: the tool ran " + std::to_string(ran) + " times");
  }
  return {"tool_stack", ours ? "vigil" : "direct",
          static_cast<double>(ns) / n, "ns/call",
          {{"n", double(n)},
           {"window", double(window)},
           {"cpu_ns_per_call", (cpu1 - cpu0) / n},
           {"allocs_per_call", allocs / alloc_n},
           {"rss_bytes_per_call", (rss1 - rss0) / n}}};
}

// -- tool_throughput ----------------------------------------------------------

using go_atom = caf::atom_constant<caf::atom("go")>;
using done_atom = caf::atom_constant<caf::atom("done")>;

struct pump_state {
  std::shared_ptr<vigil::detail::thread_pool> pool;
  int64_t n = 0;
  int64_t issued = 0;
  int64_t finished = 0;
  int64_t sum = 0;
  caf::response_promise rp;
};

/// The raw baseline: submits work_tool to a thread pool, `inflight` at a
/// time; each execution posts its result back to this actor.
caf::behavior raw_pump(caf::stateful_actor<pump_state>* self,
                       std::shared_ptr<vigil::detail::thread_pool> pool) {
  self->state.pool = std::move(pool);
  auto issue = [self] {
    auto& st = self->state;
    Ball b;
    b.set_n(st.issued++);
    st.pool->submit([b = std::move(b),
                     me = caf::actor_cast<caf::actor>(self)]() mutable {
      static const std::string caller = "raw";
      std::atomic<bool> cancelled{false};
      vigil::tool_call call{cancelled, steady_clock::now() + seconds{10}, 1,
                            caller};
      auto r = work_tool(b, call);
      caf::anon_send(me, done_atom::value,
                     std::get<Ball>(r.value).n());
    });
  };
  return {
    [=](go_atom, int64_t n, int64_t inflight) -> caf::result<int64_t> {
      auto& st = self->state;
      st.n = n;
      st.issued = st.finished = 0;
      st.rp = self->make_response_promise();
      while (st.issued < n && st.issued < inflight)
        issue();
      return caf::delegated<int64_t>{};
    },
    [=](done_atom, int64_t k) {
      auto& st = self->state;
      st.sum += k;
      if (++st.finished == st.n)
        st.rp.deliver(st.finished);
      else if (st.issued < st.n)
        issue();
    },
  };
}

result tool_throughput(bool ours, int64_t n, int64_t inflight,
                       int64_t pool_threads) {
  std::map<std::string, double> ps{{"n", double(n)},
                                   {"inflight", double(inflight)},
                                   {"work_us", double(g_work_us)},
                                   {"pool_threads", double(pool_threads)}};
  int64_t warm = std::min<int64_t>(n / 10, 10000);
  if (ours) {
    vigil::node_config nc;
    nc.threads = threads;
    vigil::tool_decl d;
    d.name = "work";
    d.policy.bulkhead.max_concurrent = static_cast<uint32_t>(pool_threads);
    d.policy.bulkhead.queue = static_cast<uint32_t>(inflight);
    nc.tools.push_back(d);
    vigil::node node{tool_types(), nc};
    vigil::supervisor_spec tree;
    tree.children.push_back(
      child("c", "caller",
            {{"tool", "work"}, {"window", std::to_string(inflight)}}));
    start_or_die(node, tree);
    run_caller(node, "bench/c", warm);
    auto cpu0 = process_cpu_ns();
    auto split0 = thread_cpu_ns();
    auto t0 = steady_clock::now();
    run_caller(node, "bench/c", n);
    auto secs = duration<double>(steady_clock::now() - t0).count();
    ps["cpu_ns_per_call"] = (process_cpu_ns() - cpu0) / n;
    auto split1 = thread_cpu_ns();
    ps["pool_cpu_ns_per_call"] = (split1.first - split0.first) / n;
    ps["caller_cpu_ns_per_call"] = (split1.second - split0.second) / n;
    return {"tool_throughput", "vigil", n / secs, "calls/s", ps};
  }
  raw_config cfg;
  caf::actor_system sys{cfg};
  auto pool = std::make_shared<vigil::detail::thread_pool>(
    static_cast<size_t>(pool_threads), "raw");
  auto pump = sys.spawn(raw_pump, pool);
  caf::scoped_actor self{sys};
  auto go = [&](int64_t k) {
    self->request(pump, caf::infinite, go_atom::value, k, inflight)
      .receive([](int64_t) {}, [](caf::error& e) {
        die("pool: " + vigil::describe(e));
      });
  };
  go(warm);
  auto cpu0 = process_cpu_ns();
  auto split0 = thread_cpu_ns();
  auto t0 = steady_clock::now();
  go(n);
  auto secs = duration<double>(steady_clock::now() - t0).count();
  ps["cpu_ns_per_call"] = (process_cpu_ns() - cpu0) / n;
  auto split1 = thread_cpu_ns();
  ps["pool_cpu_ns_per_call"] = (split1.first - split0.first) / n;
  ps["caller_cpu_ns_per_call"] = (split1.second - split0.second) / n;
  self->send_exit(pump, caf::exit_reason::user_shutdown);
  return {"tool_throughput", "pool", n / secs, "calls/s", ps};
}

// -- tool_amplification -------------------------------------------------------

vigil::tool_decl down_decl() {
  vigil::tool_decl d;
  d.name = "down";
  d.policy.breaker.enabled = false;
  d.policy.retry.initial = milliseconds{1};
  d.policy.retry.max = milliseconds{1};
  return d;
}

/// Three layers: a -> b -> c -> tool, each request on its own.
result amplification_nested(bool ours, int64_t n) {
  if (!ours) {
    // Three nested loops of 3 attempts each, as code without a shared
    // budget retries at every layer.
    auto tool = [](const Ball& b) {
      for (int k = 0; k < 3; ++k)
        if (std::holds_alternative<Ball>(g_down.call(b).value))
          return true;
      return false;
    };
    auto layer_c = [&](const Ball& b) { return tool(b); };
    auto layer_b = [&](const Ball& b) {
      for (int k = 0; k < 3; ++k)
        if (layer_c(b))
          return true;
      return false;
    };
    auto layer_a = [&](const Ball& b) {
      for (int k = 0; k < 3; ++k)
        if (layer_b(b))
          return true;
      return false;
    };
    for (int64_t i = 0; i < n; ++i) {
      Ball b;
      b.set_n(i);
      if (layer_a(b))
        die("the service answered");
    }
  } else {
    vigil::node_config nc;
    nc.threads = threads;
    auto d = down_decl();
    // Only the request's attempt budget binds: the tool's shared budget is
    // raised out of the way.
    d.policy.budget.min_per_second = 1000;
    d.policy.budget.max_savings = 1e6;
    nc.tools.push_back(d);
    vigil::node node{tool_types(), nc};
    vigil::supervisor_spec tree;
    tree.children = {child("a", "layer", {{"next", "bench/b"}}),
                     child("b", "layer", {{"next", "bench/c"}}),
                     child("c", "layer")};
    start_or_die(node, tree);
    for (int64_t i = 0; i < n; ++i) {
      Ball b;
      b.set_n(i);
      auto r = node.call<Ball>("bench/a", b, seconds{60});
      if (r)
        die("the service answered");
    }
  }
  auto calls = static_cast<double>(g_down.count());
  return {"tool_amplification", ours ? "vigil" : "naive", calls / n,
          "calls/request",
          {{"n", double(n)},
           {"layers", 3},
           {"calls", calls},
           {"max_calls_per_request", double(g_down.max_per_request())}}};
}

/// One layer, N requests at 50/s: the tool's shared retry budget.
result amplification_budget(bool ours, int64_t n) {
  constexpr double per_second = 50;
  if (!ours) {
    // Each request retried up to 3 times by a plain loop (no pacing: the
    // count does not depend on it).
    for (int64_t i = 0; i < n; ++i) {
      Ball b;
      b.set_n(i);
      for (int k = 0; k < 3; ++k)
        if (std::holds_alternative<Ball>(g_down.call(b).value))
          break;
    }
    auto calls = static_cast<double>(g_down.count());
    return {"tool_amplification", "naive", calls / n, "calls/request",
            {{"n", double(n)}, {"layers", 1}, {"calls", calls}}};
  }
  auto t_start = steady_clock::now(); // before the tool's budget exists
  vigil::node_config nc;
  nc.threads = threads;
  auto d = down_decl();
  d.policy.budget.min_per_second = 1; // the floor: one retry per second
  nc.tools.push_back(d);
  vigil::node node{tool_types(), nc};
  vigil::supervisor_spec tree;
  for (int k = 0; k < 4; ++k)
    tree.children.push_back(child("c" + std::to_string(k), "layer"));
  start_or_die(node, tree);
  auto t0 = steady_clock::now();
  for (int64_t i = 0; i < n; ++i) {
    auto at = duration<double>(static_cast<double>(i) / per_second);
    std::this_thread::sleep_until(
      t0 + duration_cast<steady_clock::duration>(at));
    Ball b;
    b.set_n(i);
    auto r = node.call<Ball>("bench/c" + std::to_string(i % 4), b,
                             seconds{60});
    if (r)
      die("the service answered");
  }
  auto t = duration<double>(steady_clock::now() - t_start).count();
  auto calls = static_cast<double>(g_down.count());
  auto bound = n + std::max(0.1 * n, std::floor(t + 1.0));
  auto& stats = node.rt()->find_tool("down")->stats();
  if (stats.executions.load() != g_down.count())
    die("the tool's counter and the service's disagree");
  return {"tool_amplification", "vigil", calls / n, "calls/request",
          {{"n", double(n)},
           {"layers", 1},
           {"calls", calls},
           {"seconds", t},
           {"bound", bound},
           {"within_bound", calls <= bound ? 1.0 : 0.0},
           {"retries", double(stats.retries.load())},
           {"budget_refusals", double(stats.budget_refusals.load())}}};
}

int usage() {
  std::cerr
    << "usage: tool_bench CASE IMPL [N] [key=value ...]\n"
       "  tool_stack vigil|direct [N] [window=64]\n"
       "  tool_throughput vigil|pool [N] [inflight=8] [work_us=0] "
       "[threads=8]\n"
       "  tool_amplification vigil|naive [N] [layers=3|1]\n";
  return 2;
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 3)
    return usage();
  std::string name = argv[1];
  std::string impl = argv[2];
  int64_t n = argc > 3 ? std::stoll(argv[3]) : 0;
  std::map<std::string, int64_t> kv;
  for (int i = 4; i < argc; ++i) {
    std::string a = argv[i];
    auto eq = a.find('=');
    if (eq == std::string::npos)
      return usage();
    kv[a.substr(0, eq)] = std::stoll(a.substr(eq + 1));
  }
  auto get = [&](const char* k, int64_t fallback) {
    auto i = kv.find(k);
    return i != kv.end() ? i->second : fallback;
  };
  bool ours = impl == "vigil";
  if (name == "tool_stack") {
    if (!ours && impl != "direct")
      return usage();
    print(tool_stack(ours, n ? n : 200000, get("window", 64)));
  } else if (name == "tool_throughput") {
    if (!ours && impl != "pool")
      return usage();
    g_work_us = get("work_us", 0);
    print(tool_throughput(ours, n ? n : 200000, get("inflight", 8),
                          get("threads", 8)));
  } else if (name == "tool_amplification") {
    if (!ours && impl != "naive")
      return usage();
    auto layers = get("layers", 3);
    if (layers == 3)
      print(amplification_nested(ours, n ? n : 1000));
    else if (layers == 1)
      print(amplification_budget(ours, n ? n : 500));
    else
      return usage();
  } else {
    return usage();
  }
  return 0;
}
