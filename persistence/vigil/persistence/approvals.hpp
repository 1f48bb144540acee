#pragma once

// Approvals: tool calls (and envelopes) held for a person's decision.
//
// A call that needs approval is stored pending in `db::approvals` under its
// idempotency key (tool_result_key), so that the call, replayed after a
// restart, finds its approval again. People name it by a short id and
// decide with `vigil approvals approve|reject`. While a node runs, the CLI
// cannot write the data dir (the node holds its lock), so a decision is a
// file in DIR/approvals/ that the node takes in; with no node, the CLI
// takes it in itself (take_decisions). Both go through `examine_decision`,
// so both end in the same record, and a record is decided at most once.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "vigil/persistence/status.hpp"
#include "vigil/persistence/store.hpp"
#include "vigil/store.pb.h"

namespace vigil {

/// Where an approval stands (ApprovalRecord.state). Only `pending` ever
/// changes, once, to one of the other three.
enum class approval_state : uint8_t { pending, approved, rejected, expired };

const char* to_string(approval_state x) noexcept;

/// What waits for approval (ApprovalRecord.kind).
enum class approval_kind : uint8_t { tool_call, envelope };

const char* to_string(approval_kind x) noexcept;

/// The call index reserved for an envelope's approval: its key is
/// `tool_result_key(path, origin, id, approval_envelope_index)`, (path,
/// origin, id) naming the envelope. No handler makes 2^32 - 1 calls.
constexpr uint32_t approval_envelope_index = 0xffffffffu;

/// Hex digits of an approval's id.
constexpr size_t approval_id_size = 12;

/// ApprovalRecord.request_json holds at most this many bytes.
constexpr size_t approval_request_max = 4096;

/// The id people use for the approval under `key`: the first 12 hex digits
/// (48 bits) of the key's SHA-256. Not stored: always derived from the key.
std::string approval_id(std::string_view key);

/// Lower-case hex of `bytes`, and back (false if `hex` is not hex of whole
/// bytes).
std::string hex_encode(std::string_view bytes);
bool hex_decode(std::string_view hex, std::string& out);

/// The record's state; an unknown number reads as `pending` and sets
/// `known` false.
approval_state state_of(const records::ApprovalRecord& rec,
                        bool* known = nullptr) noexcept;

/// `text` cut to at most `max` bytes (not inside a UTF-8 sequence), with a
/// note of how much was cut.
std::string bound_request_text(std::string text,
                               size_t max = approval_request_max);

/// One stored approval.
struct approval_entry {
  std::string key; ///< The binary key (tool_result_key).
  std::string id;  ///< approval_id(key).
  records::ApprovalRecord rec;
  /// Empty, or why the stored value does not parse (then `rec` is empty):
  /// "approvals key \"...\": checksum mismatch ...".
  std::string fault;
};

/// Every approval of `st`, in key order; one that does not parse is listed
/// with its fault.
status list_approvals(store& st, std::vector<approval_entry>& out);

/// The approval under `key`; `found` is false if there is none.
status get_approval(store& st, std::string_view key, approval_entry& out,
                    bool& found);

/// The one approval whose id starts with `id` (hex, any case), or, if
/// `id` is longer than an id, whose key's hex it is (two approvals whose
/// ids collide are told apart so). Errors name the data dir and the id:
/// `invalid` if `id` is not hex or matches more than one (listing them),
/// `not_found` if it matches none.
status find_approval(store& st, std::string_view id, approval_entry& out);

// -- decisions ----------------------------------------------------------------

/// A person's decision about one approval.
struct approval_decision {
  std::string id;
  std::string key;                                  ///< Binary.
  approval_state to = approval_state::approved;     ///< approved/rejected.
  std::string by;
  std::string reason;
  uint64_t unix_ms = 0;                             ///< When it was made.
};

/// What a decision does to a record.
enum class decision_effect : uint8_t {
  applied, ///< It was pending: it is approved or rejected now.
  late,    ///< It was pending but the decision came after its expiry: it
           ///< is expired now, and the decision refused.
  ignored, ///< It was already decided or expired: unchanged.
};

/// Applies `d` to `rec` (a pure function); `note` says what happened, for
/// a log line or the CLI.
decision_effect decide(records::ApprovalRecord& rec,
                       const approval_decision& d, std::string& note);

/// Marks `rec` expired at `now_ms` with `reason` if it is pending; false
/// (unchanged) otherwise.
bool expire_record(records::ApprovalRecord& rec, uint64_t now_ms,
                   std::string reason);

// -- decision files -------------------------------------------------------------

/// The folder of `data_dir` where decisions wait: DIR/approvals.
std::string decision_dir(const std::string& data_dir);

/// Drops `d` into decision_dir(data_dir) as JSON: a temporary file, fsync,
/// rename, fsync of the folder, so that a reader sees all of it or nothing
/// and it survives a crash. `path` is the file's name. `io` naming the file
/// on failure.
status write_decision_file(const std::string& data_dir,
                           const approval_decision& d, std::string& path);

/// The decision files waiting in data_dir, oldest first (their names start
/// with the decision's time). Temporary files (".*") and quarantined ones
/// ("*.bad") are not listed. No folder: none.
status list_decision_files(const std::string& data_dir,
                           std::vector<std::string>& out);

/// Reads and checks one decision file; false with `why` (naming the file
/// and the field) if it cannot be used.
bool read_decision_file(const std::string& path, approval_decision& out,
                        std::string& why);

/// What examine_decision's lookup found for a key.
enum class lookup_result : uint8_t {
  found,   ///< `entry` is filled (its fault may be set).
  missing, ///< No approval has the key.
  busy,    ///< Its pending record is not committed yet: try again later.
};

using approval_lookup =
  std::function<lookup_result(const std::string& key, approval_entry& entry)>;

/// What to do with one decision file.
struct decision_step {
  enum class kind : uint8_t {
    write, ///< Store `next` under `decision.key`, then delete the file.
    drop,  ///< Delete the file (a decision for a decided record).
    bad,   ///< Rename it *.bad: it is corrupt or names no approval.
    wait,  ///< Leave it for the next round.
  };
  kind what = kind::bad;
  decision_effect effect = decision_effect::ignored; ///< If write or drop.
  approval_decision decision;
  records::ApprovalRecord next;
  std::string text; ///< Names the file and the id: the log line.
};

/// Decides what to do with decision file `path`, looking records up with
/// `lookup` (a pure function of the file and the lookup).
decision_step examine_decision(const std::string& path,
                               const approval_lookup& lookup);

/// Renames `path` to `path.bad`, keeping it for a person to look at.
status quarantine_decision_file(const std::string& path);

/// Deletes a decision file that has been taken in (a missing file is not an
/// error: it was taken in before).
status remove_decision_file(const std::string& path);

/// Takes in every decision file of `st`'s data dir directly, each in its
/// own transaction before its file is deleted (the node at start, before
/// its writer runs; the CLI when no node holds the data dir). `log` gets
/// one line per file. A crash between the commit and the delete leaves a
/// file that is ignored next time (its record is decided). Fails only on a
/// storage or folder error, leaving the files not yet taken in.
status take_decisions(store& st, std::vector<std::string>& log);

} // namespace vigil
