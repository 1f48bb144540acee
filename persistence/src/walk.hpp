#pragma once

// Private to the persistence component: the walk of one database, run in a
// child (child_walk.hpp) by verify and repair.

#include <string>

#include <lmdb.h>

#include "child_walk.hpp"

namespace vigil::detail {

struct walk_mode {
  bool stream = false;   ///< Send every record (repair), else check frames.
  bool backward = false; ///< From the last key down.
  bool has_bound = false;
  std::string bound;     ///< Backward: stop at a key <= this one.
  /// A data dir of format 1 (bare Protobuf values, upgraded when a node
  /// opens it): an unframed value is not damage there.
  bool format1 = false;
};

/// Walks database `name` in `txn`: db_begin, then records (or bad frames),
/// `at` every 4,096 records, and db_end, or a problem where it stopped.
void walk_db(frame_writer& w, MDB_txn* txn, const char* name,
             const walk_mode& mode);

} // namespace vigil::detail
