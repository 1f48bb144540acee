#pragma once

// An envelope as stored on disk (records::Envelope) and back. Internal to
// vigil: the durable agents, the durable saga runs and their outbox use it.

#include "vigil/actors/envelope.hpp"
#include "vigil/store.pb.h"

namespace vigil::detail {

records::Envelope to_record(const envelope& e);
envelope from_record(const records::Envelope& r);

} // namespace vigil::detail
