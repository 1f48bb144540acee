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

} // namespace vigil
