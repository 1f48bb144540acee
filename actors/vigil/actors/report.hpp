#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <spdlog/common.h>

#include "vigil/actors/envelope.hpp"

namespace vigil {

/// How vigil's logger writes its lines (node_config::log, the policy file's
/// `node.log`).
enum class log_format : uint8_t {
  /// spdlog's pattern, reports as `key=value` pairs.
  text,
  /// One JSON object per line: ts, level, logger, then a report's fields or
  /// `msg` for any other line.
  json,
};

struct log_settings {
  log_format format = log_format::text;
  /// The least severe line written (spdlog's levels: trace, debug, info,
  /// warn, err, critical, off). Reports of kind probe, compensation,
  /// dead_letter and shed are info; restart and degrade warn; crash and
  /// escalation err.
  spdlog::level::level_enum level = spdlog::level::info;
};

/// Applies `s` to vigil's logger (vigil/actors/detail/log.hpp): its level,
/// and in `json` a formatter that writes JSON lines. `text` keeps the
/// logger's formatter, so a program's own pattern stays; but after `json`
/// it is spdlog's default pattern (a sink does not hand back the one it
/// had), and a sink added to the logger after `json` keeps its own
/// formatter. Process-wide. In text, a report's paths and reason are quoted
/// when they hold anything but plain printable ASCII, so that a report is
/// one line.
void apply_log_settings(const log_settings& s);

/// What the logger writes now.
log_format current_log_format() noexcept;

/// A supervisor report, with the fields of OTP's supervisor reports
/// (supervisor, context, reason, offender) and the restart's attempt, plus
/// the trace id of the envelope involved (W3C, 32 hex digits).
struct report {
  /// crash, restart, escalation, degrade, probe, compensation, shed,
  /// dead_letter.
  std::string_view kind;
  /// The supervisor's path (an agent's parent; empty if none).
  std::string_view supervisor;
  /// OTP's context: child_terminated, start_error, shutdown (an
  /// escalation), or vigil's: degraded, probe_succeeded, probe_failed,
  /// compensating, overloaded, dead_letter.
  std::string_view context;
  std::string_view reason;
  /// The child's path (OTP's offender), or the agent's.
  std::string_view offender;
  /// Restarts of the offender so far (its restart count), or a saga
  /// step's number; 0 when it does not apply.
  uint64_t attempt = 0;
  /// The envelope involved, for its trace id; null if none.
  const envelope* env = nullptr;
};

/// The trace id of `e` as W3C writes it (32 lowercase hex digits).
std::string trace_hex(const envelope& e);

/// Writes `r` through vigil's logger at its kind's level (see
/// log_settings::level), as text or a JSON line.
void emit(const report& r);

} // namespace vigil
