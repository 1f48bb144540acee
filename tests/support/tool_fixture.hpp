#pragma once

// Tool calls on CAF's deterministic testing scheduler: a counting service
// whose every execution is recorded, an executor that runs executions only
// when the test says so (or at once), agents that call the service through
// `context::call_tool`, and agents that stack layers of requests above it.

#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <mutex>
#include <string>
#include <vector>

#include "support/fixture.hpp"
#include "vigil/actors/detail/actor_clock.hpp"
#include "vigil/actors/detail/tool_runtime.hpp"
#include "vigil/actors/tool.hpp"
#include "proto/test.pb.h"

namespace vigil::test {

/// Runs a tool's executions when the test says so; `inline_run` runs each
/// at once, on the thread that submits it (a cell's, under the testing
/// scheduler: deterministic).
class manual_executor final : public tool_executor {
public:
  bool inline_run = true;

  void submit(std::function<void()> task) override {
    if (inline_run) {
      task();
      return;
    }
    std::lock_guard<std::mutex> guard{mtx_};
    tasks_.push_back(std::move(task));
  }

  /// Executions submitted (and held) so far, run or not.
  size_t submitted() {
    std::lock_guard<std::mutex> guard{mtx_};
    return tasks_.size();
  }

  size_t pending() {
    std::lock_guard<std::mutex> guard{mtx_};
    size_t n = 0;
    for (auto& t : tasks_)
      n += static_cast<bool>(t);
    return n;
  }

  /// Runs held execution `i` (in submission order) if it has not run.
  bool run_nth(size_t i) {
    std::function<void()> t;
    {
      std::lock_guard<std::mutex> guard{mtx_};
      if (i >= tasks_.size() || !tasks_[i])
        return false;
      t = std::move(tasks_[i]);
      tasks_[i] = nullptr;
    }
    t();
    return true;
  }

  /// Runs the executions held so far, oldest first; returns how many.
  size_t run_all() {
    size_t n = 0;
    for (size_t i = 0; i < submitted(); ++i)
      n += run_nth(i);
    return n;
  }

private:
  std::mutex mtx_;
  std::vector<std::function<void()>> tasks_;
};

/// What the counting service does with one execution.
enum class svc_mode { ok, transient, permanent, invalid, not_sent, slow_ok };

/// The counting service: every execution is recorded (request n, attempt,
/// the test clock's time). Its behaviour is a script (per request n) or a
/// default mode.
struct service {
  std::mutex mtx;
  svc_mode mode = svc_mode::ok;
  /// Per request n: the modes of its executions in order (then `mode`).
  std::map<int64_t, std::deque<svc_mode>> script;
  double cost = 0.0;
  resilience::duration retry_after{0};
  struct execution {
    int64_t n;
    uint32_t attempt;
    svc_mode mode;
  };
  std::vector<execution> executions;

  size_t count() {
    std::lock_guard<std::mutex> guard{mtx};
    return executions.size();
  }

  size_t count_of(int64_t n) {
    std::lock_guard<std::mutex> guard{mtx};
    size_t k = 0;
    for (auto& e : executions)
      k += e.n == n;
    return k;
  }

  tool_result<Pong> call(const Ping& req, tool_call& c) {
    svc_mode m;
    {
      std::lock_guard<std::mutex> guard{mtx};
      m = mode;
      auto i = script.find(req.n());
      if (i != script.end() && !i->second.empty()) {
        m = i->second.front();
        i->second.pop_front();
      }
      executions.push_back({req.n(), c.attempt(), m});
    }
    Pong p;
    p.set_n(req.n());
    p.set_attempt(c.attempt());
    switch (m) {
      case svc_mode::ok:
      case svc_mode::slow_ok:
        return {p, cost};
      case svc_mode::transient:
        return tool_error::transient("503 service unavailable", retry_after);
      case svc_mode::permanent:
        return tool_error::permanent("400 bad request");
      case svc_mode::invalid:
        p.set_from("garbage"); // the validator refuses it
        return {p, cost};
      case svc_mode::not_sent:
        return tool_error::transient("connection refused").before_sending();
    }
    return p;
  }

