#pragma once

// Tools: an agent's calls to the outside world (OCR, LLM APIs, databases,
// payment APIs, webhooks), declared on the node by name with their
// side-effect class and policy, and called from a handler with
// `context::call_tool`. Every call passes through one stack, outermost
// first:
//
//   total deadline -> bulkhead -> retry with budget -> circuit breaker
//     -> rate and cost limits -> attempt timeout -> the call
//
// so that no user writes retry, breaker or timeout code again, and no layer
// multiplies another's retries.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include <caf/error.hpp>
#include <google/protobuf/message.h>

#include "vigil/actors/error.hpp"
#include "vigil/actors/symbol.hpp"
#include "vigil/resilience/clock.hpp"

namespace vigil {

/// What a tool's call may do to the world, which decides what may be
/// retried:
/// - `read_only`: nothing; retried on transient errors.
/// - `idempotent_write`: a write that a repeat leaves as it was (a PUT, an
///   upsert by key); retried on transient errors.
/// - `non_idempotent_write`: a repeat writes again (an insert, a POST);
///   retried only on errors the tool marks `not_executed` (it knows the
///   request never reached the service), never after a timeout.
/// - `irreversible`: a payment, an e-mail; never retried (a policy file
///   that gives it more than one attempt is refused; in C++ its attempts
///   are taken as 1).
enum class side_effect : uint8_t {
  read_only,
  idempotent_write,
  non_idempotent_write,
  irreversible,
};

const char* to_string(side_effect x) noexcept;
bool from_string(std::string_view s, side_effect& out) noexcept;

/// How a tool's error is treated.
/// - `transient`: timeouts, rate limits, 5xx-like, connection refused: the
///   call is retried (after `retry_after` if the service gave one) and the
///   breaker counts a failure.
/// - `permanent`: bad request, validation, a policy refusal: the call fails
///   at once; the breaker counts a success (the dependency answered).
/// - `invalid_output`: the result does not parse or fails the tool's
///   validator: retried like a transient error unless the policy says
///   otherwise, and a failure for the breaker.
enum class error_class : uint8_t { transient, permanent, invalid_output };

const char* to_string(error_class x) noexcept;

/// A tool's error, as its callable returns it.
struct tool_error {
  error_class cls = error_class::transient;
  std::string what;
  /// The service's own "retry after" (a 429's Retry-After, say): the next
  /// attempt waits at least this long.
  resilience::duration retry_after{0};
  /// The request certainly did not reach the service (connection refused
  /// before sending): safe to retry even for a non-idempotent write.
  bool not_executed = false;

  static tool_error transient(std::string what,
                              resilience::duration retry_after = {}) {
    return {error_class::transient, std::move(what), retry_after, false};
  }
  static tool_error permanent(std::string what) {
    return {error_class::permanent, std::move(what), {}, false};
  }
  static tool_error invalid_output(std::string what) {
    return {error_class::invalid_output, std::move(what), {}, false};
  }
  /// Marks the error as raised before the request was sent.
  tool_error& before_sending() & noexcept {
    not_executed = true;
    return *this;
  }
  tool_error&& before_sending() && noexcept {
    not_executed = true;
    return std::move(*this);
  }
};

/// What one execution of a tool's callable gives: its reply or a
/// `tool_error`, and the cost it reports (LLM tokens, cents) for the cost
/// limits. Converts from either.
template <class Reply>
struct tool_result {
  std::variant<Reply, tool_error> value;
  double cost = 0.0;

  tool_result(Reply r) : value(std::move(r)) {
    // nop
  }
  tool_result(tool_error e) : value(std::move(e)) {
    // nop
  }
  tool_result(Reply r, double c) : value(std::move(r)), cost(c) {
    // nop
  }
};

/// What a tool's callable sees of its call. It runs on the tool's own
/// pool, never on an agent's thread, and may block. A call whose attempt
/// timed out cannot be stopped from outside: the caller has its answer
/// already, and the callable should check `cancelled()` and return soon;
/// until it does, it keeps its slot in the tool's bulkhead.
class tool_call {
public:
  tool_call(const std::atomic<bool>& cancelled, resilience::time_point deadline,
            uint32_t attempt, const std::string& caller,
            const std::string* idempotency_key = nullptr)
    : cancelled_(&cancelled),
      deadline_(deadline),
      attempt_(attempt),
      caller_(&caller),
      key_(idempotency_key) {
    // nop
  }

