#pragma once

#include <functional>
#include <map>
#include <memory>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "vigil/actors/directory.hpp"

namespace vigil {

/// The directory of one node: every path is bound to a cell of this node.
///
/// One ordered map under a reader-writer lock. `lookup` and `binding_of`
/// of a binding that exists take the lock shared and allocate nothing (the
/// map's comparator is transparent, so a string_view key needs no copy).
/// The `detail::binding` a handle holds is made on the first `binding_of`
/// of a path only: a node may bind a million paths that nobody resolves,
/// and none of them pays for one.
class local_directory final : public directory {
public:
  void bind(const std::string& path, caf::actor cell,
            detail::queue_gauge* gauge = nullptr) override;

  void unbind(const std::string& path, const caf::actor& cell) override;

  caf::actor lookup(std::string_view path) const override;

  detail::bound lookup_bound(std::string_view path) const override;

  std::shared_ptr<const detail::binding>
  binding_of(std::string_view path) const override;

  std::vector<std::string> paths() const override;

private:
  /// Kills and forgets the binding that handles hold for `path`, if any.
  /// Requires mtx_ held exclusively.
  void retire(const std::string& path);

  mutable std::shared_mutex mtx_;
  std::map<std::string, detail::bound, std::less<>> cells_;
  // The bindings that handles hold; guarded by mtx_. Mutable: made lazily
  // by the const binding_of.
  mutable std::map<std::string, std::shared_ptr<detail::binding>,
                   std::less<>>
    bindings_;
};

} // namespace vigil
