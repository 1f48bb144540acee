#pragma once

// The one duration parser lives in supervision (it reads the `shutdown` of
// a policy's child too); the command line uses it under its old name.

#include "vigil/supervision/duration.hpp"

namespace vigil::cli {

using vigil::duration_hint;
using vigil::parse_duration;

} // namespace vigil::cli