  static service& get() {
    static service s;
    return s;
  }
  void reset() {
    std::lock_guard<std::mutex> guard{mtx};
    mode = svc_mode::ok;
    script.clear();
    cost = 0.0;
    retry_after = {};
    executions.clear();
  }
};

/// On Ping{n}: calls tool `tool` (param, default "svc") with it and replies
/// with the tool's Pong, or fails with the tool's error. Param `timeout_ms`
/// sets the call's total deadline; `attempts` its attempts; `throw` makes
/// it throw the error as a tool_failure from the handler when the call
/// fails at once (circuit_open).
class tool_caller : public agent<> {
public:
  explicit tool_caller(const params& ps) {
    if (auto i = ps.find("tool"); i != ps.end())
      tool_ = i->second;
    bulk_ = ps.count("bulk") > 0;
    if (auto i = ps.find("timeout_ms"); i != ps.end())
      opts_.timeout = std::chrono::milliseconds{std::stoll(i->second)};
    if (auto i = ps.find("attempts"); i != ps.end())
      opts_.max_attempts = static_cast<uint32_t>(std::stoul(i->second));
    throw_ = ps.count("throw") > 0;
  }

  static void define(handlers<tool_caller>& h) {
    h.on<Ping>(&tool_caller::ping);
    h.on<Crash>([](tool_caller&, context&, const Crash& c) {
      throw std::runtime_error(c.why());
    });
  }

  void ping(context& ctx, const Ping& req) {
    auto rp = ctx.defer();
    // Set while call_tool runs: an error then is a refusal at once.
    auto at_once = std::make_shared<std::optional<caf::error>>();
    auto inside = std::make_shared<bool>(true);
    ctx.call_tool<Pong>(
      bulk_ && req.n() >= 100 ? "bulk" : tool_, req, opts_,
      [rp](Pong p) mutable { rp.deliver(p); },
      [rp, at_once, inside, this](const caf::error& e) mutable {
        if (throw_ && *inside)
          *at_once = e;
        rp.fail(e);
      });
    *inside = false;
    if (*at_once) // answered already; the throw restarts nothing
      throw tool_failure(**at_once);
  }

private:
  std::string tool_ = "svc";
  tool_options opts_;
  bool throw_ = false;
  /// With param `bulk`: requests 100 and up call tool "bulk" instead.
  bool bulk_ = false;
};

/// A read_only tool named `name` with the default policy.
inline tool_decl decl_of(std::string name,
                         side_effect fx = side_effect::read_only) {
  tool_decl d;
  d.name = std::move(name);
  d.effect = fx;
  return d;
}

/// One layer of a stack of requests: on Relay, asks the agent at param
/// `next` and when that fails retries it up to 3 times in all; without
/// `next`, it calls tool "svc" (whose own 3 attempts are its retries). With param `naive`, it retries without
/// asking the request's attempt budget (each layer its own 3 attempts);
/// otherwise every retry is drawn from the budget (`take_retry`).
class layer : public agent<> {
public:
  explicit layer(const params& ps) {
    if (auto i = ps.find("next"); i != ps.end())
      next_ = i->second;
    naive_ = ps.count("naive") > 0;
  }

  static void define(handlers<layer>& h) {
    h.on<Relay>(&layer::relay);
  }

  void relay(context& ctx, const Relay& m) {
    auto rp = ctx.defer();
    attempt(ctx, m, rp, 1);
  }

private:
  void attempt(context& ctx, const Relay& m, deferred_reply rp, int n) {
    auto on_error = [this, &ctx, m, rp, n](const caf::error& e) mutable {
      bool again = n < 3 && (naive_ || ctx.take_retry());
      if (again)
        attempt(ctx, m, rp, n + 1);
      else
        rp.fail(e);
    };
    if (next_.empty()) {
      // The last layer: the tool call, whose own retries are this layer's.
      Ping p;
      p.set_n(m.n());
      ctx.call_tool<Pong>(
        "svc", p, tool_options{}, [rp](Pong x) mutable { rp.deliver(x); },
        [rp](const caf::error& e) mutable { rp.fail(e); });
      return;
    }
    ctx.request<Pong>(
      next_, m, std::chrono::seconds{60},
      [rp](vigil::reply<Pong> x) mutable { rp.deliver(x.value); }, on_error);
  }

  std::string next_;
  bool naive_ = false;
};

/// A runtime_fixture whose registry has the counting service as tool
/// implementation "svc" (its validator refuses a Pong whose `from` is
/// "garbage") and the agents above.
class tool_fixture : public runtime_fixture {
public:
  tool_fixture() {
    service::get().reset();
    registry types = test_registry();
    types.add<tool_caller>("tool_caller");
    types.add<layer>("layer");
    types.add_tool<Ping, Pong>(
      "svc",
      [](const Ping& req, tool_call& c) {
        return service::get().call(req, c);
      },
      [](const Pong& p) -> std::string {
        return p.from() == "garbage" ? "from is garbage" : "";
      });
    rt = std::make_shared<runtime>(std::move(types));
    clock = std::make_shared<detail::actor_clock_view>(sys.clock());
  }

