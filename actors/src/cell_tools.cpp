// A cell's tool calls: the stack of tool.hpp, run in the calling agent's
// cell. The shared parts (breaker, budgets, limiters, bulkhead) live in the
// tool's tool_runtime; the call's own state (its deadline, attempts,
// backoff and callbacks) lives here, and every decision about it is taken
// on this cell's thread. Executions run on the tool's executor and report
// back with a tool_done message; timers are delayed messages to self.

#include <algorithm>

#include <caf/scheduler/test_coordinator.hpp>

#include "cell_impl.hpp"
#include "vigil/actors/detail/tool_record.hpp"

namespace vigil::detail {

namespace {

using std::chrono::duration_cast;
using std::chrono::milliseconds;

std::string ms_text(resilience::duration d) {
  return std::to_string(duration_cast<milliseconds>(d).count()) + "ms";
}

/// A cost budget is spent when less than a thousandth of it is left: it
/// refills continuously, so it is never exactly empty for long.
bool spent(resilience::token_bucket& b) {
  return b.available() < b.capacity() / 1000.0;
}

errc code_of(error_class c) {
  switch (c) {
    case error_class::transient: return errc::tool_unavailable;
    case error_class::permanent: return errc::tool_rejected;
    case error_class::invalid_output: return errc::invalid_output;
  }
  return errc::tool_unavailable;
}

const char* refusal_text(errc code) {
  switch (code) {
    case errc::circuit_open: return "its circuit breaker is open";
    case errc::rate_limited: return "its rate limit allows no call now";
    case errc::cost_exceeded: return "its cost budget for the node is spent";
    default: return "refused";
  }
}

} // namespace

call_origin cell::origin_now() {
  call_origin o;
  if (current_ != nullptr) {
    o.deadline = current_->deadline;
    o.account = current_->budget_account();
    o.budget = current_->attempt_budget;
    o.attempt = current_->attempt;
  } else if (cb_origin_ != nullptr) {
    o.deadline = cb_origin_->deadline;
    o.account = cb_origin_->account;
    o.budget = cb_origin_->budget;
    o.attempt = cb_origin_->attempt;
  } else {
    // Outside any request (on_start, a timer): an account of its own.
    o.account = rt_->next_id() * 0x9e3779b97f4a7c15ull | 1;
  }
  if (o.budget == 0)
    o.budget = runtime::default_attempt_budget;
  return o;
}

bool cell::take_retry() {
  auto o = origin_now();
  return rt_->ledger().take(o.account, o.budget);
}

void cell::start_attempt(uint64_t id, tool_call_state& st, bool sync,
                         time_point now) {
  auto* tool = st.tool;
  auto& stats = tool->stats();
  if (now >= st.deadline) {
    tool_stats::bump(stats.deadline_exceeded);
    finish_call(id,
                make_error(errc::deadline_exceeded,
                           "tool \"" + tool->decl().name + "\": no time left "
                             + "for attempt " + std::to_string(st.attempts + 1)
                             + (st.last_error.empty()
                                  ? std::string{}
                                  : "; the last failed: " + st.last_error)),
                nullptr, sync);
    return;
  }
  if (st.attempts > 0 && st.agent_cost != nullptr
      && spent(*st.agent_cost)) {
    tool_stats::bump(stats.cost_exceeded);
    finish_call(id,
                make_error(errc::cost_exceeded,
                           cfg_.path + "'s cost budget for tool \""
                             + tool->decl().name + "\" is spent; after "
                             + std::to_string(st.attempts)
                             + " attempts, the last failed: " + st.last_error),
                nullptr, sync);
    return;
  }
  resilience::circuit_breaker::permit permit;
  if (auto code = tool->admit_attempt(permit, st.attempts == 0);
      code != errc::none) {
    auto& c = code == errc::circuit_open   ? stats.not_permitted
              : code == errc::rate_limited ? stats.rate_limited
                                           : stats.cost_exceeded;
    tool_stats::bump(c);
    std::string what = "tool \"" + tool->decl().name + "\" not called: "
                       + refusal_text(code);
    if (code == errc::circuit_open) {
      auto v = tool->look();
      if (v.retry_after.count() > 0)
        what += " (next probe in " + ms_text(v.retry_after) + ")";
    }
    if (st.attempts > 0)
      what += "; after " + std::to_string(st.attempts)
              + " attempts, the last failed: " + st.last_error;
    finish_call(id, make_error(code, std::move(what)), nullptr, sync);
    return;
  }
  if (st.key)
    st.key->attempted = true;
  auto att = std::make_shared<tool_attempt>();
  att->number = ++st.attempts;
  att->permit = permit;
  att->call = id;
  att->tool = tool;
  att->ticket = st.ticket;
  att->request = st.request;
  att->inbox = tools_->inbox;
  att->key = st.key;
  auto att_deadline = std::min(st.deadline, now + st.attempt_timeout);
  att->deadline = att_deadline;
  att->timed = tool->decl().policy.breaker.slow_call_rate > 0.0
               || rt_->meters().on();
  st.current = att;
  auto task = [att = std::move(att)]() mutable {
    // What the attempt holds stays with it: its ticket (the call's
    // bulkhead place, which it holds until it returns), its request and
    // its inbox. The cell, which made it, lets them go when it takes it
    // back (unless it gave it up): their counts are not passed between
    // threads on every call.
    auto& sh = *att->ticket->sh;
    if (att->cancelled.load(std::memory_order_relaxed)) {
      // Given up before it started: nothing ran.
      tool_stats::bump(sh.stats.abandoned_running, uint64_t(-1));
      return;
    }
    // Timed only for a slow-call rule: two clock reads per call otherwise.
    auto t0 = att->timed ? resilience::clock_type::now()
                         : resilience::time_point{};
    tool_call call{att->cancelled, att->deadline, att->number,
                   att->inbox->caller, att->key ? &att->key->text : nullptr};
    att->result = sh.fn(*att->request, call);
    if (att->timed)
      att->elapsed = resilience::clock_type::now() - t0;
    tool_stats::bump(sh.stats.executions);
    int expected = tool_attempt::running;
    // An attempt given up holds its bulkhead place until now (not until
    // its cell, which may be busy, takes it): this thread lets it go.
    std::shared_ptr<tool_ticket> place;
    if (!att->phase.compare_exchange_strong(expected,
                                            tool_attempt::finished)) {
      tool_stats::bump(sh.stats.abandoned_running, uint64_t(-1));
      if (att->result.cost <= 0.0)
        return;
      // It ran all the same: its cost is charged (by the cell, which
      // holds the agent's budget), though nobody takes its answer.
      place = std::move(att->ticket);
    }
    // Into the inbox; the first one in rings the cell. Once pushed, the
    // attempt (and with it the inbox, the ticket and `sh`) may be gone:
    // only the inbox is used after, between enter and leave. A push that
    // found the inbox open rings a cell that is there: the cell closes its
    // inbox when it ends, before the node can go, and closing waits for
    // `leave`.
    auto* a = att.get();
    auto& inbox = *a->inbox;
    inbox.enter();
    a->keep = std::move(att); // (a is the cell's once pushed)
    switch (inbox.push(a)) {
      case tool_inbox::pushed::first:
        ring(inbox.cell, caf::make_message(tool_done_atom::value), inbox.here);
        inbox.leave();
        break;
      case tool_inbox::pushed::queued:
        inbox.leave();
        break;
      case tool_inbox::pushed::closed: {
        // Its cell ended: nobody takes it, but the breaker still hears,
        // through the tool's gate (the node may be going too; `sh` is
        // held by the attempt's ticket or by `place`).
        inbox.leave();
        auto self = std::move(a->keep);
        sh.through_gate([&] { self->tool->on_returned(*self); });
        break;
      }
    }
  };
  st.attempt_due = att_deadline < st.deadline ? att_deadline : time_point::max();
  tools_->submit(tool->executor(), std::move(task));
  // (An executor that ran the task at once left it in the inbox: the call
  // is still there.)
  schedule(id, st);
}

cell_tools& cell::open_tools() {
  if (!tools_) {
    // CAF's test scheduler runs every actor itself: no pool thread may.
    bool here = dynamic_cast<caf::scheduler::test_coordinator*>(
                  &home_system().scheduler())
                == nullptr;
    tools_ = std::make_unique<cell_tools>(clock(), cfg_.path, address(), here);
  }
  return *tools_;
}

void cell::on_tools_done() {
  if (!tools_)
    return;
  // What is left (if a step throws) is released; its calls end at their
  // timeouts. The executions that the callbacks start go out together at
  // the end (one lock of their pool, not one each), but for those that a
  // thread of their pool, spinning idle, can start at once.
  struct rest {
    cell_tools& ts;
    tool_attempt* list;
    ~rest() {
      tool_inbox::release(list);
      ts.batching = false;
      try {
        ts.flush();
      } catch (...) {
        ts.batch.clear(); // out of memory: those calls end at their timeouts
      }
    }
  } r{*tools_, tools_->inbox->take()};
  tools_->batching = true;
  while (r.list != nullptr) {
    auto* a = std::exchange(r.list, r.list->next);
    a->next = nullptr;
    auto keep = std::move(a->keep);
    on_tool_done(*a);
  }
}

bool cell::abandon_attempt(tool_call_state& st, bool timed_out) {
  auto& att = st.current;
  if (!att)
    return false;
  int expected = tool_attempt::running;
  if (!att->phase.compare_exchange_strong(expected, tool_attempt::abandoned))
    return false; // it returned; its tool_done is on its way
  att->cancelled.store(true, std::memory_order_relaxed);
  auto& stats = st.tool->stats();
  tool_stats::bump(stats.abandoned);
  tool_stats::bump(stats.abandoned_running);
  // A timeout says the dependency is slow or down; a call given up because
  // its caller went says nothing about it (but frees a probe's slot).
  st.tool->on_outcome(att->permit, timed_out, !timed_out, timed_out, 0.0);
  att.reset();
  return true;
}

void cell::on_tool_done(tool_attempt& a) {
  // It returned: it holds no place in the bulkhead from now on (its call
  // may, until it ends), also while a callback below makes the next call.
  a.ticket.reset();
  auto id = a.call;
  auto* stp = tools_->calls.find(id);
  if (stp == nullptr || stp->current.get() != &a) {
    // Its call ended meanwhile (at its deadline, or its caller's), or it
    // was given up: the outcome still counts, for the breaker (unless it
    // was told already, when the attempt was given up) and the costs.
    a.tool->on_returned(a);
    if (a.result.cost > 0.0)
      if (auto c = tools_->costs.find(a.tool->decl().name);
          c != tools_->costs.end() && !c->second->try_take(a.result.cost))
        (void)c->second->try_take(c->second->available());
    return;
  }
  auto& st = *stp;
  auto att = std::move(st.current);
  st.attempt_due = time_point::max();
  auto& res = att->result;
  auto* tool = st.tool;
  // (Timed also for the metrics: slow only under a slow-call rule.)
  auto& brk = tool->decl().policy.breaker;
  bool slow = brk.slow_call_rate > 0.0
              && att->elapsed >= brk.slow_call_duration;
  if (att->timed)
    tool->stats().attempt_ns.observe(
      static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(att->elapsed)
          .count()),
      duration_bounds);
  // The agent's cost budget pays whether or not the caller still waits.
  if (st.agent_cost != nullptr && res.cost > 0.0
      && !st.agent_cost->try_take(res.cost))
    (void)st.agent_cost->try_take(st.agent_cost->available());
  if (!st.owned && (st.gen != gen_ || !instance_)) {
    // The instance that called is gone, but the outcome still tells the
    // breaker about the dependency (and ends a probe).
    tool->on_outcome(att->permit,
                     res.error && res.error->cls != error_class::permanent,
                     false, slow, res.cost);
    // A journal agent's call is recorded all the same when it answered
    // (a reply, or a permanent error): the next instance's replay of the
    // call gets it instead of executing again.
    if (st.record && !res.error && res.reply)
      return finish_call(id, caf::error{}, std::move(res.reply), false);
    if (st.record && res.error && res.error->cls == error_class::permanent) {
      st.last_class = res.error->cls;
      st.last_error = std::string{to_string(res.error->cls)} + ": "
                      + res.error->what;
      return finish_call(id, final_error(st, ""), nullptr, false);
    }
    return finish_call(id, make_error(errc::not_running), nullptr, false);
  }
  if (!res.error) {
    tool->on_outcome(att->permit, false, false, slow, res.cost);
    if (!res.reply) {
      st.last_class = error_class::invalid_output;
      st.last_error = "the tool returned no reply";
      return retry_or_fail(id, st);
    }
    return finish_call(id, caf::error{}, std::move(res.reply), false);
  }
  auto& e = *res.error;
  // A permanent error is an answer: the dependency works.
  tool->on_outcome(att->permit, e.cls != error_class::permanent, false, slow,
                   res.cost);
  st.last_class = e.cls;
  st.last_error = std::string{to_string(e.cls)} + ": " + e.what;
  st.last_not_executed = e.not_executed;
  st.retry_after = e.retry_after;
  retry_or_fail(id, st);
}

