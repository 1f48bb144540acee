#pragma once

#include <cstdint>
#include <string>

#include <caf/error.hpp>

namespace vigil {

/// Every error that vigil's runtime reports. Registered with CAF as the error
/// category `vigil` (see `add_error_category`), so a remote node renders the
/// same text. The error's context carries the specifics (path, field, cause).
enum class errc : uint8_t {
  none = 0,
  /// The envelope's deadline passed while it was handled (its handler ran:
  /// its effects outside vigil may have happened), or no reply came in
  /// time (unknown whether it ran). One refused before it ran is `expired`.
  deadline_exceeded,
  /// A child's restart buffer is full; the envelope was not accepted.
  buffer_overflow,
  /// The addressed child exists but is not running (terminated or deleted).
  not_running,
  /// OTP's `running`: the operation needs a stopped child.
  running,
  /// OTP's `restarting`: the child is between instances.
  restarting,
  /// OTP's `not_found`: no child with that id, or no agent at that path.
  not_found,
  /// OTP's `already_present`: the id is taken by a stopped child.
  already_present,
  /// OTP's `already_started`: the id is taken by a running child.
  already_started,
  /// OTP's `simple_one_for_one`: operation not allowed on such a supervisor.
  simple_one_for_one,
  /// The restart budget (intensity per period) was exceeded.
  reached_max_restart_intensity,
  /// A child with `on_failure: escalate` failed.
  escalated,
  /// An envelope failed its child `max_deliveries` times: a dead letter now.
  poison_message,
  /// A handler threw. The context holds the exception text.
  handler_failed,
  /// `on_start`/`on_restart` threw, or the factory failed.
  start_failed,
  /// No handler for the envelope's payload type.
  unknown_message_type,
  /// The registry has no agent type of that name.
  unknown_agent_type,
  /// The payload bytes do not parse as the declared type.
  bad_payload,
  /// A child spec or supervisor flag is invalid (see `check_child_specs`).
  invalid_child_spec,
  /// A saga step failed and the completed steps were compensated.
  saga_compensated,
  /// A saga compensation failed after its retries; see the dead letters.
  compensation_failed,
  /// The supervisor or node is shutting down.
  shutting_down,
  /// The data dir could not be read or written; the context holds the
  /// persistence layer's message (data dir, database, operation).
  storage_failed,
  /// A `journal` agent already accepted an envelope with this message id;
  /// it is not applied again.
  duplicate,
  /// A newer owner took over this agent's path (its supervisor gave up on
  /// this instance and started another); writes of the older owner are
  /// refused. Internal to the runtime, seen by no requester.
  fenced,
  /// A handler refused the envelope (invalid input, say) by returning an
  /// error; the context says why. Not a failure: nothing restarts. A
  /// handler may refuse with any error; this is vigil's word for it.
  refused,
  /// The child is degraded: its stand-in answers requests with the declared
  /// fallback; an async envelope (which nobody would hear the stand-in
  /// answer) becomes a dead letter with this reason, replayable once the
  /// child runs again. A journal agent keeps its async envelopes instead.
  degraded,
  /// The envelope's deadline passed before its handler started: it did not
  /// run, and never will (a replay aside). Its requester can count on that,
  /// as a saga does. (`deadline_exceeded` means it ran, or may have.)
  expired,
  /// The envelope was handled, or will be by the agent's next instance,
  /// but its answer is lost: the handler deferred its reply and its
  /// instance ended first, or the agent's cell was replaced with the
  /// envelope in its journal. Its effects stand; whether it succeeded is
  /// unknown to the requester (a saga reports such a step `in_doubt`).
  reply_dropped,
  /// No tool of this name is declared on the node.
  unknown_tool,
  /// The tool's circuit breaker is open: the call failed at once, without
  /// reaching the tool. A handler that fails with it (returned, or thrown
  /// as `tool_failure`) spends no restart intensity.
  circuit_open,
  /// The tool's bulkhead (its threads and its queue) is full.
  bulkhead_full,
  /// The tool's rate limit allows no call now.
  rate_limited,
  /// The tool's cost budget (the node's or the calling agent's) is spent.
  cost_exceeded,
  /// The tool failed with a transient error, and no retry was left (by
  /// its attempts, the retry budgets or the deadline); the context names
  /// the attempts made and the last error.
  tool_unavailable,
  /// The tool refused the request with a permanent error.
  tool_rejected,
  /// The tool's output did not parse or failed its validator.
  invalid_output,
  /// A call with this idempotency key is still running (its first
  /// execution, or an abandoned attempt of it, has not returned): the
  /// repeat is refused rather than run twice at once. Retry later.
  in_use,
  /// The idempotency key was used before with a different request (another
  /// tool, or other bytes): the recorded result answers another question.
  idempotency_mismatch,
  /// A tool call or envelope needs a person's approval, and this node
  /// cannot keep one: it runs without a data dir.
  approval_unavailable,
  /// A person rejected the tool call (or envelope) that waited for
  /// approval (`vigil approvals reject`).
  approval_rejected,
  /// No one decided on the call's approval within its approval timeout.
  approval_expired,
  /// A queue's lease is no longer live (it expired, or the task was
  /// claimed again since): its holder's extend, complete or fail is
  /// refused, so that no task is worked under two live leases.
  lease_expired,
  /// A compare-and-swap found another version than the one expected.
  conflict,
  /// The receiving agent's queue is full (its queue_cap): the newest
  /// envelope is refused (shed); a requester may try again later.
  overloaded,
};

/// Returns the OTP-style name of `x`, e.g. "reached_max_restart_intensity".
const char* to_string(errc x) noexcept;

/// Makes a `caf::error` of category `vigil`.
caf::error make_error(errc x);

/// Makes a `caf::error` of category `vigil` whose context is `what`.
caf::error make_error(errc x, std::string what);

/// True if `x` is of category `vigil` and has code `code`.
bool is(const caf::error& x, errc code) noexcept;

/// True if `x` is how the runtime (or CAF) says "not delivered": the
/// receiver did not run the envelope (not_found, not_running,
/// buffer_overflow, storage_failed, shutting_down, CAF's request timeout or
/// receiver down). A sender may send it again under the same message id;
/// a handler's refusal with one of these codes is reported as `refused`.
bool undelivered(const caf::error& x) noexcept;

/// Renders any CAF error as one human-readable line, following vigil cause
/// chains: "pipeline escalated <- ocr: handler_failed: timeout after 2s".
std::string describe(const caf::error& x);

} // namespace vigil