  ~tool_fixture() override {
    // Executions held back would hold the cells they report to.
    for (auto& [name, ex] : executors) {
      ex->inline_run = true;
      ex->run_all();
    }
  }

  /// Declares tool `name` on the runtime, implemented by "svc".
  detail::tool_runtime& declare(tool_decl d) {
    if (d.type.empty())
      d.type = "svc";
    auto ex = std::make_shared<manual_executor>();
    executors[d.name] = ex;
    auto t = std::make_shared<detail::tool_runtime>(
      d, *rt->types().find_tool(d.type), clock, ex);
    auto& ref = *t;
    rt->add_tool(std::move(t));
    return ref;
  }

  /// A one_for_one supervisor with one `type` child named `id`.
  caf::error start_one(const std::string& id, const std::string& type,
                       params ps = {}) {
    child_spec c;
    c.id = id;
    c.agent = type;
    c.params = std::move(ps);
    supervisor_spec spec;
    spec.children.push_back(c);
    return start("t", std::move(spec));
  }

  /// An answer to a request the test made.
  struct answer {
    bool ok = false;
    Pong pong;
    caf::error err;
    int count = 0; ///< answers received (must be 1)
  };

  /// Sends `m` to `path` as a request from a client actor of its own; the
  /// answer lands in `answers[n]` (nothing runs until the test runs).
  void ask_msg(const std::string& path, const google::protobuf::Message& m,
               int64_t n, int64_t deadline_ns = 0) {
    auto e = wrap(m, deadline_ns);
    auto dest = rt->lookup(path);
    ASSERT_TRUE(dest) << path;
    // The client holds the answers: a request still open when the test
    // ends is answered while the base fixture shuts down, after this one's
    // members are gone.
    sys.spawn([all = answers_, dest, e, n](caf::event_based_actor* me) mutable {
      me->request(dest, caf::infinite, std::move(e))
        .then(
          [all, n](envelope& rep) {
            auto& a = (*all)[n];
            ++a.count;
            a.ok = a.pong.ParseFromString(rep.payload);
          },
          [all, n](caf::error& err) {
            auto& a = (*all)[n];
            ++a.count;
            a.err = std::move(err);
          });
    });
  }

  /// Starts supervisor "t" with one child "c" of `type` (restart
  /// intensity 100 in 60 s).
  caf::error start_caller(params ps = {}, const std::string& type = "tool_caller") {
    child_spec c;
    c.id = "c";
    c.agent = type;
    c.params = std::move(ps);
    auto spec = flags(strategy::one_for_one, 100, 60000);
    spec.children.push_back(c);
    return start("t", std::move(spec));
  }

  /// True once request `n` was answered.
  bool answered(int64_t n) {
    return answers.count(n) > 0 && answers[n].count > 0;
  }

  void ask_ping(const std::string& path, int64_t n, int64_t deadline_ns = 0) {
    Ping p;
    p.set_n(n);
    ask_msg(path, p, n, deadline_ns);
  }

  /// Opens the breaker of tool "svc" with requests 1 to 3 to the agent at
  /// `path` (whose calls make one attempt each), waits out its open time,
  /// and sends request 4, whose call is the half-open probe: held in the
  /// executor, against a service that answers again.
  void hold_a_probe(detail::tool_runtime& tool, const std::string& path) {
    service::get().mode = svc_mode::transient;
    for (int i = 1; i <= 3; ++i)
      ask_ping(path, i);
    run();
    ASSERT_EQ(tool.look().state, resilience::breaker_state::open);
    advance(std::chrono::seconds{30});
    service::get().mode = svc_mode::ok;
    executors["svc"]->inline_run = false;
    ask_ping(path, 4);
    run();
    ASSERT_EQ(executors["svc"]->pending(), 1u);
    ASSERT_EQ(tool.look().state, resilience::breaker_state::half_open);
  }

  /// The test clock's time in actor-clock nanoseconds plus `d`.
  int64_t deadline_in(std::chrono::nanoseconds d) {
    return (sys.clock().now().time_since_epoch() + d).count();
  }

  /// Advances the clock in `step`s until `done()` or `limit` passed.
  template <class Pred>
  bool advance_until(Pred done, std::chrono::milliseconds step,
                     std::chrono::milliseconds limit) {
    run();
    for (auto t = std::chrono::milliseconds{0}; !done() && t < limit;
         t += step)
      advance(step);
    return done();
  }

  std::shared_ptr<const resilience::clock> clock;
  std::map<std::string, std::shared_ptr<manual_executor>> executors;
  std::shared_ptr<std::map<int64_t, answer>> answers_
    = std::make_shared<std::map<int64_t, answer>>();
  std::map<int64_t, answer>& answers = *answers_;
};

} // namespace vigil::test