caf::error cell::final_error(const tool_call_state& st,
                             const std::string& why) const {
  return make_error(code_of(st.last_class),
                    "tool \"" + st.tool->decl().name + "\" failed after "
                      + std::to_string(st.attempts) + " attempt"
                      + (st.attempts == 1 ? "" : "s") + why + "; the last: "
                      + st.last_error);
}

void cell::retry_or_fail(uint64_t id, tool_call_state& st) {
  auto* tool = st.tool;
  auto& stats = tool->stats();
  auto& pol = tool->decl().policy;
  bool retryable = st.last_class == error_class::transient
                   || (st.last_class == error_class::invalid_output
                       && pol.retry.retry_invalid_output);
  auto effect = tool->decl().effect;
  if (effect == side_effect::non_idempotent_write && !st.last_not_executed)
    retryable = false;
  if (effect == side_effect::irreversible)
    retryable = false;
  if (!retryable || st.attempts >= st.max_attempts)
    return finish_call(id, final_error(st, ""), nullptr, false);
  if (!st.backoff) {
    resilience::backoff_policy bp;
    bp.initial = pol.retry.initial;
    bp.max = pol.retry.max;
    bp.multiplier = pol.retry.multiplier;
    bp.jitter = resilience::jitter_kind::full;
    st.backoff = std::make_unique<resilience::backoff>(
      bp, tools_->clock, ++tools_->seed * 0x2545f4914f6cdd1dull + key_);
  }
  auto delay = std::max(st.backoff->next(st.track), st.retry_after);
  auto now = clock().now();
  if (delay >= st.deadline - now) { // (now + delay could overflow)
    tool_stats::bump(stats.deadline_exceeded);
    return finish_call(
      id,
      make_error(errc::deadline_exceeded,
                 "tool \"" + tool->decl().name + "\": no time for attempt "
                   + std::to_string(st.attempts + 1) + " (it would start in "
                   + ms_text(delay) + ", the deadline is in "
                   + ms_text(st.deadline - now) + ") after "
                   + std::to_string(st.attempts) + " attempts; the last: "
                   + st.last_error),
      nullptr, false);
  }
  // The tool's shared budget first: a retry it refuses costs the
  // request's budget nothing.
  if (!tool->try_retry()) {
    tool_stats::bump(stats.budget_refusals);
    return finish_call(id,
                       final_error(st, " (no retry: the tool's retry budget "
                                       "for the node is spent)"),
                       nullptr, false);
  }
  if (!rt_->ledger().take(st.origin.account, st.origin.budget)) {
    tool_stats::bump(stats.budget_refusals);
    return finish_call(id,
                       final_error(st, " (no retry: the request's attempt "
                                       "budget of "
                                         + std::to_string(st.origin.budget)
                                         + " is spent)"),
                       nullptr, false);
  }
  tool_stats::bump(stats.retries);
  if (delay.count() <= 0)
    return start_attempt(id, st, false, now);
  st.retry_due = now + delay;
  schedule(id, st);
}

