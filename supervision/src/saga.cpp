#include "vigil/supervision/saga.hpp"

#include "saga_run.hpp"
#include "vigil/actors/report.hpp"
#include "vigil/resilience/backoff.hpp"

// One saga run: executes the steps in order, and when one fails compensates
// the ones that ran, in reverse. Its rules, which make compensation exact:
//
// - One request at a time, and every request is waited for: a step's
//   answer is the only way to know whether it ran. No request has a
//   timeout of its own; the step's deadline travels in its envelope.
// - An execute carries a start deadline (now + step_timeout, capped by the
//   saga input's deadline). A step that has not started by then is refused
//   `expired` (the saga tells the cell at the deadline, so that a step
//   waiting out a restart backoff answers at once); one that started in
//   time is waited for, and if it finishes late it ran: the saga fails at
//   it and compensates it too.
// - Every execute and compensation has a message id derived from the saga
//   input's (origin, id), the step and the kind, so that a journal step
//   recognizes a redelivery or a retry as `duplicate`. A compensation is
//   retried only after an answer that says it did not take effect, under
//   the same id if it did not run (not delivered), under the next id if it
//   ran and failed (a journal step's failed envelope stays accepted).
// - A stand-in's answer (degraded) is not a step's: it fails the step, or
//   the compensation attempt.
// - When its supervisor ends (stop or restart), the run sends nothing more:
//   it waits for what is in flight, puts every compensation it still owes
//   into the dead letters, and answers its requester.

namespace vigil::detail {

/// A message id for `what` of step `k`, attempt salt `salt`: a splitmix64
/// of the saga input's identity, never 0.
uint64_t derive_id(const envelope& input, size_t k, saga_kind what,
                   uint32_t salt) {
  uint64_t z = input.id ^ (input.origin * 0x9e3779b97f4a7c15ull);
  for (uint64_t part : {uint64_t{k} + 1, uint64_t(what), uint64_t{salt}}) {
    z += part * 0xbf58476d1ce4e5b9ull + 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
  }
  return z != 0 ? z : 1;
}

namespace {

using retry_atom = caf::atom_constant<caf::atom("vsagaretry")>;
using deadline_atom = caf::atom_constant<caf::atom("vsagadl")>;
using grace_atom = caf::atom_constant<caf::atom("vsagagrace")>;
using resend_atom = caf::atom_constant<caf::atom("vsagaagain")>;

using kind = saga_kind;
using call = saga_call;

/// How often a durable run re-sends a call whose answer was lost, before
/// it counts the call in doubt.
constexpr uint32_t max_resends = 10;

int64_t now_ns(saga_actor* self) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
           self->clock().now().time_since_epoch())
    .count();
}

envelope wrap(const saga_state& st, const google::protobuf::Message& m,
              uint64_t id) {
  envelope e;
  e.type = vigil::type_symbol(m);
  m.SerializeToString(&e.payload);
  // The id is chosen here (origin 0: chosen by the caller), the same for
  // every delivery of this call.
  st.rt->stamp(e, id, 0, &st.input);
  e.idempotency_key = st.input.idempotency_key;
  e.sender = "saga";
  if (st.dur) // a resend after a crash gets the step's kept answer
    e.flags |= envelope::keep_reply_flag;
  return e;
}

void finish(saga_actor* self) {
  auto& st = self->state;
  envelope out;
  out.type = SagaOutcome::descriptor()->full_name();
  st.outcome.SerializeToString(&out.payload);
  if (st.dur)
    return finish_durable(self, std::move(out));
  count_outcome(*st.rt, st.outcome);
  if (st.sup && st.id != 0)
    self->send(st.sup, saga_done_atom::value, st.origin, st.id, out);
  st.rp.deliver(std::move(out));
  self->quit();
}

void execute_next(saga_actor* self);
void send_execute(saga_actor* self, size_t k, bool resumed);
void compensate(saga_actor* self, size_t i);

/// True once the supervisor has begun to end (it said so, or its flag
/// says so already): the run sends nothing more.
bool ending(saga_state& st) {
  if (!st.stopping && st.ended && st.ended->load(std::memory_order_acquire))
    st.stopping = true;
  return st.stopping;
}

