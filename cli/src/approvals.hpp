#pragma once

// `vigil approvals list|show|approve|reject`: the tool calls and envelopes
// that wait for a person. Internal to vigil_cli.

#include <functional>

namespace CLI {
class App;
} // namespace CLI

namespace vigil::cli {

/// Adds `vigil approvals` and its four actions to `app`. The function
/// returned runs the action that was parsed and returns the exit code; call
/// it when `app.got_subcommand("approvals")`.
std::function<int()> add_approvals_command(CLI::App& app);

} // namespace vigil::cli
