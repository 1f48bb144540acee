// The cell's outbox: what a journal agent's handler sends, committed with
// its state change and delivered after that commit, at least once, to the
// receiver's current cell (see README, "Durability"); and the answers a
// journal agent gives again, to a resend of an envelope it accepted.

#include "cell_impl.hpp"

namespace vigil::detail {

void cell::adopt_outbox(const std::vector<records::OutboxEntry>& entries) {
  auto& d = *dur_;
  for (auto& oe : entries) {
    auto& x = d.outbox[oe.seq()];
    x.seq = oe.seq();
    if (oe.has_effect())
      x.effect = std::make_shared<records::Effect>(oe.effect());
    else {
      x.to = oe.to();
      x.env = detail::from_record(oe.env());
    }
    d.due.push_back(oe.seq());
    d.next_outbox = std::max(d.next_outbox, oe.seq() + 1);
  }
}

void cell::dispatch_outbox() {
  auto& d = *dur_;
  if (mode_ == mode::abandoned || !d.ready())
    return; // the path's current owner delivers from the disk
  while (!d.due.empty() && d.in_flight < outbox_window) {
    auto oseq = d.due.front();
    d.due.pop_front();
    auto i = d.outbox.find(oseq);
    if (i == d.outbox.end())
      continue;
    if (i->second.effect) {
      ++d.in_flight;
      dispatch_effect(oseq, i->second.effect);
      continue;
    }
    auto dest = rt_->lookup_bound(i->second.to);
    if (!dest.actor) {
      retry_outbox(oseq);
      continue;
    }
    auto env = i->second.env;
    if (dest.gauge != nullptr) {
      // Flow control: never more than the receiver's queue_cap. The entry
      // waits (with those behind it, in order) until there is room.
      if (!dest.gauge->try_enter()) {
        d.due.push_front(oseq);
        if (!d.room_wait) {
          d.room_wait = true;
          delayed_send<caf::message_priority::high>(this, room_pause, outbox_atom::value);
        }
        return;
      }
      env.flags |= envelope::queued_flag;
    }
    ++d.in_flight;
    event_based_actor::request(dest.actor, std::chrono::seconds{30},
                               std::move(env))
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
              if (undelivered(err))
                outbox_not_delivered(oseq);
              else
                outbox_delivered(oseq);
            });
  }
}

void cell::retry_outbox(uint64_t oseq) {
  auto& d = *dur_;
  delayed_send<caf::message_priority::high>(this, d.outbox_retry.next(d.outbox_track), outbox_atom::value,
               oseq);
}

void cell::outbox_not_delivered(uint64_t oseq) {
  auto& d = *dur_;
  if (d.in_flight > 0) // 0 after a reconcile
    --d.in_flight;
  retry_outbox(oseq);
  dispatch_outbox();
}

void cell::outbox_delivered(uint64_t oseq) {
  auto& d = *dur_;
  if (d.in_flight > 0) // 0 after a reconcile
    --d.in_flight;
  // While fencing again after a failed commit the deletion would carry
  // the old epoch; the reload redelivers the entry, which the receiver
  // knows by its id.
  if (mode_ != mode::abandoned && d.ready() && d.outbox.erase(oseq) > 0)
    write(detail::outbox_done_item(cfg_.path, oseq), false);
  resilience::backoff::reset(d.outbox_track);
  dispatch_outbox();
}

bool cell::answer_again(pending& p) {
  if (!p.rp.pending() || p.rp.async())
    return false;
  // Still waiting here (accepted before a crash or a stop, or kept while
  // the agent was stopped): the resend's requester is answered when it is
  // handled, unless a live requester waits for it already.
  // Held open for its calls (cell_records.cpp): answered at its consume.
  if (held_ && held_->p.env.id == p.env.id
      && held_->p.env.origin == p.env.origin
      && !(held_->p.rp.pending() && !held_->p.rp.async())
      && !(held_->slot && held_->slot->delivered)) {
    held_->p.rp = std::move(p.rp);
    if (held_->slot) // a deferred answer after the consume goes to it too
      held_->slot->rp = held_->p.rp;
    return true;
  }
  for (auto& q : buffer_)
    if (q.seq != 0 && q.env.id == p.env.id && q.env.origin == p.env.origin) {
      if (q.rp.pending() && !q.rp.async())
        return false;
      q.rp = std::move(p.rp);
      return true;
    }
  // Consumed, its commit on its way (the resend's accept reached the
  // writer first): answered with the kept answer once it is committed.
  // One requester per journal entry, as for a held or buffered one (if
  // the commit fails, the entry runs again and answers that one).
  auto& d = *dur_;
  if (auto i = d.kept_in_flight.find({p.env.origin, p.env.id});
      i != d.kept_in_flight.end()) {
    auto& k = i->second;
    auto& replies = d.after_commit[k.tok].replies;
    for (auto& r : replies)
      if (r.seq == k.seq)
        return false;
    replies.push_back(held_reply{std::move(p.rp), k.out, k.err, k.seq});
    return true;
  }
  // Consumed: its answer was stored in that commit, committed before the
  // writer found this resend a duplicate.
  auto& st = rt_->storage();
  if (!st)
    return false;
  std::string raw;
  bool found = false;
  if (st->get(db::idempotency, guard_key(cfg_.path, p.env.origin, p.env.id),
              raw, found) || !found)
    return false;
  records::IdempotencyRecord ir;
  if (auto f = decode_record(raw, ir); f != record_fault::none) {
    // Its answer cannot be known: said so, not as a plain duplicate.
    p.rp.deliver(make_error(
      errc::duplicate,
      cfg_.path + " already accepted message " + std::to_string(p.env.id)
        + ", and the answer it kept for it is unreadable ([idempotency] "
        + printable_key(guard_key(cfg_.path, p.env.origin, p.env.id)) + ": "
        + describe(f, raw, ir) + ")"));
    return true;
  }
  if (!ir.answered())
    return false;
  auto ans = stored_answer(ir);
  if (ans)
    p.rp.deliver(std::move(*ans));
  else
    p.rp.deliver(std::move(ans.error()));
  return true;
}

} // namespace vigil::detail
