#pragma once

// What vigil does about a damaged data dir: the checks before an open, the
// structural walk (`vigil verify`), the salvage into a new data dir
// (`vigil repair`), the consistent compacted copy (`vigil backup`), moving
// one named record aside, and the data dir's permissions.
//
// LMDB checksums nothing: a damaged branch page, or a page number past the
// end of a truncated file, makes any reader fault. So everything here that
// walks a B-tree does it in a forked child, which reports through a pipe;
// a child that dies from a signal is a finding, not a crash of the caller.
// Every value vigil stores is a record framed with a format byte and a
// CRC-32C (vigil/persistence/record.hpp), so the walk also checks each
// record's checksum without parsing it.

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "vigil/persistence/status.hpp"
#include "vigil/persistence/store.hpp"

namespace vigil {

/// What DIR/data.mdb's two meta pages say, read with pread (never mapped).
/// LMDB writes the two in turn and opens with the one of the newer
/// transaction.
struct data_file_info {
  std::string path;          ///< DIR/data.mdb (or the file itself).
  bool exists = false;
  uint64_t file_size = 0;
  uint32_t page_size = 0;    ///< Of the meta page in use; 0 if none is valid.
  int used_meta = -1;        ///< 0 or 1; -1: neither is valid.
  uint64_t needed_size = 0;  ///< (last page + 1) * page size of `used_meta`.
  uint64_t map_size = 0;     ///< The map size `used_meta` records.
  struct meta_page {
    bool valid = false;
    std::string problem;     ///< Why it is not valid.
    uint64_t txnid = 0;
    uint64_t last_page = 0;
  } meta[2];
};

/// Reads the meta pages of `dir`/data.mdb (or of `dir` itself if
/// `single_file`). Fails only when the file exists but cannot be read.
status read_data_file(const std::string& dir, data_file_info& out,
                      bool single_file = false);

/// The check before every open: ok for a data dir without data.mdb or with
/// an empty one (a new data dir); `corrupt`, naming the file, for a file
/// with no valid meta page or one shorter than its meta page says it must
/// be (LMDB would map the missing pages and die of SIGBUS on them); `io`
/// for a file that cannot be read.
status check_data_file(const std::string& dir, bool single_file = false);

/// One database as the walk found it.
struct db_walk {
  std::string name;
  uint64_t entries = 0;     ///< What the database's root says it holds.
  uint64_t records = 0;     ///< What the walk read.
  uint64_t bad_records = 0; ///< Records whose frame or CRC-32C fails.
  /// Their keys (the first 1,000), with why.
  std::vector<std::pair<std::string, std::string>> bad;
  bool complete = false;    ///< The walk reached the database's end.
};

/// The result of `verify_data_dir`.
struct verify_report {
  /// The first structural problem: an LMDB error, a count that does not
  /// match, a free page past the end, or the walk's death by a signal.
  /// Empty if the structure is sound.
  std::string problem;
  int signal = 0;           ///< The signal that killed the walk, if one did.
  /// The walk ran out of time (`problem` says so): not proof of damage; a
  /// large dir on a slow disk needs a longer `verify_options::timeout`.
  bool timed_out = false;
  std::vector<db_walk> dbs; ///< The vigil databases the walk reached.
  uint64_t free_pages = 0;  ///< Pages on LMDB's free list.
  data_file_info file;
  std::chrono::milliseconds took{0};

