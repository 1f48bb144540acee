#include "vigil/actors/detail/tool_runtime.hpp"

#include <algorithm>

namespace vigil {

const char* to_string(side_effect x) noexcept {
  switch (x) {
    case side_effect::read_only: return "read_only";
    case side_effect::idempotent_write: return "idempotent_write";
    case side_effect::non_idempotent_write: return "non_idempotent_write";
    case side_effect::irreversible: return "irreversible";
  }
  return "?";
}

bool from_string(std::string_view s, side_effect& out) noexcept {
  for (auto x : {side_effect::read_only, side_effect::idempotent_write,
                 side_effect::non_idempotent_write,
                 side_effect::irreversible})
    if (s == to_string(x)) {
      out = x;
      return true;
    }
  return false;
}

const char* to_string(error_class x) noexcept {
  switch (x) {
    case error_class::transient: return "transient";
    case error_class::permanent: return "permanent";
    case error_class::invalid_output: return "invalid_output";
  }
  return "?";
}

namespace {

using resilience::duration;

void need(std::vector<tool_problem>& out, bool ok, const char* field,
          std::string what) {
  if (!ok)
    out.push_back({field, std::move(what)});
}

constexpr duration max_timeout = std::chrono::hours{24 * 7};

} // namespace

std::vector<tool_problem> check_tool(const tool_decl& d) {
  std::vector<tool_problem> out;
  need(out, !d.name.empty() && d.name.size() <= 64
              && d.name.find_first_of(std::string{"/\0 \t\n", 5})
                   == std::string::npos,
       "name", "a tool's name is 1 to 64 characters without '/', NUL or "
               "spaces");
  auto& p = d.policy;
  need(out, p.timeout > duration::zero() && p.timeout <= max_timeout,
       "timeout", "must be more than 0 and at most 168h (every call has a "
                  "deadline)");
  need(out,
       p.attempt_timeout > duration::zero() && p.attempt_timeout <= max_timeout,
       "attempt_timeout", "must be more than 0 and at most 168h");
  auto& r = p.retry;
  need(out,
       r.max_attempts >= 1 && r.max_attempts <= tool_retry_policy::attempts_cap,
       "retry.max_attempts", "must be 1 to 5 (the first attempt included; "
                             "gRPC's cap)");
  need(out, d.effect != side_effect::irreversible || r.max_attempts == 1,
       "retry.max_attempts", "an irreversible tool is never retried: "
                             "max_attempts must be 1");
  need(out, r.initial >= duration::zero() && r.initial <= max_timeout,
       "retry.initial", "must be 0 to 168h");
  need(out, r.multiplier >= 1.0 && r.multiplier <= 100.0, "retry.multiplier",
       "must be 1 to 100");
  need(out, r.max >= r.initial && r.max <= max_timeout, "retry.max",
       "must be at least retry.initial and at most 168h");
  auto& b = p.budget;
  need(out, b.ratio >= 0.0 && b.ratio <= 1.0, "budget.ratio",
       "must be 0 to 1 (a share of first attempts)");
  need(out, b.min_per_second >= 0.0 && b.min_per_second <= 1e6,
       "budget.min_per_second", "must be 0 to 1000000");
  need(out, b.max_savings >= 1.0 && b.max_savings <= 1e6,
       "budget.max_savings", "must be 1 to 1000000");
  auto& c = p.breaker;
  if (c.enabled) {
    need(out,
         c.consecutive_failures > 0 || c.failure_rate > 0.0
           || c.slow_call_rate > 0.0,
         "breaker", "an enabled breaker needs a rule: consecutive_failures, "
                    "failure_rate or slow_call_rate");
    need(out, c.failure_rate >= 0.0 && c.failure_rate <= 1.0,
         "breaker.failure_rate", "must be 0 (off) to 1");
    need(out, c.slow_call_rate >= 0.0 && c.slow_call_rate <= 1.0,
         "breaker.slow_call_rate", "must be 0 (off) to 1");
    need(out, c.window >= 1 && c.window <= 10000, "breaker.window",
         "must be 1 to 10000 calls");
    need(out, c.minimum_calls >= 1 && c.minimum_calls <= c.window,
         "breaker.minimum_calls", "must be 1 to breaker.window");
    need(out, c.open_for > duration::zero() && c.open_for <= max_timeout,
         "breaker.open_for", "must be more than 0 and at most 168h");
    need(out,
         c.max_open_for > duration::zero() && c.max_open_for <= max_timeout,
         "breaker.max_open_for", "must be more than 0 and at most 168h (a "
                                 "value below open_for is taken as open_for)");
    need(out, c.half_open_probes >= 1 && c.half_open_probes <= 64,
         "breaker.half_open_probes", "must be 1 to 64");
    need(out, c.slow_call_duration > duration::zero(),
         "breaker.slow_call_duration", "must be more than 0");
  }
  need(out,
       p.bulkhead.max_concurrent >= 1 && p.bulkhead.max_concurrent <= 1024,
       "bulkhead.max_concurrent", "must be 1 to 1024 (each is a thread)");
  need(out, p.bulkhead.queue <= 1000000, "bulkhead.queue",
       "must be 0 to 1000000");
  need(out, p.rate.per_second >= 0.0 && p.rate.per_second <= 1e9,
       "rate.per_second", "must be 0 (off) to 1e9");
  need(out, p.rate.per_second == 0.0 || (p.rate.burst >= 1.0 && p.rate.burst <= 1e9),
       "rate.burst", "must be 1 to 1e9");
  need(out, p.cost.limit >= 0.0 && p.cost.limit <= 1e15, "cost.limit",
       "must be 0 (off) to 1e15");
  need(out, p.cost.per_agent >= 0.0 && p.cost.per_agent <= 1e15,
       "cost.per_agent", "must be 0 (off) to 1e15");
  need(out, p.cost.per > duration::zero() && p.cost.per <= max_timeout,
       "cost.per", "must be more than 0 and at most 168h");
  auto& fb = d.fallback.tools;
  for (size_t i = 0; i < fb.size(); ++i) {
    need(out, fb[i] != d.name, "fallback.tools",
         "\"" + fb[i] + "\" is the tool itself; name other tools of the "
           "node");
    need(out, std::find(fb.begin(), fb.begin() + i, fb[i]) == fb.begin() + i,
         "fallback.tools", "\"" + fb[i] + "\" is named twice");
  }
  need(out, fb.size() <= 8, "fallback.tools", "at most 8 tools");
  auto& dr = d.dry_run;
  need(out, !dr.required || !dr.tool.empty(), "dry_run.tool",
       "dry_run.required needs the dry-run form: the name of another tool "
       "of the node that takes the same request");
  need(out, dr.tool != d.name, "dry_run.tool",
       "a tool cannot be its own dry run; name a sandbox or validator tool");
  need(out, dr.tool.empty() || d.effect != side_effect::read_only,
       "dry_run", "a read_only tool changes nothing: a dry run rehearses a "
                  "write");
  need(out,
       d.approval.timeout > duration::zero()
         && d.approval.timeout <= std::chrono::hours{720},
       "approval.timeout", "must be more than 0 and at most 720h (30 days)");
  return out;
}

std::vector<tool_problem> check_tool_override(const tool_override& o) {
  std::vector<tool_problem> out;
  if (o.timeout)
    need(out, *o.timeout > duration::zero() && *o.timeout <= max_timeout,
         "timeout", "must be more than 0 and at most 168h");
  if (o.attempt_timeout)
    need(out,
         *o.attempt_timeout > duration::zero()
           && *o.attempt_timeout <= max_timeout,
         "attempt_timeout", "must be more than 0 and at most 168h");
  if (o.max_attempts)
    need(out, *o.max_attempts >= 1 && *o.max_attempts <= 5, "max_attempts",
         "must be 1 to 5");
  if (o.cost_per_agent)
    need(out, *o.cost_per_agent >= 0.0 && *o.cost_per_agent <= 1e15,
         "cost_per_agent", "must be 0 (off) to 1e15");
  return out;
}

namespace detail {

// -- tool_runtime -------------------------------------------------------------

namespace {

resilience::circuit_breaker_policy breaker_policy(const tool_breaker_policy& p) {
  resilience::circuit_breaker_policy out;
  out.consecutive_failures = p.consecutive_failures;
  out.failure_rate = p.failure_rate;
  out.slow_call_rate = p.slow_call_rate;
  out.window = p.window;
  out.minimum_calls = p.minimum_calls;
  out.half_open_probes = p.half_open_probes;
  out.open_for.initial = p.open_for;
  out.open_for.max = std::max(p.max_open_for, p.open_for);
  out.open_for.multiplier = 2.0;
  return out;
}

resilience::retry_budget_policy budget_policy(const tool_budget_policy& p) {
  return {p.ratio, p.min_per_second, p.max_savings};
}

} // namespace

tool_runtime::tool_runtime(tool_decl decl, tool_type impl,
                           std::shared_ptr<const resilience::clock> clock,
                           std::shared_ptr<tool_executor> ex)
  : decl_(std::move(decl)),
    impl_(std::move(impl)),
    clock_(std::move(clock)),
    sh_(std::make_shared<tool_shared>()),
    ex_(std::move(ex)),
    breaker_(breaker_policy(decl_.policy.breaker), *clock_),
    budget_(budget_policy(decl_.policy.budget), *clock_) {
  auto& clk = *clock_;
  sh_->fn = impl_.call;
  auto& bh = decl_.policy.bulkhead;
  sh_->capacity = std::max<uint32_t>(bh.max_concurrent, 1) + bh.queue;
  if (!ex_)
    ex_ = std::make_shared<thread_pool>(bh.max_concurrent, decl_.name,
                                        std::chrono::seconds{5},
                                        impl_.waits_on_io
                                          ? thread_pool::idle_mode::yield
                                          : thread_pool::idle_mode::spin,
                                        impl_.waits_on_io);
  if (decl_.policy.rate.per_second > 0.0)
    rate_ = std::make_unique<resilience::rate_limiter>(
      decl_.policy.rate.per_second, std::max(decl_.policy.rate.burst, 1.0),
      clk);
  auto& c = decl_.policy.cost;
  if (c.limit > 0.0) {
    std::chrono::duration<double> per = c.per;
    cost_ = std::make_unique<resilience::token_bucket>(
      c.limit, c.limit / std::max(per.count(), 1e-3), clk);
  }
}

tool_runtime::~tool_runtime() {
  // No execution tells its caller from now on: the node is going.
  sh_->close_gate();
  ex_.reset(); // waits a while for the executions running
}

std::shared_ptr<tool_ticket> tool_runtime::try_admit() {
  auto& in_use = sh_->in_use;
  auto n = in_use.load(std::memory_order_relaxed);
  do {
    if (n >= sh_->capacity)
      return nullptr;
  } while (!in_use.compare_exchange_weak(n, n + 1, std::memory_order_relaxed));
  return std::make_shared<tool_ticket>(sh_);
}

errc tool_runtime::admit_attempt(resilience::circuit_breaker::permit& p,
                                 bool first) {
  std::lock_guard<std::mutex> guard{mtx_};
  if (decl_.policy.breaker.enabled) {
    if (persist_) {
      auto before = breaker_.state();
      auto openings = breaker_.openings();
      p = breaker_.acquire();
      changed(before, openings);
    } else {
      p = breaker_.acquire();
    }
    if (!p)
      return errc::circuit_open;
  } else {
    p = {};
  }
  if (rate_ && !rate_->try_acquire()) {
    if (p)
      breaker_.on_ignored(p);
    return errc::rate_limited;
  }
  if (cost_ && cost_->available() < cost_->capacity() / 1000.0) {
    if (p)
      breaker_.on_ignored(p);
    return errc::cost_exceeded;
  }
  if (first)
    budget_.on_attempt();
  return errc::none;
}

void tool_runtime::on_outcome(const resilience::circuit_breaker::permit& p,
                              bool failure, bool ignored, bool slow,
                              double cost) {
  std::lock_guard<std::mutex> guard{mtx_};
  if (cost_ && cost > 0.0) {
    // A cost beyond the balance empties it: the next calls wait until it
    // refills.
    if (!cost_->try_take(cost))
      (void)cost_->try_take(cost_->available());
  }
  if (!decl_.policy.breaker.enabled || !p)
    return;
  auto report = [&] {
    if (ignored)
      breaker_.on_ignored(p);
    else if (failure)
      breaker_.on_failure(p, slow);
    else
      breaker_.on_success(p, slow);
  };
  if (!persist_)
    return report();
  auto before = breaker_.state();
  auto openings = breaker_.openings();
  report();
  changed(before, openings);
}

void tool_runtime::on_returned(const tool_attempt& a) {
  auto& res = a.result;
  if (a.phase.load() == tool_attempt::abandoned) {
    // The breaker heard when it was given up: only its cost is left.
    if (res.cost > 0.0)
      on_outcome({}, false, true, false, res.cost);
    return;
  }
  on_outcome(a.permit, res.error && res.error->cls != error_class::permanent,
             false,
             decl_.policy.breaker.slow_call_rate > 0.0
               && a.elapsed >= decl_.policy.breaker.slow_call_duration,
             res.cost);
}

bool tool_runtime::try_retry() {
  std::lock_guard<std::mutex> guard{mtx_};
  return budget_.try_retry();
}

void tool_runtime::changed(resilience::breaker_state before,
                           uint64_t openings_before) {
  if (!persist_)
    return;
  auto now = breaker_.state();
  bool opened = breaker_.openings() != openings_before;
  bool closed = now == resilience::breaker_state::closed
                && before != resilience::breaker_state::closed;
  if (opened || closed)
    persist_(breaker_.snapshot());
}

tool_runtime::view tool_runtime::look() {
  std::lock_guard<std::mutex> guard{mtx_};
  view v;
  v.state = breaker_.state();
  v.consecutive_failures = breaker_.consecutive_failures();
  v.failure_rate = breaker_.failure_rate();
  v.retry_after = breaker_.retry_after();
  v.openings = breaker_.openings();
  v.budget_balance = budget_.balance();
  if (cost_)
    v.cost_available = cost_->available();
  v.in_use = in_use();
  return v;
}

void tool_runtime::restore(const resilience::breaker_snapshot& s) {
  std::lock_guard<std::mutex> guard{mtx_};
  breaker_.restore(s);
}

// -- budget_ledger ------------------------------------------------------------

bool budget_ledger::take(uint64_t account, uint32_t attempts) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto [i, added] = spent_.emplace(account, 0);
  if (added) {
    order_.push_back(account);
    while (order_.size() > cap_) {
      spent_.erase(order_.front());
      order_.pop_front();
    }
    i = spent_.find(account);
  }
  if (i->second + 1 >= attempts)
    return false;
  ++i->second;
  return true;
}

uint32_t budget_ledger::spent(uint64_t account) const {
  std::lock_guard<std::mutex> guard{mtx_};
  auto i = spent_.find(account);
  return i != spent_.end() ? i->second : 0;
}

} // namespace detail
} // namespace vigil
