#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <cstdint>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>
#include <deque>

#include <caf/actor.hpp>

#include "vigil/actors/agent.hpp"
#include "vigil/actors/envelope.hpp"
#include "vigil/actors/registry.hpp"
#include "vigil/persistence/store.hpp"

namespace vigil {

/// An envelope that could not be delivered or processed, with its reason.
struct dead_letter {
  uint64_t seq = 0;   ///< Order of arrival in this node's dead letters.
  std::string path;   ///< The agent it was addressed to.
  envelope env;       ///< The envelope as it was last delivered.
  std::string reason; ///< Why it is here, e.g. "poison_message: ...".
};

/// Node-wide state shared by every cell and supervisor of one node: the agent
/// registry, the path directory and the dead letters.
///
/// Thread-safe. Owned by the node through a shared_ptr that every actor of the
/// node holds, so it outlives them all.
class runtime {
public:
  /// In-memory dead letters kept before the oldest are dropped (and
  /// counted); durable dead letters in LMDB come with the persistence layer.
  static constexpr size_t default_dead_letter_cap = 100000;

  explicit runtime(registry types,
                   size_t dead_letter_cap = default_dead_letter_cap)
    : types_(std::move(types)),
      node_id_(random_node_id()),
      dead_cap_(dead_letter_cap) {
    // nop
  }

  const registry& types() const noexcept {
    return types_;
  }

  /// Next message id: unique per node and monotonic. With a data dir, ids
  /// start at `boots << 40`, so they stay unique across restarts of the
  /// node and a journal agent can tell a redelivery from a new message.
  /// (origin = `node_id()`, id) is unique across nodes.
  uint64_t next_id() noexcept {
    return ids_.fetch_add(1, std::memory_order_relaxed);
  }

  /// The origin of the ids this node mints: its data dir's node id, or a
  /// random one per runtime without a data dir. Never 0.
  uint64_t node_id() const noexcept {
    return node_id_;
  }

  /// Gives a new envelope its identity and trace context. `message_id` 0
  /// mints (origin = node_id()); otherwise the caller's (`origin`, id).
  /// With `parent` (the envelope whose handler sends `e`), `e` joins its
  /// trace: same trace id and flags, span id = the parent's handling span,
  /// and the parent's attempt budget. Without, `e` starts a trace whose id
  /// is node_id():id.
  void stamp(envelope& e, uint64_t message_id, uint64_t origin,
             const envelope* parent) noexcept {
    if (message_id != 0) {
      e.id = message_id;
      e.origin = origin;
    } else {
      e.id = next_id();
      e.origin = node_id_;
    }
    if (parent != nullptr) {
      e.trace_id = parent->trace_id;
      e.trace_id_high = parent->trace_id_high;
      e.trace_flags = parent->trace_flags;
      e.span_id = parent->handling_span();
      e.attempt_budget = parent->attempt_budget;
    } else {
      e.trace_id = e.id;
      e.trace_id_high = node_id_;
    }
  }

  /// Counts one envelope handled by an agent (for progress reports).
  void count_handled() noexcept {
    handled_.fetch_add(1, std::memory_order_relaxed);
  }

  /// Envelopes handled by this node's agents so far.
  uint64_t handled() const noexcept {
    return handled_.load(std::memory_order_relaxed);
  }

  /// Counts one restart (or degrade) of a child, anywhere in the tree.
  void count_restart() noexcept {
    restarts_.fetch_add(1, std::memory_order_relaxed);
  }

  /// Restarts in this node so far; unlike `child_info::restarts` it does not
  /// start again at 0 when a supervisor is itself restarted.
  uint64_t restarts() const noexcept {
    return restarts_.load(std::memory_order_relaxed);
  }

  // -- durability (set once by the node before the tree starts) -------------

  /// Attaches the node's store and its writer (which owns what the store
  /// recovered at start). Not thread-safe: call before any actor of the
  /// node runs.
  void attach_store(std::shared_ptr<store> st, caf::actor writer);

  /// The node's store, or nullptr without a data dir.
  const std::shared_ptr<store>& storage() const noexcept {
    return store_;
  }

  /// The node's writer actor; invalid without a data dir.
  const caf::actor& writer() const noexcept {
    return writer_;
  }

  /// Binds `path` to the cell that hosts the agent there; a binding of
  /// another cell is replaced (handles to it fall back to the path).
  void bind(const std::string& path, caf::actor cell);

  /// Removes `path` if it is still bound to `cell`.
  void unbind(const std::string& path, const caf::actor& cell);

  /// The cell at `path`, or an invalid handle.
  caf::actor lookup(std::string_view path) const;

  /// The binding at `path` (for a `handle`), or nullptr.
  std::shared_ptr<const detail::binding>
  binding_of(std::string_view path) const;

  /// Every bound path, sorted.
  std::vector<std::string> paths() const;

  /// Records a dead letter (and, with a data dir, writes it to LMDB).
  /// `persist` false: the caller writes it to LMDB itself (atomically with
  /// other changes). `journal`: the caller is the cell of a journal agent
  /// at `path` (a replay needs to know the path's mode).
  void add_dead_letter(std::string path, envelope env, std::string reason,
                       bool persist = true, bool journal = false);

  /// A copy of all dead letters, oldest first.
  std::vector<dead_letter> dead_letters() const;

  /// Number of dead letters held now.
  size_t dead_letter_count() const;

  /// Number of dead letters dropped because the cap was reached.
  size_t dead_letters_dropped() const;

private:
  registry types_;
  std::atomic<uint64_t> ids_{1};
  uint64_t node_id_;
  alignas(64) std::atomic<uint64_t> handled_{0};
  std::atomic<uint64_t> restarts_{0};
  mutable std::shared_mutex dir_mtx_;
  // Ordered with a transparent comparator: lookups by string_view allocate
  // nothing.
  std::map<std::string, caf::actor, std::less<>> dir_;
  // The bindings that handles hold, made on the first resolve of a path
  // only: an agent never resolved pays no allocation for one (a node may
  // bind a million paths). Guarded by dir_mtx_.
  mutable std::map<std::string, std::shared_ptr<detail::binding>,
                   std::less<>>
    handles_;
  mutable std::mutex dl_mtx_;
  size_t dead_cap_;
  uint64_t dead_seq_ = 0;
  size_t dead_dropped_ = 0;
  std::deque<dead_letter> dead_;
  std::shared_ptr<store> store_;
  caf::actor writer_;
};

} // namespace vigil
