#pragma once

// The parts of a cell that only some cells have (see cell_impl.hpp): what
// waits for a commit and the durable state, and the degraded stand-in.

#include "cell_impl.hpp"

namespace vigil::detail {

/// A reply held until the commit that makes its answer true.
/// A journal agent's deferred reply to an envelope that asks for its
/// reply to be kept (envelope::keep_reply_flag, a durable saga's call):
/// given while the envelope is held (its tool calls open), the answer is
/// kept in the consume's commit and sent after it, as a returned one is;
/// given after the envelope was consumed, it goes out directly (and is not
/// kept). `reply_dropped` (the instance ended) always goes out at once,
/// and then `delivered` says that the envelope's requester was answered.
struct cell::deferred_slot {
  bool open = true;
  bool set = false;
  bool delivered = false;
  envelope out;
  caf::error err;
  response_promise rp;
};

struct cell::held_reply {
  response_promise rp;
  envelope out;
  caf::error err; ///< Set: the reply is this error.
  uint64_t seq = 0; ///< The journal entry it answers for.
};

/// The answer to the requester of an envelope that a snapshot save
/// writes out of the disk (see bury): given once that save commits; if
/// it fails, the envelope is in the last good save again, and reconcile
/// gives the requester to it, by (origin, id).
struct cell::dropped_reply {
  uint64_t origin = 0;
  uint64_t id = 0;
  response_promise rp;
  caf::error err;
};

/// What waits for one commit of this cell.
struct cell::commit_wait {
  std::vector<uint64_t> outbox; ///< Outbox seqs to deliver after it.
  std::vector<held_reply> replies;
  std::vector<dropped_reply> dropped;
  /// Dead letters that this commit writes, to list in memory once it is
  /// committed (a refused one is no dead letter: the next owner has it).
  std::vector<std::pair<envelope, std::string>> dead;
  /// Shared operations of this commit, and their results (on_shared_done).
  std::vector<shared_call> shared;
  std::vector<std::string> shared_results;
};

/// A start the supervisor asked for before this cell owned its path.
struct cell::start_request {
  response_promise rp;
  bool is_restart = false;
  caf::error reason;
};

struct cell::durable {
  explicit durable(caf::actor_clock& clk)
    : clock(clk), outbox_retry(outbox_retry_policy(), clock) {
    // nop
  }
  /// An undelivered outbox entry is retried after 250 ms, constant.
  static resilience::backoff_policy outbox_retry_policy() {
    resilience::backoff_policy p;
    p.initial = std::chrono::milliseconds{250};
    p.max = p.initial;
    return p;
  }
  actor_clock_view clock;
  resilience::backoff outbox_retry;
  resilience::backoff_track outbox_track;
  durability_spec spec;
  bool journal() const noexcept {
    return spec.mode == durability_mode::journal;
  }
  caf::actor writer;
  /// This cell's epoch as the path's owner (see owner_ref).
  owner_ref owner;
  /// A fence was sent: the path is released when the cell ends.
  bool fenced = false;
  /// The first fence was granted (with or without a usable view).
  bool granted = false;
  /// A commit failed and a new fence is under way; then the cell reloads
  /// its view from the disk (see storage_failure).
  bool refencing = false;
  bool ready() const noexcept {
    return granted && !refencing;
  }
  /// Why the durable view cannot be used (mode mismatch, unreadable
  /// records, no data dir): a start fails with it.
  std::string start_error;
  /// The failed commit that the running re-fence answers.
  caf::error failure;
  uint64_t next_seq = 1;
  uint64_t next_outbox = 1;
  uint64_t processed = 0;
  uint64_t next_token = 1;
  /// Tokens below this were written before the last reconcile, which
  /// settled them: their late acknowledgements are ignored.
  uint64_t first_token = 1;
  /// The last state handed to the writer; what a restart restores.
  std::string state;
  std::string state_type;
  bool has_state = false;
  /// Journal: envelopes whose accept commit is outstanding, in token
  /// order (the writer acknowledges in the order it was written to);
  /// `accepting.front()` has token `first_accept`.
  std::deque<pending> accepting;
  uint64_t first_accept = accept_bit;
  uint64_t next_accept = accept_bit;
  /// Journal: envelopes that arrived before this cell owned its path (or
  /// during a re-fence); accepted once it does.
  std::deque<pending> unaccepted;
  /// Starts that arrived before this cell owned its path.
  std::vector<start_request> starts;
  /// Outbox sends of the handler running now.
  std::vector<detail::outbox_send> sends;
  /// Shared operations of the handler running now (serialized), and their
  /// callbacks: committed with its consume.
  std::vector<std::string> shared_ops;
  std::vector<shared_call> shared;
  /// A handler failed or was unheld: what it would have committed goes.
  void drop_handler_writes() {
    sends.clear();
    shared_ops.clear();
    shared.clear();
  }
  /// Outbox entries not yet delivered, by outbox seq; `due` lists the
  /// committed ones waiting for a delivery slot.
  std::map<uint64_t, detail::outbox_send> outbox;
  std::deque<uint64_t> due;
  size_t in_flight = 0;
  /// A look for room at a full receiver is due (see room_pause).
  bool room_wait = false;
  /// Commits outstanding that something waits for (outbox entries to
  /// deliver, replies to give), by token.
  std::unordered_map<uint64_t, commit_wait> after_commit;
  /// Kept answers on their way to disk, by the envelope's (origin, id):
  /// the consume that keeps one is written, not yet committed. A resend
  /// whose duplicate verdict comes first gets it once that commit is
  /// confirmed (answer_again). Dropped when the commit's verdict comes.
  struct kept_flight {
    uint64_t tok = 0;
    uint64_t seq = 0;
    envelope out;
    caf::error err;
  };
  std::map<std::pair<uint64_t, uint64_t>, kept_flight> kept_in_flight;
  void keep_in_flight(const envelope& e, uint64_t tok, uint64_t seq,
                      const envelope* out, const caf::error* err) {
    auto& k = kept_in_flight[{e.origin, e.id}];
    k.tok = tok;
    k.seq = seq;
    k.out = out != nullptr ? *out : envelope{};
    k.err = err != nullptr ? *err : caf::error{};
  }
  /// The commit of `tok` has its verdict (commits come in token order).
  void settled_in_flight(uint64_t tok) {
    for (auto i = kept_in_flight.begin(); i != kept_in_flight.end();)
      i = i->second.tok <= tok ? kept_in_flight.erase(i) : std::next(i);
  }
  /// The token of the commit that the envelope being handled made (0:
  /// none); its reply waits for it.
  uint64_t last_consume = 0;
  /// Journal seq of the buffered envelope being handled (0 for others).
  uint64_t current_seq = 0;
  /// Snapshot mode.
  uint32_t unsaved = 0;
  bool timer = false;
};

/// The stand-in of a degraded child and its half-open probes.
/// The probes wait `probe_min`, doubling up to `probe_max` with each
/// failed one; a success starts over.
struct cell::degraded_state {
  explicit degraded_state(caf::actor_clock& clk) : clock(clk) {
    // nop
  }
  envelope fallback;
  actor_clock_view clock;
  std::optional<resilience::backoff> probes;
  resilience::backoff_track track;
  uint64_t probe_seq = 0;
  /// The delay before the next probe.
  caf::timespan probe_delay() const noexcept {
    return probes->base(track);
  }
  /// A probe failed: the next one waits longer.
  void probe_failed() {
    (void) probes->next(track);
  }
};

} // namespace vigil::detail
