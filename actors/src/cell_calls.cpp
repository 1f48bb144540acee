// A cell's tool calls as they come in (context::call_tool): the checks,
// the idempotency layer (the key, the record's lookup: cell_records.cpp),
// and the admission of the stack's shared parts before the first attempt
// (cell_tools.cpp runs the attempts).

#include <algorithm>

#include "cell_impl.hpp"
#include "vigil/actors/detail/tool_record.hpp"

namespace vigil::detail {

namespace {

using std::chrono::duration_cast;
using std::chrono::milliseconds;

std::string ms_text(resilience::duration d) {
  return std::to_string(duration_cast<milliseconds>(d).count()) + "ms";
}

/// A cost budget is spent when less than a thousandth of it is left.
bool spent(resilience::token_bucket& b) {
  return b.available() < b.capacity() / 1000.0;
}

} // namespace

void cell::call_tool_raw(
  std::string_view name, std::unique_ptr<google::protobuf::Message> req,
  symbol reply_type, const tool_options& opts,
  std::function<void(std::unique_ptr<google::protobuf::Message>)> on_result,
  std::function<void(const caf::error&)> on_error) {
  if (tools_ended_) {
    on_error(make_error(errc::not_running,
                        cfg_.path + " called tool \"" + std::string{name}
                          + "\" after it stopped"));
    return;
  }
  auto* tool = rt_->find_tool(name);
  if (tool == nullptr) {
    on_error(make_error(errc::unknown_tool,
                        cfg_.path + " called tool \"" + std::string{name}
                          + "\", which the node does not declare"));
    return;
  }
  auto& impl = tool->impl();
  if (type_symbol(*req) != impl.request_symbol
      || reply_type != impl.reply_symbol) {
    on_error(make_error(errc::bad_payload,
                        "tool \"" + tool->decl().name + "\" takes "
                          + impl.request_type + " and replies "
                          + impl.reply_type + "; " + cfg_.path + " called it with "
                          + req->GetDescriptor()->full_name() + " for "
                          + reply_type.str()));
    return;
  }
  // Keyed: made on behalf of an envelope (see call_chain). Its index in
  // the chain is taken now, whatever becomes of the call, so that a replay
  // derives the same keys; its callbacks, also those run before call_tool
  // returns, run as its own (a call made in one is its child).
  auto o = origin_now();
  if (auto* parent = tool_parent(); parent != nullptr) {
    o.keyed = true;
    o.key_origin = parent->key_origin;
    o.key_id = parent->key_id;
    o.chain = parent->chain;
    o.index = parent->index;
    o.index.push(parent->children++);
  }
  if (!opts.idempotency_key.empty()) {
    auto& k = opts.idempotency_key;
    bool printable = k.size() <= 255;
    for (char c : k)
      printable = printable && c >= ' ' && c < 127;
    if (!printable) {
      on_error(make_error(errc::bad_payload,
                          cfg_.path + " called tool \"" + std::string{name}
                            + "\" with an idempotency key that is not 1 to "
                              "255 bytes of printable ASCII"));
      return;
    }
    o.own_key = k;
  }
  keyed_call(*tool, std::move(req), opts, std::move(on_result),
             std::move(on_error), o, time_point::max());
}

void cell::keyed_call(
  tool_runtime& tool_ref, std::unique_ptr<google::protobuf::Message> req,
  const tool_options& opts,
  std::function<void(std::unique_ptr<google::protobuf::Message>)>&& on_result,
  std::function<void(const caf::error&)>&& on_error, const call_origin& o,
  time_point since) {
  auto* tool = &tool_ref;
  auto& chain = o.chain;
  origin_scope scope{cb_origin_, o.keyed ? &o : cb_origin_};
  std::shared_ptr<call_key> key;
  bool record = false;
  if (o.keyed || !o.own_key.empty()) {
    // Idempotency first (the stack's outermost layer): a repeat of a
    // recorded call is answered from its record, whatever the tool's state.
    record = tool->decl().record && dur_ && dur_->journal()
             && rt_->storage() != nullptr;
    if (record || tool->decl().effect != side_effect::read_only
        || tool->decl().approval.required) {
      // (A call's state only where the idempotency layer needs one: an
      // approval is kept under the call's key, also a read's.)
      tool_call_state keyed;
      keyed.record = record;
      keyed.ok = std::move(on_result);
      keyed.err = std::move(on_error);
      keyed.origin = o;
      open_tools();
      // The key still running (the last instance's execution of this
      // very call, on a replay; or, for a key the caller named, anyone's
      // call with it, such as its own attempt that timed out): the call
      // waits for it, then finds its record or runs; until the call's
      // timeout, then in_use.
      auto now = clock().now();
      if (since == time_point::max())
        since = now;
      bool wait = (keyed.record || !o.own_key.empty())
                  && now - since < call_timeout(*tool, opts);
      bool busy = false;
      if (answer_from_record(*tool, keyed, *req, wait ? &busy : nullptr))
        return;
      if (busy) {
        auto& p = tools_->parked.emplace_back();
        p.tool = tool;
        p.req = std::move(req);
        p.opts = opts;
        p.ok = std::move(keyed.ok);
        p.err = std::move(keyed.err);
        p.origin = o;
        p.gen = gen_;
        p.since = since;
        if (chain)
          ++chain->open;
        if (tools_->parked.size() == 1)
          delayed_send<caf::message_priority::high>(this, std::chrono::milliseconds{5},
                       tool_park_atom::value);
        return;
      }
      on_result = std::move(keyed.ok);
      on_error = std::move(keyed.err);
      key = std::move(keyed.key);
    } else if (!o.own_key.empty()) {
      // A read with the caller's key: sent, neither claimed nor recorded.
      key = std::make_shared<call_key>();
      key->text = o.own_key;
    }
  }
  if (guarded(*tool)) {
    auto g = std::make_shared<call_guard>();
    g->tool = tool;
    g->req = std::move(req);
    g->opts = opts;
    g->ok = std::move(on_result);
    g->err = std::move(on_error);
    g->origin = o;
    g->key = std::move(key);
    g->record = record;
    g->gen = gen_;
    if (chain)
      ++chain->open; // until it starts, or ends before
    return guard_call(std::move(g));
  }
  start_call(*tool, std::move(req), opts, std::move(on_result),
             std::move(on_error), o, std::move(key), record, false);
}

const tool_override* cell::override_of(const tool_runtime& tool) const {
  if (!cfg_.tool_overrides)
    return nullptr;
  auto i = cfg_.tool_overrides->find(tool.decl().name);
  return i != cfg_.tool_overrides->end() ? &i->second : nullptr;
}

duration cell::call_timeout(const tool_runtime& tool,
                            const tool_options& opts) const {
  auto* ov = override_of(tool);
  auto total = opts.timeout.count() > 0 ? opts.timeout
               : ov && ov->timeout  ? *ov->timeout
                                    : tool.decl().policy.timeout;
  // At most a week, as a policy's: `now + total` cannot overflow.
  return std::min<duration>(total, std::chrono::hours{24 * 7});
}

// (keyed_call and start_call take the callbacks by reference: every call
// passes through both, and they are moved once, into the call's state.)
void cell::start_call(
  tool_runtime& tool_ref, std::unique_ptr<google::protobuf::Message> req,
  const tool_options& opts,
  std::function<void(std::unique_ptr<google::protobuf::Message>)>&& on_result,
  std::function<void(const caf::error&)>&& on_error, const call_origin& o,
  std::shared_ptr<call_key> key, bool record, bool owned,
  const fallback_step* fb) {
  auto* tool = &tool_ref;
  auto& stats = tool->stats();
  auto& pol = tool->decl().policy;
  const tool_override* ov = override_of(*tool);
  auto now = clock().now();
  auto deadline = now + call_timeout(*tool, opts);
  if (o.deadline != 0) {
    auto cap = time_point{duration{o.deadline}};
    if (cap < deadline)
      deadline = cap;
  }
  if (deadline <= now) {
    tool_stats::bump(stats.deadline_exceeded);
    on_error(make_error(errc::deadline_exceeded,
                        "tool \"" + tool->decl().name + "\" not called: "
                          + cfg_.path
                          + "'s request has no time left (0 attempts)"));
    return;
  }
  auto ticket = tool->try_admit();
  if (!ticket) {
    tool_stats::bump(stats.bulkhead_full);
    on_error(make_error(
      errc::bulkhead_full,
      "tool \"" + tool->decl().name + "\" has "
        + std::to_string(pol.bulkhead.max_concurrent) + " calls running and "
        + std::to_string(pol.bulkhead.queue) + " waiting (its bulkhead)"));
    return;
  }
  if (o.attempt > 1 && !rt_->ledger().take(o.account, o.budget)) {
    // A redelivered envelope: its first call repeats one made before.
    tool_stats::bump(stats.budget_refusals);
    on_error(make_error(errc::tool_unavailable,
                        "tool \"" + tool->decl().name + "\" not called: "
                          + "delivery " + std::to_string(o.attempt) + " of "
                          + cfg_.path + "'s envelope, and its request's "
                          + "attempt budget (" + std::to_string(o.budget)
                          + ") is spent"));
    return;
  }
  tool_stats::bump(stats.calls);
  open_tools();
  auto& ts = *tools_;
  auto [id, stp] = ts.calls.add();
  auto& st = *stp;
  st.order = ++ts.next_id;
  st.tool = tool;
  st.ticket = std::move(ticket);
  st.request = std::move(req);
  st.ok = std::move(on_result);
  st.err = std::move(on_error);
  st.origin = o; // (a copy: `o` is the callbacks' origin until we return)
  st.key = std::move(key);
  st.record = record && st.key != nullptr;
  st.owned = owned;
  if (fb != nullptr) {
    st.primary = fb->primary;
    st.next_fallback = fb->next;
    st.executed = fb->executed;
    st.late = fb->late;
  }
  if (o.chain)
    ++o.chain->open;
  st.gen = gen_;
  st.deadline = deadline;
  st.attempt_timeout = ov && ov->attempt_timeout ? *ov->attempt_timeout
                                                 : pol.attempt_timeout;
  auto attempts = opts.max_attempts != 0                ? opts.max_attempts
                  : ov && ov->max_attempts ? *ov->max_attempts
                                           : pol.retry.max_attempts;
  attempts = std::clamp<uint32_t>(attempts, 1, tool_retry_policy::attempts_cap);
  if (tool->decl().effect == side_effect::irreversible)
    attempts = 1;
  st.max_attempts = attempts;
  auto per_agent = ov && ov->cost_per_agent ? *ov->cost_per_agent
                                            : pol.cost.per_agent;
  if (per_agent > 0.0) {
    auto& b = ts.costs[tool->decl().name];
    if (!b) {
      std::chrono::duration<double> per = pol.cost.per;
      b = std::make_unique<resilience::token_bucket>(
        per_agent, per_agent / std::max(per.count(), 1e-3), ts.clock);
    }
    st.agent_cost = b.get();
    if (spent(*b)) {
      tool_stats::bump(stats.cost_exceeded);
      finish_call(id,
                  make_error(errc::cost_exceeded,
                             cfg_.path + "'s cost budget for tool \""
                               + tool->decl().name + "\" ("
                               + std::to_string(per_agent) + " per "
                               + ms_text(pol.cost.per) + ") is spent"),
                  nullptr, true);
      return;
    }
  }
  start_attempt(id, st, true, now);
}

void cell::on_parked() {
  if (!tools_)
    return;
  auto parked = std::move(tools_->parked);
  tools_->parked.clear();
  for (auto& p : parked) {
    auto chain = p.origin.chain;
    if (chain)
      --chain->open; // counted again if it waits again or starts
    if (p.gen == gen_ && instance_)
      invoke_as(p.origin, [&] {
        keyed_call(*p.tool, std::move(p.req), p.opts, std::move(p.ok),
                   std::move(p.err), p.origin, p.since);
      });
    if (chain) {
      ++chain->open;
      chain_done(chain);
    }
  }
}

} // namespace vigil::detail
