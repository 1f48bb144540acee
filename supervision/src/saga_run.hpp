#pragma once

// One saga run as a CAF actor: its state and the functions that saga.cpp
// (the rules of a run) and saga_journal.cpp (a durable run's commits and
// resume) share. Internal to vigil_supervision.

#include <functional>
#include <optional>
#include <tuple>

#include <caf/all.hpp>

#include "vigil/actors/cell.hpp"
#include "vigil/actors/writer.hpp"
#include "vigil/saga.pb.h"
#include "vigil/store.pb.h"
#include "vigil/supervision/saga.hpp"

namespace vigil::detail {

enum class saga_kind : uint8_t { execute = 1, compensate = 2, outcome = 3 };

struct saga_call {
  bool waiting = false;
  saga_kind what = saga_kind::execute;
  size_t step = 0;
  uint64_t id = 0;
  int64_t deadline = 0; // an execute's start deadline (actor-clock ns)
  caf::actor dest;
  uint64_t seq = 0; // numbers the calls, for their timers
  /// Its error handler, also for an answer that will not come (see the
  /// down handler).
  std::function<void(caf::error&)> on_error;
};

/// A durable run's journal: the last record committed, and what waits for
/// the next commit.
struct saga_durable {
  std::shared_ptr<const saga_journal> cfg;
  std::string key; // in db::sagas
  records::SagaRun rec;
  /// Dead letters owed since the last commit: written with the next one.
  std::vector<std::tuple<std::string, envelope, std::string, bool>> owed;
  uint64_t token = 0;           // of the commit awaited (0: none)
  write_item sent;              // that commit, for a retry
  uint64_t sent_owner = 0;      // the owner bits it was sent under
  uint64_t next_token = 0;
  std::function<void()> then;   // runs once it is committed
  /// The call in flight was resent after a crash: its answer may be one
  /// the step kept from before, so its lateness cannot be judged.
  bool resumed_call = false;
  /// Resends of the call in flight after its answer was lost.
  uint32_t resends = 0;
  bool done = false; // the outcome is committed
  envelope out;      // the outcome, once done
};

struct saga_state {
  std::shared_ptr<runtime> rt;
  std::vector<std::string> steps;
  saga_spec opts;
  envelope input;
  SagaOutcome outcome;
  size_t next = 0;
  caf::response_promise rp;
  /// Requesters of a durable run that attached with a resent input.
  std::vector<caf::response_promise> waiters;
  saga_call cur;
  /// Per step: compensation attempts that ran and failed, which salts the
  /// next attempt's id (the failed one stays accepted at a journal step).
  std::vector<uint32_t> ran_and_failed;
  /// The step whose compensation waits for a retry timer, if any.
  std::optional<size_t> retry_due;
  uint64_t retry_token = 0;
  bool stopping = false;
  bool started = false; // given its input (run_saga_atom or a resume)
  caf::actor sup; // told the outcome
  std::shared_ptr<const std::atomic<bool>> ended; // set when sup ends
  uint64_t origin = 0, id = 0; // the input's, as the supervisor knows it
  std::unique_ptr<saga_durable> dur; // durable runs only
  static inline const char* name = "vigil.saga";
};

using saga_actor = caf::stateful_actor<saga_state>;

/// A message id for `what` of step `k`, attempt salt `salt`: a splitmix64
/// of the saga input's identity, never 0.
uint64_t derive_id(const envelope& input, size_t k, saga_kind what,
                   uint32_t salt);

inline SagaStep& step_of(saga_state& st, size_t i) {
  return *st.outcome.mutable_steps(static_cast<int>(i));
}

/// Counts a finished run into the node's counters.
inline void count_outcome(runtime& rt, const SagaOutcome& o) {
  auto& c = rt.stats();
  counters::bump(o.completed()               ? c.saga_completed
                 : o.compensation_failed() ? c.saga_compensation_failed
                                           : c.saga_compensated);
}

/// Empty if run record `rec` was made by a saga of `steps`; else why it
/// cannot be resumed by it (its step indexes would name other agents).
inline std::string other_steps(const records::SagaRun& rec,
                               const std::vector<std::string>& steps) {
  auto n = steps.size();
  auto name = "[sagas] "
              + printable_key(guard_key(rec.path(), rec.input().origin(),
                                        rec.input().id()));
  bool call = rec.call_kind() == 1 || rec.call_kind() == 2;
  if (rec.call_kind() > 3 || rec.next() > n || (call && rec.call_step() >= n)
      || static_cast<size_t>(rec.ran_and_failed_size()) > n)
    return name + ": the record is inconsistent (next "
           + std::to_string(rec.next()) + ", call "
           + std::to_string(rec.call_kind()) + " at step "
           + std::to_string(rec.call_step()) + ", for " + std::to_string(n)
           + " steps); move it aside or remove it";
  bool same = rec.outcome().steps_size() == static_cast<int>(steps.size());
  for (int i = 0; same && i < rec.outcome().steps_size(); ++i)
    same = rec.outcome().steps(i).path() == steps[static_cast<size_t>(i)];
  if (same)
    return {};
  std::string was;
  for (auto& x : rec.outcome().steps())
    was += (was.empty() ? "" : ", ") + x.path();
  return name + ": the run was made with the steps [" + was
         + "], and the saga's steps differ now; start the tree it was made "
           "with to finish it, or remove the record";
}

// -- saga_journal.cpp ----------------------------------------------------------

/// Commits the run's progress (the call about to be sent is `st.cur`'s
/// what/step/id, already set), then runs `then`.
void commit_then(saga_actor* self, std::function<void()> then);

/// Commits the finished run and its outcome (with the outbox entry for
/// outcome_to), then answers everybody and tells the supervisor.
void finish_durable(saga_actor* self, envelope out);

/// The supervisor ended before the run finished: nothing more is sent;
/// requesters are told not_running, and the run quits. The journal keeps
/// it for the saga's next start.
void suspend(saga_actor* self);

/// A resent input attached to a durable run.
void attach(saga_actor* self, caf::response_promise rp);

/// The writer's acknowledgement of a commit.
void on_committed(saga_actor* self, const std::vector<uint64_t>& tokens,
                  const caf::error& err);

/// The supervisor may retry the failed commit (see saga_commit_failed_atom).
void retry_commit(saga_actor* self);

/// Restores the run from `rec` and re-sends its call in flight.
void resume(saga_actor* self, records::SagaRun& rec);

// -- saga.cpp ------------------------------------------------------------------

/// After a crash: the call in flight went to a step that keeps no answer
/// (not a journal agent), so it may have run; sending it again could run
/// it twice. It is in doubt: a dead letter, and the run goes on.
void call_in_doubt(saga_actor* self);

/// Sends the call `st.cur` names (what, step) again, under its id;
/// `resumed`: after a crash of the node. With no call (what is neither
/// execute nor compensate) the run goes on from its steps' statuses.
void resend_call(saga_actor* self, bool resumed);

} // namespace vigil::detail
