#pragma once

#include <spdlog/logger.h>

namespace vigil::detail {

/// vigil's logger: the spdlog logger registered under the name "vigil" when
/// vigil first logs (a program registers its own before its first node to
/// choose sinks, format and level), else a new one on stderr, registered
/// under that name. Never spdlog's default logger: a program's stdout is
/// its own.
spdlog::logger& log();

} // namespace vigil::detail
