#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <caf/actor.hpp>

#include "vigil/actors/detail/binding.hpp"

namespace vigil {

/// Where a node finds the cell that hosts the agent at a path.
///
/// The runtime holds one directory; senders resolve paths through it and
/// supervisors bind and unbind their children's cells in it. Today's node
/// uses `local_directory` (every path on this node); clustering adds a
/// directory that also knows paths owned by other nodes.
///
/// Every call is thread-safe: any actor of the node may call any of them
/// at any time. A directory never blocks on an actor and never sends one
/// a message.
///
/// Why a virtual interface: the cost is one indirect call per resolve,
/// paid only when a handle's cached binding is stale (see
/// `detail::binding`), never per envelope sent through a live handle.
class directory {
public:
  virtual ~directory();

  /// Binds `path` to `cell`. A binding of another cell at `path` is
  /// replaced: its `detail::binding` goes dead, so handles that cached it
  /// fall back to the path. `gauge` is the cell's queue count (senders
  /// take a place in it before they enqueue); null for an actor that keeps
  /// none (a supervisor).
  virtual void bind(const std::string& path, caf::actor cell,
                    detail::queue_gauge* gauge = nullptr) = 0;

  /// Removes `path` if it is still bound to `cell` (a later binding of
  /// another cell stays), and kills that binding.
  virtual void unbind(const std::string& path, const caf::actor& cell) = 0;

  /// The cell at `path`, or an invalid handle. Allocates nothing.
  virtual caf::actor lookup(std::string_view path) const = 0;

  /// The cell at `path` and its queue count, or an invalid handle.
  /// Allocates nothing.
  virtual detail::bound lookup_bound(std::string_view path) const = 0;

  /// The binding at `path` for a handle to cache, or nullptr if nothing is
  /// bound there. Calls for one binding return the same object until it is
  /// replaced or unbound.
  virtual std::shared_ptr<const detail::binding>
  binding_of(std::string_view path) const = 0;

  /// Every bound path, sorted.
  virtual std::vector<std::string> paths() const = 0;
};

} // namespace vigil