void cell::arm_tool_timer(time_point due) {
  auto& ts = *tools_;
  if (due >= ts.armed_for)
    return; // the timer armed comes first
  ts.armed_for = due;
  auto delay = due - clock().now();
  delayed_send<caf::message_priority::high>(this, std::max(delay, duration::zero()),
               tool_timer_atom::value, ++ts.armed_seq);
}

void cell::on_tool_tick(uint64_t seq) {
  if (!tools_ || seq != tools_->armed_seq)
    return; // superseded by an earlier one, which fired already
  auto& ts = *tools_;
  ts.armed_for = time_point::max();
  auto now = clock().now();
  // The calls whose time came, earliest first (then in call order), as
  // separate timers would have fired; O(log n) each.
  std::vector<call_due> due;
  while (!ts.dues.empty() && ts.dues.top().due <= now) {
    if (!stale(ts.dues.top()))
      due.push_back(ts.dues.top());
    ts.dues.pop();
  }
  for (auto& d : due)
    if (!stale(d)) {
      tools_->calls.find(d.id)->scheduled_for = time_point::max();
      on_call_due(d.id, now);
    }
  while (!ts.dues.empty() && stale(ts.dues.top()))
    ts.dues.pop();
  if (!ts.dues.empty())
    arm_tool_timer(ts.dues.top().due);
}

