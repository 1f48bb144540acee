// A durable saga run's journal: it commits its progress (records::SagaRun)
// through the node's writer before every call it sends and when it
// finishes, and resumes from that record after a crash of its node.

#include <chrono>

#include "saga_run.hpp"
#include "vigil/actors/detail/envelope_record.hpp"
#include "vigil/actors/writer.hpp"
#include "vigil/persistence/record.hpp"

namespace vigil {

std::string saga_run_key(const std::string& sup_path, uint64_t origin,
                         uint64_t id) {
  return guard_key(sup_path, origin, id);
}

} // namespace vigil

namespace vigil::detail {

namespace {

/// The run as a record: phase, steps so far, the call in flight.
void fill(saga_state& st, const char* phase) {
  auto& d = *st.dur;
  auto& r = d.rec;
  r.set_format(store::format);
  r.set_path(d.cfg->sup_path);
  if (!r.has_input())
    *r.mutable_input() = to_record(st.input);
  r.set_phase(phase);
  *r.mutable_outcome() = st.outcome;
  r.set_next(static_cast<uint32_t>(st.next));
  r.clear_ran_and_failed();
  for (auto n : st.ran_and_failed)
    r.add_ran_and_failed(n);
  auto now = unix_ms();
  if (r.started_ms() == 0)
    r.set_started_ms(now);
  r.set_updated_ms(now);
}

/// Sends `item` to the writer as the run's one commit in flight.
void write(saga_actor* self, write_item item, std::function<void()> then) {
  auto& d = *self->state.dur;
  for (auto& [path, env, reason, journal] : d.owed)
    item.muts.push_back(dead_letter_record(path, env, reason, 0, journal));
  d.token = ++d.next_token;
  d.then = std::move(then);
  d.sent = item;
  d.sent_owner = d.cfg->owner->load();
  self->send(d.cfg->writer, write_atom::value, d.token,
             owned_write{owner_ref{d.sent_owner}, std::move(item)});
}

/// Answers every requester with `x`.
template <class T>
void answer_all(saga_state& st, const T& x) {
  if (st.rp.pending())
    st.rp.deliver(x);
  for (auto& w : st.waiters)
    if (w.pending())
      w.deliver(x);
  st.waiters.clear();
}

} // namespace

void commit_then(saga_actor* self, std::function<void()> then) {
  auto& st = self->state;
  auto& d = *st.dur;
  fill(st, st.outcome.failed_step().empty() ? "executing" : "compensating");
  d.rec.set_call_kind(static_cast<uint32_t>(st.cur.what));
  d.rec.set_call_step(static_cast<uint32_t>(st.cur.step));
  if (d.rec.call_id() == st.cur.id)
    d.rec.set_call_attempts(d.rec.call_attempts() + 1);
  else
    d.rec.set_call_attempts(1);
  d.rec.set_call_id(st.cur.id);
  write_item item;
  item.muts.push_back(put_record(db::sagas, d.key, d.rec));
  write(self, std::move(item), std::move(then));
}

void finish_durable(saga_actor* self, envelope out) {
  auto& st = self->state;
  auto& d = *st.dur;
  fill(st, "finished");
  d.rec.set_call_kind(0);
  d.rec.set_finished_ms(d.rec.updated_ms());
  // One id per run's outcome, so that a journal agent at outcome_to takes
  // a redelivery once.
  out.id = derive_id(st.input, st.steps.size(), saga_kind::outcome, 0);
  out.origin = 0;
  out.sender = d.cfg->sup_path;
  out.trace_id = st.input.trace_id;
  out.trace_id_high = st.input.trace_id_high;
  out.trace_flags = st.input.trace_flags;
  write_item item;
  item.muts.push_back(put_record(db::sagas, d.key, d.rec));
  if (!d.cfg->outcome_to.empty()) {
    records::OutboxEntry oe;
    oe.set_format(store::format);
    oe.set_seq(out.id);
    oe.set_to(d.cfg->outcome_to);
    *oe.mutable_env() = to_record(out);
    item.muts.push_back(
      put_record(db::outbox, path_key(d.cfg->sup_path, out.id), oe));
  }
  write(self, std::move(item), [self, out]() mutable {
    auto& st = self->state;
    st.dur->done = true;
    st.dur->out = out;
    count_outcome(*st.rt, st.outcome);
    if (st.sup)
      self->send(st.sup, saga_done_atom::value, st.origin, st.id, out);
    answer_all(st, out);
    // Stays until the supervisor has the outcome (saga_stop_atom), so
    // that a resend attached meanwhile is answered.
  });
}

void suspend(saga_actor* self) {
  auto& st = self->state;
  answer_all(st, make_error(errc::not_running,
                            st.dur->cfg->sup_path
                              + " stopped before this saga run finished; "
                                "the run is journaled and resumes when the "
                                "saga runs again: resend the input with "
                                "the same id for its outcome"));
  self->quit();
}

void attach(saga_actor* self, caf::response_promise rp) {
  auto& st = self->state;
  if (st.dur->done) {
    counters::bump(st.rt->stats().saga_outcomes_resent);
    rp.deliver(st.dur->out);
  }
  else
    st.waiters.push_back(std::move(rp));
}

void on_committed(saga_actor* self, const std::vector<uint64_t>& tokens,
                  const caf::error& err) {
  auto& d = *self->state.dur;
  bool mine = false;
  for (auto t : tokens)
    mine = mine || (t & ~duplicate_bit) == d.token;
  // A failed commit is told without tokens; a refused write with its own.
  if (err && (!d.then || (!tokens.empty() && !mine)))
    return; // a commit it does not wait for
  if (err && is(err, errc::fenced)) {
    // A newer instance of the saga owns its runs: it resumes this one.
    answer_all(self->state,
               make_error(errc::not_running,
                          d.cfg->sup_path + " was replaced while this run "
                                            "went on; its next instance "
                                            "resumes it: resend the input "
                                            "for the outcome"));
    return self->quit();
  }
  if (err) {
    // Not committed (a failed commit, or one refused after another's
    // failure): nothing of it is on disk, and nothing was sent after it.
    // The supervisor says when to send it again (after a new fence).
    self->send(self->state.sup, saga_commit_failed_atom::value, d.sent_owner);
    return;
  }
  if (!mine || !d.then)
    return;
  auto then = std::move(d.then);
  d.then = nullptr;
  d.token = 0;
  for (auto& [path, env, reason, journal] : d.owed)
    self->state.rt->add_dead_letter(path, env, reason, false, journal);
  d.owed.clear();
  then();
}

void retry_commit(saga_actor* self) {
  auto& d = *self->state.dur;
  if (!d.then || self->state.stopping)
    return;
  d.token = ++d.next_token;
  d.sent_owner = d.cfg->owner->load();
  self->send(d.cfg->writer, write_atom::value, d.token,
             owned_write{owner_ref{d.sent_owner}, d.sent});
}

void resume(saga_actor* self, records::SagaRun& rec) {
  auto& st = self->state;
  auto& d = *st.dur;
  st.started = true;
  st.input = from_record(rec.input());
  st.origin = st.input.origin;
  st.id = st.input.id;
  d.key = saga_run_key(d.cfg->sup_path, st.input.origin, st.input.id);
  rec.set_resumes(rec.resumes() + 1);
  counters::bump(st.rt->stats().saga_resumed);
  d.rec = rec;
  // The record names its steps: a tree whose saga has other steps now
  // cannot resume it (the supervisor does not try; this is a guard).
  if (auto why = other_steps(rec, st.steps); !why.empty())
    return self->quit(make_error(errc::bad_payload, why));
  st.outcome = rec.outcome();
  st.next = rec.next();
  for (int i = 0; i < rec.ran_and_failed_size()
                  && i < static_cast<int>(st.ran_and_failed.size());
       ++i)
    st.ran_and_failed[i] = rec.ran_and_failed(i);
  st.cur.what = static_cast<saga_kind>(rec.call_kind());
  st.cur.step = rec.call_step();
  st.cur.id = rec.call_id();
  if (st.cur.step >= st.steps.size())
    st.cur.what = saga_kind::outcome; // nothing to resend: go on
  bool call = st.cur.what == saga_kind::execute
              || st.cur.what == saga_kind::compensate;
  auto& journal = d.cfg->journal_steps;
  if (call && (st.cur.step >= journal.size() || !journal[st.cur.step]))
    return call_in_doubt(self);
  resend_call(self, true);
}

} // namespace vigil::detail