/// Compensates the steps before `count` that ran, last first, then
/// answers.
void compensate_from(saga_actor* self, size_t count) {
  auto& st = self->state;
  while (count > 0 && step_of(st, count - 1).status() != "executed")
    --count;
  if (count == 0)
    return finish(self);
  compensate(self, count - 1);
}

/// The saga failed at step `k` (which did not take effect, or took effect
/// late and is compensated as well when `ran`).
void fail(saga_actor* self, size_t k, const std::string& why, bool ran) {
  auto& st = self->state;
  auto& step = step_of(st, k);
  if (!ran) {
    step.set_status("failed");
    step.set_error(why);
  }
  if (st.outcome.failed_step().empty()) {
    st.outcome.set_failed_step(step.path());
    st.outcome.set_failure(why);
  }
  compensate_from(self, ran ? k + 1 : k);
}

/// Sends `env` to step `k` as the one call in flight and watches the step's
/// actor, so that a cell that dies holding the request does not leave the
/// run waiting for ever.
template <class OnReply, class OnError>
void send_now(saga_actor* self, kind what, size_t k, caf::actor dest,
              envelope env, OnReply on_reply, OnError on_error) {
  auto& st = self->state;
  auto& c = st.cur;
  c.waiting = true;
  c.what = what;
  c.step = k;
  c.id = env.id;
  c.deadline = what == kind::execute ? env.deadline : 0;
  c.dest = dest;
  auto seq = ++c.seq;
  c.on_error = on_error;
  self->monitor(dest);
  auto done = [self, seq] {
    auto& c = self->state.cur;
    if (!c.waiting || c.seq != seq)
      return false;
    c.waiting = false;
    self->demonitor(c.dest);
    c.dest = nullptr;
    c.on_error = nullptr;
    return true;
  };
  self->request(dest, caf::infinite, std::move(env))
    .then(
      [done, on_reply](envelope& rep) mutable {
        if (done())
          on_reply(rep);
      },
      [done, on_error](caf::error& err) mutable {
        if (done())
          on_error(err);
      });
  if (c.deadline != 0) {
    auto wait = c.deadline - now_ns(self) + 1;
    self->delayed_send(self, caf::timespan{std::max<int64_t>(wait, 0)},
                       deadline_atom::value, seq);
  }
}

/// Sends a call; a durable run commits its progress first, so that a
/// crash after the send resumes by sending the same call again.
template <class OnReply, class OnError>
void send_call(saga_actor* self, kind what, size_t k, caf::actor dest,
               envelope env, OnReply on_reply, OnError on_error) {
  auto& st = self->state;
  if (!st.dur)
    return send_now(self, what, k, std::move(dest), std::move(env),
                    std::move(on_reply), std::move(on_error));
  st.cur.what = what;
  st.cur.step = k;
  st.cur.id = env.id;
  commit_then(self, [self, what, k, env{std::move(env)}, on_reply,
                     on_error]() mutable {
    auto& st = self->state;
    if (ending(st))
      return suspend(self);
    // The step's cell may have changed during the commit.
    auto dest = st.rt->lookup(st.steps[k]);
    if (!dest) {
      auto err = make_error(errc::not_found, st.steps[k]);
      return on_error(err);
    }
    send_now(self, what, k, std::move(dest), std::move(env),
             std::move(on_reply), std::move(on_error));
  });
}

/// A durable run's call to a journal step lost its answer: sent again
/// under the same id, the step answers with what it kept (or applies it
/// once, if it had not). True if it will be resent.
bool resend_lost(saga_actor* self, size_t k) {
  auto& st = self->state;
  if (!st.dur || k >= st.dur->cfg->journal_steps.size()
      || !st.dur->cfg->journal_steps[k] || st.dur->resends >= max_resends)
    return false;
  ++st.dur->resends;
  self->delayed_send(self, st.opts.retry_delay, resend_atom::value,
                     st.cur.seq);
  return true;
}

/// Delay before the compensation retry after `n` failed attempts (from 1):
/// `retry_delay`, doubling, at most 2^16 times it.
resilience::duration retry_delay(const saga_spec& opts, uint32_t n) {
  resilience::backoff_policy p;
  p.initial = opts.retry_delay;
  p.max = p.initial <= resilience::max_delay / 65536 ? p.initial * 65536
                                                      : resilience::max_delay;
  resilience::backoff b{p, resilience::steady_clock::instance()};
  return b.base(n - 1);
}

