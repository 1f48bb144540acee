// Sending from a cell: making envelopes, and the bounded sends and requests
// that respect a receiver's queue_cap.

#include "cell_impl.hpp"

namespace vigil::detail {

envelope cell::make_envelope(const google::protobuf::Message& msg,
                             const call_options& opts) {
  envelope e;
  e.type = type_symbol(msg);
  msg.SerializeToString(&e.payload);
  rt_->stamp(e, opts.message_id, opts.message_origin, current_);
  if (current_ == nullptr && cb_origin_ != nullptr)
    e.attempt_budget = cb_origin_->budget;
  if (opts.attempt_budget != 0)
    e.attempt_budget = opts.attempt_budget;
  if (!opts.idempotency_key.empty())
    e.idempotency_key = opts.idempotency_key;
  // The deadline of the request being handled caps the envelope's, so that
  // the remaining budget propagates downstream.
  int64_t cap = current_ != nullptr     ? current_->deadline
                : cb_origin_ != nullptr ? cb_origin_->deadline
                                        : 0;
  e.deadline = cap;
  if (opts.timeout.count() > 0) {
    auto own = to_ns(now() + opts.timeout);
    if (cap == 0 || own < cap)
      e.deadline = own;
  }
  e.sender = cfg_.path;
  return e;
}

bool cell::send_envelope(const handle& to, envelope env, bool shed) {
  if (dur_ && dur_->journal()
      && (current_ != nullptr
          || (cb_origin_ != nullptr && cb_origin_->chain
              && cb_origin_->chain->held))) {
    // Sent by a journal agent's handler (or a callback of a call its held
    // envelope waits for): committed with the state change
    // (the outbox) and delivered after that commit, at least once; the
    // receiver drops a redelivered message id. A committed effect has no
    // deadline: it is delivered however late.
    if (!shed) {
      // try_send: the outbox holds back for a full receiver, but must not
      // grow without bound meanwhile. Taken while its undelivered entries
      // (of all receivers) are fewer than the receiver's queue_cap.
      auto* g = target(to).gauge;
      size_t cap = g != nullptr ? g->cap : cell_config{}.queue_cap;
      if (dur_->outbox.size() + dur_->sends.size() >= cap)
        return false;
    }
    env.deadline = 0;
    auto& x = dur_->sends.emplace_back();
    x.to = to.path();
    x.env = std::move(env);
    return true;
  }
  auto dest = target(to);
  if (!dest.actor) {
    rt_->add_dead_letter(to.path(), std::move(env),
                         "not_found: no agent at this path");
    return true;
  }
  if (dest.gauge != nullptr) {
    if (!shed) {
      if (!dest.gauge->try_enter())
        return false;
    } else if (!dest.gauge->enter()) {
      rt_->add_dead_letter(to.path(), std::move(env),
                           "overloaded: its queue is full (queue_cap)");
      return true;
    }
    env.flags |= envelope::queued_flag;
  }
  caf::anon_send(dest.actor, std::move(env));
  return true;
}

void cell::send_envelope_after(const handle& to, envelope env, duration delay) {
  // A timer is never outboxed, also for a journal agent (see send_after).
  auto dest = target(to).actor;
  if (!dest) {
    rt_->add_dead_letter(to.path(), std::move(env),
                         "not_found: no agent at this path");
    return;
  }
  caf::delayed_anon_send(dest, delay, std::move(env));
}

void cell::request_envelope(const handle& to, envelope env, duration timeout,
                            std::function<void(const envelope&)> on_reply,
                            std::function<void(const caf::error&)> on_error) {
  auto [dest, gauge] = target(to);
  if (!dest) {
    on_error(make_error(errc::not_found, to.path()));
    return;
  }
  // The request is part of the work of the request being handled: it
  // draws from the same attempt budget, and its callbacks run on that
  // request's behalf (its deadline, its budget).
  auto o = origin_now();
  if (env.attempt_budget == 0)
    env.attempt_budget = o.budget;
  env.budget_id = o.account;
  // The envelope's deadline (capped by the request being handled) bounds
  // the wait too.
  if (env.deadline != 0) {
    auto left = duration{env.deadline - to_ns(now())};
    if (left.count() <= 0) {
      on_error(make_error(errc::deadline_exceeded,
                          "no time left to ask " + to.path()));
      return;
    }
    if (timeout.count() <= 0 || left < timeout)
      timeout = left;
  }
  if (gauge != nullptr) {
    if (!gauge->enter()) {
      on_error(make_error(errc::overloaded, to.path()));
      return;
    }
    env.flags |= envelope::queued_flag;
  }
  auto t = timeout.count() > 0 ? caf::duration{timeout} : caf::infinite;
  // The callbacks belong to the instance that made the request: after a
  // restart they are dropped, never run on a destroyed or newer instance
  // (a deferred reply they held then fails, see deferred_reply).
  event_based_actor::request(dest, t, std::move(env))
    .then(
      [this, gen = gen_, o, f = std::move(on_reply)](envelope& rep) {
        if (gen == gen_ && instance_)
          invoke_as(o, [&] { f(rep); });
      },
      [this, gen = gen_, o, g = std::move(on_error)](caf::error& err) {
        if (gen != gen_ || !instance_)
          return;
        if (err == caf::sec::request_timeout)
          err = make_error(errc::deadline_exceeded, "no reply in time");
        invoke_as(o, [&] { g(err); });
      });
}

} // namespace vigil::detail