bool cell::stale(const call_due& d) {
  auto* st = tools_->calls.find(d.id);
  return st == nullptr || st->due_seq != d.seq || st->scheduled_for != d.due;
}

void cell::schedule(uint64_t id, tool_call_state& st) {
  auto due = std::min({st.deadline, st.attempt_due, st.retry_due});
  if (due == st.scheduled_for)
    return; // its entry is there
  auto& ts = *tools_;
  // Entries of calls that ended or moved on pile up until they come due:
  // rebuild the heap from the live calls once they outnumber them
  // (amortized O(1)).
  if (ts.dues.size() > 2 * ts.calls.size() + 64) {
    decltype(ts.dues) live;
    ts.calls.for_each([&](uint64_t other, tool_call_state& o) {
      if (o.scheduled_for != time_point::max())
        live.push({o.scheduled_for, other, o.order, o.due_seq});
    });
    ts.dues.swap(live);
  }
  st.scheduled_for = due;
  ts.dues.push({due, id, st.order, ++st.due_seq});
  arm_tool_timer(due);
}

void cell::on_call_due(uint64_t id, time_point now) {
  // Each step moves the call on (its due time only grows), so this ends.
  for (;;) {
    auto* stp = tools_->calls.find(id);
    if (stp == nullptr)
      return;
    auto& st = *stp;
    if (!st.owned && (st.gen != gen_ || !instance_)) {
      // The instance that called is gone: nobody waits for the answer, so
      // no retry is made for it. An attempt that timed out still tells the
      // breaker so.
      if (st.current && (st.attempt_due <= now || st.deadline <= now))
        abandon_attempt(st, true);
      return finish_call(id, make_error(errc::not_running), nullptr, false);
    }
    // The deadline first: a call past it starts no attempt, whatever
    // else came due while the cell was busy.
    if (st.deadline <= now) {
      bool given_up = st.current != nullptr;
      if (given_up && !abandon_attempt(st, true)) {
        // It returned at the deadline: its answer (in the inbox) is taken.
        st.attempt_due = time_point::max();
        return;
      }
      tool_stats::bump(st.tool->stats().deadline_exceeded);
      std::string what = "tool \"" + st.tool->decl().name
                         + "\": the call's deadline passed after "
                         + std::to_string(st.attempts) + " attempt"
                         + (st.attempts == 1 ? "" : "s");
      if (given_up) {
        what += ", the last still running (given up; it keeps its bulkhead "
                "place until it returns)";
        if (!st.last_error.empty())
          what += "; the one before failed: " + st.last_error;
      } else if (!st.last_error.empty()) {
        what += "; the last failed: " + st.last_error;
      }
      return finish_call(id, make_error(errc::deadline_exceeded, what),
                         nullptr, false);
    }
    if (st.current && st.attempt_due <= now) {
      st.attempt_due = time_point::max();
      auto attempt = st.current->number;
      if (!abandon_attempt(st, true))
        continue; // it returned meanwhile: its answer is in the inbox
      st.last_class = error_class::transient;
      st.last_error = "attempt " + std::to_string(attempt)
                      + " timed out after " + ms_text(st.attempt_timeout);
      st.last_not_executed = false;
      st.retry_after = {};
      retry_or_fail(id, st);
      continue;
    }
    if (!st.current && st.retry_due <= now) {
      st.retry_due = time_point::max();
      start_attempt(id, st, false, now);
      continue;
    }
    return schedule(id, st);
  }
}

