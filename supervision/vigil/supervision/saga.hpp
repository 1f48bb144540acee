#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/atom.hpp>
#include <caf/fwd.hpp>

#include "vigil/actors/runtime.hpp"
#include "vigil/supervision/child_spec.hpp"

namespace vigil {

using run_saga_atom = caf::atom_constant<caf::atom("vrunsaga")>;
using saga_stop_atom = caf::atom_constant<caf::atom("vsagastop")>;
/// (saga_done_atom, origin, id, outcome): a run tells its supervisor the
/// outcome of input (origin, id), which answers a resent input with it.
using saga_done_atom = caf::atom_constant<caf::atom("vsagadone")>;

/// Spawns one saga run over the agents at `steps` (in execution order).
/// Send it (run_saga_atom, envelope input); it answers with an envelope
/// holding a `vigil.SagaOutcome` and then exits. Used by saga supervisors,
/// which it tells the outcome (saga_done_atom), and which send it
/// `saga_stop_atom` when they end: the run then sends no
/// more requests, waits for the one in flight, gives up the compensations
/// it still owes (dead letters) and answers.
/// `ended` is set by the supervisor, synchronously, when it begins to end:
/// a run checks it before every send, so that no answer the run handles
/// before its saga_stop_atom arrives makes it send to a next instance.
caf::actor spawn_saga_run(caf::actor_system& sys, std::shared_ptr<runtime> rt,
                          std::vector<std::string> steps, saga_spec opts,
                          caf::actor sup = {},
                          std::shared_ptr<const std::atomic<bool>> ended = {});

/// What a durable saga's run needs: its supervisor's ownership of its path
/// at the writer, and which steps are journal agents.
struct saga_journal {
  caf::actor writer;
  /// owner_ref bits of the supervisor's path, shared with its runs: a
  /// fence after a failed commit renews it for every run at once.
  std::shared_ptr<std::atomic<uint64_t>> owner =
    std::make_shared<std::atomic<uint64_t>>(0);
  std::string sup_path;
  /// Per step: a journal agent, which keeps the answer to a call and gives
  /// it to a resend of the same id (envelope::keep_reply_flag).
  std::vector<bool> journal_steps;
  std::string outcome_to; ///< saga_spec::outcome_to
};

/// (saga_resume_atom, std::string run): a durable run resumes from its
/// serialized `records::SagaRun`.
using saga_resume_atom = caf::atom_constant<caf::atom("vsagaresum")>;
/// (saga_commit_failed_atom, uint64_t owner): a durable run's commit
/// failed under `owner`; it waits for (saga_commit_retry_atom) from its
/// supervisor, which fences the saga's path again first if it must.
using saga_commit_failed_atom = caf::atom_constant<caf::atom("vsagacfail")>;
using saga_commit_retry_atom = caf::atom_constant<caf::atom("vsagacretr")>;

/// The sagas-db key of the run of input (origin, id) under `sup_path`.
std::string saga_run_key(const std::string& sup_path, uint64_t origin,
                         uint64_t id);

/// Spawns a durable saga run: before every call it sends, and when it
/// finishes, it commits its progress (records::SagaRun) through the
/// writer, so that a run interrupted by a crash of its node resumes where
/// it was (send it saga_resume_atom) and re-sends the call in flight under
/// the same message id. It tells `sup` (saga_done_atom) once its outcome is
/// committed, and then answers every requester that attaches (a resent
/// run_saga_atom) until `sup` sends saga_stop_atom. When `sup` ends before
/// it finished, it stops sending and quits; its requesters are told
/// `not_running`, and the run resumes when the saga runs again.
caf::actor spawn_durable_saga_run(caf::actor_system& sys,
                                  std::shared_ptr<runtime> rt,
                                  std::vector<std::string> steps,
                                  saga_spec opts, caf::actor sup,
                                  std::shared_ptr<const std::atomic<bool>> ended,
                                  std::shared_ptr<const saga_journal> journal);

} // namespace vigil
