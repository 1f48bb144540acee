#pragma once

#include <atomic>
#include <cstdint>

namespace vigil {

/// What a full cell does with one more envelope (a child's `overflow`).
enum class overflow_policy : uint8_t {
  /// The newest envelope is refused: a requester gets `overloaded`, an
  /// async envelope becomes a dead letter with reason `overloaded`
  /// (persisted rate-limited: a count plus samples per sender and reason).
  /// vigil's own senders that can wait (the outbox, the built-in source,
  /// a thread in `node::send` / `node::call`) wait for room instead only
  /// under `wait`; the outbox always does.
  shed,
  /// A sender that can wait waits for room (a thread in `node::send` or
  /// `node::call`, up to its timeout; the built-in `source`); one that
  /// cannot (an agent's `send` or `request`) is refused as under `shed`.
  wait,
};

} // namespace vigil

namespace vigil::detail {

/// The count of envelopes queued for one cell: in its mailbox, not yet
/// taken up (CAF 0.17's mailboxes have no bound, so the bound is this).
/// A sender takes a place before it enqueues; the cell gives it back when
/// it takes the envelope from its mailbox (envelope::queued_flag marks the
/// envelopes that hold one). The cell's own holdings after that (a
/// restart's buffer, a journal agent's accepts) are bounded by buffer_cap.
///
/// Lives in the cell object: a sender holding the cell's caf::actor keeps
/// it alive. One relaxed read-modify-write per send and one per receive.
struct queue_gauge {
  queue_gauge(uint32_t c, overflow_policy p) : cap(c), policy(p) {
    // nop
  }

  const uint32_t cap;
  const overflow_policy policy;
  std::atomic<uint32_t> queued{0};
  /// Envelopes refused because the queue was full.
  std::atomic<uint64_t> shed{0};
  /// Envelopes the cell took up (written by the cell only). Every counted
  /// send is taken + queued + shed.
  std::atomic<uint64_t> taken{0};

  /// Takes a place; false (and counts one shed) when the queue is full.
  bool enter() noexcept {
    if (queued.fetch_add(1, std::memory_order_relaxed) >= cap) {
      queued.fetch_sub(1, std::memory_order_relaxed);
      shed.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    return true;
  }

  /// Takes a place if there is one; a sender that waits for room uses it
  /// (a refusal is no shed).
  bool try_enter() noexcept {
    if (queued.fetch_add(1, std::memory_order_relaxed) >= cap) {
      queued.fetch_sub(1, std::memory_order_relaxed);
      return false;
    }
    return true;
  }

  /// Takes a place though the queue may be full (an envelope already
  /// accepted elsewhere that moves here, e.g. a saga's step call).
  void force_enter() noexcept {
    queued.fetch_add(1, std::memory_order_relaxed);
  }

  /// Gives a place back (the cell took the envelope). Called by the cell
  /// only.
  void leave() noexcept {
    taken.store(taken.load(std::memory_order_relaxed) + 1,
                std::memory_order_relaxed);
    queued.fetch_sub(1, std::memory_order_relaxed);
  }

  /// Places left now (a hint: other senders may take them first).
  uint32_t room() const noexcept {
    auto q = queued.load(std::memory_order_relaxed);
    return q >= cap ? 0 : cap - q;
  }
};

} // namespace vigil::detail
