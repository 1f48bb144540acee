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

/// Links the generated code of each of vigil's own Protobuf schemas
/// (proto/vigil/*.proto) into the program, so that their message types are
/// in Protobuf's generated pool and can be named in a policy file (a
/// degrade default of type `vigil.builtin.Number`, say). From static
/// libraries a linker takes only the objects a program refers to; the node
/// and the policy loader call this, and it costs a few loads.
void link_own_schemas() noexcept;

} // namespace vigil
