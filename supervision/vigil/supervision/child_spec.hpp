#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "vigil/actors/agent.hpp"
#include "vigil/actors/durability.hpp"
#include "vigil/actors/envelope.hpp"
#include "vigil/actors/tool.hpp"

namespace vigil {

using std::chrono::milliseconds;

/// The longest duration a spec may hold: 100 years (876000h). Every
/// duration in a spec becomes a `caf::timespan` (nanoseconds in 64 bits,
/// about 292 years) added to the clock's now; beyond this the arithmetic
/// could overflow, so `check_child_specs` refuses longer ones and the policy
/// file's parser refuses to read them.
inline constexpr milliseconds max_duration{876000LL * 3600 * 1000};

/// OTP's restart types.
enum class restart_type : uint8_t {
  permanent, ///< Always restarted.
  transient, ///< Restarted only after an abnormal exit.
  temporary, ///< Never restarted; its spec is dropped when it exits.
};

/// OTP's restart strategies.
enum class strategy : uint8_t {
  one_for_one,
  one_for_all,
  rest_for_one,
  simple_one_for_one,
};

/// OTP 24's automatic shutdown on significant children.
enum class auto_shutdown : uint8_t { never, any_significant, all_significant };

/// What the supervisor does when this child fails.
enum class on_failure : uint8_t {
  restart,  ///< Restart it (with backoff) within the restart budget.
  degrade,  ///< When the budget is spent, a stand-in answers for it.
  escalate, ///< Fail the supervisor at once, so its parent decides.
};

enum class child_kind : uint8_t { worker, supervisor };

/// How a child is stopped.
struct shutdown_spec {
  enum class kind : uint8_t { brutal_kill, timeout, infinity };
  kind how = kind::timeout;
  milliseconds timeout{5000};

  static shutdown_spec brutal_kill() {
    return {kind::brutal_kill, milliseconds{0}};
  }
  static shutdown_spec after(milliseconds t) {
    return {kind::timeout, t};
  }
  static shutdown_spec infinity() {
    return {kind::infinity, milliseconds{0}};
  }
};

/// Delay between restart attempts, in the style of Akka's restartWithBackoff.
/// Attempt n (from 0) waits min(max, min * 2^n), scaled by a random factor in
/// [1 - jitter, 1 + jitter]. n returns to 0 after `reset_after` without a
/// restart. `min` of zero means no delay (OTP's behaviour).
struct backoff_spec {
  milliseconds min{0};
  milliseconds max{0};
  double jitter = 0.0;
  milliseconds reset_after{0};
};

/// The stand-in of a degraded child: it replies `fallback` (marked degraded)
/// and probes the real child after `probe_min`, doubling up to `probe_max`.
struct degrade_spec {
  envelope fallback;
  milliseconds probe_min{1000};
  milliseconds probe_max{30000};

  /// Sets the stand-in reply from a Protobuf message.
  void set_fallback(const google::protobuf::Message& msg) {
    fallback.type = msg.GetDescriptor()->full_name();
    msg.SerializeToString(&fallback.payload);
  }
};

struct supervisor_spec;

/// How one child is started and treated (OTP's child_spec, plus vigil's
/// directives and limits). Its wire form, in which it travels in a
/// supervisor's messages, is `vigil.wire.ChildSpec`
/// (vigil/supervision/wire.hpp); a policy file's child becomes one through
/// `spec_from_policy` (vigil/supervision/policy.hpp).
struct child_spec {
  std::string id;          ///< Unique among its siblings; its path segment.
  child_kind kind = child_kind::worker;
  std::string agent;       ///< Registered agent type (workers).
  vigil::params params;    ///< Passed to the agent's constructor.
  restart_type restart = restart_type::permanent;
  /// Unset: 5000 ms for a worker, infinity for a supervisor (OTP).
  bool has_shutdown = false;
  shutdown_spec shutdown;
  bool significant = false;
  on_failure failure = on_failure::restart;
  degrade_spec degrade;
  size_t buffer_cap = 10000;
  /// Envelopes queued for the child (sent, not yet taken up), and what a
  /// sender beyond it gets (see overflow_policy).
  size_t queue_cap = 10000;
  overflow_policy overflow = overflow_policy::shed;
  uint32_t max_deliveries = 1;
  /// none (default), snapshot or journal; durable children need a node
  /// with a data dir.
  durability_spec durability;
  /// What this child changes of the node's tools' policies for its own
  /// calls, by tool name (see tool_override).
  std::map<std::string, tool_override> tools;
  /// Whether (and which of) its envelopes wait for a person's approval
  /// before their handler runs (needs a data dir).
  envelope_approval approval;
  /// The nested supervisor's spec (kind == supervisor).
  std::shared_ptr<const supervisor_spec> sup;

