// The cell's durability: snapshot and journal modes, ownership of the path
// (fences and epochs, see writer.hpp), the reload after a failed commit,
// and replies held until their commit (see README, "Durability"). The
// outbox is in cell_outbox.cpp.

#include <set>

#include "cell_impl.hpp"

namespace vigil::detail {

namespace {

/// glibc's chunk size for a malloc of `n` bytes (x86_64): n plus the size
/// word, rounded up to 16.
constexpr size_t malloc_class(size_t n) {
  return (n + 8 + 15) / 16 * 16;
}

// A write message reuses the chunk of the envelope it is about only while
// both fall in one size class (see owned_write, with the measurement).
static_assert(
  malloc_class(sizeof(caf::mailbox_element_vals<caf::atom_value, uint64_t,
                                                owned_write>))
    == malloc_class(sizeof(caf::mailbox_element_vals<envelope>)),
  "a journal write message left the envelope's malloc size class: "
  "measure bench/durable_bench before and after, then re-balance "
  "owned_write (or drop this assertion if the change pays for itself)");

} // namespace

void cell::init_durable(const durability_spec& spec) {
  dur_ = std::make_unique<durable>(system().clock());
  dur_->spec = spec;
  dur_->writer = rt_->writer();
  if (!dur_->writer) {
    dur_->granted = true; // nothing to own: every start fails
    dur_->start_error = cfg_.path + ": durability "
                        + to_string(spec.mode)
                        + " needs a data dir; set node_config::data_dir";
  }
}

void cell::request_fence(uint64_t prev) {
  auto& d = *dur_;
  d.fenced = true;
  if (prev != 0)
    d.refencing = true;
  event_based_actor::request(d.writer, caf::infinite, fence_atom::value,
                             cfg_.path, prev)
    .then([this](fence_grant& g) { on_grant(g); },
          [this, prev](caf::error& err) { on_fence_error(err, prev); });
}

void cell::on_grant(fence_grant& g) {
  auto& d = *dur_;
  if (mode_ == mode::abandoned)
    return; // a newer owner holds the path by now
  d.owner = g.owner;
  if (!g.error.empty()) {
    if (d.granted) {
      // Cannot read the truth back after a failed commit: stop serving
      // rather than guess.
      quit(make_error(errc::storage_failed,
                      cfg_.path + ": cannot reload after a failed commit: "
                        + g.error));
      return;
    }
    d.granted = true;
    d.start_error = cfg_.path + " cannot read its records: " + g.error;
  } else if (!d.granted) {
    d.granted = true;
    adopt(g.view);
  } else {
    d.refencing = false;
    reconcile(g.view);
  }
  auto waiting = std::move(d.unaccepted);
  d.unaccepted.clear();
  for (auto& p : waiting) {
    if (d.start_error.empty())
      send_accept(std::move(p));
    else
      not_accepted(std::move(p),
                   make_error(errc::not_running, d.start_error));
  }
  run_starts();
  dispatch_outbox();
  if (instance_ && !buffer_.empty()
      && (mode_ == mode::running || mode_ == mode::half_open))
    drain();
}

void cell::on_fence_error(const caf::error& err, uint64_t prev) {
  auto& d = *dur_;
  if (mode_ == mode::abandoned)
    return;
  if (prev != 0) {
    // A newer owner took the path while this one reloaded.
    if (is(err, errc::fenced))
      return abandon();
    quit(make_error(errc::storage_failed,
                    cfg_.path + ": cannot fence its path again after a "
                                "failed commit: "
                      + describe(err)));
    return;
  }
  d.granted = true;
  d.start_error = cfg_.path + " cannot take ownership of its records: "
                  + describe(err);
  auto waiting = std::move(d.unaccepted);
  d.unaccepted.clear();
  for (auto& p : waiting)
    not_accepted(std::move(p), make_error(errc::not_running, d.start_error));
  run_starts();
}

void cell::run_starts() {
  auto starts = std::move(dur_->starts);
  dur_->starts.clear();
  for (auto& x : starts) {
    auto gen = start(x.is_restart, x.reason);
    if (gen)
      x.rp.deliver(*gen);
    else
      x.rp.deliver(std::move(gen.error()));
  }
}

void cell::adopt(const recovered_agent& rec) {
  auto& d = *dur_;
  // Records of the other durable mode are not migrated: refuse to start
  // rather than misread them (a journal left to a snapshot child would be
  // replayed at every start).
  uint32_t was = rec.has_snapshot ? rec.snapshot.durability() : 0;
  if (!rec.journal.empty() && was == 0)
    was = 2;
  uint32_t now = d.journal() ? 2 : 1;
  if (was != 0 && was != now) {
    d.start_error = cfg_.path + " is a "
                    + (was == 2 ? "journal" : "snapshot")
                    + " agent in this data dir but its child spec says "
                    + to_string(d.spec.mode)
                    + "; records are not migrated: keep the old mode, or "
                      "move its records away (vigil inspect shows them) "
                      "and use another data dir";
    return;
  }
  std::list<pending> found;
  if (rec.has_snapshot) {
    auto& s = rec.snapshot;
    d.has_state = !s.state_type().empty();
    d.state = s.state();
    d.state_type = s.state_type();
    d.next_seq = std::max<uint64_t>(1, s.next_seq());
    d.next_outbox = std::max<uint64_t>(1, s.next_outbox());
    d.processed = s.processed();
    for (auto& r : s.pending())
      found.push_back(pending{detail::from_record(r), {}, 0, true});
  }
  for (auto& je : rec.journal) {
    found.push_back(pending{detail::from_record(je.env()), {}, je.seq()});
    d.next_seq = std::max(d.next_seq, je.seq() + 1);
  }
  // Ahead of what arrived while the fence was on its way.
  buffer_.splice(buffer_.begin(), found);
  adopt_outbox(rec.outbox);
  // A journal agent that has consumed nothing yet has no record on disk;
  // write one now, so that the data dir says what it is (a replay of its
  // dead letters needs to know it is a journal agent).
  if (d.journal() && !rec.has_snapshot && rec.journal.empty())
    write(detail::consume_item(consume_args(0)), false);
}

void cell::reconcile(const recovered_agent& rec) {
  unhold();
  auto& d = *dur_;
  auto& snap = rec.snapshot;
  bool found = rec.has_snapshot;
  d.has_state = found && !snap.state_type().empty();
  d.state = found ? snap.state() : std::string{};
  d.state_type = found ? snap.state_type() : std::string{};
  d.processed = found ? snap.processed() : 0;
  d.next_seq = std::max<uint64_t>(d.next_seq, found ? snap.next_seq() : 1);
  d.next_outbox = std::max<uint64_t>(d.next_outbox,
                                     found ? snap.next_outbox() : 1);
  // Every requester by the journal seq of its envelope: buffered ones,
  // replies whose commit failed (their envelope is applied again and
  // answers then), and accepts whose verdict has not arrived.
  std::map<uint64_t, response_promise> waiting;
  std::list<pending> others;
  for (auto& p : buffer_) {
    if (p.seq != 0)
      waiting.emplace(p.seq, std::move(p.rp));
    else
      others.push_back(std::move(p));
  }
  buffer_.clear();
  // Snapshot mode: requesters of envelopes whose save-without-them
  // failed; those envelopes are in the last good save again.
  std::map<std::pair<uint64_t, uint64_t>, response_promise> unburied;
  for (auto& kvp : d.after_commit) {
    for (auto& r : kvp.second.replies)
      if (r.seq != 0)
        waiting[r.seq] = std::move(r.rp);
    for (auto& r : kvp.second.dropped)
      unburied[{r.origin, r.id}] = std::move(r.rp);
  }
  d.after_commit.clear();
  d.kept_in_flight.clear();
  std::map<uint64_t, pending> in_flight;
  for (auto& p : d.accepting) {
    auto seq = p.seq;
    in_flight.emplace(seq, std::move(p));
  }
  d.accepting.clear();
  d.first_accept = d.next_accept; // late verdicts of those are ignored
  d.first_token = d.next_token;
  for (auto& je : rec.journal) {
    pending p{detail::from_record(je.env()), {}, je.seq()};
    if (auto i = waiting.find(je.seq()); i != waiting.end()) {
      p.rp = std::move(i->second);
      waiting.erase(i);
    } else if (auto j = in_flight.find(je.seq()); j != in_flight.end()) {
      p.rp = std::move(j->second.rp); // its accept was committed
      in_flight.erase(j);
    }
    buffer_.push_back(std::move(p));
    d.next_seq = std::max(d.next_seq, je.seq() + 1);
  }
  for (auto& kvp : in_flight) // not on disk: not accepted
    not_accepted(std::move(kvp.second), d.failure);
  for (auto& kvp : waiting)
    kvp.second.deliver(make_error(
      errc::storage_failed,
      cfg_.path + ": after a failed commit the envelope's journal entry "
                  "is gone, so its outcome is unknown; resend it with the "
                  "same message id (a duplicate is not applied twice)"));
  if (!d.journal()) {
    // The last good save's waiting envelopes come first, as at a start;
    // those of them still here keep their requester. The rest of the
    // buffer follows (its envelopes are in no save on disk).
    // By (origin, id): unique across nodes.
    using msg_key = std::pair<uint64_t, uint64_t>;
    std::set<msg_key> kept;
    if (found)
      for (auto& r : snap.pending())
        kept.emplace(r.origin(), r.id());
    std::map<msg_key, response_promise> asked = std::move(unburied);
    std::list<pending> later;
    for (auto& p : others) {
      if (kept.count({p.env.origin, p.env.id}) != 0) {
        asked.emplace(msg_key{p.env.origin, p.env.id}, std::move(p.rp));
      } else {
        p.saved = false;
        later.push_back(std::move(p));
      }
    }
    others.clear();
    if (found)
      for (auto& r : snap.pending()) {
        pending p{detail::from_record(r), {}, 0, true};
        if (auto i = asked.find({p.env.origin, p.env.id}); i != asked.end())
          p.rp = std::move(i->second);
        others.push_back(std::move(p));
      }
    others.splice(others.end(), later);
    for (auto& kvp : asked) // not in the last good save: outcome unknown
      if (kvp.second.pending())
        kvp.second.deliver(make_error(
          errc::storage_failed,
          cfg_.path + ": after a failed commit the envelope is in no save, "
                      "so its outcome is unknown"));
  }
  buffer_.splice(buffer_.end(), others);
  d.outbox.clear();
  d.due.clear();
  d.in_flight = 0;
  adopt_outbox(rec.outbox);
  if (mode_ == mode::idle_reject) {
    // Stopped: nobody waits in the buffer of a stopped cell.
    reject_buffer(make_error(errc::not_running, cfg_.path + " stopped"));
  } else if (instance_ && mode_ == mode::half_open) {
    // A probe's instance ran on memory that the disk does not have: the
    // child stays degraded and probes again (its supervisor, which deems
    // it degraded, would ignore an exit).
    instance_.reset();
    stop_requested_ = false;
    deg_->probe_failed();
    enter_degraded();
  } else if (instance_) {
    report_end("crash", "child_terminated", d.failure, nullptr);
    instance_.reset();
    stop_requested_ = false;
    mode_ = mode::idle_buffer;
    event_based_actor::send(parent_, exit_report{key_, gen_, d.failure});
  }
}

void cell::restore_state() {
  if (!dur_->start_error.empty())
    throw std::runtime_error(dur_->start_error);
  // Keys are path + 9 bytes; LMDB keys end at 511 bytes.
  if (cfg_.path.size() > 400)
    throw std::runtime_error("a durable agent's path is at most 400 bytes "
                             "(LMDB keys); shorten "
                             + cfg_.path.substr(0, 60) + "...");
  auto* m = instance_->state_message();
  if (!dur_->has_state || m == nullptr)
    return;
  // To start without such a snapshot, an operator moves it aside.
  auto aside = "; to start without it, stop the node and run `vigil repair "
               "--data-dir DIR --move-aside snapshots "
               + cfg_.path + "` (it is kept as a dead letter)";
  if (m->GetDescriptor()->full_name() != dur_->state_type)
    throw std::runtime_error("saved state of " + cfg_.path + " is a "
                             + dur_->state_type + ", but agent type "
                             + cfg_.type->name + " keeps a "
                             + m->GetDescriptor()->full_name() + aside);
  if (!m->ParseFromString(dur_->state))
    throw std::runtime_error("saved state of " + cfg_.path
                             + " does not parse as " + dur_->state_type
                             + aside);
}

void cell::capture_state() {
  auto& d = *dur_;
  if (auto* m = instance_ ? instance_->state_message() : nullptr) {
    d.state.clear();
    m->SerializeToString(&d.state);
    d.state_type = m->GetDescriptor()->full_name();
    d.has_state = true;
  }
}

uint64_t cell::write(write_item item, bool ack, bool shared) {
  auto& d = *dur_;
  uint64_t tok = ack ? d.next_token++ : 0;
  event_based_actor::send(d.writer, write_atom::value,
                          shared ? tok | shared_bit : tok,
                          owned_write{d.owner, std::move(item)});
  return tok;
}

detail::consume_args cell::consume_args(uint64_t seq) {
  auto& d = *dur_;
  detail::consume_args a;
  a.path = &cfg_.path;
  a.agent = &cfg_.type->name;
  a.seq = seq;
  a.state = d.has_state ? &d.state : nullptr;
  a.state_type = d.state_type;
  a.next_seq = d.next_seq;
  a.next_outbox = d.next_outbox;
  a.processed = d.processed;
  a.durability = d.journal() ? 2 : 1;
  return a;
}

caf::result<envelope> cell::accept(envelope& e) {
  auto& d = *dur_;
  auto held = d.accepting.size() + d.unaccepted.size() + buffer_.size();
  if (held >= cfg_.buffer_cap) {
    auto err = make_error(errc::buffer_overflow,
                          cfg_.path + " holds " + std::to_string(held)
                            + " envelopes (buffer_cap)");
    if (!is_request())
      own_dead_letter(std::move(e), describe(err));
    return err;
  }
  if (!d.start_error.empty()) {
    auto err = make_error(errc::not_running, d.start_error);
    if (!is_request())
      own_dead_letter(std::move(e), describe(err));
    return err;
  }
  pending p{std::move(e), make_response_promise(), 0};
  if (d.ready())
    send_accept(std::move(p));
  else
    d.unaccepted.push_back(std::move(p));
  return caf::delegated<envelope>{};
}

void cell::send_accept(pending p) {
  auto& d = *dur_;
  p.seq = d.next_seq++;
  auto tok = d.next_accept++;
  event_based_actor::send(
    d.writer, write_atom::value, tok,
    owned_write{d.owner, detail::accept_item(cfg_.path, p.seq, p.env)});
  d.accepting.push_back(std::move(p));
}

void cell::accepted(pending p) {
  bool requester = p.rp.pending() && !p.rp.async();
  if (mode_ == mode::abandoned) {
    // Committed before the newer owner's fence: it has it.
    if (requester)
      p.rp.deliver(make_error(errc::reply_dropped,
                              cfg_.path + " was replaced; the envelope is in "
                                          "its journal and the new instance "
                                          "applies it, answering nobody"));
    return;
  }
  if (mode_ == mode::idle_reject && p.env.start_deadline()) {
    // Not kept for a later start (see reject_buffer): its requester
    // learns now that it will not run.
    bury(p.env, p.rp,
         make_error(errc::not_running,
                    cfg_.path + " stopped before it started; an envelope "
                                "with a start deadline is not kept"),
         p.seq, false, !requester);
    return;
  }
  if (mode_ == mode::idle_reject) {
    if (requester)
      p.rp.deliver(make_error(errc::not_running,
                              cfg_.path + " stopped; the envelope is kept in "
                                          "its journal and applied when it "
                                          "runs again"));
    buffer_.push_back(pending{std::move(p.env), {}, p.seq});
    return;
  }
  if (p.env.start_deadline() && to_ns(now()) > p.env.deadline) {
    // Its deadline passed during the accept (an expire found nothing to
    // refuse then): refused now, not when an instance reaches it.
    bury(p.env, p.rp, expired_error(p.env), p.seq, false, !requester);
    return;
  }
  buffer_.push_back(std::move(p));
  if (instance_ && (mode_ == mode::running || mode_ == mode::half_open))
    drain();
}

void cell::not_accepted(pending p, const caf::error& err) {
  if (!p.rp.pending() || p.rp.async())
    own_dead_letter(std::move(p.env), describe(err));
  else
    p.rp.deliver(err);
}

void cell::answer(response_promise& rp, envelope out, caf::error err,
                  uint64_t seq) {
  if (dur_ && dur_->last_consume != 0 && seq != 0 && rp.pending()
      && !rp.async()) {
    dur_->after_commit[dur_->last_consume].replies.push_back(
      held_reply{std::move(rp), std::move(out), std::move(err), seq});
    return;
  }
  if (err)
    rp.deliver(std::move(err));
  else
    rp.deliver(std::move(out));
}

void cell::on_acks(const std::vector<uint64_t>& tokens,
                   const caf::error& err) {
  for (auto tok : tokens) {
    if ((tok & own_shared_bit) != 0) {
      on_own_shared_acked(tok & ~(duplicate_bit | shared_bit), err);
      continue;
    }
    on_committed(tok & ~(duplicate_bit | shared_bit),
                 (tok & duplicate_bit) != 0, err);
  }
  if (tokens.empty() && err && dur_) // a write that asked for no token failed
    on_write_error(err);
  maybe_quit();
}

void cell::on_committed(uint64_t tok, bool duplicate, const caf::error& err) {
  auto& d = *dur_;
  if ((tok & accept_bit) != 0) {
    if (tok != d.first_accept || d.accepting.empty())
      return; // sent before a reconcile, which settled it
    ++d.first_accept;
    auto p = std::move(d.accepting.front());
    d.accepting.pop_front();
    if (err) {
      // Not accepted. Refused for a newer owner: that one takes it.
      if (is(err, errc::fenced))
        forward(std::move(p));
      else
        not_accepted(std::move(p), err);
      on_write_error(err);
    } else if (duplicate) {
      if (p.env.keep_reply() && answer_again(p))
        return;
      p.rp.deliver(make_error(errc::duplicate,
                              cfg_.path + " already accepted message "
                                + std::to_string(p.env.id)));
    } else {
      accepted(std::move(p));
    }
    return;
  }
  if (on_record_committed(tok, err))
    return;
  if (tok < d.first_token)
    return; // written before a reconcile, which settled it
  if (!d.kept_in_flight.empty())
    d.settled_in_flight(tok);
  auto j = d.after_commit.find(tok);
  if (err) {
    if (j != d.after_commit.end()) {
      // Not committed: the operations did not run, and the envelope's next
      // run makes them again; these callbacks never run.
      j->second.shared.clear();
      j->second.shared_results.clear();
    }
    if (j != d.after_commit.end()
        && (is(err, errc::fenced) || leaving_ || mode_ == mode::abandoned)) {
      // The envelope stays in the journal and the path's next instance
      // applies it; this answer is not true. (A cell that stays gives the
      // replies to the envelopes' next run instead, in reconcile.)
      // Applied again by the next instance: only the answer is lost.
      for (auto& r : j->second.replies)
        r.rp.deliver(make_error(errc::reply_dropped,
                                cfg_.path + " ended before its change was "
                                            "committed; the envelope is in "
                                            "its journal and the path's next "
                                            "instance applies it"));
      for (auto& r : j->second.dropped)
        r.rp.deliver(make_error(errc::not_running,
                                cfg_.path + " ended before the envelope "
                                            "left its save; the path's next "
                                            "instance applies it"));
      d.after_commit.erase(j);
    }
    on_write_error(err);
    return;
  }
  if (j == d.after_commit.end())
    return;
  auto w = std::move(j->second);
  d.after_commit.erase(j);
  for (auto oseq : w.outbox)
    d.due.push_back(oseq);
  for (auto& [env, reason] : w.dead)
    own_dead_letter(std::move(env), std::move(reason),
                         false);
  for (auto& r : w.replies) {
    if (r.err)
      r.rp.deliver(std::move(r.err));
    else
      r.rp.deliver(std::move(r.out));
  }
  for (auto& r : w.dropped)
    r.rp.deliver(std::move(r.err));
  for (size_t i = 0; i < w.shared.size(); ++i)
    deliver_shared(w.shared[i],
                   i < w.shared_results.size() ? &w.shared_results[i]
                                               : nullptr,
                   caf::error{});
  dispatch_outbox();
}

void cell::on_write_error(const caf::error& err) {
  if (is(err, errc::fenced))
    abandon();
  else
    storage_failure(err);
}

void cell::storage_failure(const caf::error& err) {
  auto& d = *dur_;
  if (d.refencing || mode_ == mode::abandoned || leaving_)
    return;
  d.failure = err;
  request_fence(d.owner.epoch());
}

bool cell::settled() const {
  if (!dur_)
    return true;
  if (!dur_->accepting.empty())
    return false;
  for (auto& kvp : dur_->after_commit)
    if (!kvp.second.replies.empty() || !kvp.second.dropped.empty())
      return false;
  return true;
}

void cell::writer_lost() {
  auto& d = *dur_;
  auto err = make_error(errc::storage_failed,
                        cfg_.path + ": the node's writer stopped before the "
                                    "commit was confirmed");
  for (auto& p : d.accepting)
    if (p.rp.pending() && !p.rp.async())
      p.rp.deliver(err);
  d.accepting.clear();
  for (auto& kvp : d.after_commit)
    for (auto& r : kvp.second.replies)
      r.rp.deliver(err);
  d.after_commit.clear();
  d.kept_in_flight.clear();
  maybe_quit();
}

void cell::after_handled(const envelope& env, const std::string* refused,
                         const envelope& out, const caf::error& err) {
  auto& d = *dur_;
  auto* e = &env;
  ++d.processed;
  if (!d.journal()) {
    ++d.unsaved;
    if (d.spec.every_messages != 0 && d.unsaved >= d.spec.every_messages)
      save_snapshot();
    else if (d.spec.every.count() > 0 && !d.timer) {
      d.timer = true;
      delayed_send<caf::message_priority::high>(this, d.spec.every, snap_atom::value);
    }
    return;
  }
  capture_state();
  auto sends = std::move(d.sends);
  d.sends.clear();
  for (auto& x : sends)
    x.seq = d.next_outbox++;
  auto a = consume_args(d.current_seq);
  a.outbox = &sends;
  auto shared = std::move(d.shared);
  auto shared_ops = std::move(d.shared_ops);
  d.shared.clear();
  d.shared_ops.clear();
  a.shared = &shared_ops;
  if (refused != nullptr && d.current_seq != 0) {
    a.dead_reason = *refused;
    a.dead_env = e;
    a.dead_refused = true;
  }
  if (env.keep_reply() && d.current_seq != 0 && !deferred_) {
    a.keep_for = e;
    if (refused != nullptr)
      a.reply_err = &err;
    else
      a.reply = &out;
  }
  auto tok = write(detail::consume_item(a), true, !shared_ops.empty());
  d.last_consume = tok;
  if (a.keep_for != nullptr)
    d.keep_in_flight(*a.keep_for, tok, d.current_seq, a.reply, a.reply_err);
  if (!shared.empty())
    d.after_commit[tok].shared = std::move(shared);
  if (!a.dead_reason.empty())
    d.after_commit[tok].dead.emplace_back(*e, *refused);
  if (!sends.empty()) {
    auto& seqs = d.after_commit[tok].outbox;
    for (auto& x : sends) {
      seqs.push_back(x.seq);
      auto oseq = x.seq;
      d.outbox.emplace(oseq, std::move(x));
    }
  }
}

void cell::consume_failed(uint64_t seq, const envelope& e,
                          const std::string& reason, const caf::error* err) {
  ++dur_->processed;
  auto a = consume_args(seq);
  a.dead_reason = reason;
  a.dead_env = &e;
  if (err != nullptr && *err && e.keep_reply()) {
    a.keep_for = &e;
    a.reply_err = err;
  }
  dur_->last_consume = write(detail::consume_item(a), true);
  if (a.keep_for != nullptr)
    dur_->keep_in_flight(e, dur_->last_consume, seq, nullptr, a.reply_err);
  if (!reason.empty())
    dur_->after_commit[dur_->last_consume].dead.emplace_back(e, reason);
}

uint64_t cell::save_snapshot(const envelope* dropped,
                             const std::string* reason) {
  auto& d = *dur_;
  capture_state();
  std::vector<const envelope*> waiting;
  for (auto& p : buffer_) {
    waiting.push_back(&p.env);
    p.saved = true;
  }
  auto a = consume_args(0);
  a.pending = &waiting;
  if (dropped != nullptr && reason != nullptr) {
    a.dead_env = dropped;
    a.dead_reason = *reason;
  }
  auto tok = write(detail::consume_item(a), true);
  if (!a.dead_reason.empty()) // listed in memory once committed
    d.after_commit[tok].dead.emplace_back(*dropped, *reason);
  d.unsaved = 0;
  return tok;
}

} // namespace vigil::detail