  /// True once the caller no longer waits for this attempt.
  bool cancelled() const noexcept {
    return cancelled_->load(std::memory_order_relaxed);
  }

  /// When this attempt is given up, on the steady clock (pass it on to the
  /// service as its own timeout).
  resilience::time_point deadline() const noexcept {
    return deadline_;
  }

  /// 1 for the first attempt of the call.
  uint32_t attempt() const noexcept {
    return attempt_;
  }

  /// The path of the agent that called.
  const std::string& caller() const noexcept {
    return *caller_;
  }

  /// The call's idempotency key, printable (ASCII, at most 255 bytes), the
  /// same in every attempt of the call, and in a replay of the call after a
  /// restart: derived from the caller's path, the id of the envelope it
  /// handled and the call's index among that envelope's calls. Pass it to
  /// the service (the `http` tool sends it as `Idempotency-Key`), so that it
  /// can apply a repeat once. Empty for a call made outside any envelope
  /// (from on_start, or a timer), which has none.
  const std::string& idempotency_key() const noexcept {
    static const std::string none;
    return key_ != nullptr ? *key_ : none;
  }

private:
  const std::atomic<bool>* cancelled_;
  resilience::time_point deadline_;
  uint32_t attempt_;
  const std::string* caller_;
  const std::string* key_;
};

// -- policy -------------------------------------------------------------------

/// Retries: capped exponential backoff with full jitter (attempt n waits
/// random(0, min(max, initial * multiplier^(n-1)))), as gRPC. `max_attempts`
/// counts the first attempt and is capped at 5.
struct tool_retry_policy {
  static constexpr uint32_t attempts_cap = 5;
  uint32_t max_attempts = 3;
  resilience::duration initial = std::chrono::milliseconds{200};
  double multiplier = 2.0;
  resilience::duration max = std::chrono::seconds{10};
  bool retry_invalid_output = true;
};

/// The tool's circuit breaker, shared by every agent of the node that calls
/// it. By default: open after 3 failures in a row, for 30 s, then one probe;
/// each opening after a failed probe doubles the open time, up to 5 min; a
/// success closes it. Optionally, also a failure-rate or slow-call-rate
/// rule over the last `window` calls, once `minimum_calls` were made.
struct tool_breaker_policy {
  bool enabled = true;
  uint32_t consecutive_failures = 3;
  resilience::duration open_for = std::chrono::seconds{30};
  /// The cap of the doubling; below `open_for` it is taken as `open_for`.
  resilience::duration max_open_for = std::chrono::minutes{5};
  uint32_t half_open_probes = 1;
  double failure_rate = 0.0;
  double slow_call_rate = 0.0;
  resilience::duration slow_call_duration = std::chrono::seconds{10};
  uint32_t window = 20;
  uint32_t minimum_calls = 5;
};

/// The tool's bulkhead: its own pool of `max_concurrent` threads, and at
/// most `queue` calls waiting for one; beyond that a call fails at once
/// with `bulkhead_full`.
struct tool_bulkhead_policy {
  uint32_t max_concurrent = 8;
  uint32_t queue = 64;
};

/// A rate limit for an API quota: at most `per_second` attempts on
/// average, in bursts of up to `burst`; 0 is off. Beyond it an attempt
/// fails at once with `rate_limited`.
struct tool_rate_policy {
  double per_second = 0.0;
  double burst = 1.0;
};

/// Cost limits, in the units the tool reports per call (tokens, cents):
/// `limit` per `per` for the node, and `per_agent` per `per` for each
/// calling agent; 0 is off. Once a budget is spent (less than a thousandth
/// of it left), calls and retries fail at once with `cost_exceeded` until
/// it refills (smoothly, over `per`). A call's cost is charged when it
/// returns, so the call that spends the last of a budget may cost more
/// than was left (the excess is not carried over).
struct tool_cost_policy {
  double limit = 0.0;
  double per_agent = 0.0;
  resilience::duration per = std::chrono::hours{1};
};

/// The shared retry budget: retries of this tool on this node, from every
/// agent, at most max(ratio x first attempts, min_per_second x (seconds +
/// 1)) since the node started, with at most `max_savings` unused retries
/// saved up (see resilience::retry_budget).
struct tool_budget_policy {
  double ratio = 0.1;
  double min_per_second = 2.0;
  double max_savings = 10.0;
};

/// Everything that governs one tool's calls.
struct tool_policy {
  /// The total deadline of a call when the caller gives none (every call
  /// has one); the deadline of the envelope being handled caps it.
  resilience::duration timeout = std::chrono::seconds{30};
  /// One attempt's deadline.
  resilience::duration attempt_timeout = std::chrono::seconds{10};
  tool_retry_policy retry;
  tool_budget_policy budget;
  tool_breaker_policy breaker;
  tool_bulkhead_policy bulkhead;
  tool_rate_policy rate;
  tool_cost_policy cost;
};

/// What one agent (a child spec) changes of a tool's policy for its own
/// calls. The shared parts (breaker, bulkhead, budget, rate, the node's
/// cost limit) belong to the tool and cannot be overridden.
struct tool_override {
  std::optional<resilience::duration> timeout;
  std::optional<resilience::duration> attempt_timeout;
  std::optional<uint32_t> max_attempts;
  std::optional<double> cost_per_agent;
};

struct tool_type;

/// What answers when a tool cannot (tool_decl::fallback): after the tool
/// failed with `invalid_output`, with a transient error and no retry left
/// (`tool_unavailable`) or with its breaker open (`circuit_open`), each of
/// `tools` in order (other tools of the node taking the same request and
/// giving the same reply, each through its own stack, under the call's
/// idempotency key), then the `default` reply if one is declared. The
/// callback learns which one answered (tool_answer).
struct tool_fallback {
  std::vector<std::string> tools;
  /// The default reply: its full Protobuf name (the tool's reply type) and
  /// its serialized bytes; an empty type is none.
  std::string default_type;
  std::string default_payload;

