// What a tool may declare around its calls (vigil/actors/tool.hpp): the
// fallback chain that answers when it cannot, and the stages a call waits
// for before its execution: its dry run, then a person's approval. The
// stack in all, outermost first:
//
//   idempotency lookup (cell_records.cpp) -> dry run -> approval
//     -> fallback chain -> the stack of each tool (cell_tools.cpp)
//     -> record the result

#include "cell_impl.hpp"

#include "vigil/actors/detail/envelope_record.hpp"
#include "vigil/actors/detail/tool_record.hpp"
#include "vigil/persistence/approvals.hpp"

namespace vigil::detail {

namespace {

/// The place of a call's dry run among the calls made from its callback
/// (which count up from 0): the dry run's record has a key of its own.
constexpr uint32_t dry_run_index = 0xfffffffe;

/// The errors a fallback answers for: the tool gave no usable reply
/// (invalid_output), a transient error with no retry left
/// (tool_unavailable), or its breaker is open.
bool falls_back(const caf::error& err) {
  return is(err, errc::invalid_output) || is(err, errc::tool_unavailable)
         || is(err, errc::circuit_open);
}

std::unique_ptr<google::protobuf::Message>
parse_as(const std::string& type, const std::string& bytes) {
  auto* d = google::protobuf::DescriptorPool::generated_pool()
              ->FindMessageTypeByName(type);
  auto* proto = d != nullptr ? google::protobuf::MessageFactory::
                                 generated_factory()
                                   ->GetPrototype(d)
                             : nullptr;
  std::unique_ptr<google::protobuf::Message> out{
    proto != nullptr ? proto->New() : nullptr};
  if (out && !out->ParseFromString(bytes))
    out.reset();
  return out;
}

/// A call whose caller's deadline passed while it waited for approval.
caf::error late_for_approval(const std::string& tool) {
  return make_error(errc::deadline_exceeded,
                    "tool \"" + tool + "\" not called: its caller's deadline "
                      + "passed while it waited for approval");
}

std::unique_ptr<google::protobuf::Message>
copy_of(const google::protobuf::Message& m) {
  std::unique_ptr<google::protobuf::Message> out{m.New()};
  out->MergeFrom(m);
  return out;
}

} // namespace

void cell::answering(const tool_call_state& st) noexcept {
  answer_ = tool_answer{st.tool->decl().name, st.by_default, false};
}

void cell::answering(const recorded_answer& a) noexcept {
  answer_ = tool_answer{a.by.empty() && a.tool != nullptr
                          ? std::string_view{a.tool->decl().name}
                          : std::string_view{a.by},
                        a.by_default, a.replayed};
}

bool cell::fall_back(tool_call_state& st, caf::error& err,
                     std::unique_ptr<google::protobuf::Message>& reply,
                     bool sync) {
  // Nobody would hear it: the instance that called is gone.
  if (!falls_back(err) || tools_ended_
      || (!st.owned && (st.gen != gen_ || !instance_)))
    return false;
  auto* primary = st.primary != nullptr ? st.primary : st.tool;
  auto& fb = primary->decl().fallback;
  bool executed = st.executed || st.attempts > 0;
  // No tool runs past the call's deadline (its answer may come in after
  // it, with the cell busy): only the default, which runs nothing.
  auto now = clock().now();
  auto first = st.deadline > now ? st.next_fallback
                                 : static_cast<uint32_t>(fb.tools.size());
  for (auto i = first; i < fb.tools.size(); ++i) {
    auto* next = rt_->find_tool(fb.tools[i]);
    if (next == nullptr)
      continue; // (the node checked them at its start)
    tool_stats::bump(primary->stats().fallbacks);
    // Within what is left of the call's deadline.
    tool_options opts;
    opts.timeout = st.deadline - now;
    fallback_step step{primary, static_cast<uint32_t>(i + 1), executed,
                       !sync};
    auto chain = st.origin.chain;
    auto start = [&] {
      start_call(*next, copy_of(*st.request), opts, std::move(st.ok),
                 std::move(st.err), st.origin, std::move(st.key), st.record,
                 st.owned, &step);
    };
    if (sync || st.owned)
      start();
    else
      // After call_tool returned: a refusal at the fallback's start
      // answers here, as a callback of the instance's (its calls are the
      // call's children, a throw fails the envelope, not the cell).
      invoke_as(st.origin, start);
    chain_done(chain); // (the fallback's call counts now)
    return true;
  }
  if (fb.default_type.empty())
    return false;
  auto def = parse_as(fb.default_type, fb.default_payload);
  if (!def)
    return false; // (the node checked it at its start)
  tool_stats::bump(primary->stats().defaults);
  reply = std::move(def);
  err = caf::error{};
  st.tool = primary;
  st.primary = nullptr;
  st.by_default = true;
  st.executed = executed;
  return false;
}

bool cell::guarded(const tool_runtime& tool) noexcept {
  auto& d = tool.decl();
  return d.dry_run.required || d.approval.required;
}

void cell::guard_call(std::shared_ptr<call_guard> g) {
  auto& d = g->tool->decl();
  auto now = clock().now();
  if (g->deadline == time_point::max())
    g->deadline = now + call_timeout(*g->tool, g->opts);
  auto left = g->deadline - now;
  if (d.dry_run.required && !g->dry_done) {
    auto* dry = rt_->find_tool(d.dry_run.tool);
    if (dry == nullptr)
      return guard_fail(*g, make_error(errc::unknown_tool,
                                       "tool \"" + d.name + "\"'s dry run \""
                                         + d.dry_run.tool
                                         + "\" is not declared"));
    tool_stats::bump(g->tool->stats().dry_runs);
    auto ok = [this, g](std::unique_ptr<google::protobuf::Message>) {
      g->dry_done = true;
      guard_call(g);
    };
    auto err = [this, g](const caf::error& e) {
      auto& name = g->tool->decl().name;
      tool_stats::bump(g->tool->stats().dry_run_failures);
      auto code = e.category() == caf::atom("vigil") ? static_cast<errc>(e.code())
                                                     : errc::tool_unavailable;
      guard_fail(*g, make_error(code, "tool \"" + name
                                        + "\" not called: its dry run (\""
                                        + g->tool->decl().dry_run.tool
                                        + "\") failed: " + describe(e)));
    };
    // Within the call's timeout: the dry run is part of the call.
    tool_options dry_opts;
    dry_opts.timeout = left;
    if (g->origin.keyed && !g->owned) {
      // Keyed, in its own place: a journal agent records it, so that a
      // replay repeats neither the dry run nor the call.
      call_origin o = g->origin;
      o.own_key.clear(); // the dry run's key derives from the call's place
      o.index.push(dry_run_index);
      o.children = 0;
      keyed_call(*dry, copy_of(*g->req), dry_opts, std::move(ok),
                 std::move(err), o, now);
    } else {
      start_call(*dry, copy_of(*g->req), dry_opts, std::move(ok),
                 std::move(err), g->origin, nullptr, false, g->owned);
    }
    return;
  }
  if (d.approval.required && !g->approved) {
    if (!g->key)
      return guard_fail(
        *g, make_error(errc::approval_unavailable,
                       "tool \"" + d.name + "\" needs approval, which is kept "
                         + "under the call's idempotency key, and this call "
                         + "has none: call it from a handler (or a callback "
                         + "of a handler's call), or send it as an effect"));
    auto& desk = rt_->approvals();
    // Past its caller's deadline it cannot run: no person is asked (and
    // one asked before a restart is asked no more).
    auto till_deadline = std::chrono::nanoseconds{
      g->origin.deadline != 0 ? g->origin.deadline - to_ns(clock().now())
                              : INT64_MAX};
    if (till_deadline.count() <= 0) {
      if (auto was = desk.state(g->key->key); was && was->pending())
        (void) desk.expire(g->key->key, "the call's deadline passed first");
      return guard_fail(*g, late_for_approval(d.name));
    }
    auto now = static_cast<uint64_t>(unix_ms());
    auto timeout = std::chrono::duration_cast<std::chrono::milliseconds>(
                     d.approval.timeout)
                     .count();
    auto st = desk.request(
      g->key->key,
      make_approval_record(cfg_.path, d.name, *g->req,
                           now + static_cast<uint64_t>(timeout)));
    if (!st)
      return guard_fail(*g, st.error());
    if (!st->pending())
      return approval_decided(g, st->state, st->decided_by, st->reason);
    open_tools();
    g->approval = g->key->key;
    tools_->approving[g->approval] = g;
    tool_stats::bump(g->tool->stats().approvals_asked);
    if (auto e = desk.wait(g->approval, address())) {
      tools_->approving.erase(g->approval);
      return guard_fail(*g, e);
    }
    // The rest of its timeout (asked before a restart: of the first ask's),
    // or of its caller's deadline if that comes first.
    auto left = st->expires_unix_ms > now ? st->expires_unix_ms - now : 0;
    delayed_send<caf::message_priority::high>(this,
                 std::min<std::chrono::nanoseconds>(
                   std::chrono::milliseconds{left}, till_deadline),
                 approval_due_atom::value, g->approval);
    return;
  }
  // Its turn: the stack, with what is left of its time (after a person
  // approved it, its whole timeout). Its callbacks, also those run before
  // start_call returns, run as the call's.
  if (!g->approved) {
    if (left <= duration::zero())
      return guard_fail(*g, make_error(errc::deadline_exceeded,
                                       "tool \"" + d.name + "\" not called: "
                                         + "its dry run took the call's "
                                         + "time"));
    g->opts.timeout = left;
  }
  auto chain = g->origin.chain;
  origin_scope scope{cb_origin_, g->origin.keyed ? &g->origin : cb_origin_};
  start_call(*g->tool, std::move(g->req), g->opts, std::move(g->ok),
             std::move(g->err), g->origin, std::move(g->key), g->record,
             g->owned);
  chain_done(chain);
}

void cell::guard_fail(call_guard& g, const caf::error& err) {
  auto chain = g.origin.chain;
  {
    origin_scope scope{cb_origin_, g.origin.keyed ? &g.origin : cb_origin_};
    answer_ = tool_answer{g.tool->decl().name, false, false};
    if (g.err)
      std::exchange(g.err, nullptr)(err);
    g.ok = nullptr;
  }
  g.key.reset(); // a repeat may run from now on
  chain_done(chain);
}

void cell::approval_decided(std::shared_ptr<call_guard> g, approval_state s,
                            const std::string& by, const std::string& reason) {
  auto& d = g->tool->decl();
  auto key = g->key ? g->key->text : std::string{};
  switch (s) {
    case approval_state::approved:
      g->approved = true;
      return guard_call(std::move(g));
    case approval_state::rejected:
      tool_stats::bump(g->tool->stats().approvals_rejected);
      return guard_fail(*g, make_error(errc::approval_rejected,
                                       "tool \"" + d.name + "\": the call "
                                         + "under key " + key
                                         + " was rejected by "
                                         + (by.empty() ? "someone" : by)
                                         + (reason.empty() ? std::string{}
                                                           : ": " + reason)));
    default:
      tool_stats::bump(g->tool->stats().approvals_expired);
      return guard_fail(
        *g, make_error(errc::approval_expired,
                       "tool \"" + d.name + "\": no one decided on the call "
                         + "under key " + key + " within its approval "
                         + "timeout; it did not run"));
  }
}

void cell::resume_guard(std::shared_ptr<call_guard> g, approval_state s,
                        const std::string& by, const std::string& reason) {
  if (g->owned)
    return approval_decided(std::move(g), s, by, reason);
  if (g->gen != gen_ || !instance_) {
    // The instance that called is gone: its replay asks again.
    auto chain = g->origin.chain;
    g->key.reset();
    return chain_done(chain);
  }
  auto o = g->origin;
  invoke_as(o, [&] { approval_decided(std::move(g), s, by, reason); });
}

void cell::on_approval(const approval_outcome& x) {
  if (!awaiting_.empty() && x.key == awaiting_) {
    // The envelope at the head: drain asks again and finds the decision.
    awaiting_.clear();
    event_based_actor::send<caf::message_priority::high>(
      this, drain_atom::value, gen_);
    return;
  }
  if (!tools_)
    return;
  auto i = tools_->approving.find(x.key);
  if (i == tools_->approving.end())
    return; // its timeout came first
  auto g = std::move(i->second);
  tools_->approving.erase(i);
  resume_guard(std::move(g), x.state, x.by, x.reason);
}

void cell::on_approval_due(const std::string& key) {
  if (!awaiting_.empty() && key == awaiting_) {
    // Its approval timeout or its deadline passed: drain asks again and
    // decides (approve_envelope).
    rt_->approvals().cancel(key, address());
    awaiting_.clear();
    event_based_actor::send<caf::message_priority::high>(
      this, drain_atom::value, gen_);
    return;
  }
  if (!tools_)
    return;
  auto i = tools_->approving.find(key);
  if (i == tools_->approving.end())
    return; // decided first
  auto g = std::move(i->second);
  tools_->approving.erase(i);
  auto& desk = rt_->approvals();
  desk.cancel(key, address());
  // A decision may have won the race: expire says which.
  bool late = g->origin.deadline != 0
              && to_ns(clock().now()) >= g->origin.deadline;
  auto st = desk.expire(key, late ? "the call's deadline passed first"
                                  : "no decision within the approval timeout");
  if (!st || (late && st->state == approval_state::expired)) {
    auto chain = g->origin.chain;
    if (g->owned || (g->gen == gen_ && instance_)) {
      auto o = g->origin;
      auto err = st ? late_for_approval(g->tool->decl().name) : st.error();
      if (g->owned)
        guard_fail(*g, err);
      else
        invoke_as(o, [&] { guard_fail(*g, err); });
      return;
    }
    g->key.reset();
    return chain_done(chain);
  }
  resume_guard(std::move(g), st->state, st->decided_by, st->reason);
}

void cell::drop_guards(bool all) {
  if (!tools_ || tools_->approving.empty())
    return;
  auto& desk = rt_->approvals();
  for (auto i = tools_->approving.begin(); i != tools_->approving.end();) {
    auto& g = *i->second;
    if (!all && (g.owned || g.gen == gen_)) {
      ++i;
      continue;
    }
    desk.cancel(i->first, address());
    // Its replay asks again, with the same key: a journal agent's envelope
    // when the node starts again, or one waiting in the buffer (the held
    // envelope, a redelivery). Otherwise no one will run the call: its
    // approval closes, so that no person approves what will not run.
    bool again = (all && dur_ && dur_->journal())
                 || std::any_of(buffer_.begin(), buffer_.end(),
                                [&](const pending& p) {
                                  return g.origin.keyed
                                         && p.env.origin == g.origin.key_origin
                                         && p.env.id == g.origin.key_id;
                                });
    if (!again)
      (void) desk.expire(i->first, "the call no longer waits: its agent "
                                   "restarted or stopped, and will not "
                                   "make it again");
    g.key.reset();
    i = tools_->approving.erase(i);
  }
}

caf::error cell::approvals_ready() const {
  // (Else every envelope it covers would be refused: approval_unavailable.)
  if (cfg_.approval && !rt_->approvals().attached())
    return make_error(errc::start_failed,
                      cfg_.path + ": approval.required: an envelope's "
                                  "approval is kept on disk; give the node "
                                  "a data dir (node_config::data_dir)");
  return caf::error{};
}

std::string cell::approval_key_of(const envelope& e) const {
  return tool_result_key(cfg_.path, e.origin, e.id, approval_envelope_index);
}

bool cell::still_awaiting() {
  if (awaiting_.empty())
    return false;
  if (!buffer_.empty() && approval_key_of(buffer_.front().env) == awaiting_)
    return true;
  // The envelope it waited for left the buffer (the child stopped, or it
  // expired): nobody is asked to approve what will not run.
  auto& desk = rt_->approvals();
  desk.cancel(awaiting_, address());
  (void) desk.expire(awaiting_, "the envelope no longer waits (its child "
                                "stopped, or it was refused)");
  awaiting_.clear();
  return false;
}

cell::gate cell::approve_envelope(pending& p) {
  auto& e = p.env;
  auto& a = *cfg_.approval;
  auto key = approval_key_of(e);
  auto msg = parse_as(e.type.str(), e.payload);
  if (!msg)
    return gate::go; // its handler refuses it (bad_payload)
  auto& desk = rt_->approvals();
  auto now = static_cast<uint64_t>(unix_ms());
  // Past its deadline it cannot run (run refuses it, expired): it waits
  // for nobody, and an approval it asked for is closed.
  auto till_deadline = std::chrono::nanoseconds{
    e.deadline != 0 ? e.deadline - to_ns(this->now()) : INT64_MAX};
  if (till_deadline.count() <= 0) {
    if (auto st = desk.state(key); st && st->pending())
      (void) desk.expire(key, "the envelope's deadline passed first");
    return gate::go;
  }
  auto timeout
    = std::chrono::duration_cast<std::chrono::milliseconds>(a.timeout).count();
  auto st = desk.request(key, make_approval_record(
                                cfg_.path, e.type.str(), *msg,
                                now + static_cast<uint64_t>(timeout),
                                approval_kind::envelope));
  // Its approval timeout passed (a decision may have won the race).
  if (st && st->pending() && st->expires_unix_ms != 0
      && st->expires_unix_ms <= now)
    st = desk.expire(key, "no decision within the approval timeout");
  caf::error err;
  if (!st) {
    err = st.error();
  } else if (st->approved()) {
    return gate::go;
  } else if (st->pending()) {
    if (auto w = desk.wait(key, address())) {
      err = w;
    } else {
      awaiting_ = key;
      // Until its approval timeout, or its deadline if that comes first.
      // (A record that never expires is asked again after 30 days.)
      auto ms = st->expires_unix_ms > now ? st->expires_unix_ms - now : 0;
      if (st->expires_unix_ms == 0 || ms > uint64_t{720} * 3600 * 1000)
        ms = uint64_t{720} * 3600 * 1000;
      auto left = std::min<std::chrono::nanoseconds>(
        std::chrono::milliseconds{ms}, till_deadline);
      delayed_send<caf::message_priority::high>(this, left, approval_due_atom::value, key);
      return gate::wait;
    }
  } else if (st->state == approval_state::rejected) {
    err = make_error(errc::approval_rejected,
                     cfg_.path + "'s " + e.type.str() + " (approval "
                       + st->id + ") was rejected by "
                       + (st->decided_by.empty() ? "someone" : st->decided_by)
                       + (st->reason.empty() ? std::string{}
                                             : ": " + st->reason)
                       + "; it did not run");
  } else {
    err = make_error(errc::approval_expired,
                     cfg_.path + "'s " + e.type.str() + " (approval "
                       + st->id + ") was not decided within its approval "
                       + "timeout; it did not run");
  }
  bool async = !p.rp.pending() || p.rp.async();
  bury(p.env, p.rp, std::move(err), p.seq, p.saved, async);
  return gate::refused;
}

} // namespace vigil::detail