/// The next attempt to compensate step `i`, with the step's input and
/// output. No deadline: an undo is owed however late it is.
envelope compensation_of(saga_state& st, size_t i) {
  auto& step = step_of(st, i);
  SagaCompensate msg;
  msg.set_input_type(st.input.type);
  msg.set_input(st.input.payload);
  msg.set_output_type(step.output_type());
  msg.set_output(step.output());
  return wrap(st, msg,
              derive_id(st.input, i, kind::compensate, st.ran_and_failed[i]));
}

/// Step `i`'s compensation is given up: a dead letter at the step's path
/// (replayable into a journal step), and the rest still run.
/// Puts the compensation of step `i` into the dead letters with `reason`.
void owe(saga_actor* self, size_t i, const std::string& reason) {
  auto& st = self->state;
  st.outcome.set_compensation_failed(true);
  if (st.dur) { // committed with the run's next progress
    bool journal = i < st.dur->cfg->journal_steps.size()
                   && st.dur->cfg->journal_steps[i];
    st.dur->owed.emplace_back(step_of(st, i).path(), compensation_of(st, i),
                              reason, journal);
    return;
  }
  st.rt->add_dead_letter(step_of(st, i).path(), compensation_of(st, i),
                         reason);
}

void give_up_compensation(saga_actor* self, size_t i, const std::string& why) {
  auto& step = step_of(self->state, i);
  step.set_status("compensation_failed");
  step.set_error(why);
  owe(self, i,
      "compensation_failed after "
        + std::to_string(step.compensation_attempts())
        + " failed attempts: " + why);
  compensate_from(self, i);
}

/// A compensation attempt did not take effect; `ran` if it ran and failed.
void compensation_failed(saga_actor* self, size_t i, const std::string& why,
                         bool ran) {
  auto& st = self->state;
  auto& step = step_of(st, i);
  step.set_compensation_attempts(step.compensation_attempts() + 1);
  if (ran)
    ++st.ran_and_failed[i];
  if (st.dur && ending(st))
    return suspend(self);
  if (ending(st) || step.compensation_attempts() > st.opts.compensation_retries)
    return give_up_compensation(self, i, why);
  st.retry_due = i;
  self->delayed_send(self,
                     retry_delay(st.opts, step.compensation_attempts()),
                     retry_atom::value, ++st.retry_token);
}

/// Undoes step `i` (which ran), then the steps before it.
void compensate(saga_actor* self, size_t i) {
  auto& st = self->state;
  st.retry_due.reset();
  auto& step = step_of(st, i);
  if (st.dur && ending(st))
    return suspend(self);
  if (ending(st))
    return give_up_compensation(
      self, i,
      describe(make_error(errc::shutting_down,
                          "the saga's supervisor ended before this "
                          "compensation ran; replay this letter once "
                            + step.path() + " runs again")));
  {
    std::string_view path = step.path();
    auto slash = path.rfind('/');
    emit(report{"compensation",
                slash == path.npos ? "" : path.substr(0, slash),
                "compensating", st.outcome.failure(), path,
                step.compensation_attempts() + 1, &st.input});
  }
  auto dest = st.rt->lookup(step.path());
  if (!dest)
    return compensation_failed(
      self, i, describe(make_error(errc::not_found, step.path())), false);
  send_call(
    self, kind::compensate, i, dest, compensation_of(st, i),
    [self, i](envelope& rep) {
      if (rep.degraded())
        return compensation_failed(self, i,
                                   "degraded: a stand-in answered; the "
                                   "compensation did not run",
                                   false);
      step_of(self->state, i).set_status("compensated");
      compensate_from(self, i);
    },
    [self, i](caf::error& err) {
      auto why = describe(err);
      if (is(err, errc::duplicate) && self->state.dur) {
        // A durable run's step keeps its answer to this id: a duplicate
        // without one (not kept, unreadable, or compacted away) leaves the
        // compensation's fate unknown.
        step_of(self->state, i).set_status("in_doubt");
        step_of(self->state, i).set_error(why);
        owe(self, i, "in_doubt: the compensation may have run (" + why
                       + "); replay this letter only if it did not");
        return compensate_from(self, i);
      }
      if (is(err, errc::duplicate)) {
        // A journal step accepted this very attempt earlier (a stopped
        // step kept it, and said not_running): its journal owns it now,
        // and applies it once when the step runs, or keeps it as a dead
        // letter there if it fails. Its outcome is the step's to tell.
        auto& step = step_of(self->state, i);
        step.set_status("accepted");
        step.set_error(why);
        return compensate_from(self, i);
      }
      if (is(err, errc::refused) || is(err, errc::bad_payload)
          || is(err, errc::unknown_message_type))
        return give_up_compensation(self, i, why); // would refuse again
      if (is(err, errc::reply_dropped) && resend_lost(self, i))
        return;
      if (is(err, errc::reply_dropped)) {
        // It ran, or may yet run: a retry could undo twice.
        step_of(self->state, i).set_status("in_doubt");
        step_of(self->state, i).set_error(why);
        owe(self, i, "in_doubt: the compensation may have run (" + why
                       + "); replay this letter only if it did not");
        return compensate_from(self, i);
      }
      // Retried: an attempt that crashed (ran and failed), or one the
      // runtime says was not delivered (a handler's refusal with such a
      // code reaches the saga as `refused`). Any other error is the
      // step's refusal, which would refuse again.
      bool ran = is(err, errc::handler_failed)
                 || is(err, errc::poison_message);
      if (!ran && !undelivered(err))
        return give_up_compensation(self, i, why);
      compensation_failed(self, i, why, ran);
    });
}

