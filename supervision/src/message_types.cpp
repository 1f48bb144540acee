#include "vigil/supervision/message_types.hpp"

#include <caf/actor_system_config.hpp>

#include "vigil/actors/envelope.hpp"
#include "vigil/builtin.pb.h"
#include "vigil/policy.pb.h"
#include "vigil/saga.pb.h"
#include "vigil/shared.pb.h"
#include "vigil/store.pb.h"
#include "vigil/supervision.pb.h"
#include "vigil/supervision/supervisor.hpp"

namespace vigil {

void add_message_types(caf::actor_system_config& cfg) {
  cfg.add_message_type<envelope>("vigil.envelope");
  cfg.add_message_type<child_spec>("vigil.child_spec");
  cfg.add_message_type<child_info>("vigil.child_info");
  cfg.add_message_type<std::vector<child_info>>("vigil.child_infos");
  cfg.add_message_type<child_counts>("vigil.child_counts");
  cfg.add_message_type<params>("vigil.params");
  cfg.add_message_type<start_cmd>("vigil.start_cmd");
  cfg.add_message_type<stop_cmd>("vigil.stop_cmd");
  cfg.add_message_type<degrade_cmd>("vigil.degrade_cmd");
  cfg.add_message_type<exit_report>("vigil.exit_report");
  cfg.add_message_type<recover_report>("vigil.recover_report");
  cfg.add_message_type<stop_ack>("vigil.stop_ack");
}

void link_own_schemas() noexcept {
  // One message of each schema: naming it links the schema's object, whose
  // static initializer registers every type of that schema.
  (void)builtin::Number::descriptor();
  (void)policy::Policy::descriptor();
  (void)SagaExecute::descriptor();
  (void)records::KvRecord::descriptor();
  (void)records::Envelope::descriptor();
  (void)wire::Shutdown::descriptor();
}

} // namespace vigil
