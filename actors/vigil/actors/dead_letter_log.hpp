#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include <caf/actor.hpp>

#include "vigil/actors/counters.hpp"
#include "vigil/actors/envelope.hpp"

namespace vigil {

/// An envelope that could not be delivered or processed, with its reason.
struct dead_letter {
  uint64_t seq = 0;   ///< Order of arrival in this node's dead letters.
  std::string path;   ///< The agent it was addressed to.
  envelope env;       ///< The envelope as it was last delivered.
  std::string reason; ///< Why it is here, e.g. "poison_message: ...".
};

/// A node's dead letters: the newest `cap` of them in memory, and (with a
/// data dir) every one of them in LMDB through the node's writer.
///
/// In memory, a new letter past the cap drops the oldest one and counts
/// it in `counters::dead_letters_dropped`; every letter recorded counts in
/// `counters::dead_letters`. A cap of 0 keeps none in memory (each one is
/// counted as dropped). Sequence numbers start at 1 and count every letter
/// kept in memory, so they show arrival order and gaps show nothing.
///
/// Durable copies: after `attach`, `add` with `persist` sends one unfenced
/// write of the letter to the writer (fire and forget; the writer retries
/// a failed commit of it a few times). LMDB keeps letters past the cap;
/// `vigil inspect` and `vigil dead-letters` read them there.
///
/// Thread-safe: any actor may add and read at any time. `attach` is not:
/// call it before any actor of the node runs. `stats` must outlive the log.
class dead_letter_log {
public:
  /// In-memory dead letters kept before the oldest are dropped.
  static constexpr size_t default_cap = 100000;

  explicit dead_letter_log(counters& stats, size_t cap = default_cap)
    : stats_(stats), cap_(cap) {
    // nop
  }

  dead_letter_log(const dead_letter_log&) = delete;
  dead_letter_log& operator=(const dead_letter_log&) = delete;

  /// Sends every later durable letter to `writer` (the node's writer).
  void attach(caf::actor writer) {
    writer_ = std::move(writer);
  }

  /// Records a dead letter. `persist` false: the caller writes it to LMDB
  /// itself (atomically with other changes), or it never goes there.
  /// `journal`: the caller is the cell of a journal agent at `path` (a
  /// replay needs to know the path's mode).
  void add(std::string path, envelope env, std::string reason,
           bool persist = true, bool journal = false);

  /// A copy of the letters in memory, oldest first.
  std::vector<dead_letter> snapshot() const;

  /// Number of letters in memory now.
  size_t size() const;

  /// Letters dropped from memory so far (also in `counters`).
  size_t dropped() const;

  /// Every letter recorded so far (also those dropped from memory), by the
  /// code its reason starts with ("degraded", "handler_failed", ...: its
  /// leading run of lowercase letters, digits and '_'; "other" if none).
  /// At most `max_reasons` codes; later new ones count under "other".
  std::map<std::string, uint64_t> by_reason() const;

  static constexpr size_t max_reasons = 64;

  /// The in-memory cap.
  size_t cap() const noexcept {
    return cap_;
  }

private:
  counters& stats_;
  const size_t cap_;
  caf::actor writer_;
  mutable std::mutex mtx_;
  uint64_t seq_ = 0;
  size_t dropped_ = 0;
  std::deque<dead_letter> letters_;
  /// See by_reason; `std::less<>` finds a code without building a string.
  std::map<std::string, uint64_t, std::less<>> reasons_;
};

} // namespace vigil
