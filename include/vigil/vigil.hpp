#pragma once
// vigil's public API in one include, for a project that links vigil::vigil
// (CMake) or `pkg-config --libs vigil`:
//
//     #include <vigil/vigil.hpp>
//
// Agents and their context, handlers, tools and shared state (actors/);
// supervisors, child specs, sagas and policy trees (supervision/); the node
// that runs a tree (node/); the `http` tool (tools/); the resilience
// mechanisms as plain classes (resilience/); the checks, repair and backup
// of a data dir (persistence/integrity.hpp); a policy file's loader and the
// `vigil` command line for a runner of one's own (cli/).
//
// Left out, though installed because the headers below include them: the
// node's internals (a cell, the runtime, the local directory, the recovery
// table, symbols), CAF's wire forms of vigil's messages, the LMDB store and
// its record frame, and every detail/ folder. No user code needs to name
// them.

#include "vigil/version.hpp"

#include "vigil/resilience/backoff.hpp"
#include "vigil/resilience/circuit_breaker.hpp"
#include "vigil/resilience/clock.hpp"
#include "vigil/resilience/token_bucket.hpp"

#include "vigil/persistence/integrity.hpp"
#include "vigil/persistence/status.hpp"

#include "vigil/actors/agent.hpp"
#include "vigil/actors/approvals.hpp"
#include "vigil/actors/context.hpp"
#include "vigil/actors/counters.hpp"
#include "vigil/actors/dead_letter_log.hpp"
#include "vigil/actors/directory.hpp"
#include "vigil/actors/durability.hpp"
#include "vigil/actors/envelope.hpp"
#include "vigil/actors/error.hpp"
#include "vigil/actors/handlers.hpp"
#include "vigil/actors/registry.hpp"
#include "vigil/actors/report.hpp"
#include "vigil/actors/saga_step.hpp"
#include "vigil/actors/shared.hpp"
#include "vigil/actors/tool.hpp"
#include "vigil/actors/writer.hpp"

#include "vigil/tools/http.hpp"

#include "vigil/supervision/check.hpp"
#include "vigil/supervision/child_info.hpp"
#include "vigil/supervision/child_spec.hpp"
#include "vigil/supervision/duration.hpp"
#include "vigil/supervision/policy.hpp"
#include "vigil/supervision/saga.hpp"
#include "vigil/supervision/supervisor.hpp"

#include "vigil/metrics/exporter.hpp"

#include "vigil/node/node.hpp"

#include "vigil/cli/app.hpp"
#include "vigil/cli/policy.hpp"
