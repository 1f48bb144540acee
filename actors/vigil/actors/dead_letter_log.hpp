#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <utility>
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
  /// More letters like it (same sender, path and reason code, within one
  /// second) that it stands for: counted, not kept one by one.
  uint64_t repeats = 0;
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
/// Rate limit, of shed envelopes only (reason code `overloaded`: refused,
/// never accepted): of those with one sender and path, the first
/// `samples_per_second` of each second are kept one by one; the rest of
/// that second are counted and kept as one letter (the last of them, with
/// `repeats` set), once the second has passed: at the next letter, the
/// next `sweep` (the node calls it every second) or `flush` (the node's
/// stop). A flood of shed envelopes thus costs a few writes a second, not
/// one each. Every other letter may be replayed and is kept one by one.
/// Every letter counts in `counters::dead_letters` and `by_reason`.
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

  /// Keeps the counted letters of every burst (see the rate limit) now.
  void flush();

  /// Keeps the counted letters of the bursts whose second has passed.
  void sweep();

  static constexpr uint32_t samples_per_second = 10;

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

  /// The letters in memory now, by reason code (as `by_reason`).
  std::map<std::string, int64_t> current_by_reason() const;

  /// The in-memory cap.
  size_t cap() const noexcept {
    return cap_;
  }

private:
  using clock = std::chrono::steady_clock;

  /// Letters of one sender, path and reason code in the current second.
  struct burst {
    clock::time_point start;
    uint32_t kept = 0;
    uint64_t counted = 0; // beyond `kept`; `last` is the newest of them
    dead_letter last;
    bool journal = false;
  };

  /// Keeps `dl` in memory and reports it (vigil/actors/report.hpp);
  /// requires mtx_.
  void keep(dead_letter dl);

  /// Adds `n` to the letters in memory of `reason`'s code; requires mtx_.
  void count_current(std::string_view reason, int64_t n);

  /// Moves the counted letters of `b` into a letter to keep and write;
  /// requires mtx_.
  void close(burst& b, std::vector<std::pair<dead_letter, bool>>& out);

  /// See sweep; requires mtx_.
  void sweep_locked(clock::time_point now,
                    std::vector<std::pair<dead_letter, bool>>& out);

  /// Sends `dl` to the writer.
  void persist(const dead_letter& dl, bool journal);

  counters& stats_;
  const size_t cap_;
  caf::actor writer_;
  mutable std::mutex mtx_;
  uint64_t seq_ = 0;
  size_t dropped_ = 0;
  std::deque<dead_letter> letters_;
  /// See by_reason; `std::less<>` finds a code without building a string.
  std::map<std::string, uint64_t, std::less<>> reasons_;
  std::map<std::string, int64_t, std::less<>> current_;
  /// Shed letters by sender '\0' path; idle ones leave at the next sweep.
  std::map<std::string, burst, std::less<>> bursts_;
  clock::time_point next_sweep_;
};

} // namespace vigil
