#pragma once

// Private to the persistence component: running an LMDB walk in a forked
// child that reports through a pipe. A child that faults on a damaged page
// dies alone; the frames it committed before the fault still reach the
// parent (its fault handler writes them out before it re-raises).

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include <lmdb.h>

namespace vigil::detail {

/// Frame types of the child's report.
enum class frame : uint8_t {
  db_begin,  ///< name, entries (u64)
  db_absent, ///< name: the database does not exist in this environment
  record,    ///< key, value
  bad,       ///< key, why: a record whose frame or checksum fails
  at,        ///< records so far (u64), key: progress
  db_end,    ///< records (u64)
  problem,   ///< text: a structural problem
  free_list, ///< pages (u64)
  done,      ///< the walk finished
};

/// The child's side: frames appended to a buffer, written to the pipe in
/// chunks and, on a fault, by the signal handler up to the last whole frame.
class frame_writer {
public:
  explicit frame_writer(int fd);
  ~frame_writer();
  void put(frame type, std::string_view a = {}, std::string_view b = {});
  void put_u64(frame type, uint64_t n, std::string_view a = {});
  void flush();

private:
  int fd_;
};

/// What the parent got from one child.
struct child_result {
  int exit_code = -1; ///< If it exited.
  int signal = 0;     ///< If a signal ended it.
  bool timed_out = false;
  /// "the walk died from signal 11 (Segmentation fault)", "the walk timed
  /// out after 60000 ms", "the walk exited with code 3"; empty if it exited
  /// with 0.
  std::string failure() const;
};

/// Forks; the child runs `body` with a writer and exits 0 (or dies). The
/// parent hands every frame to `on_frame` (type, first field, second field,
/// the u64 if the frame has one) until the pipe closes, kills the child
/// after `timeout`, and reaps it.
child_result run_child(
  const std::function<void(frame_writer&)>& body,
  const std::function<void(frame, std::string_view, std::string_view,
                           uint64_t)>& on_frame,
  std::chrono::milliseconds timeout);

/// Opens `path` read-only in the child: a data dir (registering as an LMDB
/// reader, so that a live writer does not reuse the pages it reads) or a
/// single file without a lock (`single_file`: a backup or a private copy).
/// Returns an LMDB code; on error `*env` is closed.
int open_for_walk(const std::string& path, bool single_file, bool no_lock,
                  MDB_env** env);

} // namespace vigil::detail
