#pragma once

// `vigil verify`, `vigil repair` and `vigil backup`. Internal to vigil_cli.

#include <functional>

namespace CLI {
class App;
} // namespace CLI

namespace vigil::cli {

/// Adds `verify`, `repair` and `backup` to `app`. The function returned
/// runs the one that was parsed and returns the exit code; call it when
/// `app` got one of them.
std::function<int()> add_data_dir_commands(CLI::App& app);

/// Whether `inspect` and `dead-letters` skip the walk (--skip-verify).
extern bool skip_verify;

} // namespace vigil::cli