void execute_next(saga_actor* self) {
  auto& st = self->state;
  if (st.next == st.steps.size()) {
    st.outcome.set_completed(true);
    return finish(self);
  }
  send_execute(self, st.next, false);
}

void send_execute(saga_actor* self, size_t k, bool resumed) {
  auto& st = self->state;
  if (st.dur) {
    st.dur->resumed_call = resumed;
    if (ending(st))
      return suspend(self);
  }
  if (ending(st))
    return fail(self, k,
                describe(make_error(errc::shutting_down,
                                    "the saga's supervisor ended before "
                                      + st.steps[k] + " ran")),
                false);
  auto now = now_ns(self);
  int64_t deadline =
    now
    + std::chrono::duration_cast<std::chrono::nanoseconds>(st.opts.step_timeout)
        .count();
  if (st.input.deadline != 0) {
    if (now > st.input.deadline)
      return fail(self, k,
                  describe(make_error(errc::expired,
                                      "the saga's deadline passed before "
                                        + st.steps[k] + " started")),
                  false);
    deadline = std::min(deadline, st.input.deadline);
  }
  auto dest = st.rt->lookup(st.steps[k]);
  if (!dest)
    return fail(self, k, describe(make_error(errc::not_found, st.steps[k])),
                false);
  SagaExecute msg;
  msg.set_input_type(st.input.type);
  msg.set_input(st.input.payload);
  auto env = wrap(st, msg, derive_id(st.input, k, kind::execute, 0));
  env.deadline = deadline;
  env.flags |= envelope::start_deadline_flag;
  send_call(
    self, kind::execute, k, dest, std::move(env),
    [self, k, deadline](envelope& rep) {
      auto& st = self->state;
      if (rep.degraded())
        return fail(self, k,
                    "degraded: a stand-in answered for " + st.steps[k]
                      + "; the step did not run",
                    false);
      auto& step = step_of(st, k);
      SagaStepOutput out;
      bool parsed = out.ParseFromString(rep.payload);
      // It ran: from here on it is compensated if the saga fails.
      step.set_status("executed");
      step.set_output_type(out.output_type());
      step.set_output(out.output());
      if (!parsed)
        return fail(self, k,
                    describe(make_error(errc::bad_payload,
                                        st.steps[k]
                                          + ": step reply does not parse")),
                    true);
      if (now_ns(self) > deadline
          && !(st.dur && st.dur->resumed_call)) {
        step.set_late(true);
        return fail(self, k,
                    describe(make_error(
                      errc::deadline_exceeded,
                      st.steps[k] + " finished after its step deadline; it "
                                    "ran, so it is compensated")),
                    true);
      }
      ++st.next;
      execute_next(self);
    },
    [self, k](caf::error& err) {
      auto& st = self->state;
      auto& step = step_of(st, k);
      if (is(err, errc::reply_dropped) && resend_lost(self, k))
        return;
      // A durable run's step keeps its answer to this id: a duplicate
      // without one (not kept, unreadable, or compacted away) says it ran
      // or may have, as a lost answer does.
      if (is(err, errc::reply_dropped)
          || (st.dur && is(err, errc::duplicate))) {
        // It ran, or may yet run, and its output is lost: nothing can
        // compensate it but a person with the dead letter.
        step.set_status("in_doubt");
        step.set_error(describe(err));
        if (st.outcome.failed_step().empty()) {
          st.outcome.set_failed_step(step.path());
          st.outcome.set_failure(describe(err));
        }
        owe(self, k, "in_doubt: " + step.path()
                       + " may have run, and its output is lost ("
                       + describe(err) + "); compensate it by hand if it "
                       + "did");
        return compensate_from(self, k);
      }
      if (is(err, errc::duplicate)) {
        // This input's step was accepted before (an earlier run of the
        // same input id): it ran then, or never will.
        step.set_status("duplicate");
        step.set_error(describe(err));
        if (st.outcome.failed_step().empty()) {
          st.outcome.set_failed_step(step.path());
          st.outcome.set_failure(describe(err)
                                 + "; an earlier run of this input id "
                                   "reached this step: resend with a new "
                                   "id to run the saga again");
        }
        return compensate_from(self, k);
      }
      fail(self, k, describe(err), false);
    });
}

