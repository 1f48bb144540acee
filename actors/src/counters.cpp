#include "vigil/actors/counters.hpp"

namespace vigil {

const counters::description (&counters::descriptions())[counters::size] {
  using k = counters::kind;
  static const description table[size] = {
    {"handled", "envelopes handled by an agent's handler", k::counter,
     &counters::handled},
    {"restarts", "restarts and degrades of children in the whole tree",
     k::counter, &counters::restarts},
    {"stand_in_answers",
     "requests a degraded child's stand-in answered with its fallback",
     k::counter, &counters::stand_in_answers},
    {"dead_letters", "dead letters recorded", k::counter,
     &counters::dead_letters},
    {"dead_letters_dropped",
     "dead letters dropped from memory at the in-memory cap", k::counter,
     &counters::dead_letters_dropped},
    {"writer_items", "write items committed", k::counter,
     &counters::writer_items},
    {"writer_commits", "write transactions committed", k::counter,
     &counters::writer_commits},
    {"writer_failures", "write transactions that failed", k::counter,
     &counters::writer_failures},
    {"writer_largest_batch", "most items in one committed transaction",
     k::gauge, &counters::writer_largest_batch},
    {"writer_compacted", "idempotency records compacted away", k::counter,
     &counters::writer_compacted},
    {"writer_compact_failures", "compaction steps that failed", k::counter,
     &counters::writer_compact_failures},
    {"writer_compact_passes", "compaction passes finished", k::counter,
     &counters::writer_compact_passes},
    {"writer_owned_paths", "paths owned by a live cell now", k::gauge,
     &counters::writer_owned_paths},
    {"writer_refused",
     "writes refused (a replaced owner, or after a failed commit)",
     k::counter, &counters::writer_refused},
    {"saga_completed", "saga runs that executed every step", k::counter,
     &counters::saga_completed},
    {"saga_compensated",
     "saga runs that failed and undid every step that ran", k::counter,
     &counters::saga_compensated},
    {"saga_compensation_failed",
     "saga runs that failed with a compensation left in the dead letters",
     k::counter, &counters::saga_compensation_failed},
    {"saga_resumed",
     "durable saga runs resumed from the data dir after a crash or restart",
     k::counter, &counters::saga_resumed},
    {"saga_outcomes_resent",
     "resent saga inputs answered with their run's stored outcome",
     k::counter, &counters::saga_outcomes_resent},
  };
  return table;
}

} // namespace vigil
