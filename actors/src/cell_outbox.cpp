// The cell's outbox: what a journal agent's handler sends, committed with
// its state change and delivered after that commit, at least once, to the
// receiver's current cell (see README, "Durability").

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
              if (undelivered(err))
                outbox_not_delivered(oseq);
              else
                outbox_delivered(oseq);
            });
  }
}

void cell::retry_outbox(uint64_t oseq) {
  auto& d = *dur_;
  delayed_send(this, d.outbox_retry.next(d.outbox_track), outbox_atom::value,
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

} // namespace vigil::detail
