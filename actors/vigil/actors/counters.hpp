#pragma once

#include <atomic>
#include <cstdint>
#include <string_view>

#include "vigil/actors/detail/meters.hpp"

namespace vigil {

/// Every node-wide counter of one node, in one place, so that a metrics
/// exporter reads them all here (`for_each`) instead of asking each part.
///
/// Each field is a relaxed atomic: the part that counts adds to it on its
/// own thread without a lock or a fence, and a reader sees a value that was
/// true at some recent moment (two counters read one after the other are
/// not a consistent pair). Counters only grow, from 0 at the node's start;
/// a gauge (marked so below) goes up and down.
///
/// Owned by the runtime (`runtime::stats()`), shared with the node's writer
/// through a shared_ptr so that either may outlive the other.
///
/// Who writes each: `handled` and `stand_in_answers` the cells;
/// `restarts` and `saga_*` the supervisors and their saga runs;
/// `dead_letters*` the dead-letter log; `writer_*` the writer actor only
/// (so `writer_largest_batch` needs no compare-exchange).
struct counters {
  /// The kind of a value, as an exporter names it.
  enum class kind : uint8_t { counter, gauge };

  // The hottest counter gets a cache line of its own: every cell of the
  // node adds to it once per envelope.

  /// Envelopes an agent's handler handled (a refusal counts; a failure,
  /// a rejected payload or a handler past its deadline does not).
  alignas(64) std::atomic<uint64_t> handled{0};
  /// Restarts (and degrades) of children anywhere in the tree; unlike
  /// `child_info::restarts` it does not start again at 0 when a
  /// supervisor is itself restarted.
  alignas(64) std::atomic<uint64_t> restarts{0};
  /// Requests that a degraded child's stand-in answered with its declared
  /// fallback (marked degraded), instead of the agent.
  std::atomic<uint64_t> stand_in_answers{0};
  /// Dead letters recorded (also those dropped from memory at once).
  std::atomic<uint64_t> dead_letters{0};
  /// Dead letters dropped from memory because the in-memory cap was
  /// reached (a durable copy in LMDB is kept all the same).
  std::atomic<uint64_t> dead_letters_dropped{0};
  /// Write items the writer committed.
  std::atomic<uint64_t> writer_items{0};
  /// Write transactions the writer committed.
  std::atomic<uint64_t> writer_commits{0};
  /// Write transactions that failed (nothing of them was committed).
  std::atomic<uint64_t> writer_failures{0};
  /// Gauge: the most items one committed transaction held.
  std::atomic<uint64_t> writer_largest_batch{0};
  /// Idempotency records compacted away.
  std::atomic<uint64_t> writer_compacted{0};
  /// Compaction steps that failed (retried with the next pass).
  std::atomic<uint64_t> writer_compact_failures{0};
  /// Compaction passes finished.
  std::atomic<uint64_t> writer_compact_passes{0};
  /// Gauge: paths owned by a live cell now (fenced, not yet released).
  std::atomic<uint64_t> writer_owned_paths{0};
  /// Writes refused: from a replaced owner, or after a failed commit.
  std::atomic<uint64_t> writer_refused{0};
  /// Saga runs that ended: every step executed (completed), failed and
  /// every step that ran undone (compensated), or failed with some
  /// compensation left in the dead letters (compensation_failed).
  std::atomic<uint64_t> saga_completed{0};
  std::atomic<uint64_t> saga_compensated{0};
  std::atomic<uint64_t> saga_compensation_failed{0};
  /// Durable saga runs resumed from the data dir after a crash or a
  /// restart of their saga.
  std::atomic<uint64_t> saga_resumed{0};
  /// Resent saga inputs answered with the stored outcome of their run.
  std::atomic<uint64_t> saga_outcomes_resent{0};

  /// The writer's commits (written by the writer actor only; not in
  /// `for_each`): items per committed transaction, and the time each
  /// commit took (ns), failed ones included.
  detail::histogram<detail::batch_bounds.size()> writer_batch;
  detail::histogram<detail::duration_bounds.size()> writer_commit_ns;

  /// Calls `f(name, help, kind, value)` once per field above, in the order
  /// declared. `name` is snake_case and stable (an exporter may prefix it,
  /// e.g. `vigil_handled_total`); `help` is the one-line meaning. Any
  /// thread; lock-free.
  template <class F>
  void for_each(F&& f) const {
    for (auto& d : descriptions())
      f(d.name, d.help, d.what, (this->*d.field).load(std::memory_order_relaxed));
  }

  /// Number of fields that `for_each` visits.
  static constexpr size_t size = 19;

  /// One field's name, meaning and kind.
  struct description {
    std::string_view name;
    std::string_view help;
    kind what;
    std::atomic<uint64_t> counters::*field;
  };

  /// The fields, in the order declared. Static storage.
  static const description (&descriptions())[size];

  /// Adds one to `c` (relaxed).
  static void bump(std::atomic<uint64_t>& c, uint64_t n = 1) noexcept {
    c.fetch_add(n, std::memory_order_relaxed);
  }
};

} // namespace vigil
