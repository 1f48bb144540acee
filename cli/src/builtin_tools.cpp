// vigil's built-in tool (flaky_tool) and the built-in agent that calls a
// tool (tool_caller), so that a policy file alone can show tool calls,
// retries, retry budgets and an opening breaker. Their messages are in
// proto/vigil/builtin.proto.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <deque>
#include <string>
#include <thread>

#include <caf/atom.hpp>

#include "param_reader.hpp"
#include "vigil/builtin.pb.h"
#include "vigil/cli/app.hpp"

namespace vigil::cli {

namespace {

using builtin::Get;
using builtin::Number;
using builtin::Tick;
using builtin::ToolCallCount;
using builtin::ToolReply;
using builtin::ToolRequest;

// -- flaky_tool ---------------------------------------------------------------

/// A fake dependency whose failures the request decides (see ToolRequest),
/// by its number and the attempt alone: the same policy fails the same
/// calls in every run. Each attempt first takes `delay_ms` (or until the
/// caller gives it up), then: reject_every refuses (permanent), an outage
/// fails every attempt (transient), fail_every fails the first
/// fail_attempts attempts (transient); otherwise it answers.
tool_result<ToolReply> flaky_tool(const ToolRequest& r, tool_call& call) {
  auto n = std::to_string(r.n());
  if (r.delay_ms() > 0) {
    auto until = std::chrono::steady_clock::now()
                 + std::chrono::milliseconds{r.delay_ms()};
    while (std::chrono::steady_clock::now() < until) {
      if (call.cancelled())
        return tool_error::transient("flaky_tool: given up by the caller");
      std::this_thread::sleep_for(std::chrono::milliseconds{2});
    }
  }
  auto failed = [&](tool_error e) {
    tool_result<ToolReply> out{std::move(e)};
    out.cost = r.cost();
    return out;
  };
  if (r.reject_every() > 0 && r.n() % r.reject_every() == 0)
    return failed(tool_error::permanent(
      "flaky_tool: reject_every " + std::to_string(r.reject_every())
      + " (n=" + n + ")"));
  if (r.outage_to() > 0 && r.n() >= r.outage_from() && r.n() <= r.outage_to())
    return failed(tool_error::transient(
      "flaky_tool: the service is down for n=" + std::to_string(r.outage_from())
      + ".." + std::to_string(r.outage_to()) + " (n=" + n + ")"));
  auto fails = r.fail_attempts() > 0 ? r.fail_attempts() : 1u;
  if (r.fail_every() > 0 && r.n() % r.fail_every() == 0
      && call.attempt() <= fails)
    return failed(tool_error::transient(
      "flaky_tool: fail_every " + std::to_string(r.fail_every())
      + " fails attempt " + std::to_string(call.attempt()) + " of "
      + std::to_string(fails) + " (n=" + n + ")"));
  ToolReply rep;
  rep.set_n(r.n());
  rep.set_attempt(call.attempt());
  return {std::move(rep), r.cost()};
}

// -- tool_caller --------------------------------------------------------------

/// The name of `e`'s code: "circuit_open", "tool_unavailable", ...
std::string code_name(const caf::error& e) {
  if (e.category() == caf::atom("vigil"))
    return to_string(static_cast<errc>(e.code()));
  return caf::to_string(e.category()) + ":" + std::to_string(e.code());
}

/// Calls the node's tool `tool` once for each Number it gets, one call at
/// a time and in the order they came (so that the tool's breaker sees the
/// same sequence in every run), with a ToolRequest for n whose failure
/// params (fail_every, fail_attempts, outage_from, outage_to, reject_every,
/// delay, cost) say how the built-in flaky_tool behaves. Counts the calls
/// answered and failed (by error code); forwards each answered n to `to`,
/// if given. Each call is made while handling a message of its own (the
/// Number, or a Tick it sends itself when calls are waiting), so that each
/// has the attempt budget of a request of its own. Waiting Numbers are
/// kept in memory: a restart drops them.
class tool_caller : public agent<ToolCallCount> {
public:
  explicit tool_caller(const params& ps) {
    param_reader r{ps, "tool_caller",
                   {"tool", "to", "fail_every", "fail_attempts",
                    "outage_from", "outage_to", "reject_every", "delay",
                    "cost"}};
    auto* tool = r.find("tool");
    if (tool == nullptr || tool->empty())
      r.missing("tool", "the name of a tool the node declares (node.tools)");
    else
      tool_ = *tool;
    if (auto* to = r.find("to"))
      to_ = *to;
    proto_.set_fail_every(r.integer("fail_every", 0, 0));
    proto_.set_fail_attempts(static_cast<uint32_t>(
      std::min<int64_t>(r.integer("fail_attempts", 1, 1), UINT32_MAX)));
    proto_.set_outage_from(r.integer("outage_from", 0, 0));
    proto_.set_outage_to(r.integer("outage_to", 0, 0));
    proto_.set_reject_every(r.integer("reject_every", 0, 0));
    proto_.set_delay_ms(
      std::chrono::duration_cast<std::chrono::milliseconds>(r.time("delay"))
        .count());
    proto_.set_cost(r.real("cost", 0.0, 0.0, 1e15, "a number >= 0"));
    if (proto_.outage_to() > 0 && proto_.outage_to() < proto_.outage_from())
      r.bad("outage_to", std::to_string(proto_.outage_to()),
            "at least outage_from");
    r.done();
  }

  static void define(handlers<tool_caller>& h) {
    h.on<Number>(&tool_caller::number);
    h.on<Tick>(&tool_caller::next);
    h.on<Get>(
      [](tool_caller& self, context&, const Get&) { return self.state(); });
  }

  void number(context& ctx, const Number& n) {
    waiting_.push_back(n.n());
    if (!busy_ && !next_sent_)
      call_next(ctx);
  }

  void next(context& ctx, const Tick&) {
    next_sent_ = false;
    call_next(ctx);
  }

private:
  void call_next(context& ctx) {
    if (busy_ || waiting_.empty())
      return;
    busy_ = true;
    ToolRequest req = proto_;
    req.set_n(waiting_.front());
    waiting_.pop_front();
    // A call refused before any attempt (an open breaker, say) answers
    // before call_tool returns: `done` then only asks for the next one.
    ctx.call_tool<ToolReply>(
      tool_, req,
      [this, &ctx](ToolReply&& rep) {
        auto& s = state();
        s.set_ok(s.ok() + 1);
        if (rep.attempt() > 1)
          s.set_ok_after_retry(s.ok_after_retry() + 1);
        if (!to_.empty()) {
          Number out;
          out.set_n(rep.n());
          ctx.send(to_, out);
        }
        done(ctx);
      },
      [this, &ctx](const caf::error& err) {
        auto& s = state();
        s.set_failed(s.failed() + 1);
        (*s.mutable_errors())[code_name(err)] += 1;
        done(ctx);
      });
  }

  void done(context& ctx) {
    busy_ = false;
    if (!waiting_.empty() && !next_sent_) {
      next_sent_ = true;
      ctx.send(ctx.path(), Tick{});
    }
  }

  std::string tool_;
  std::string to_;
  ToolRequest proto_;
  std::deque<int64_t> waiting_;
  bool busy_ = false;
  bool next_sent_ = false;
};

} // namespace

void add_builtin_tools(registry& types) {
  types.add_tool<ToolRequest, ToolReply>("flaky_tool", &flaky_tool);
  types.add<tool_caller>("tool_caller");
}

} // namespace vigil::cli