  /// Sound structure and every record checks.
  bool ok() const noexcept;
  /// Records that fail their checksum, over all databases.
  uint64_t bad_records() const noexcept;
};

struct verify_options {
  /// The walk's child is killed after this long (a damaged page can make
  /// LMDB loop); zero: 60 s plus 10 s per GiB of data.mdb.
  std::chrono::milliseconds timeout{0};
  bool single_file = false; ///< `dir` is an LMDB file (a backup), not a dir.
};

/// Walks every vigil database of `dir` (and LMDB's free list) in a forked
/// child: every branch, leaf and overflow page a cursor reaches, every
/// record's frame and checksum, each database's count against its root.
/// Runs on a live data dir too (the child is one more LMDB reader). Returns
/// an error only when the walk could not be run; what it found is in `out`.
status verify_data_dir(const std::string& dir, verify_report& out,
                       const verify_options& opts = {});

/// One database as `repair_data_dir` salvaged it.
struct db_salvage {
  std::string name;
  uint64_t entries = 0;      ///< What the damaged database's root said.
  uint64_t salvaged = 0;     ///< Records copied that check.
  uint64_t bad_records = 0;  ///< Records that fail their checksum: moved to
                             ///< the new dir's dead letters, never read.
  /// Where the walk stopped, if it did not reach the end: the forward walk
  /// stopped after key `lost_after`, the backward one before `lost_before`
  /// (printable keys); the records between are lost.
  std::vector<std::string> gaps;
};

struct repair_report {
  std::vector<db_salvage> dbs;
  std::vector<std::string> notes; ///< What was done to read the file at all.
  uint64_t salvaged() const noexcept;
  uint64_t bad_records() const noexcept;
  /// Records the damaged roots counted and that neither walk reached
  /// (an estimate: a damaged root's count is not to be trusted either).
  uint64_t lost() const noexcept;
};

/// Salvages every record of `dir` that still reads and checks into the new
/// data dir `out_dir` (which must not exist, or be empty). Works on a copy
/// of data.mdb: a truncated one is padded with zeros to the size its meta
/// page needs, and a damaged meta page is replaced by the other one. Each
/// database is walked forward and then, if that stopped, backward, each
/// walk in a forked child. Records that fail their checksum go to the new
/// dir's dead letters with their raw bytes. Refuses while a node holds
/// `dir`. The new dir is verified before this returns.
status repair_data_dir(const std::string& dir, const std::string& out_dir,
                       repair_report& out);

/// What an open for writing upgraded: the format it found (0: current) and
/// the records it rewrote, in one transaction.
struct upgrade_note {
  uint32_t from = 0;
  size_t records = 0;
};

/// "DIR: upgraded the data dir from format F to T (N records rewritten, in
/// one transaction)", as the node logs it and the command prints it.
std::string upgrade_line(const std::string& dir, const upgrade_note& u);

/// Moves one record of `dir` (stopped) aside: it is deleted from `which`
/// and kept as a dead letter with its database, key, raw bytes and the
/// reason "moved aside: `reason`", so that a node can start without it.
/// `not_found` if there is no such record. Like every open for writing, it
/// first upgrades a data dir of an earlier format; `upgraded`, if given,
/// says whether it did.
status move_record_aside(const std::string& dir, db which,
                         const std::string& key, const std::string& reason,
                         upgrade_note* upgraded = nullptr);

/// Parses a key as `printable_key` renders it (\xNN for other bytes);
/// false if a \x escape is malformed.
bool parse_printable_key(std::string_view text, std::string& out);

/// The database named `name`; false if vigil has none of that name.
bool db_from_string(std::string_view name, db& out) noexcept;

struct backup_report {
  uint64_t bytes = 0;   ///< The size of the copy.
  uint64_t records = 0; ///< Records in the copy, by its verification.
  std::chrono::milliseconds took{0};
};

/// Writes a consistent, compacted copy of `dir`'s environment to the file
/// `out_file` (mode 0600; it must not exist), from one read transaction, so
/// a node may keep running and writing. The copy runs in a forked child
/// (a damaged tree cannot take the caller down), is written to
/// a temporary file of its own beside it, synced, verified, and renamed.
status backup_data_dir(const std::string& dir, const std::string& out_file,
                       backup_report& out);

/// Warnings about who can read `dir`: the dir or a file in it that its
/// group or others may read or write. vigil creates the dir 0700 and its
/// files 0600; it warns about wider ones and runs on.
std::vector<std::string> permission_warnings(const std::string& dir);

/// Routes libprotobuf's log lines through `sink` (once per process; later
/// calls replace the sink). The default sink writes them to stderr prefixed
/// "vigil: protobuf:".
void route_protobuf_log(void (*sink)(int level, const std::string& line));

} // namespace vigil
