// A cell's recorded tool calls (see cell_tools.cpp for the stack): the
// idempotency key of every call made on behalf of an envelope, the lookup
// of a `journal` agent's recorded results, their records, committed before
// the callbacks run, and the envelope a journal agent holds open until its
// calls are done.

#include "cell_impl.hpp"

#include "vigil/actors/detail/envelope_record.hpp"
#include "vigil/actors/detail/tool_record.hpp"

namespace vigil::detail {

namespace {

/// A recorded answer as the caller sees it; a record that cannot be read
/// is an error naming its key.
caf::error read_answer(const records::ToolResultRecord& r,
                       const tool_type& impl, const std::string& key,
                       std::unique_ptr<google::protobuf::Message>& reply) {
  if (r.error_code() != 0)
    return make_error(static_cast<errc>(r.error_code()), r.error());
  auto* d = google::protobuf::DescriptorPool::generated_pool()
              ->FindMessageTypeByName(impl.reply_type);
  auto* proto = d != nullptr ? google::protobuf::MessageFactory::
                                 generated_factory()
                                   ->GetPrototype(d)
                             : nullptr;
  if (proto == nullptr || r.reply_type() != impl.reply_type)
    return make_error(errc::storage_failed,
                      "the recorded result under key " + key + " is a "
                        + r.reply_type() + ", and the tool replies "
                        + impl.reply_type);
  reply.reset(proto->New());
  if (!reply->ParseFromString(r.reply())) {
    reply.reset();
    return make_error(errc::storage_failed,
                      "the recorded result under key " + key
                        + " does not parse as " + impl.reply_type);
  }
  return caf::error{};
}

} // namespace

const call_origin* cell::tool_parent() {
  if (cb_origin_ != nullptr)
    return cb_origin_->keyed ? cb_origin_ : nullptr;
  if (current_ == nullptr)
    return nullptr;
  if (!cur_origin_ready_) {
    cur_origin_ = origin_now();
    cur_origin_.keyed = true;
    cur_origin_.key_origin = current_->origin;
    cur_origin_.key_id = current_->id;
    // Only a journal agent holds its envelope for the calls (and counts
    // them): the others pay no reference counts per call.
    if (dur_ && dur_->journal()) {
      cur_origin_.chain = std::make_shared<call_chain>();
      cur_origin_.chain->origin = current_->origin;
      cur_origin_.chain->id = current_->id;
    }
    cur_origin_ready_ = true;
  }
  return &cur_origin_;
}

bool cell::answer_from_record(tool_runtime& tool, tool_call_state& st,
                              const google::protobuf::Message& req,
                              bool* busy) {
  auto& stats = tool.stats();
  auto& name = tool.decl().name;
  auto& o = st.origin;
  auto ck = std::make_shared<call_key>();
  if (!o.own_key.empty()) {
    // The caller's key, the tool's namespace: not a path's (no path
    // begins with \x01), so that no derived key can collide with it.
    ck->key.reserve(name.size() + o.own_key.size() + 2);
    ck->key += '\x01';
    ck->key += name;
    ck->key += '\0';
    ck->key += o.own_key;
    ck->text = o.own_key;
  } else {
    auto index = o.index.encode();
    ck->key = call_result_key(cfg_.path, o.key_origin, o.key_id, index.view());
    ck->text = tool_key_text(cfg_.path, o.key_origin, o.key_id, index.view());
  }
  if (!tool.shared()->claim_key(ck->key)) {
    if (busy != nullptr) {
      *busy = true;
      return false;
    }
    tool_stats::bump(stats.in_use_refusals);
    st.err(make_error(errc::in_use,
                      "tool \"" + name + "\": the call with idempotency key "
                        + ck->text + " is still running (an execution of "
                        + "its first call has not returned); retry later"));
    return true;
  }
  ck->sh = tool.shared();
  st.key = ck;
  if (!st.record)
    return false;
  ck->fingerprint = tool_fingerprint(name, req);
  std::string raw;
  bool found = false;
  if (auto s = rt_->storage()->get(db::tool_results, ck->key, raw, found)) {
    st.err(make_error(errc::storage_failed,
                      "tool \"" + name + "\": reading the record of key "
                        + ck->text + ": " + s.message()));
    return true;
  }
  if (!found)
    return false;
  records::ToolResultRecord r;
  recorded_answer a;
  if (auto f = decode_record(raw, r); f != record_fault::none) {
    a.error = make_error(errc::storage_failed,
                         "tool \"" + name + "\": the record of key " + ck->text
                           + " is unreadable (" + describe(f, raw, r)
                           + "); the call is not made again");
  } else if (r.fingerprint() != ck->fingerprint) {
    tool_stats::bump(stats.mismatches);
    st.err(make_error(errc::idempotency_mismatch,
                      "tool \"" + name + "\": idempotency key " + ck->text
                        + " was used for another request"
                        + (r.tool() != name ? " (to tool \"" + r.tool() + "\")"
                                            : std::string{})
                        + "; a key answers one request only"));
    return true;
  } else {
    a.error = read_answer(r, tool.impl(), ck->text, a.reply);
    a.by = r.answered_by();
    a.by_default = r.by_default();
  }
  a.tool = &tool;
  a.replayed = true;
  tool_stats::bump(stats.replayed);
  a.ok = std::move(st.ok);
  a.err = std::move(st.err);
  a.origin = std::move(st.origin);
  a.gen = gen_;
  a.key = std::move(st.key);
  if (a.origin.chain)
    ++a.origin.chain->open;
  // After the handler (or callback) that called, as a live answer would.
  bool first = tools_->replays.empty();
  tools_->replays.push_back(std::move(a));
  if (first)
    event_based_actor::send(this, tool_replay_atom::value);
  return true;
}

void cell::on_tool_replay() {
  if (!tools_)
    return;
  auto q = std::move(tools_->replays);
  tools_->replays.clear();
  for (auto& a : q)
    deliver_recorded(a);
}

bool cell::record_answer(tool_call_state& st, caf::error& err,
                         std::unique_ptr<google::protobuf::Message>& reply) {
  // Not recorded: an outcome that is not the execution's (not_running:
  // the instance that called went; a repeat executes again, same key).
  if (!st.record || !st.key || (st.attempts == 0 && !st.executed) || !dur_
      || leaving_
      || mode_ == mode::abandoned || is(err, errc::not_running))
    return false;
  auto* called = st.primary != nullptr ? st.primary : st.tool;
  records::ToolResultRecord r;
  r.set_format(1);
  r.set_tool(called->decl().name);
  if (called != st.tool)
    r.set_answered_by(st.tool->decl().name);
  r.set_by_default(st.by_default);
  r.set_fingerprint(st.key->fingerprint);
  r.set_recorded_ms(static_cast<uint64_t>(unix_ms()));
  if (err) {
    r.set_error_code(err.category() == caf::atom("vigil")
                       ? err.code()
                       : static_cast<uint32_t>(errc::tool_unavailable));
    r.set_error_class(static_cast<uint32_t>(st.last_class));
    r.set_error(describe(err));
  } else {
    r.set_reply_type(st.tool->impl().reply_type);
    reply->SerializeToString(r.mutable_reply());
  }
  write_item item;
  item.muts.push_back(put_record(db::tool_results, st.key->key, r));
  auto tok = write(std::move(item), true);
  recorded_answer a;
  a.ok = std::move(st.ok);
  a.err = std::move(st.err);
  a.origin = std::move(st.origin);
  a.gen = st.gen;
  a.error = std::move(err);
  a.reply = std::move(reply);
  a.key = std::move(st.key);
  a.tool = called;
  if (called != st.tool)
    a.by = st.tool->decl().name;
  a.by_default = st.by_default;
  tools_->recording[tok].push_back(std::move(a));
  return true;
}

bool cell::on_record_committed(uint64_t tok, const caf::error& err) {
  if (!tools_)
    return false;
  auto i = tools_->recording.find(tok);
  if (i == tools_->recording.end())
    return false;
  auto answers = std::move(i->second);
  tools_->recording.erase(i);
  for (auto& a : answers) {
    if (err) {
      // Not recorded: the callbacks do not run (a repeat of the call
      // executes again). The cell's storage failure ends the instance.
      auto chain = a.origin.chain;
      a.ok = nullptr;
      a.err = nullptr;
      chain_done(chain);
      continue;
    }
    if (a.key && a.key->sh)
      tool_stats::bump(a.key->sh->stats.recorded);
    deliver_recorded(a);
  }
  if (err)
    on_write_error(err);
  return true;
}

void cell::deliver_recorded(recorded_answer& a) {
  auto chain = a.origin.chain;
  if (a.gen == gen_ && instance_) {
    answering(a);
    if (a.error)
      invoke_as(a.origin, [&] { a.err(a.error); });
    else
      invoke_as(a.origin, [&] { a.ok(std::move(a.reply)); });
  }
  a.key.reset(); // a repeat may run from now on
  chain_done(chain);
}

void cell::chain_done(const std::shared_ptr<call_chain>& chain) {
  if (!chain)
    return;
  if (chain->open > 0)
    --chain->open;
  if (chain->open == 0 && chain->held && held_ && held_->chain == chain)
    release_held();
}

namespace {

/// defer() for an envelope whose reply is kept (see cell::deferred_slot).
deferred_reply kept_defer(std::shared_ptr<cell::deferred_slot>& slot_ref,
                          response_promise rp) {
  if (!slot_ref) {
    slot_ref = std::make_shared<cell::deferred_slot>();
    slot_ref->rp = std::move(rp);
  }
  auto slot = slot_ref;
  return deferred_reply{[slot](envelope e) {
                          if (!slot->open) {
                            if (slot->rp.pending()) {
                              slot->delivered = true;
                              slot->rp.deliver(std::move(e));
                            }
                          } else if (!slot->set) {
                            slot->set = true;
                            slot->out = std::move(e);
                          }
                        },
                        [slot](caf::error err) {
                          if (!slot->open || is(err, errc::reply_dropped)) {
                            if (slot->rp.pending()) {
                              slot->delivered = true;
                              slot->rp.deliver(std::move(err));
                            }
                          } else if (!slot->set) {
                            slot->set = true;
                            slot->err = std::move(err);
                          }
                        }};
}

/// After `run`, for an envelope not held: a kept-reply slot's answer
/// given in the handler goes out now (not kept), later ones directly.
void close_slot(std::shared_ptr<cell::deferred_slot> slot) {
  if (!slot)
    return;
  slot->open = false;
  if (!slot->set || !slot->rp.pending())
    return;
  if (slot->err)
    slot->rp.deliver(std::move(slot->err));
  else
    slot->rp.deliver(std::move(slot->out));
}

} // namespace
deferred_reply cell::defer() {
  // An envelope whose reply is kept (a durable saga's call) keeps the
  // deferred answer also when nobody waits for it now (replayed from the
  // journal after a restart): the requester's resend gets it. Otherwise
  // the handler's return value would be kept instead.
  bool keep = dur_ && dur_->journal() && dur_->current_seq != 0
              && current_ != nullptr && current_->keep_reply();
  if (current_rp_ == nullptr && !keep)
    return {};
  deferred_ = true;
  response_promise rp;
  if (current_rp_ != nullptr) {
    if (!current_rp_->pending())
      *current_rp_ = make_response_promise();
    rp = *current_rp_;
  }
  if (keep)
    return kept_defer(defer_slot_, std::move(rp));
  return deferred_reply{[rp](envelope e) mutable { rp.deliver(std::move(e)); },
                        [rp](caf::error err) mutable {
                          rp.deliver(std::move(err));
                        }};
}


bool cell::hold_if_open(pending& p, outcome res, envelope& out,
                        caf::error& err, bool deferred,
                        std::shared_ptr<deferred_slot>& slot) {
  if (!cur_origin_ready_ || !cur_origin_.chain || !cur_origin_.chain->held) {
    close_slot(std::move(slot));
    return false;
  }
  held_ = std::make_unique<held_envelope>();
  held_->p = std::move(p);
  held_->res = res;
  held_->out = std::move(out);
  held_->err = std::move(err);
  held_->deferred = deferred;
  held_->slot = std::move(slot);
  held_->chain = cur_origin_.chain;
  cur_origin_ready_ = false;
  return true;
}

void cell::release_held() {
  auto h = std::move(held_);
  h->chain->held = false;
  auto& p = h->p;
  auto& d = *dur_;
  d.current_seq = p.seq;
  d.last_consume = 0;
  if (h->slot) {
    // A kept-reply envelope's deferred answer, given in a callback: kept
    // in the consume's commit and answered after it (a refusal that came
    // first stands, and voids it).
    auto& s = *h->slot;
    s.open = false;
    if (s.set && h->deferred && h->res == outcome::replied) {
      h->deferred = false;
      if (s.err) {
        h->res = outcome::refused;
        h->err = std::move(s.err);
      } else {
        h->out = std::move(s.out);
      }
    }
  }
  // What the handler and the callbacks did, committed with the consume.
  auto was_deferred = std::exchange(deferred_, h->deferred);
  if (h->res == outcome::refused) {
    auto why = describe(h->err);
    after_handled(p.env, &why, h->out, h->err);
  } else {
    after_handled(p.env, nullptr, h->out, h->err);
  }
  deferred_ = was_deferred;
  d.current_seq = 0;
  if (h->res == outcome::refused)
    answer(p.rp, envelope{}, std::move(h->err), p.seq);
  else if (!h->deferred)
    answer(p.rp, std::move(h->out), caf::error{}, p.seq);
  event_based_actor::send<caf::message_priority::high>(this, drain_atom::value,
                                                       gen_);
}

void cell::refuse_held(const caf::error& err) {
  if (held_->res == outcome::refused)
    return; // the first refusal stands
  held_->res = outcome::refused;
  // As run() words a handler's refusal: codes that say "not delivered"
  // are the runtime's.
  held_->err = undelivered(err) || verdict(err)
                 ? make_error(errc::refused, describe(err))
                 : err ? err
                       : make_error(errc::refused,
                                    cfg_.path + " refused "
                                      + held_->p.env.type.str()
                                      + " in a callback, without a reason");
}

void cell::unhold(bool failed, caf::error err) {
  if (!held_)
    return;
  auto h = std::move(held_);
  h->chain->held = false;
  // One answer per envelope: its requester is the slot's (answered
  // reply_dropped when the instance's callbacks go, or already answered).
  if (h->slot && (h->slot->delivered || h->slot->rp.pending()))
    h->p.rp = response_promise{};
  if (dur_)
    dur_->drop_handler_writes(); // the handler's; its next run sends them again
  if (failed)
    after_failure(std::move(h->p.env), std::move(h->p.rp), std::move(err),
                  h->p.seq, h->p.saved);
  else
    buffer_.push_front(std::move(h->p));
}

} // namespace vigil::detail
