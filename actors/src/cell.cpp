// The cell: envelopes, instances and their failures, degrade and probes.
// The supervisor protocol and leaving are in cell_control.cpp, sending in
// cell_send.cpp, durability in cell_durable.cpp.

#include "cell_impl.hpp"
#include "vigil/actors/report.hpp"

namespace vigil::detail {

caf::behavior cell::make_behavior() {
  if (parent_)
    monitor(parent_);
  set_down_handler([this](caf::down_msg& dm) {
    // Our supervisor is gone without stopping us (it was killed): as an
    // OTP worker linked to it, end without on_stop; what is queued here
    // goes on to whoever takes the path next, or to the dead letters.
    if (dm.source == parent_.address())
      abandon();
    else if (dur_ && dm.source == dur_->writer.address())
      writer_lost();
  });
  set_exit_handler([this](caf::exit_msg& msg) {
    // Exits come from the supervisor only after it stopped the instance
    // (or gave up on it); `kill` cannot be trapped anyway.
    reject_buffer(make_error(errc::not_running, cfg_.path + " stopped"));
    quit(msg.reason);
  });
  // Only envelopes are a match case. A behavior costs CAF about 35 bytes
  // per case in every actor, and a node may host a million cells, so the
  // rarer messages (the supervisor's, the writer's acknowledgements, the
  // cell's timers) go through the default handler instead.
  set_default_handler(
    [](caf::scheduled_actor* self, caf::message_view& x)
      -> caf::result<caf::message> {
      auto msg = x.move_content_to_message();
      return static_cast<cell*>(self)->control(msg);
    });
  // A durable cell owns its path's records only once the writer granted
  // it a fence; until then envelopes and starts wait.
  if (dur_ && dur_->writer)
    request_fence(0);
  return {
    [this](envelope& e) -> caf::result<envelope> {
      if ((e.flags & envelope::queued_flag) != 0) {
        e.flags &= ~envelope::queued_flag;
        queue_.leave();
      }
      if (mode_ == mode::abandoned) {
        forward(pending{std::move(e), make_response_promise(), 0});
        return caf::delegated<envelope>{};
      }
      if (dur_ && dur_->journal() && mode_ != mode::idle_reject
          && !(mode_ == mode::degraded && is_request()))
        return accept(e);
      return on_envelope(e);
    },
  };
}

caf::expected<uint64_t> cell::start(bool is_restart,
                                    const caf::error& reason) {
  if (leaving_)
    return make_error(errc::not_running, cfg_.path + " is ending");
  if (auto err = approvals_ready())
    return err;
  if (auto err = start_instance(is_restart, reason))
    return err;
  // Answer first, then drain in chunks, so the supervisor never waits on
  // buffered handlers. Until the buffer is empty, new envelopes queue
  // behind it (see on_envelope), which keeps their order.
  if (!buffer_.empty())
    event_based_actor::send<caf::message_priority::high>(
      this, drain_atom::value, gen_);
  if (dur_)
    dispatch_outbox();
  return gen_;
}

caf::result<envelope> cell::on_envelope(envelope& e) {
  // The hot path (running, nothing buffered) is this function's body; the
  // rest is in not_now.
  if (!buffer_.empty()
      || (mode_ != mode::running && mode_ != mode::half_open))
    return not_now(e);
  if (cfg_.approval) {
    // Through the buffer, where an envelope may wait for its approval.
    auto r = not_now(e);
    drain();
    return r;
  }
  envelope out;
  caf::error err;
  response_promise rp;
  current_rp_ = &rp;
  auto res = run(e, out, err);
  current_rp_ = nullptr;
  if (deferred_) {
    deferred_ = false;
    if (res == outcome::replied)
      return caf::delegated<envelope>{};
    if (res == outcome::refused) {
      // The refusal answers the promise the handler took (a later
      // delivery through its deferred_reply does nothing).
      if (!is_request())
        own_dead_letter(std::move(e), describe(err));
      rp.deliver(std::move(err));
      return caf::delegated<envelope>{};
    }
  }
  switch (res) {
    case outcome::replied:
      // A reply to an async envelope would reach nobody (vigil sends
      // those anonymously); not making it saves a message per send.
      if (!is_request())
        return caf::delegated<envelope>{};
      return out;
    case outcome::rejected:
    case outcome::refused:
      if (!is_request())
        own_dead_letter(std::move(e), describe(err));
      return err;
    case outcome::failed:
      if (!rp.pending())
        rp = make_response_promise();
      after_failure(std::move(e), std::move(rp), std::move(err));
      return caf::delegated<envelope>{};
  }
  return caf::delegated<envelope>{};
}

caf::result<envelope> cell::not_now(envelope& e) {
  switch (mode_) {
    case mode::running:
    case mode::half_open:
    case mode::idle_buffer:
      // Behind a buffer being drained a new envelope waits its turn,
      // which keeps the order; between instances it waits for the next.
      break;
    case mode::degraded:
      if (!is_request()) {
        own_dead_letter(std::move(e), degraded_reason());
        return caf::delegated<envelope>{};
      }
      rt_->count_stand_in();
      return deg_->fallback;
    case mode::abandoned: // forwarded before this (see make_behavior)
    case mode::idle_reject: {
      auto err = make_error(errc::not_running, cfg_.path);
      if (!is_request())
        own_dead_letter(std::move(e), describe(err));
      return err;
    }
  }
  if (buffer_.size() >= cfg_.buffer_cap) {
    auto err = make_error(errc::buffer_overflow,
                          cfg_.path + " is restarting and holds "
                            + std::to_string(buffer_.size())
                            + " envelopes (buffer_cap)");
    if (!is_request())
      own_dead_letter(std::move(e), describe(err));
    return err;
  }
  buffer_.push_back(pending{std::move(e), make_response_promise()});
  return caf::delegated<envelope>{};
}

cell::outcome cell::run(envelope& e, envelope& out, caf::error& err) {
  if (!rt_->meters().on())
    return run_handler(e, out, err);
  auto t0 = std::chrono::steady_clock::now();
  auto res = run_handler(e, out, err);
  static_assert(static_cast<int>(outcome::failed)
                == static_cast<int>(handling::failed));
  meter_.observe(static_cast<handling>(res),
                 std::chrono::steady_clock::now() - t0);
  return res;
}

cell::outcome cell::run_handler(envelope& e, envelope& out,
                                caf::error& err) {
  if (e.deadline != 0 && to_ns(now()) > e.deadline) {
    err = expired_error(e);
    return outcome::rejected;
  }
  auto& table = cfg_.type->handlers->by_type;
  auto i = table.find(e.type);
  if (i == table.end()) {
    err = make_error(errc::unknown_message_type,
                     cfg_.path + " has no handler for " + e.type);
    return outcome::rejected;
  }
  current_ = &e;
  cur_origin_ready_ = false;
  auto status = detail::handler_status::done;
  try {
    status = i->second(*instance_, *this, e, out, err);
  } catch (const tool_failure& f) {
    // A tool's failure passed on: a refusal, not a crash of the agent (a
    // breaker that is open spends no restart intensity).
    status = detail::handler_status::refused;
    err = f.error();
  } catch (...) {
    if (dur_)
      dur_->drop_handler_writes();
    current_ = nullptr;
    err = make_error(errc::handler_failed,
                     cfg_.path + ": " + what(std::current_exception()));
    return outcome::failed;
  }
  current_ = nullptr;
  if (status == detail::handler_status::bad_payload) {
    if (dur_)
      dur_->drop_handler_writes();
    err = make_error(errc::bad_payload,
                     cfg_.path + ": payload does not parse as " + e.type);
    return outcome::rejected;
  }
  bool refused = status == detail::handler_status::refused;
  if (refused && !err) // an expected<T> holding an empty error
    err = make_error(errc::refused,
                     cfg_.path + " refused " + e.type + " without a reason");
  else if (refused && (undelivered(err) || verdict(err)))
    // The codes that say "not delivered" (not_found, not_running, ...) are
    // the runtime's: an outbox would deliver again for ever. A refusal
    // with one of them is reported as refused, its text kept.
    err = make_error(errc::refused, describe(err));
  if (!refused && e.deadline != 0 && !e.start_deadline()
      && to_ns(now()) > e.deadline) {
    // (A refusal stands even when late: it is an answer, not a failure;
    // so does a reply to a start deadline, which was met.)
    if (dur_)
      dur_->drop_handler_writes();
    err = make_error(errc::deadline_exceeded,
                     cfg_.path + " handled " + e.type
                       + " past its deadline");
    return outcome::failed;
  }
  rt_->count_handled();
  // A journal agent's envelope whose calls are open is held (drain keeps
  // it): consumed once they are done, with what their callbacks did. Not
  // if the instance stops now, which ends its calls.
  if (cur_origin_ready_ && cur_origin_.chain && cur_origin_.chain->open > 0
      && dur_ && dur_->journal() && dur_->current_seq != 0
      && !stop_requested_) {
    cur_origin_.chain->held = true;
  } else if (dur_) {
    if (refused) {
      auto why = describe(err);
      after_handled(e, &why, out, err);
    } else {
      after_handled(e, nullptr, out, err);
    }
  }
  if (stop_requested_) {
    // Handled, and then the instance asked to stop: in half-open, a stop
    // with an error is a failed probe, a normal one a recovery and an exit
    // (see end_instance).
    stop_instance(true);
    end_instance(std::exchange(stop_reason_, caf::error{}), false);
  } else if (mode_ == mode::half_open) {
    mode_ = mode::running;
    resilience::backoff::reset(deg_->track);
    event_based_actor::send(parent_, recover_report{key_, gen_});
  }
  return refused ? outcome::refused : outcome::replied;
}

void cell::after_failure(envelope e, response_promise rp, caf::error err,
                         uint64_t seq, bool saved) {
  instance_.reset();
  stop_requested_ = false;
  stop_reason_ = caf::error{};
  if (mode_ == mode::half_open) {
    // The probe failed: the child stays degraded. An async envelope meets
    // the fate it would meet in running mode (kept for its next delivery,
    // or a dead letter), and so does one a journal accepted or a save
    // listed, with its requester: answered with the error once its
    // deliveries are spent, else after its next delivery; never told the
    // stand-in and then applied. Any other requester hears the stand-in.
    report_end("probe", "probe_failed", err, &e);
    bool requester = rp.pending() && !rp.async();
    bool kept = seq != 0 || saved;
    if (!kept)
      stand_in(rp);
    if (kept || !requester)
      settle(std::move(e), std::move(rp), err, seq, saved);
    deg_->probe_failed();
    enter_degraded();
    return;
  }
  // OTP's crash report: the process that failed, with the envelope's
  // trace; its supervisor reports the restart.
  report_end("crash", "child_terminated", err, &e);
  mode_ = mode::idle_buffer;
  settle(std::move(e), std::move(rp), err, seq, saved);
  event_based_actor::send(parent_, exit_report{key_, gen_, std::move(err)});
}

void cell::report_end(std::string_view kind, std::string_view context,
                      const caf::error& why, const envelope* e) {
  auto text = describe(why);
  std::string_view path = cfg_.path;
  auto slash = path.rfind('/');
  emit(report{kind, slash == path.npos ? "" : path.substr(0, slash), context,
              text, path, e != nullptr ? e->attempt : 0, e});
}

void cell::end_instance(caf::error reason, bool failed) {
  if (failed || (reason && reason != caf::exit_reason::normal
                 && reason != caf::exit_reason::user_shutdown
                 && !is(reason, errc::shutting_down)))
    report_end(mode_ == mode::half_open ? "probe" : "crash",
               mode_ == mode::half_open ? "probe_failed" : "child_terminated",
               reason, current_);
  unhold();
  instance_.reset();
  stop_requested_ = false;
  stop_reason_ = caf::error{};
  if (mode_ == mode::half_open) {
    // Benign as the supervisor counts it (a transient child ends then).
    bool normal = !reason || reason == caf::exit_reason::normal
                  || reason == caf::exit_reason::user_shutdown
                  || is(reason, errc::shutting_down);
    if (failed || !normal) {
      deg_->probe_failed();
      enter_degraded();
      return;
    }
    resilience::backoff::reset(deg_->track);
    event_based_actor::send(parent_, recover_report{key_, gen_});
  }
  mode_ = mode::idle_buffer;
  event_based_actor::send(parent_, exit_report{key_, gen_, std::move(reason)});
}

void cell::settle(envelope e, response_promise rp, const caf::error& err,
                  uint64_t seq, bool saved) {
  bool journaled = seq != 0 && dur_ && dur_->journal();
  bool async = !rp.pending() || rp.async();
  // A journal agent keeps every envelope it accepted: one that fails for
  // good is a dead letter (replayable) even when a requester is told too,
  // since that requester may be an outbox that now considers it delivered.
  if (journaled)
    dur_->last_consume = 0;
  if (is(err, errc::deadline_exceeded)) {
    // Its time is up: retrying it cannot succeed. An async envelope with
    // nobody to tell is a dead letter, as every failed one.
    bury(e, rp, err, seq, saved, async);
  } else if (e.attempt >= cfg_.max_deliveries) {
    // With max_deliveries 1 (the default, as in OTP and Akka) the failing
    // envelope is not retried; it is kept as a dead letter, not dropped.
    auto reason = cfg_.max_deliveries == 1
                    ? err
                    : make_error(errc::poison_message,
                                 cfg_.path + " failed "
                                   + std::to_string(e.attempt)
                                   + " times on this envelope; last: "
                                   + describe(err));
    // A requester is told and owns the retry; an async envelope would be
    // lost, so it goes to the dead letters, as does every poison message.
    bury(e, rp, std::move(reason), seq, saved,
         cfg_.max_deliveries > 1 || async);
  } else {
    ++e.attempt;
    if (journaled) // the attempt count survives a crash of the node, too
      write(detail::redeliver_item(cfg_.path, seq, e), false);
    buffer_.push_front(pending{std::move(e), std::move(rp), seq, saved});
  }
}

void cell::bury(envelope& e, response_promise& rp, caf::error err,
                uint64_t seq, bool saved, bool dead) {
  auto why = describe(err);
  if (seq != 0 && dur_ && dur_->journal()) {
    consume_failed(seq, e, why, &err); // with its dead letter, always
    answer(rp, envelope{}, std::move(err), seq);
    return;
  }
  if (saved && dur_) {
    // Out of the save, or the next start would apply it after all.
    auto tok = save_snapshot(&e, dead ? &why : nullptr);
    if (rp.pending() && !rp.async())
      dur_->after_commit[tok].dropped.push_back(
        dropped_reply{e.origin, e.id, std::move(rp), std::move(err)});
    return;
  }
  if (dead)
    own_dead_letter(e, why);
  answer(rp, envelope{}, std::move(err), seq);
}

caf::error cell::start_instance(bool is_restart, const caf::error& reason) {
  unhold();
  instance_.reset();
  stop_requested_ = false;
  stop_reason_ = caf::error{};
  ++gen_;
  drop_guards(false);
  try {
    instance_ = cfg_.type->make(parameters());
    if (dur_)
      restore_state();
    if (is_restart)
      instance_->on_restart(*this, reason);
    else
      instance_->on_start(*this);
  } catch (...) {
    instance_.reset();
    mode_ = mode::idle_buffer;
    return make_error(errc::start_failed,
                      cfg_.path + ": " + what(std::current_exception()));
  }
  mode_ = mode::running;
  return caf::none;
}

void cell::stop_instance(bool graceful) {
  if (!instance_)
    return;
  if (graceful) {
    try {
      instance_->on_stop(*this);
    } catch (...) {
      // on_stop cannot fail the stop; the instance is gone either way.
    }
    if (dur_ && !dur_->journal() && dur_->unsaved > 0)
      save_snapshot();
  }
  unhold();
  instance_.reset();
  stop_requested_ = false;
}

void cell::drain() {
  static constexpr size_t drain_chunk = 64;
  size_t n = 0;
  while (!buffer_.empty() && instance_ && (!dur_ || dur_->ready()) && !held_
         && (mode_ == mode::running || mode_ == mode::half_open)
         && !still_awaiting()) {
    if (n++ == drain_chunk) {
      event_based_actor::send<caf::message_priority::high>(
        this, drain_atom::value, gen_);
      return;
    }
    auto p = std::move(buffer_.front());
    buffer_.pop_front();
    if (cfg_.approval && cfg_.approval->covers(p.env.type.str())) {
      // A person's approval first: it waits at the head of the buffer.
      auto g = approve_envelope(p);
      if (g == gate::wait) {
        buffer_.push_front(std::move(p));
        return;
      }
      if (g == gate::refused)
        continue;
    }
    envelope out;
    caf::error err;
    // Only a real requester can get a deferred reply: a promise made now
    // would answer the message that triggered the drain (often the cell's
    // own drain or commit message), i.e. send the reply to ourselves.
    current_rp_ = p.rp.pending() && !p.rp.async() ? &p.rp : nullptr;
    if (dur_) {
      dur_->current_seq = p.seq;
      dur_->last_consume = 0;
    }
    auto res = run(p.env, out, err);
    if (dur_)
      dur_->current_seq = 0;
    current_rp_ = nullptr;
    bool deferred = std::exchange(deferred_, false);
    auto slot = std::exchange(defer_slot_, nullptr);
    if (hold_if_open(p, res, out, err, deferred, slot))
      return; // its calls are open: nothing else runs until they are done
    switch (res) {
      case outcome::replied:
        if (!deferred)
          answer(p.rp, std::move(out), caf::error{}, p.seq);
        break;
      case outcome::rejected: {
        bool async = !p.rp.pending() || p.rp.async();
        bury(p.env, p.rp, std::move(err), p.seq, p.saved, async);
        break;
      }
      case outcome::refused: {
        // Committed like a reply; a journal agent's dead letter went into
        // that commit (after_handled).
        bool async = !p.rp.pending() || p.rp.async();
        bool journaled = p.seq != 0 && dur_ && dur_->journal();
        if (async && !journaled)
          own_dead_letter(std::move(p.env), describe(err));
        if (deferred) // a refusal answers now; a deferred reply is void
          deferred = false;
        answer(p.rp, envelope{}, std::move(err), p.seq);
        break;
      }
      case outcome::failed:
        after_failure(std::move(p.env), std::move(p.rp), std::move(err),
                      p.seq, p.saved);
        return;
    }
  }
}

bool cell::verdict(const caf::error& err) {
  for (auto x : {errc::expired, errc::duplicate, errc::handler_failed,
                 errc::poison_message, errc::deadline_exceeded,
                 errc::degraded, errc::reply_dropped, errc::fenced})
    if (is(err, x))
      return true;
  return false;
}

void cell::reject_buffer(const caf::error& err) {
  if (dur_) {
    // Not accepted yet (they waited for this cell's fence).
    auto waiting = std::move(dur_->unaccepted);
    dur_->unaccepted.clear();
    for (auto& p : waiting)
      not_accepted(std::move(p), err);
  }
  // An envelope with a start deadline is not kept for a later start: its
  // requester (a saga) must know now whether it will ever run.
  for (auto i = buffer_.begin(); i != buffer_.end();) {
    if (!i->env.start_deadline()) {
      ++i;
      continue;
    }
    auto p = std::move(*i);
    i = buffer_.erase(i);
    bool async = !p.rp.pending() || p.rp.async();
    bury(p.env, p.rp, err, p.seq, p.saved, async);
  }
  if (dur_ && dur_->journal()) {
    // Accepted envelopes stay in the journal and are applied when the
    // agent runs again (restart_child, or the next start of the node).
    // A requester is told now; its envelope is not lost.
    for (auto& p : buffer_)
      if (p.rp.pending() && !p.rp.async())
        p.rp.deliver(make_error(
          errc::not_running, cfg_.path
                               + " stopped; the envelope is kept in its "
                                 "journal and applied when it runs again"));
    buffer_.remove_if([](const pending& p) { return p.seq == 0; });
    return;
  }
  for (auto& p : buffer_) {
    if (p.saved) {
      // In the last save: applied when the agent runs again.
      if (p.rp.pending() && !p.rp.async())
        p.rp.deliver(make_error(errc::not_running,
                                cfg_.path + " stopped; the envelope is kept "
                                            "in its last save and applied "
                                            "when it runs again"));
      p.rp = response_promise{};
    } else if (!p.rp.pending() || p.rp.async()) {
      own_dead_letter(std::move(p.env), describe(err));
    } else {
      p.rp.deliver(err);
    }
  }
  buffer_.remove_if([](const pending& p) { return !p.saved; });
}

void cell::enter_degraded() {
  mode_ = mode::degraded;
  bool journal = dur_ && dur_->journal();
  auto reason = degraded_reason();
  for (auto i = buffer_.begin(); i != buffer_.end();) {
    auto& p = *i;
    bool requester = p.rp.pending() && !p.rp.async();
    if ((journal && p.seq != 0) || p.saved) {
      ++i; // on disk: applied once the child runs again, then answered
    } else if (!requester && p.env.attempt > 1) {
      ++i; // waits for its next delivery
    } else {
      if (requester)
        stand_in(p.rp);
      else
        own_dead_letter(std::move(p.env), reason);
      i = buffer_.erase(i);
    }
  }
  delayed_send<caf::message_priority::high>(this, deg_->probe_delay(), probe_atom::value, ++deg_->probe_seq);
}

void cell::probe() {
  if (dur_ && !dur_->ready()) {
    // Reloading after a failed commit: probe once that is done.
    delayed_send<caf::message_priority::high>(this, deg_->probe_delay(), probe_atom::value,
                 ++deg_->probe_seq);
    return;
  }
  if (start_instance(true, make_error(errc::start_failed, "probe"))) {
    deg_->probe_failed();
    enter_degraded();
    return;
  }
  mode_ = mode::half_open;
  if (!buffer_.empty())
    drain(); // what was kept: the first envelope decides
}

} // namespace vigil::detail

namespace vigil {

caf::actor spawn_cell(caf::actor_system& sys, std::shared_ptr<runtime> rt,
                      cell_config cfg, caf::actor parent, uint64_t key) {
  return sys.spawn<detail::cell>(std::move(rt), std::move(cfg),
                                 std::move(parent), key);
}

detail::queue_gauge* queue_of(const caf::actor& cell) {
  auto* p = caf::actor_cast<caf::abstract_actor*>(cell);
  return p == nullptr ? nullptr : &static_cast<detail::cell*>(p)->queue();
}

} // namespace vigil