caf::behavior saga_run(saga_actor* self, std::shared_ptr<runtime> rt,
                       std::vector<std::string> steps, saga_spec opts,
                       caf::actor sup,
                       std::shared_ptr<const std::atomic<bool>> ended,
                       std::shared_ptr<const saga_journal> journal) {
  auto& st = self->state;
  if (journal) {
    st.dur = std::make_unique<saga_durable>();
    st.dur->cfg = std::move(journal);
  }
  st.sup = std::move(sup);
  st.ended = std::move(ended);
  st.rt = std::move(rt);
  st.steps = std::move(steps);
  st.opts = opts;
  st.ran_and_failed.assign(st.steps.size(), 0);
  for (auto& p : st.steps) {
    auto* s = st.outcome.add_steps();
    s->set_path(p);
    s->set_status("not_run");
  }
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& c = self->state.cur;
    if (!c.waiting || !c.dest || dm.source != c.dest.address())
      return;
    // The step's cell ended. It may have passed the request on to the
    // path's next cell (which then answers), or CAF bounces it; only if
    // nothing comes within a grace period is the answer lost.
    self->delayed_send(self, caf::timespan{self->state.opts.step_timeout},
                       grace_atom::value, c.seq);
  });
  return {
    [self](run_saga_atom, envelope& input) -> caf::result<envelope> {
      auto& st = self->state;
      if (st.started && st.dur) {
        // A resent input, while this run goes on or after it finished.
        attach(self, self->make_response_promise());
        return caf::delegated<envelope>{};
      }
      st.started = true;
      st.input = std::move(input);
      st.origin = st.input.origin;
      st.id = st.input.id;
      if (st.input.id == 0) // ids derive from it: one of its own
        st.rt->stamp(st.input, 0, 0, nullptr);
      if (st.dur)
        st.dur->key = saga_run_key(st.dur->cfg->sup_path, st.input.origin,
                                   st.input.id);
      st.rp = self->make_response_promise();
      execute_next(self);
      return caf::delegated<envelope>{};
    },
    [self](saga_resume_atom, std::string& bytes) {
      records::SagaRun rec;
      if (!rec.ParseFromString(bytes))
        return self->quit(make_error(errc::bad_payload,
                                     "a saga run record does not parse"));
      resume(self, rec);
    },
    [self](committed_atom, std::vector<uint64_t>& tokens, caf::error& err) {
      on_committed(self, tokens, err);
    },
    [self](saga_commit_retry_atom) { retry_commit(self); },
    [self](resend_atom, uint64_t seq) {
      auto& c = self->state.cur;
      if (!c.waiting && c.seq == seq && !self->state.stopping)
        resend_call(self, false);
      else if (!c.waiting && c.seq == seq && self->state.dur)
        suspend(self);
    },
    [self](retry_atom, uint64_t token) {
      auto& st = self->state;
      if (token == st.retry_token && st.retry_due)
        compensate(self, *st.retry_due);
    },
    [self](deadline_atom, uint64_t seq) {
      // The step's start deadline passed with no answer: if the execute
      // still waits in the cell's buffer, the cell refuses it now.
      auto& c = self->state.cur;
      if (!c.waiting || c.seq != seq || c.what != kind::execute)
        return;
      if (c.dest)
        self->send(c.dest, expire_atom::value, uint64_t{0}, c.id);
      // The cell may have passed it on to the path's next cell.
      if (auto now = self->state.rt->lookup(self->state.steps[c.step]);
          now && now != c.dest)
        self->send(now, expire_atom::value, uint64_t{0}, c.id);
    },
    [self](grace_atom, uint64_t seq) {
      auto& c = self->state.cur;
      if (!c.waiting || c.seq != seq || !c.on_error)
        return;
      auto f = std::move(c.on_error);
      c.waiting = false;
      c.dest = nullptr;
      c.on_error = nullptr;
      auto err = make_error(errc::reply_dropped,
                            self->state.steps[c.step]
                              + " ended without answering");
      f(err);
    },
    [](bool) {
      // the cell's answer to expire_atom: its verdict comes as the reply
    },
    [self](saga_stop_atom) {
      auto& st = self->state;
      st.stopping = true;
      if (st.dur) {
        // Done: the supervisor has its outcome. Not done: the journal
        // keeps the run, and the call in flight is sent again on resume.
        // A commit or a call in flight is not waited for: whichever
        // record is on disk, the resumed run sends its call again.
        if (st.dur->done)
          return self->quit();
        return suspend(self);
      }
      if (!st.cur.waiting && st.retry_due)
        compensate(self, *st.retry_due); // gives it up, and the rest
    },
  };
}

} // namespace

