#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "vigil/persistence/store.hpp"

namespace vigil {

/// What the node's start recovered from its data dir (`store::recover`),
/// by path, until each path's first owner claims it.
///
/// The first fence of a path after the start gets the path's records from
/// here instead of reading LMDB again: nothing of the path was written
/// since. Once the tree has started, the paths nobody claimed are the
/// node's orphans: `take_unclaimed` names them and drops their records (a
/// later fence of such a path reads LMDB).
///
/// Not thread-safe: owned by the node's writer actor, which alone calls
/// it (see spawn_writer). A value type; moving it moves the records.
class recovery_table {
public:
  recovery_table() = default;

  /// Takes the records `store::recover` found.
  explicit recovery_table(std::map<std::string, recovered_agent> found);

  /// Moves the records of `path` into `out` and forgets them. False (and
  /// `out` untouched) if there are none: the path was not on disk at the
  /// start, was claimed before, or was dropped as an orphan.
  bool claim(std::string_view path, recovered_agent& out);

  /// The paths nobody claimed, sorted; drops their records.
  std::vector<std::string> take_unclaimed();

  /// True if `path`'s records wait to be claimed.
  bool contains(std::string_view path) const;

  /// Number of paths whose records wait to be claimed.
  size_t size() const noexcept {
    return found_.size();
  }

  bool empty() const noexcept {
    return found_.empty();
  }

private:
  std::map<std::string, recovered_agent, std::less<>> found_;
};

} // namespace vigil
