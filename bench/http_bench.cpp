// http_bench http_tool vigil|raw|tool [N] [inflight=K] [agents=A]: the
// `http` tool through the full stack against raw cpp-httplib calls, both
// to a local cpp-httplib server in the same process answering a small JSON
// body at once (see bench/README.md). Prints one JSON line, as the other benches.
//
//   vigil: one agent keeps K call_tool calls in flight on the tool's pool
//          of K threads (bulkhead.max_concurrent), each thread on its own
//          keep-alive connection; timed from its handler to the last
//          result callback. With agents=A, A agents keep K/A each, all
//          started at once, timed until the slowest is done.
//   raw:   K threads, each with its own keep-alive httplib::Client,
//          making N/K GETs of the same URLs one after the other.
//   tool:  K threads calling the `http` tool's callable directly (no
//          runtime): the tool's own share of the difference.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <iostream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>

#include "bench.pb.h"
#include "measure.hpp"
#include "vigil/node/node.hpp"
#include "vigil/tools/http.hpp"

using namespace std::chrono;
using vigil::bench::Ball;
using vigil::bench::Done;
using vigil::bench::Start;

namespace {

using vigil::bench::print;
using vigil::bench::process_cpu_ns;
using vigil::bench::result;
using vigil::bench::thread_cpu_ns;
using vigil::bench::threads;

[[noreturn]] void die(const std::string& what) {
  vigil::bench::die("http_bench", what);
}

/// The service: GET /ping/<n> answers {"n":"<n + 1>"} at once. A kept-alive
/// connection holds one of its threads, so it has plenty.
class service {
public:
  service() {
    svr_.new_task_queue = [] { return new httplib::ThreadPool(64); };
    svr_.set_keep_alive_max_count(size_t{1} << 30);
    svr_.set_keep_alive_timeout(30);
    svr_.set_tcp_nodelay(true);
    svr_.Get(R"(/ping/(\d+))",
             [](const httplib::Request& req, httplib::Response& res) {
               auto n = std::stoll(req.matches[1]) + 1;
               res.set_content("{\"n\":\"" + std::to_string(n) + "\"}",
                               "application/json");
             });
    port_ = svr_.bind_to_any_port("127.0.0.1");
    if (port_ <= 0)
      die("cannot bind 127.0.0.1");
    thread_ = std::thread{[this] { svr_.listen_after_bind(); }};
    auto until = steady_clock::now() + seconds{10};
    while (!svr_.is_running() && steady_clock::now() < until)
      std::this_thread::yield();
    if (!svr_.is_running())
      die("the server did not start");
  }

  ~service() {
    svr_.stop();
    thread_.join();
  }

  int port() const {
    return port_;
  }

private:
  httplib::Server svr_;
  std::thread thread_;
  int port_ = 0;
};

/// On Start{n}: makes n calls of tool "http", `window` in flight; answers
/// Done{elapsed ns} after the last result callback.
class caller : public vigil::agent<> {
public:
  explicit caller(const vigil::params& ps)
    : window_(std::stoll(ps.at("window"))) {
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
    while (issued_ < n_ && issued_ < window_)
      issue(ctx);
  }

private:
  void issue(vigil::context& ctx) {
    Ball b;
    b.set_n(issued_++);
    ctx.call_tool<Ball>(
      "http", b, vigil::tool_options{},
      [this, &ctx](const Ball&) {
        ++finished_;
        next(ctx);
      },
      [this, &ctx](const caf::error& e) {
        ++failed_;
        last_error_ = e;
        next(ctx);
      });
  }

  void next(vigil::context& ctx) {
    if (failed_ + finished_ < n_) {
      if (issued_ < n_)
        issue(ctx);
      return;
    }
    if (failed_ > 0) {
      done_.fail(last_error_);
      return;
    }
    Done d;
    d.set_n(duration_cast<nanoseconds>(steady_clock::now() - t0_).count());
    done_.deliver(d);
  }

