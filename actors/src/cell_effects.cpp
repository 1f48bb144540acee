// A cell's effects (context::effect): tool calls made for their effect
// alone. A journal agent's go through its outbox (committed with the
// handler's change, dispatched after it, sent again with the same key until
// they succeed or are dead letters); others are dispatched at once.

#include "cell_impl.hpp"

#include "vigil/actors/detail/tool_record.hpp"

namespace vigil::detail {

namespace {

/// Dispatches of one effect in all before it is a dead letter.
constexpr uint32_t effect_dispatches = 5;

/// The codes after which a dispatch is not sent again: the service
/// answered (a permanent error), or the key answers another request.
bool final_failure(const caf::error& err) {
  return is(err, errc::tool_rejected) || is(err, errc::idempotency_mismatch)
         || is(err, errc::bad_payload) || is(err, errc::unknown_tool)
         || is(err, errc::approval_rejected) || is(err, errc::approval_expired)
         || is(err, errc::approval_unavailable);
}

/// The codes of a call refused before any attempt.
bool refused_at_once(const caf::error& err) {
  return is(err, errc::circuit_open) || is(err, errc::rate_limited)
         || is(err, errc::bulkhead_full) || is(err, errc::cost_exceeded)
         || is(err, errc::in_use);
}

/// The envelope that stands for an effect in a dead letter's listing.
envelope effect_envelope(const records::Effect& fx) {
  envelope e;
  e.type = type_symbol(fx);
  fx.SerializeToString(&e.payload);
  return e;
}

} // namespace

caf::error cell::effect_raw(std::string_view name,
                            std::unique_ptr<google::protobuf::Message> req) {
  if (tools_ended_)
    return make_error(errc::not_running, cfg_.path + " sent an effect to tool \""
                                           + std::string{name}
                                           + "\" after it stopped");
  auto* tool = rt_->find_tool(name);
  if (tool == nullptr)
    return make_error(errc::unknown_tool,
                      cfg_.path + " sent an effect to tool \""
                        + std::string{name}
                        + "\", which the node does not declare");
  auto& impl = tool->impl();
  if (type_symbol(*req) != impl.request_symbol)
    return make_error(errc::bad_payload,
                      "tool \"" + tool->decl().name + "\" takes "
                        + impl.request_type + "; " + cfg_.path
                        + " sent it an effect of "
                        + req->GetDescriptor()->full_name());
  // Its key, as a call's in the same place would get; outside any
  // envelope, a fresh id of the node.
  uint64_t origin = rt_->node_id();
  uint64_t id = 0;
  call_index index;
  if (auto* parent = tool_parent(); parent != nullptr) {
    origin = parent->key_origin;
    id = parent->key_id;
    index = parent->index;
    index.push(parent->children++);
  } else {
    id = rt_->next_id();
    index.push(0);
  }
  auto fx = std::make_shared<records::Effect>();
  fx->set_tool(tool->decl().name);
  fx->set_request_type(impl.request_type);
  req->SerializeToString(fx->mutable_request());
  auto bytes = index.encode();
  fx->set_key(call_result_key(cfg_.path, origin, id, bytes.view()));
  fx->set_key_text(tool_key_text(cfg_.path, origin, id, bytes.view()));
  // Into the outbox when the handler's commit (or the held envelope's)
  // is still to come.
  bool durable = dur_ && dur_->journal()
                 && (current_ != nullptr
                       ? dur_->current_seq != 0
                       : cb_origin_ != nullptr && cb_origin_->chain
                           && cb_origin_->chain->held);
  if (durable) {
    outbox_send x;
    x.effect = std::move(fx);
    dur_->sends.push_back(std::move(x));
    return caf::error{};
  }
  dispatch_effect(0, std::move(fx));
  return caf::error{};
}

void cell::dispatch_effect(uint64_t oseq,
                           std::shared_ptr<const records::Effect> fx) {
  auto* tool = rt_->find_tool(fx->tool());
  if (tool == nullptr || tool->impl().request_type != fx->request_type())
    return effect_done(
      oseq, fx,
      make_error(errc::unknown_tool,
                 "tool \"" + fx->tool() + "\" taking " + fx->request_type()
                   + " is not declared on this node"));
  auto* d = google::protobuf::DescriptorPool::generated_pool()
              ->FindMessageTypeByName(fx->request_type());
  auto* proto = d != nullptr
                  ? google::protobuf::MessageFactory::generated_factory()
                      ->GetPrototype(d)
                  : nullptr;
  std::unique_ptr<google::protobuf::Message> req{
    proto != nullptr ? proto->New() : nullptr};
  if (!req || !req->ParseFromString(fx->request()))
    return effect_done(oseq, fx,
                       make_error(errc::bad_payload,
                                  "the effect's request does not parse as "
                                    + fx->request_type()));
  auto key = std::make_shared<call_key>();
  key->key = fx->key();
  key->text = fx->key_text();
  if (!tool->shared()->claim_key(key->key)) {
    tool_stats::bump(tool->stats().in_use_refusals);
    return effect_done(oseq, fx,
                       make_error(errc::in_use,
                                  "an execution under key " + fx->key_text()
                                    + " is still running"));
  }
  key->sh = tool->shared();
  tool_stats::bump(tool->stats().effects);
  open_tools();
  // Outside any request: a retry account of its own.
  call_origin o;
  o.account = rt_->next_id() * 0x9e3779b97f4a7c15ull | 1;
  o.budget = runtime::default_attempt_budget;
  origin_scope scope{cb_origin_, nullptr};
  auto ok = [this, oseq, fx](std::unique_ptr<google::protobuf::Message>) {
    effect_done(oseq, fx, caf::error{});
  };
  // Whether an attempt ran (the key lives while the call, or its
  // fallback, answers; held weakly, so that its claim ends with the call).
  auto err = [this, oseq, fx,
              wk = std::weak_ptr<call_key>{key}](const caf::error& e) {
    auto k = wk.lock();
    effect_done(oseq, fx, e, k && k->attempted);
  };
  if (guarded(*tool)) {
    // Its dry run, or a person's approval, first.
    auto g = std::make_shared<call_guard>();
    g->tool = tool;
    g->req = std::move(req);
    g->ok = std::move(ok);
    g->err = std::move(err);
    g->origin = o;
    g->key = std::move(key);
    g->owned = true;
    g->gen = gen_;
    return guard_call(std::move(g));
  }
  start_call(*tool, std::move(req), tool_options{}, std::move(ok),
             std::move(err), o, std::move(key), false, true);
}

void cell::effect_done(uint64_t oseq, std::shared_ptr<const records::Effect> fx,
                       const caf::error& err, bool attempted) {
  if (oseq == 0) {
    // Dispatched once, not durably.
    if (err)
      own_dead_letter(effect_envelope(*fx),
                      "effect on tool \"" + fx->tool() + "\" under key "
                        + fx->key_text() + " failed: " + describe(err));
    return;
  }
  if (!err)
    return outbox_delivered(oseq);
  auto& d = *dur_;
  auto i = d.outbox.find(oseq);
  if (i == d.outbox.end() || mode_ == mode::abandoned || !d.ready()) {
    // Reconciled or handed over meanwhile: the disk has it.
    if (d.in_flight > 0)
      --d.in_flight;
    return;
  }
  // A refusal before any attempt (breaker open, limits, the key in use)
  // reached nobody: sent again, not counted. One after an attempt ran (a
  // retry or a fallback refused by its breaker) is a failed dispatch.
  if (refused_at_once(err) && !attempted)
    return outbox_not_delivered(oseq);
  // (A final failure counts too: its dead letter says how many.)
  if (++i->second.failures < effect_dispatches && !final_failure(err))
    return outbox_not_delivered(oseq);
  // A dead letter with its key and last error, out of the outbox in the
  // same commit.
  if (d.in_flight > 0)
    --d.in_flight;
  auto reason = "effect on tool \"" + fx->tool() + "\" under key "
                + fx->key_text() + " failed after "
                + std::to_string(i->second.failures) + " dispatch"
                + (i->second.failures == 1 ? "" : "es") + ": "
                + describe(err);
  auto item = outbox_done_item(cfg_.path, oseq);
  auto env = effect_envelope(*fx);
  auto dl = dead_letter_record(cfg_.path, env, reason, 0, true, false);
  records::DeadLetter rec;
  if (decode_record(dl.value, rec) == record_fault::none) {
    *rec.mutable_effect() = *fx;
    encode_record(rec, dl.value);
  }
  item.muts.push_back(std::move(dl));
  d.outbox.erase(i);
  write(std::move(item), false);
  // Listed in memory (its record is in the commit above).
  own_dead_letter(std::move(env), std::move(reason), false);
  dispatch_outbox();
}

} // namespace vigil::detail
