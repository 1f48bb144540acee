// The invoice example's agents: a desk that takes each invoice through
// four agents, OCR extraction, amount validation, purchase-order matching
// and accounting entry generation, each calling its own service through a
// tool declared in the policy file; and a review agent whose envelopes
// wait for a person (vigil approvals approve).
//
// Every agent takes `mode: on|off` (default on). Off is the plain
// baseline: a failure fails the invoice, nothing is routed to review.
#pragma once

#include "vigil/actors/registry.hpp"

namespace invoices {

/// Registers desk, ocr_agent, validator, matcher, ledger and reviewer.
void add_agents(vigil::registry& types);

} // namespace invoices
