// The cell's control messages (the supervisor protocol, the writer's
// acknowledgements, its own timers; see vigil/actors/cell.hpp) and how a
// cell leaves: retired, abandoned, or ended.

#include "cell_impl.hpp"

namespace vigil::detail {

caf::result<caf::message> cell::control(caf::message& msg) {
  if (msg.match_elements<committed_atom, std::vector<uint64_t>,
                         caf::error>()) {
    // Once per commit batch of the writer, not per envelope.
    on_acks(msg.get_as<std::vector<uint64_t>>(1),
            msg.get_as<caf::error>(2));
    return caf::message{};
  }
  if (msg.match_elements<shared_done_atom, uint64_t,
                         std::vector<std::string>>()) {
    on_shared_done(msg.get_as<uint64_t>(1),
                   msg.get_mutable_as<std::vector<std::string>>(2));
    return caf::message{};
  }
  if (msg.match_elements<snap_atom>()) {
    dur_->timer = false;
    if (dur_->unsaved > 0 && instance_)
      save_snapshot();
    return caf::message{};
  }
  if (msg.match_elements<outbox_atom>()) { // room may have come
    dur_->room_wait = false;
    dispatch_outbox();
    return caf::message{};
  }
  if (msg.match_elements<outbox_atom, uint64_t>()) {
    auto i = dur_->outbox.find(msg.get_as<uint64_t>(1));
    if (i != dur_->outbox.end()) {
      dur_->due.push_back(i->first);
      dispatch_outbox();
    }
    return caf::message{};
  }
  if (msg.match_elements<detail::tool_done_atom>()) {
    on_tools_done();
    return caf::message{};
  }
  if (msg.match_elements<detail::tool_park_atom>()) {
    on_parked();
    return caf::message{};
  }
  if (msg.match_elements<approval_atom, approval_outcome>()) {
    on_approval(msg.get_as<approval_outcome>(1));
    return caf::message{};
  }
  if (msg.match_elements<detail::approval_due_atom, std::string>()) {
    on_approval_due(msg.get_as<std::string>(1));
    return caf::message{};
  }
  if (msg.match_elements<detail::tool_replay_atom>()) {
    on_tool_replay();
    return caf::message{};
  }
  if (msg.match_elements<detail::tool_timer_atom, uint64_t>()) {
    on_tool_tick(msg.get_as<uint64_t>(1));
    return caf::message{};
  }
  if (msg.match_elements<expire_atom, uint64_t, uint64_t>())
    return caf::make_message(
      expire(msg.get_as<uint64_t>(1), msg.get_as<uint64_t>(2)));
  // Commands are the supervisor's: a cell's handle is public (any client
  // resolves the path), and a stop or start from elsewhere would leave the
  // supervisor's view of the child wrong.
  if ((msg.match_elements<start_cmd>() || msg.match_elements<stop_cmd>()
       || msg.match_elements<degrade_cmd>()
       || msg.match_elements<retire_atom>()
       || msg.match_elements<abandon_atom>())
      && parent_
      && caf::actor_cast<caf::actor_addr>(current_sender())
           != parent_.address())
    return make_error(errc::refused,
                      cfg_.path + ": only its supervisor may send "
                        + to_string(msg)
                        + " to a cell; clients send envelopes");
  if (msg.match_elements<start_cmd>()) {
    auto& cmd = msg.get_as<start_cmd>(0);
    if (dur_ && dur_->writer && !dur_->ready() && !leaving_) {
      // Answered once this cell owns its path (see on_grant).
      auto rp = make_response_promise();
      dur_->starts.push_back(start_request{rp, cmd.is_restart, cmd.reason});
      return caf::delegated<caf::message>{};
    }
    auto gen = start(cmd.is_restart, cmd.reason);
    if (!gen)
      return std::move(gen.error());
    return caf::make_message(*gen);
  }
  if (msg.match_elements<drain_atom, uint64_t>()) {
    if (msg.get_as<uint64_t>(1) == gen_)
      drain();
    return caf::message{};
  }
  if (msg.match_elements<stop_cmd>()) {
    auto& cmd = msg.get_as<stop_cmd>(0);
    auto graceful = cmd.graceful;
    // Reached only after the supervisor gave up on this cell (its handler
    // was stuck): a newer instance may run already, so this one gets no
    // on_stop and no last save.
    if (cmd.give_up_at.count() != 0
        && clock().now().time_since_epoch() > cmd.give_up_at)
      graceful = false;
    stop_instance(graceful);
    if (mode_ != mode::abandoned) {
      mode_ = cmd.keep_buffer ? mode::idle_buffer : mode::idle_reject;
      if (!cmd.keep_buffer)
        reject_buffer(make_error(errc::not_running, cfg_.path));
    }
    if (cmd.ack)
      event_based_actor::send(parent_, stop_ack{key_});
    return caf::message{}; // unit
  }
  if (msg.match_elements<retire_atom>()) {
    leave();
    return caf::message{};
  }
  if (msg.match_elements<abandon_atom>()) {
    abandon();
    return caf::message{};
  }
  if (msg.match_elements<gone_atom>()) {
    marker_ = true;
    maybe_quit();
    return caf::message{};
  }
  if (msg.match_elements<degrade_cmd>()) {
    if (mode_ == mode::abandoned)
      return caf::message{};
    auto& cmd = msg.get_mutable_as<degrade_cmd>(0);
    stop_instance(false);
    if (!deg_)
      deg_ = std::make_unique<degraded_state>(system().clock());
    deg_->fallback = std::move(cmd.fallback);
    deg_->fallback.flags |= envelope::degraded_flag;
    resilience::backoff_policy probes;
    probes.initial = cmd.probe_min;
    probes.max = cmd.probe_max;
    deg_->probes.emplace(probes, deg_->clock);
    resilience::backoff::reset(deg_->track);
    enter_degraded();
    return caf::message{};
  }
  if (msg.match_elements<probe_atom, uint64_t>()) {
    if (mode_ == mode::degraded && msg.get_as<uint64_t>(1) == deg_->probe_seq)
      probe();
    return caf::message{};
  }
  if (msg.match_elements<state_atom>())
    return caf::make_message(mode_name());
  // Outside the protocol (see vigil/actors/cell.hpp): refused, named.
  return make_error(errc::unknown_message_type,
                    cfg_.path + " got an unexpected message: "
                      + caf::to_string(msg)
                      + " (the cell protocol is in vigil/actors/cell.hpp)");
}

void cell::abandon() {
  if (mode_ == mode::abandoned)
    return;
  instance_.reset(); // no on_stop: a newer instance may run already
  stop_requested_ = false;
  mode_ = mode::abandoned;
  leaving_ = true;
  auto self = caf::actor_cast<caf::actor>(this);
  rt_->unbind(cfg_.path, self);
  auto replaced = make_error(errc::reply_dropped,
                             cfg_.path + " was replaced; the envelope is in "
                                         "its journal and the next instance "
                                         "applies it, answering nobody");
  unhold();
  auto buffered = std::move(buffer_);
  buffer_.clear();
  for (auto& p : buffered) {
    if (p.seq == 0 && !p.saved)
      forward(std::move(p));
    else if (p.rp.pending() && !p.rp.async())
      p.rp.deliver(replaced); // on disk: the next owner applies it
  }
  if (dur_) {
    auto& d = *dur_;
    auto waiting = std::move(d.unaccepted);
    d.unaccepted.clear();
    for (auto& p : waiting)
      forward(std::move(p));
    auto starts = std::move(d.starts);
    d.starts.clear();
    for (auto& x : starts)
      x.rp.deliver(make_error(errc::not_running, cfg_.path + " was replaced"));
    d.outbox.clear();
    d.due.clear();
    if (!settled())
      monitor(d.writer); // so that a lost writer cannot keep us for ever
  }
  // Behind everything queued now: once it arrives, all of that went on.
  event_based_actor::send(this, gone_atom::value);
}

void cell::leave() {
  stop_instance(false);
  reject_buffer(make_error(errc::not_running, cfg_.path + " deleted"));
  if (mode_ != mode::abandoned)
    mode_ = mode::idle_reject;
  leaving_ = true;
  // The supervisor unbound the path as it sent the retire; envelopes that
  // reached this cell after the retire are answered (not_running) before
  // it ends, once a marker sent now arrives behind them.
  event_based_actor::send(this, gone_atom::value);
  if (dur_ && dur_->writer && !settled())
    monitor(dur_->writer);
}

void cell::maybe_quit() {
  if (leaving_ && marker_ && settled())
    quit();
}

void cell::forward(pending p) {
  auto dest = rt_->lookup(cfg_.path);
  bool requester = p.rp.pending() && !p.rp.async();
  if (dest && dest != caf::actor_cast<caf::actor>(this)) {
    if (requester)
      p.rp.delegate(dest, std::move(p.env));
    else
      caf::anon_send(dest, std::move(p.env));
    return;
  }
  auto err = make_error(errc::not_running,
                        cfg_.path + " was replaced and no instance runs "
                                    "there now");
  if (requester)
    p.rp.deliver(err);
  else
    own_dead_letter(std::move(p.env), describe(err));
}

void cell::on_exit() {
  rt_->unbind(cfg_.path, caf::actor_cast<caf::actor>(this));
  // Not running from here on, though a handle may keep the object alive:
  // its counts join its type's totals now (~cell does, if this did not).
  if (rt_->meters().on())
    rt_->meters().retire(&meter_);
  end_tool_calls();
  unhold();
  // Whoever still waits is told, also after a kill.
  reject_buffer(make_error(errc::not_running, cfg_.path + " stopped"));
  buffer_.clear(); // promises hold a reference to this cell
  if (dur_) {
    auto& d = *dur_;
    for (auto& p : d.accepting)
      if (p.rp.pending() && !p.rp.async())
        p.rp.deliver(make_error(
          // A start-deadline envelope (a saga's step) may yet run, if the
          // accept landed: its requester cannot count it as not run.
          p.env.start_deadline() ? errc::reply_dropped : errc::not_running,
          cfg_.path + " stopped while the envelope's accept was being "
                      "committed; if it was, it is applied when the agent "
                      "runs again (resend it with the same message id to "
                      "find out: a duplicate is not applied twice)"));
    d.accepting.clear();
    for (auto& kvp : d.after_commit) {
      for (auto& r : kvp.second.replies)
        r.rp.deliver(make_error(
          // Handled (its accept is on disk): the answer is what is lost.
          errc::reply_dropped,
          cfg_.path + " stopped before the commit of the envelope's change "
                      "was confirmed; if it was not committed, the next "
                      "instance applies the envelope again"));
      for (auto& r : kvp.second.dropped)
        r.rp.deliver(make_error(
          errc::not_running,
          cfg_.path + " stopped before the save without the envelope was "
                      "confirmed; if it was not committed, the next "
                      "instance applies the envelope"));
    }
    d.after_commit.clear();
    for (auto& x : d.starts)
      x.rp.deliver(make_error(errc::not_running, cfg_.path + " stopped"));
    d.starts.clear();
    if (d.fenced && d.writer)
      caf::anon_send(d.writer, release_atom::value, cfg_.path);
  }
  instance_.reset();
  // The supervisor holds this cell's handle: a killed supervisor keeps its
  // members, so a reference back to it would keep both alive for ever
  // (and with them the runtime and the node's writer).
  parent_ = nullptr;
}

bool cell::expire(uint64_t origin, uint64_t id) {
  auto t = to_ns(now());
  for (auto i = buffer_.begin(); i != buffer_.end(); ++i) {
    auto& e = i->env;
    if (e.id != id || e.origin != origin)
      continue;
    if (e.deadline == 0 || t <= e.deadline)
      return false;
    auto p = std::move(*i);
    buffer_.erase(i);
    bool async = !p.rp.pending() || p.rp.async();
    bury(p.env, p.rp, expired_error(p.env), p.seq, p.saved, async);
    return true;
  }
  return false;
}

void cell::stand_in(response_promise& rp) {
  if (!rp.pending() || rp.async())
    return;
  rp.deliver(deg_->fallback);
  rt_->count_stand_in();
}

void cell::own_dead_letter(envelope e, std::string reason, bool persist) {
  rt_->add_dead_letter(cfg_.path, std::move(e), std::move(reason), persist,
                       dur_ && dur_->journal());
}

std::string cell::degraded_reason() const {
  return describe(make_error(errc::degraded,
                             cfg_.path
                               + " is degraded: its stand-in answers requests "
                                 "only; replay this letter once it runs again"));
}

caf::error cell::expired_error(const envelope& e) const {
  return make_error(errc::expired, "deadline passed before " + cfg_.path
                                     + " handled " + e.type
                                     + "; it did not run");
}

std::string cell::mode_name() const {
  switch (mode_) {
    case mode::idle_buffer: return "restarting";
    case mode::idle_reject: return "stopped";
    case mode::running: return "running";
    case mode::degraded: return "degraded";
    case mode::half_open: return "half_open";
    case mode::abandoned: return "replaced";
  }
  return "?";
}

} // namespace vigil::detail