  bool empty() const noexcept {
    return tools.empty() && default_type.empty();
  }
};

/// A tool's dry-run form (tool_decl::dry_run): another tool of the node
/// that takes the same request and rehearses the call (the same call
/// against a sandbox or staging endpoint, or a validator), whatever it
/// replies. With `required`, every call of the tool runs its dry run first
/// and the real call only after the dry run succeeded; a failed dry run is
/// the call's error (its code, and a text that says it was the dry run's).
/// For a journal agent both are recorded: the dry run under the call's key
/// with a place of its own, so a replay repeats neither.
struct tool_dry_run {
  std::string tool;
  bool required = false;
};

/// A tool whose calls wait for a person (tool_decl::approval): each call,
/// after its dry run if it has one, is stored as a pending approval under
/// its idempotency key and runs once someone approves it with `vigil
/// approvals approve`; a rejection fails it with `approval_rejected`, and
/// no decision within `timeout` with `approval_expired`. The wait survives
/// a restart: the replayed call finds its approval, decided or not, and
/// waits for the rest of the same timeout. Needs a data dir and a key (a
/// call made on behalf of an envelope, or an effect).
struct tool_approval {
  bool required = false;
  resilience::duration timeout = std::chrono::hours{24};
};

/// A child whose envelopes wait for a person (child_spec::approval): each
/// envelope of one of `types` (all if empty), before its handler runs, is
/// stored as a pending approval under its id and runs once someone
/// approves it; a rejection, or no decision within `timeout`, makes it a
/// dead letter (`approval_rejected`, `approval_expired`) and answers its
/// requester so. The child's later envelopes wait behind it, in order. A
/// journal child's envelope, and so its wait, survives a restart.
struct envelope_approval {
  bool required = false;
  resilience::duration timeout = std::chrono::hours{24};
  std::vector<std::string> types;

