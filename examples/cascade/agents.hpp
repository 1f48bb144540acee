// The cascade example's agents (examples/policies/cascade.yaml): a feeder
// that puts the batch into a leased task queue, document workers that
// claim a task, insert its record and send its webhook through tools under
// keys named after the document, count it in a shared config by
// compare-and-swap and complete the task, and a tally that the workers
// report each document to.
#pragma once

#include "vigil/actors/registry.hpp"

namespace cascade {

/// Registers feeder, doc_worker and tally.
void add_agents(vigil::registry& types);

} // namespace cascade
