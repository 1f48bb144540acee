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

#include "vigil/actors/envelope.hpp"
#include "vigil/actors/registry.hpp"

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
    : types_(std::move(types)), dead_cap_(dead_letter_cap) {
    // nop
  }

  const registry& types() const noexcept {
    return types_;
  }

  /// Next message id (unique per node, monotonic).
  uint64_t next_id() noexcept {
    return ids_.fetch_add(1, std::memory_order_relaxed);
  }

  /// Binds `path` to the cell that hosts the agent there.
  void bind(const std::string& path, caf::actor cell);

  /// Removes `path` if it is still bound to `cell`.
  void unbind(const std::string& path, const caf::actor& cell);

  /// The cell at `path`, or an invalid handle.
  caf::actor lookup(std::string_view path) const;

  /// Every bound path, sorted.
  std::vector<std::string> paths() const;

  /// Records a dead letter.
  void add_dead_letter(std::string path, envelope env, std::string reason);

  /// A copy of all dead letters, oldest first.
  std::vector<dead_letter> dead_letters() const;

  /// Number of dead letters held now.
  size_t dead_letter_count() const;

  /// Number of dead letters dropped because the cap was reached.
  size_t dead_letters_dropped() const;

private:
  registry types_;
  std::atomic<uint64_t> ids_{1};
  mutable std::shared_mutex dir_mtx_;
  // Ordered with a transparent comparator: lookups by string_view allocate
  // nothing.
  std::map<std::string, caf::actor, std::less<>> dir_;
  mutable std::mutex dl_mtx_;
  size_t dead_cap_;
  uint64_t dead_seq_ = 0;
  size_t dead_dropped_ = 0;
  std::deque<dead_letter> dead_;
};

} // namespace vigil