  bool covers(std::string_view type) const noexcept {
    if (!required)
      return false;
    if (types.empty())
      return true;
    for (auto& t : types)
      if (t == type)
        return true;
    return false;
  }
};

/// A tool declared on a node: its name (what agents call), the registered
/// implementation (`type`, empty: the same as `name`), its side-effect class
/// and its policy.
struct tool_decl {
  std::string name;
  std::string type;
  side_effect effect = side_effect::read_only;
  tool_policy policy;
  /// Whether a `journal` agent's calls of this tool are recorded under
  /// their idempotency keys (so that a replay gets the recorded result and
  /// does not call again). Off for cheap deterministic reads.
  bool record = true;
  tool_fallback fallback;
  tool_dry_run dry_run;
  tool_approval approval;
  /// An implementation made for this declaration alone (the `http` tool of
  /// a policy file, built from its `http:` block); null takes the one
  /// registered as `type`.
  std::shared_ptr<const tool_type> impl;
};

/// Who answered a call (the second argument of a `call_tool` callback
/// that takes two): the tool called, one of its fallbacks, or its declared
/// default (`by_default`). `replayed`: the answer is the record of an
/// earlier execution (a journal agent's replay), not a new one.
struct tool_answer {
  std::string_view tool;
  bool by_default = false;
  bool replayed = false;

  /// True unless the tool called answered itself.
  bool fell_back(std::string_view called) const noexcept {
    return by_default || tool != called;
  }
};

/// Per-call options of `context::call_tool`.
struct tool_options {
  /// The call's total deadline, relative; zero takes the tool's
  /// `timeout`. Capped by the deadline of the envelope being handled.
  resilience::duration timeout{0};
  /// Attempts in all; zero takes the policy's.
  uint32_t max_attempts = 0;
  /// The call's idempotency key, named by the caller from what the call is
  /// about (a task's id, an order number) instead of derived from the
  /// envelope: every call to this tool with the key, from any agent or
  /// instance of this node, is one call (claimed while it runs: `in_use`;
  /// a journal agent's result is recorded under it, and a later call with
  /// the key and the same request gets that record). Printable ASCII, 1 to
  /// 255 bytes (anything else fails with `bad_payload` before any
  /// attempt). Empty: the derived key (README, "Idempotency keys").
  std::string idempotency_key;
};

/// Thrown by a handler, it fails the envelope with `err` like a returned
/// error does: nothing restarts. A handler that cannot go on because a tool
/// answered `circuit_open` (or any tool error) may throw this instead of
/// returning, and spends no restart intensity of its supervisor.
class tool_failure : public std::runtime_error {
public:
  explicit tool_failure(caf::error err)
    : std::runtime_error(describe(err)), err_(std::move(err)) {
    // nop
  }
  const caf::error& error() const noexcept {
    return err_;
  }

private:
  caf::error err_;
};

/// One problem with a tool's declaration: the field (as in a policy file,
/// e.g. "retry.max_attempts") and what is wrong with it.
struct tool_problem {
  std::string field;
  std::string what;
};

/// Every problem with `d` on its own (its implementation is checked by the
/// node, which knows the registry): a pure function, one small check per
/// field, as check_child_specs.
std::vector<tool_problem> check_tool(const tool_decl& d);

/// Every problem with an agent's override of a tool's policy.
std::vector<tool_problem> check_tool_override(const tool_override& o);

namespace detail {

/// One execution's outcome, type-erased.
struct tool_outcome {
  std::unique_ptr<google::protobuf::Message> reply;
  std::optional<tool_error> error;
  double cost = 0.0;
};

using tool_fn = std::function<tool_outcome(const google::protobuf::Message&,
                                           tool_call&)>;

} // namespace detail

/// A registered tool implementation: a C++ callable from Request to
/// Reply, with an optional validator of its replies.
struct tool_type {
  std::string name;
  std::string request_type;
  std::string reply_type;
  /// The same two names interned: a call compares them by address.
  symbol request_symbol;
  symbol reply_symbol;
  detail::tool_fn call;
  /// Its calls wait on I/O (a network round trip) rather than compute:
  /// an idle thread of its pool that waits for the next call yields its
  /// core meanwhile instead of spinning on it, for the I/O the calls wait
  /// for needs it; and a result may run its idle agent on the thread that
  /// made the call (detail::ring), whose pool has a thread more for that.
  /// A CPU-bound tool's threads are better spent on its calls. The `http`
  /// tool's; registry::tool_waits_on_io for one's own.
  bool waits_on_io = false;
};

} // namespace vigil
