#include "vigil/supervision/message_types.hpp"

#include <caf/actor_system_config.hpp>

#include "vigil/actors/envelope.hpp"
#include "vigil/supervision/supervisor.hpp"

namespace vigil {

void add_message_types(caf::actor_system_config& cfg) {
  cfg.add_message_type<envelope>("vigil.envelope");
  cfg.add_message_type<child_spec>("vigil.child_spec");
  cfg.add_message_type<child_info>("vigil.child_info");
  cfg.add_message_type<std::vector<child_info>>("vigil.child_infos");
  cfg.add_message_type<child_counts>("vigil.child_counts");
  cfg.add_message_type<params>("vigil.params");
}

} // namespace vigil
