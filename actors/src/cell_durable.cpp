// The cell's durability: snapshot and journal modes, the hand-over to the
// next cell at a path, the reload after a failed commit, and the outbox
// (see README, "Durability").

#include "cell_impl.hpp"

namespace vigil::detail {

void cell::init_durable(const durability_spec& spec) {
  dur_ = std::make_unique<durable>();
  dur_->spec = spec;
  dur_->writer = rt_->writer();
  if (auto rec = rt_->claim(cfg_.path)) {
    // Records of the other durable mode are not migrated: refuse to start
    // rather than misread them (a journal left to a snapshot child would
    // be replayed at every start).
    uint32_t was = rec->has_snapshot ? rec->snapshot.durability() : 0;
    if (!rec->journal.empty() && was == 0)
      was = 2;
    uint32_t now = dur_->journal() ? 2 : 1;
    if (was != 0 && was != now) {
      dur_->mode_mismatch = cfg_.path + " is a "
                       + (was == 2 ? "journal" : "snapshot")
                       + " agent in this data dir but its child spec says "
                       + to_string(dur_->spec.mode)
                       + "; records are not migrated: keep the old mode, "
                         "or move its records away (vigil inspect shows "
                         "them) and use another data dir";
      rt_->hand_over(std::move(*rec)); // kept for a later, matching cell
      return;
    }
    restore(*rec);
  }
}

void cell::restore(const recovered_agent& rec) {
  auto& d = *dur_;
  if (rec.has_snapshot) {
    auto& s = rec.snapshot;
    d.has_state = !s.state_type().empty();
    d.state = s.state();
    d.state_type = s.state_type();
    d.next_seq = std::max<uint64_t>(1, s.next_seq());
    d.next_outbox = std::max<uint64_t>(1, s.next_outbox());
    d.processed = s.processed();
    for (auto& r : s.pending())
      buffer_.push_back(pending{detail::from_record(r), {}, 0});
  }
  for (auto& je : rec.journal) {
    buffer_.push_back(pending{detail::from_record(je.env()), {}, je.seq()});
    d.next_seq = std::max(d.next_seq, je.seq() + 1);
  }
  adopt_outbox(rec.outbox);
}

void cell::adopt_outbox(const std::vector<records::OutboxEntry>& entries) {
  auto& d = *dur_;
  for (auto& oe : entries) {
    d.outbox.emplace(oe.seq(), detail::outbox_send{
                                 oe.seq(), oe.to(),
                                 detail::from_record(oe.env())});
    d.ready.push_back(oe.seq());
    d.next_outbox = std::max(d.next_outbox, oe.seq() + 1);
  }
}

void cell::check_in() {
  if (!dur_ || checked_in_)
    return;
  checked_in_ = true;
  auto& d = *dur_;
  recovered_agent rec;
  rec.path = cfg_.path;
  rec.has_snapshot = true;
  auto& s = rec.snapshot;
  s.set_format(store::format);
  s.set_path(cfg_.path);
  s.set_agent(cfg_.type->name);
  if (d.has_state) {
    s.set_state_type(d.state_type);
    s.set_state(d.state);
  }
  s.set_next_seq(d.next_seq);
  s.set_next_outbox(d.next_outbox);
  s.set_processed(d.processed);
  s.set_durability(d.journal() ? 2 : 1);
  auto kept = make_error(errc::not_running,
                         cfg_.path + " stopped; the envelope is kept in its "
                                     "journal and applied when it runs "
                                     "again");
  auto take = [&](pending& p) {
    if (p.rp.pending() && !p.rp.async())
      p.rp.deliver(kept);
    if (p.seq == 0) {
      *s.add_pending() = detail::to_record(p.env);
      return;
    }
    records::JournalEntry je;
    je.set_format(store::format);
    je.set_seq(p.seq);
    *je.mutable_env() = detail::to_record(p.env);
    rec.journal.push_back(std::move(je));
  };
  for (auto& p : buffer_)
    take(p);
  for (auto& p : d.accepting)
    take(p);
  for (auto& [oseq, o] : d.outbox) {
    records::OutboxEntry oe;
    oe.set_format(store::format);
    oe.set_seq(oseq);
    oe.set_to(o.to);
    *oe.mutable_env() = detail::to_record(o.env);
    rec.outbox.push_back(std::move(oe));
  }
  buffer_.clear();
  d.accepting.clear();
  d.first_accept = d.next_accept; // late acks of those are ignored
  d.outbox.clear();
  d.ready.clear();
  d.after_commit.clear();
  d.in_flight = 0;
  d.sends.clear();
  rt_->hand_over(std::move(rec));
}

void cell::restore_state() {
  if (!dur_->mode_mismatch.empty())
    throw std::runtime_error(dur_->mode_mismatch);
  // Keys are path + 9 bytes; LMDB keys end at 511 bytes.
  if (cfg_.path.size() > 400)
    throw std::runtime_error("a durable agent's path is at most 400 bytes "
                             "(LMDB keys); shorten "
                             + cfg_.path.substr(0, 60) + "...");
  if (!dur_->writer)
    throw std::runtime_error("durability " + std::string{to_string(
                               dur_->spec.mode)}
                             + " needs a data dir; set node_config::data_dir");
  auto* m = instance_->state_message();
  if (!dur_->has_state || m == nullptr)
    return;
  if (m->GetDescriptor()->full_name() != dur_->state_type)
    throw std::runtime_error("saved state of " + cfg_.path + " is a "
                             + dur_->state_type + ", but agent type "
                             + cfg_.type->name + " keeps a "
                             + m->GetDescriptor()->full_name());
  if (!m->ParseFromString(dur_->state))
    throw std::runtime_error("saved state of " + cfg_.path
                             + " does not parse as " + dur_->state_type);
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

uint64_t cell::write(write_item item, bool ack) {
  auto& d = *dur_;
  uint64_t tok = ack ? d.next_token++ : 0;
  event_based_actor::send(d.writer, write_atom::value, tok,
                          std::move(item));
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
  if (d.accepting.size() + buffer_.size() >= cfg_.buffer_cap) {
    auto err = make_error(errc::buffer_overflow,
                          cfg_.path + " holds "
                            + std::to_string(buffer_.size()
                                             + d.accepting.size())
                            + " envelopes (buffer_cap)");
    if (!is_request())
      rt_->add_dead_letter(cfg_.path, std::move(e), describe(err));
    return err;
  }
  auto seq = d.next_seq++;
  auto tok = d.next_accept++;
  event_based_actor::send(d.writer, write_atom::value, tok,
                          detail::accept_item(cfg_.path, seq, e));
  d.accepting.push_back(pending{std::move(e), make_response_promise(), seq});
  return caf::delegated<envelope>{};
}

void cell::on_committed(uint64_t tok, bool duplicate, caf::error& err) {
  auto& d = *dur_;
  if ((tok & accept_bit) != 0) {
    if (tok != d.first_accept || d.accepting.empty())
      return; // cannot happen: the writer acknowledges in order
    ++d.first_accept;
    auto p = std::move(d.accepting.front());
    d.accepting.pop_front();
    bool async = !p.rp.pending() || p.rp.async();
    if (err) {
      // Not accepted: the sender is told (or it is a dead letter). `err`
      // is shared by every token of this acknowledgement: copy it.
      if (async)
        rt_->add_dead_letter(cfg_.path, std::move(p.env), describe(err));
      p.rp.deliver(err);
      storage_failure(err);
    } else if (duplicate) {
      p.rp.deliver(make_error(errc::duplicate,
                              cfg_.path + " already accepted message "
                                + std::to_string(p.env.id)));
    } else {
      buffer_.push_back(std::move(p));
      if (instance_
          && (mode_ == mode::running || mode_ == mode::half_open))
        drain();
    }
    return;
  }
  if (err) {
    d.after_commit.erase(tok);
    storage_failure(err);
    return;
  }
  // Only commits that carry outbox entries are registered.
  auto j = d.after_commit.find(tok);
  if (j == d.after_commit.end())
    return;
  for (auto oseq : j->second)
    d.ready.push_back(oseq);
  d.after_commit.erase(j);
  dispatch_outbox();
}

void cell::storage_failure(const caf::error& err) {
  auto& d = *dur_;
  if (d.resetting)
    return;
  d.resetting = true;
  event_based_actor::request(d.writer, caf::infinite, reset_atom::value)
    .then([this, err]() { reload(err); },
          [this, err](caf::error&) { reload(err); });
}

void cell::reload(const caf::error& why) {
  auto& d = *dur_;
  d.resetting = false;
  auto& st = *rt_->storage();
  records::Snapshot snap;
  bool found = false;
  std::vector<records::JournalEntry> journal;
  std::vector<records::OutboxEntry> outbox;
  auto s1 = st.snapshot(cfg_.path, snap, found);
  auto s2 = s1 ? s1 : st.mailbox(cfg_.path, journal);
  auto s3 = s2 ? s2 : st.outbox(cfg_.path, outbox);
  if (s3) {
    // Cannot read the truth back: stop serving rather than guess.
    quit(make_error(errc::storage_failed,
                    cfg_.path + ": cannot reload after a failed commit: "
                      + s3.message()));
    return;
  }
  d.has_state = found && !snap.state_type().empty();
  d.state = found ? snap.state() : std::string{};
  d.state_type = found ? snap.state_type() : std::string{};
  d.processed = found ? snap.processed() : 0;
  d.next_seq = std::max<uint64_t>(d.next_seq, found ? snap.next_seq() : 1);
  d.next_outbox = std::max<uint64_t>(d.next_outbox,
                                     found ? snap.next_outbox() : 1);
  // The journal on disk is the truth; requesters still waiting keep their
  // promise where the envelope is still there.
  std::map<uint64_t, response_promise> waiting;
  std::list<pending> others;
  for (auto& p : buffer_) {
    if (p.seq != 0)
      waiting.emplace(p.seq, std::move(p.rp));
    else
      others.push_back(std::move(p));
  }
  buffer_.clear();
  for (auto& je : journal) {
    pending p{detail::from_record(je.env()), {}, je.seq()};
    if (auto i = waiting.find(je.seq()); i != waiting.end())
      p.rp = std::move(i->second);
    buffer_.push_back(std::move(p));
    d.next_seq = std::max(d.next_seq, je.seq() + 1);
  }
  buffer_.splice(buffer_.end(), others);
  d.outbox.clear();
  d.ready.clear();
  d.after_commit.clear();
  d.in_flight = 0;
  adopt_outbox(outbox);
  if (instance_) {
    instance_.reset();
    stop_requested_ = false;
    mode_ = mode::idle_buffer;
    event_based_actor::send(parent_, exit_atom::value, key_, gen_, why);
  }
  dispatch_outbox();
}

void cell::after_handled() {
  auto& d = *dur_;
  ++d.processed;
  if (!d.journal()) {
    ++d.unsaved;
    if (d.spec.every_messages != 0 && d.unsaved >= d.spec.every_messages)
      save_snapshot();
    else if (d.spec.every.count() > 0 && !d.timer) {
      d.timer = true;
      delayed_send(this, d.spec.every, snap_atom::value);
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
  auto tok = write(detail::consume_item(a), true);
  if (!sends.empty()) {
    auto& seqs = d.after_commit[tok];
    for (auto& x : sends) {
      seqs.push_back(x.seq);
      auto oseq = x.seq;
      d.outbox.emplace(oseq, std::move(x));
    }
  }
}

void cell::consume_failed(uint64_t seq, const envelope& e,
                          const std::string& reason) {
  ++dur_->processed;
  auto a = consume_args(seq);
  a.dead_reason = reason;
  a.dead_env = &e;
  write(detail::consume_item(a), true);
  if (!reason.empty())
    rt_->add_dead_letter(cfg_.path, e, reason, false);
}

void cell::save_snapshot() {
  auto& d = *dur_;
  capture_state();
  std::vector<const envelope*> waiting;
  for (auto& p : buffer_)
    waiting.push_back(&p.env);
  auto a = consume_args(0);
  a.pending = &waiting;
  write(detail::consume_item(a), true);
  d.unsaved = 0;
}

void cell::dispatch_outbox() {
  auto& d = *dur_;
  while (!d.ready.empty() && d.in_flight < outbox_window) {
    auto oseq = d.ready.front();
    d.ready.pop_front();
    auto i = d.outbox.find(oseq);
    if (i == d.outbox.end())
      continue;
    auto dest = rt_->lookup(i->second.to);
    if (!dest) {
      retry_outbox(oseq);
      continue;
    }
    ++d.in_flight;
    event_based_actor::request(dest, std::chrono::seconds{30},
                               i->second.env)
      .then(
            [this, oseq](envelope& rep) {
              // A stand-in answered for a degraded receiver: the envelope
              // was not applied, so it is not delivered yet.
              if (rep.degraded())
                outbox_not_delivered(oseq);
              else
                outbox_delivered(oseq);
            },
            [this, oseq](caf::error& err) {
              if (unreachable(err))
                outbox_not_delivered(oseq);
              else
                outbox_delivered(oseq);
            });
  }
}

bool cell::unreachable(const caf::error& err) {
  return err == caf::sec::request_timeout
         || err == caf::sec::request_receiver_down
         || is(err, errc::not_found) || is(err, errc::not_running)
         || is(err, errc::buffer_overflow) || is(err, errc::storage_failed)
         || is(err, errc::shutting_down);
}

void cell::retry_outbox(uint64_t oseq) {
  delayed_send(this, std::chrono::milliseconds{250}, outbox_atom::value,
               oseq);
}

void cell::outbox_not_delivered(uint64_t oseq) {
  auto& d = *dur_;
  if (d.in_flight > 0) // 0 after a check_in
    --d.in_flight;
  retry_outbox(oseq);
  dispatch_outbox();
}

void cell::outbox_delivered(uint64_t oseq) {
  auto& d = *dur_;
  if (d.in_flight > 0) // 0 after a check_in
    --d.in_flight;
  if (d.outbox.erase(oseq) > 0)
    write(detail::outbox_done_item(cfg_.path, oseq), false);
  dispatch_outbox();
}

} // namespace vigil::detail