  int64_t window_;
  int64_t n_ = 0;
  int64_t issued_ = 0;
  int64_t finished_ = 0;
  int64_t failed_ = 0;
  caf::error last_error_;
  steady_clock::time_point t0_;
  vigil::deferred_reply done_;
};

/// Runs `f` (returning the elapsed seconds) after a warm-up, and fills in
/// the CPU time per call.
template <class F>
result measure(const char* impl, int64_t n, int64_t inflight, F f) {
  f(std::min<int64_t>(n / 10 + inflight, 2000));
  auto cpu0 = process_cpu_ns();
  auto split0 = thread_cpu_ns();
  auto secs = f(n);
  auto split1 = thread_cpu_ns();
  return {"http_tool",
          impl,
          n / secs,
          "calls/s",
          {{"n", double(n)},
           {"inflight", double(inflight)},
           {"cpu_ns_per_call", (process_cpu_ns() - cpu0) / n},
           {"pool_cpu_ns_per_call", (split1.first - split0.first) / n}}};
}

result through_the_stack(int64_t n, int64_t inflight, int64_t agents,
                         int port) {
  vigil::http_spec s;
  s.url = "http://127.0.0.1:" + std::to_string(port) + "/ping/{n}";
  s.request_type = Ball::descriptor()->full_name();
  s.reply_type = Ball::descriptor()->full_name();
  vigil::tool_decl d;
  d.name = "http";
  d.type = "http";
  d.effect = vigil::side_effect::read_only;
  d.policy.bulkhead.max_concurrent = static_cast<uint32_t>(inflight);
  d.policy.bulkhead.queue = static_cast<uint32_t>(inflight);
  std::vector<vigil::tool_problem> problems;
  d.impl = vigil::make_http_tool("http", s, problems);
  if (!d.impl)
    die("the http tool: " + problems.front().field + ": "
        + problems.front().what);
  vigil::registry types;
  types.add<caller>("caller");
  vigil::node_config nc;
  nc.threads = threads;
  nc.tools.push_back(d);
  vigil::node node{std::move(types), nc};
  vigil::supervisor_spec tree;
  for (int64_t a = 0; a < agents; ++a) {
    auto c = vigil::worker("c" + std::to_string(a), "caller");
    c.params = {{"window", std::to_string(inflight / agents)}};
    tree.children.push_back(c);
  }
  if (auto err = node.start("bench", std::move(tree)))
    die("node start: " + vigil::describe(err));
  return measure("vigil", n, inflight, [&](int64_t k) {
    // Each agent makes its share, all at once; the slowest one's time.
    std::vector<double> secs(static_cast<size_t>(agents));
    std::vector<std::thread> ts;
    for (int64_t a = 0; a < agents; ++a)
      ts.emplace_back([&, a] {
        Start st;
        st.set_n(k / agents);
        auto path = "bench/c" + std::to_string(a);
        auto r = node.call<Done>(path, st, minutes{10});
        if (!r)
          die(path + ": " + vigil::describe(r.error()));
        secs[static_cast<size_t>(a)] = r->value.n() / 1e9;
      });
    for (auto& t : ts)
      t.join();
    return *std::max_element(secs.begin(), secs.end());
  });
}

/// Makes calls 0..k-1 on `inflight` threads (thread t makes t, t + K, ...
/// with the callable `make(t)` returns, which answers whether the call
/// went well); dies if one did not. Returns the seconds taken.
template <class Make>
double on_threads(const char* what, int64_t inflight, int64_t k, Make make) {
  std::atomic<bool> failed{false};
  auto t0 = steady_clock::now();
  std::vector<std::thread> ts;
  for (int64_t t = 0; t < inflight; ++t)
    ts.emplace_back([&, t] {
      auto call = make(t);
      for (int64_t i = t; i < k; i += inflight)
        if (!call(i))
          failed = true;
    });
  for (auto& th : ts)
    th.join();
  if (failed)
    die(std::string{what} + ": a call failed");
  return duration<double>(steady_clock::now() - t0).count();
}

result raw_calls(int64_t n, int64_t inflight, int port) {
  // One client per thread, kept across both passes (as the tool's pool
  // threads keep theirs).
  std::vector<std::unique_ptr<httplib::Client>> clients;
  for (int64_t t = 0; t < inflight; ++t) {
    auto cli = std::make_unique<httplib::Client>("127.0.0.1", port);
    cli->set_keep_alive(true);
    cli->set_tcp_nodelay(true);
    clients.push_back(std::move(cli));
  }
  return measure("raw", n, inflight, [&](int64_t k) {
    return on_threads("raw", inflight, k, [&](int64_t t) {
      return [&, t, hs = httplib::Headers{{"Accept", "application/json"}}](
               int64_t i) {
        auto res = clients[t]->Get("/ping/" + std::to_string(i), hs);
        return res && res->status == 200 && !res->body.empty();
      };
    });
  });
}

/// The `http` tool's callable, called directly from K threads as `raw`
/// calls httplib: what the tool itself adds (rendering, headers, the JSON
/// mapped onto the reply), without the runtime around it.
result tool_alone(int64_t n, int64_t inflight, int port) {
  vigil::http_spec s;
  s.url = "http://127.0.0.1:" + std::to_string(port) + "/ping/{n}";
  s.request_type = Ball::descriptor()->full_name();
  s.reply_type = Ball::descriptor()->full_name();
  std::vector<vigil::tool_problem> problems;
  auto impl = vigil::make_http_tool("http", s, problems);
  if (!impl)
    die("the http tool: " + problems.front().field + ": "
        + problems.front().what);
  return measure("tool", n, inflight, [&](int64_t k) {
    return on_threads("tool", inflight, k, [&](int64_t) {
      return [&, cancelled = std::make_shared<std::atomic<bool>>(false),
              caller = std::string{"bench/c"}, b = Ball{}](int64_t i) mutable {
        b.set_n(i);
        vigil::tool_call call{*cancelled,
                              vigil::resilience::clock_type::now()
                                + seconds{10},
                              1, caller};
        auto out = impl->call(b, call);
        return !out.error && out.reply != nullptr;
      };
    });
  });
}

int usage() {
  std::cerr << "usage: http_bench http_tool vigil|raw|tool [N] [inflight=1] "
               "[agents=1]\n";
  return 2;
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 3 || std::string{argv[1]} != "http_tool")
    return usage();
  std::string impl = argv[2];
  int64_t n = argc > 3 ? std::stoll(argv[3]) : 20000;
  int64_t inflight = 1;
  int64_t agents = 1;
  for (int i = 4; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("inflight=", 0) == 0)
      inflight = std::stoll(a.substr(9));
    else if (a.rfind("agents=", 0) == 0)
      agents = std::stoll(a.substr(7));
    else
      return usage();
  }
  if (inflight < 1 || inflight > 64 || n < inflight || agents < 1
      || inflight % agents != 0)
    return usage();
  service svc;
  if (impl == "vigil")
    print(through_the_stack(n, inflight, agents, svc.port()));
  else if (impl == "raw")
    print(raw_calls(n, inflight, svc.port()));
  else if (impl == "tool")
    print(tool_alone(n, inflight, svc.port()));
  else
    return usage();
  return 0;
}