void call_in_doubt(saga_actor* self) {
  auto& st = self->state;
  auto& c = st.cur;
  auto k = c.step;
  auto& step = step_of(st, k);
  auto why = make_error(errc::reply_dropped,
                        step.path() + " is not a journal agent, and the "
                          + "node stopped while this call was in flight: "
                          + "it may have run, and sending it again could "
                          + "run it twice");
  step.set_status("in_doubt");
  step.set_error(describe(why));
  if (st.outcome.failed_step().empty()) {
    st.outcome.set_failed_step(step.path());
    st.outcome.set_failure(describe(why));
  }
  owe(self, k,
      std::string{c.what == kind::execute ? "in_doubt: " + step.path()
                                              + " may have run; compensate "
                                                "it by hand if it did ("
                                          : "in_doubt: the compensation may "
                                            "have run; replay this letter "
                                            "only if it did not ("}
        + describe(why) + ")");
  compensate_from(self, k);
}

void resend_call(saga_actor* self, bool resumed) {
  auto& c = self->state.cur;
  if (c.what == kind::execute)
    send_execute(self, c.step, resumed);
  else if (c.what == kind::compensate)
    compensate(self, c.step);
  else if (self->state.outcome.failed_step().empty())
    execute_next(self);
  else
    compensate_from(self, self->state.steps.size());
}

} // namespace vigil::detail

namespace vigil {

caf::actor spawn_saga_run(caf::actor_system& sys, std::shared_ptr<runtime> rt,
                          std::vector<std::string> steps, saga_spec opts,
                          caf::actor sup,
                          std::shared_ptr<const std::atomic<bool>> ended) {
  return sys.spawn(detail::saga_run, std::move(rt), std::move(steps), opts,
                   std::move(sup), std::move(ended), nullptr);
}

caf::actor
spawn_durable_saga_run(caf::actor_system& sys, std::shared_ptr<runtime> rt,
                       std::vector<std::string> steps, saga_spec opts,
                       caf::actor sup,
                       std::shared_ptr<const std::atomic<bool>> ended,
                       std::shared_ptr<const saga_journal> journal) {
  return sys.spawn(detail::saga_run, std::move(rt), std::move(steps), opts,
                   std::move(sup), std::move(ended), std::move(journal));
}

} // namespace vigil