void cell::finish_call(uint64_t id, caf::error err,
                       std::unique_ptr<google::protobuf::Message> reply,
                       bool sync) {
  auto st = tools_->calls.take(id);
  if (st.late)
    sync = false;
  if (st.current)
    abandon_attempt(st, false);
  auto& stats = st.tool->stats();
  bool retried = st.attempts > 1;
  if (!err && reply)
    tool_stats::bump(retried ? stats.succeeded_with_retry
                             : stats.succeeded_without_retry);
  else if (st.attempts > 0)
    tool_stats::bump(retried ? stats.failed_with_retry
                             : stats.failed_without_retry);
  st.ticket.reset(); // the running executions, if any, still hold it
  if (err && (st.primary != nullptr || !st.tool->decl().fallback.empty())
      && fall_back(st, err, reply, sync))
    return;
  auto chain = st.origin.chain;
  if (sync) {
    // Still inside call_tool: the handler (or callback) that called sees
    // the answer before call_tool returns, as with request's not_found.
    // (Its callback runs as the call's own: see call_tool_raw.)
    struct done {
      cell* self;
      const std::shared_ptr<call_chain>& chain;
      ~done() {
        self->chain_done(chain);
      }
    } d{this, chain};
    origin_scope scope{cb_origin_, st.origin.keyed ? &st.origin : cb_origin_};
    answering(st);
    if (err)
      st.err(err);
    else
      st.ok(std::move(reply));
    return;
  }
  // A journal agent's call: its answer is recorded before its callback
  // runs (record_answer runs it once the record is committed).
  if (st.record && record_answer(st, err, reply))
    return;
  if (st.owned) {
    // The cell's own call (an effect from the outbox): no agent code.
    if (err)
      st.err(err);
    else
      st.ok(std::move(reply));
    return;
  }
  // As with request: only the instance that called hears the answer.
  if (st.gen == gen_ && instance_) {
    auto o = std::move(st.origin);
    answering(st);
    if (err)
      invoke_as(o, [&] { st.err(err); });
    else
      invoke_as(o, [&] { st.ok(std::move(reply)); });
  }
  chain_done(chain);
}

void cell::end_tool_calls() {
  tools_ended_ = true;
  if (!tools_)
    return;
  drop_guards(true);
  // Executions that returned and were not taken yet still tell the breaker
  // about the dependency (and end a probe).
  // Those that return later find the inbox closed and report themselves.
  for (auto* a = tools_->inbox->close(); a != nullptr;) {
    auto* n = std::exchange(a->next, nullptr);
    auto keep = std::move(a->keep);
    auto* st = tools_->calls.find(a->call);
    if (st != nullptr && st->current.get() == a)
      st->current.reset();
    a->tool->on_returned(*a);
    a = n;
  }
  tools_->calls.for_each([this](uint64_t, tool_call_state& st) {
    if (st.current)
      abandon_attempt(st, false);
  });
  tools_->calls.clear();
}

} // namespace vigil::detail
