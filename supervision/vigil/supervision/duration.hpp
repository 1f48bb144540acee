#pragma once

#include <chrono>
#include <string>

namespace vigil {

/// Parses a duration as a policy file and the command line write it: a
/// whole number and a unit, `250ms`, `5s`, `2m`, `1h`, or a plain `0`.
/// Returns false if `text` is none of these or longer than `max_duration`
/// (100 years), which the runtime could not represent. The one duration
/// parser of vigil: whether a field allows 0 is up to the field.
[[nodiscard]] bool parse_duration(const std::string& text,
                                  std::chrono::milliseconds& out);

/// What to write instead of a rejected duration, for error messages.
inline constexpr const char* duration_hint
  = "write it like 250ms, 5s, 2m or 1h (at most 876000h)";

} // namespace vigil
