#pragma once

#include <string>
#include <vector>

#include "vigil/actors/registry.hpp"
#include "vigil/supervision/child_spec.hpp"

namespace vigil {

/// One named error per invalid field, after OTP's check_childspecs/1.
enum class spec_errc : uint8_t {
  missing_id,             ///< id is empty
  invalid_id,             ///< id contains '/'
  duplicate_child_name,   ///< two siblings share an id
  invalid_child_type,     ///< kind out of range, or supervisor without spec
  unknown_agent_type,     ///< agent not in the registry (OTP: invalid_mfa)
  invalid_restart_type,   ///< restart out of range
  invalid_shutdown,       ///< shutdown kind out of range or negative timeout
  invalid_significant,    ///< significant with restart permanent
  invalid_on_failure,     ///< on_failure out of range
  invalid_degrade,        ///< degrade without a fallback, or bad probe times
  invalid_buffer_cap,     ///< buffer_cap of zero
  invalid_max_deliveries, ///< max_deliveries of zero
  invalid_durability,     ///< snapshot that never saves, or mode out of range
  invalid_strategy,       ///< strategy out of range
  invalid_intensity,      ///< intensity below zero
  invalid_period,         ///< period of zero or less
  invalid_auto_shutdown,  ///< auto_shutdown out of range
  invalid_backoff,        ///< min > max, negative times, jitter outside [0,1]
  bad_combination,        ///< fields valid alone but not together
  bad_start_spec,         ///< simple_one_for_one without exactly one child
  invalid_params,         ///< params the agent type cannot take
  invalid_saga,           ///< saga times not > 0 or too long, bad steps
  too_deep,               ///< supervisors nested deeper than max_tree_depth
  invalid_tool_override,  ///< a child's tool override out of range
  invalid_approval,       ///< an envelope approval's timeout out of range
  invalid_queue_cap,      ///< queue_cap of zero, or overflow out of range
};

/// The deepest nesting of supervisors a tree may have: a spec must survive
/// its wire form, and Protobuf parses at most 100 nested messages (each
/// level costs two, plus the root's).
constexpr int max_tree_depth = 40;

const char* to_string(spec_errc x) noexcept;

/// One problem found by `check_child_specs`.
struct spec_problem {
  std::string where;  ///< Path of the child or supervisor, e.g. "root/ocr".
  std::string field;  ///< The offending field, e.g. "restart".
  spec_errc code;
  std::string detail; ///< What is wrong and what is allowed.

  /// "root/ocr: restart: invalid_significant: ..."
  std::string to_string() const;
};

/// Validates `spec` and all nested supervisors before anything starts.
/// Pure: no side effects. Returns every problem, not just the first. Pass
/// `types` to check agent type names; nullptr skips that check.
std::vector<spec_problem> check_child_specs(const supervisor_spec& spec,
                                            const registry* types,
                                            const std::string& where = "");

/// Validates `c` as a step of a saga under `where`: an agent (not a
/// supervisor) whose type handles SagaExecute and SagaCompensate, and not
/// `on_failure: degrade`.
void check_saga_step(const child_spec& c, const registry* types,
                     const std::string& where,
                     std::vector<spec_problem>& out);

/// What is valid but weakens a guarantee: saga steps that are not journal
/// agents (exactness then rests on the saga alone; see the README).
std::vector<spec_problem> saga_warnings(const supervisor_spec& spec,
                                        const std::string& where = "");

/// Validates one child spec as `start_child` would, against `flags`.
std::vector<spec_problem> check_child_spec(const child_spec& child,
                                           const sup_flags& flags,
                                           const registry* types,
                                           const std::string& where);

} // namespace vigil
