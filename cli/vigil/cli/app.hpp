#pragma once

#include "vigil/actors/registry.hpp"

namespace vigil::cli {

/// Registers vigil's built-in agent types: source, counter, sink, flaky
/// (see README, "Built-in agents").
void add_builtin_agents(registry& types);

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

} // namespace vigil::cli
