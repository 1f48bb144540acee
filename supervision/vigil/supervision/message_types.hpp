#pragma once

#include <caf/fwd.hpp>

namespace vigil {

/// Registers every message type of vigil's own protocols with CAF
/// (`add_message_type`): the envelope, the cell and supervisor protocols
/// (vigil/actors/cell.hpp, vigil/supervision/supervisor.hpp) and the
/// supervision types in their wire form (vigil/supervision/wire.hpp), so
/// that each has a name and can be serialized. Call it once on every
/// `caf::actor_system_config` that runs vigil's actors, before the system
/// is made; `vigil::node` does.
void add_message_types(caf::actor_system_config& cfg);

} // namespace vigil