  /// The shutdown in force, with OTP's defaults applied.
  shutdown_spec effective_shutdown() const {
    if (has_shutdown)
      return shutdown;
    return kind == child_kind::supervisor ? shutdown_spec::infinity()
                                          : shutdown_spec::after(
                                            milliseconds{5000});
  }

  child_spec& with_restart(restart_type x) {
    restart = x;
    return *this;
  }
  child_spec& with_shutdown(shutdown_spec x) {
    has_shutdown = true;
    shutdown = x;
    return *this;
  }
  child_spec& with_significant(bool x = true) {
    significant = x;
    return *this;
  }
  child_spec& with_param(std::string key, std::string value) {
    params[std::move(key)] = std::move(value);
    return *this;
  }
  child_spec& with_failure(on_failure x) {
    failure = x;
    return *this;
  }
  child_spec& with_durability(durability_mode x) {
    durability.mode = x;
    return *this;
  }
};

/// A supervisor's flags (OTP's sup_flags) plus vigil's backoff.
struct sup_flags {
  vigil::strategy strategy = strategy::one_for_one;
  int intensity = 1;
  milliseconds period{5000};
  vigil::auto_shutdown auto_shutdown = auto_shutdown::never;
  backoff_spec backoff;
  /// Seed of the jitter generator; a fixed seed makes delays repeatable.
  uint64_t seed = 0;
};

/// Makes a supervisor a saga: its worker children are the ordered steps
/// (agents derived from `saga_step`). An envelope sent to the supervisor's
/// path runs the saga on that input and is answered with a `SagaOutcome`.
/// When step k fails, steps k-1..1 are compensated in reverse order; a failed
/// compensation is retried `compensation_retries` times (delay doubling from
/// `retry_delay`), then kept as a dead letter, and the rest still run.
struct saga_spec {
  bool enabled = false;
  uint32_t compensation_retries = 3;
  milliseconds retry_delay{100};
  milliseconds step_timeout{30000};
  /// Durable (a saga child with durability journal sets it): every run's
  /// progress is committed in the node's data dir, and a run interrupted
  /// by a crash resumes when the saga starts again (see README, "Durable
  /// sagas").
  bool durable = false;
  /// Durable sagas: how long a finished run is kept, so that a resent
  /// input with its id gets its outcome instead of running again.
  milliseconds retention{milliseconds{std::chrono::hours{24 * 7}}};
  /// Durable sagas: the agent path every outcome is sent to, through the
  /// saga's outbox (at least once; a journal agent there takes it once).
  /// Empty: outcomes go only to requesters (and to resends).
  std::string outcome_to;
};

/// A supervisor: its flags and its children in start order. A
/// simple_one_for_one supervisor has exactly one child: the template.
struct supervisor_spec {
  sup_flags flags;
  std::vector<child_spec> children;
  saga_spec saga;
};

/// A worker running agent type `agent` under id `id`.
inline child_spec worker(std::string id, std::string agent) {
  child_spec s;
  s.id = std::move(id);
  s.agent = std::move(agent);
  return s;
}

/// A nested supervisor under id `id`.
inline child_spec supervisor(std::string id, supervisor_spec spec) {
  child_spec s;
  s.id = std::move(id);
  s.kind = child_kind::supervisor;
  s.sup = std::make_shared<const supervisor_spec>(std::move(spec));
  return s;
}

/// A saga supervisor under id `id` whose steps run in the order given.
/// Steps are restarted one_for_one if they crash (intensity 10 per 5 s).
inline child_spec saga(std::string id, std::vector<child_spec> steps,
                       saga_spec opts = {}) {
  supervisor_spec spec;
  spec.flags.intensity = 10;
  spec.children = std::move(steps);
  spec.saga = opts;
  spec.saga.enabled = true;
  return supervisor(std::move(id), std::move(spec));
}

const char* to_string(restart_type x) noexcept;
const char* to_string(strategy x) noexcept;
const char* to_string(auto_shutdown x) noexcept;
const char* to_string(on_failure x) noexcept;

} // namespace vigil
