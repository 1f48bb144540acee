#pragma once

#include "vigil/actors/registry.hpp"

namespace vigil::cli {

/// Registers vigil's built-in agent types: source, counter, sink, flaky,
/// step, outcomes, and the built-in tools (see add_builtin_tools and
/// README, "Built-in agents").
void add_builtin_agents(registry& types);

/// Registers the built-in tool implementation `flaky_tool` (it fails as
/// each ToolRequest says) and the agent type `tool_caller`, which calls a
/// tool once per Number it gets.
void add_builtin_tools(registry& types);

/// Registers the built-in agents over shared state: enqueuer, task_worker
/// and cas_counter (cli/src/builtin_shared.cpp).
void add_builtin_shared(registry& types);

/// The `vigil` command line: run, check, inspect, dead-letters. `types` are
/// the user's agent types; the built-in ones are added. A user's own runner
/// is three lines:
///
///     int main(int argc, char** argv) {
///       vigil::registry types;
///       types.add<my_agent>("my_agent");
///       return vigil::cli::main(argc, argv, std::move(types));
///     }
int main(int argc, char** argv, registry types = {});

/// Parses a `vigil` command line as `main` does, without running it:
/// 0 if it parsed, -1 for --help, 64 for bad arguments (the message
/// printed). For tests and the command line's fuzz target.
int parse_only(int argc, char** argv);

} // namespace vigil::cli
