#pragma once

// What an agent's handlers and hooks see of the runtime: its path, the
// clock, the envelope being handled, sends, requests and deferred replies.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>

#include <caf/actor.hpp>
#include <caf/error.hpp>
#include <google/protobuf/message.h>

#include "vigil/actors/detail/binding.hpp"
#include "vigil/actors/detail/type_symbol.hpp"
#include "vigil/actors/envelope.hpp"
#include "vigil/actors/error.hpp"
#include "vigil/actors/shared.hpp"
#include "vigil/actors/tool.hpp"
#include "vigil/shared.pb.h"

namespace vigil {

using clock_type = std::chrono::steady_clock; // the same clock as caf::actor_clock
using time_point = clock_type::time_point;
using duration = clock_type::duration;

/// Free-form agent parameters (`params:` in a policy file).
using params = std::unordered_map<std::string, std::string>;

/// A reply as the requester sees it. `degraded` is true when a stand-in
/// answered with the child spec's declared default instead of the agent.
template <class T>
struct reply {
  T value;
  bool degraded = false;
};

/// Per-call options for `context::send` and `context::request`.
struct call_options {
  /// Relative deadline; zero inherits the deadline of the envelope being
  /// handled (if any), so a chain of calls never outlives its origin.
  duration timeout{0};
  /// Idempotency key; empty means none.
  std::string idempotency_key;
  /// Message id; 0 assigns a fresh one. A producer that may resend (after
  /// its own crash, say) sets a stable id, so that a `journal` receiver
  /// applies the message once.
  uint64_t message_id = 0;
  /// With `message_id`: the node that minted it (`envelope::origin`), or 0
  /// for an id the caller chose itself. To send on a message under the id
  /// it arrived with, copy both: `id = cur->id; origin = cur->origin`.
  uint64_t message_origin = 0;
  /// Retries that calls made on behalf of this message may spend
  /// (`envelope::attempt_budget`); 0 inherits the budget of the envelope
  /// being handled, if any.
  uint32_t attempt_budget = 0;

  /// Sends under the id (and origin) of `e`: a resend of `e`'s message.
  call_options& same_id_as(const envelope& e) noexcept {
    message_id = e.id;
    message_origin = e.origin;
    return *this;
  }
};

/// A stable reference to the agent at a path: the path plus the cell that
/// hosts it, so a send skips the directory lookup. It stays valid across
/// restarts of the agent (the cell stays); once the cell was replaced (its
/// supervisor restarted, or a stuck instance was given up) or unbound, a
/// send through the handle falls back to the path. Obtained from
/// `context::resolve`.
class handle {
public:
  handle() = default;
  handle(std::string path, std::shared_ptr<const detail::binding> b)
    : path_(std::move(path)), b_(std::move(b)) {
    // nop
  }

  const std::string& path() const noexcept {
    return path_;
  }

  /// The hosting cell when the handle was made; invalid if nothing was
  /// bound at the path then.
  caf::actor cell() const noexcept {
    return b_ ? b_->actor : caf::actor{};
  }

  /// The cell's queue count when the handle was made (null: none kept).
  detail::queue_gauge* queue() const noexcept {
    return b_ ? b_->gauge : nullptr;
  }

  /// True while the cell is still the one bound at the path.
  bool current() const noexcept {
    return b_ && b_->live.load(std::memory_order_acquire);
  }

  explicit operator bool() const noexcept {
    return static_cast<bool>(b_);
  }

private:
  std::string path_;
  std::shared_ptr<const detail::binding> b_;
};

/// A reply that a handler gives later, e.g. from a `request` callback.
/// Obtained from `context::defer()`; copies share one reply. Deliver or fail
/// it once; later calls do nothing. If every copy is dropped unanswered
/// (e.g. the instance was restarted before its callback ran), the requester
/// gets `not_running` instead of waiting for ever.
class deferred_reply {
public:
  deferred_reply() = default;
  deferred_reply(std::function<void(envelope)> ok,
                 std::function<void(caf::error)> err)
    : st_(std::make_shared<state>()) {
    st_->ok = std::move(ok);
    st_->err = std::move(err);
  }

  /// Answers the original requester with `msg`.
  void deliver(const google::protobuf::Message& msg) {
    if (!st_ || !st_->ok)
      return;
    envelope e;
    e.type = type_symbol(msg);
    msg.SerializeToString(&e.payload);
    answer(std::move(e));
  }

  /// Answers the original requester with raw payload `bytes` declared as
  /// Protobuf type `type`, unchecked: the bytes need not parse as `type`
  /// (chaos agents use this to send corrupt replies, which the requester
  /// sees as `bad_payload`). Once only, like `deliver`.
  void deliver_bytes(symbol type, std::string bytes) {
    if (!st_ || !st_->ok)
      return;
    envelope e;
    e.type = type;
    e.payload = std::move(bytes);
    answer(std::move(e));
  }

  /// Answers the original requester with an error.
  void fail(caf::error err) {
    if (!st_ || !st_->err)
      return;
    auto f = std::move(st_->err);
    st_->ok = nullptr;
    st_->err = nullptr;
    f(std::move(err));
  }

private:
  void answer(envelope e) {
    auto ok = std::move(st_->ok);
    st_->ok = nullptr;
    st_->err = nullptr;
    ok(std::move(e));
  }

  struct state {
    std::function<void(envelope)> ok;
    std::function<void(caf::error)> err;
    ~state() {
      if (err)
        err(make_error(errc::reply_dropped,
                       "the agent's instance ended before it answered; "
                       "what the handler did stands"));
    }
  };
  std::shared_ptr<state> st_;
};

/// What an agent sees of the runtime while one of its hooks or handlers runs.
///
/// A context belongs to exactly one agent instance and may only be used from
/// that agent's hooks and handlers (it is not thread-safe). It stays valid for
/// the life of the instance; do not keep it beyond `on_stop`.
class context {
public:
  virtual ~context() = default;

  /// The agent's stable path in its tree, e.g. "invoices/ocr".
  virtual const std::string& path() const noexcept = 0;

  /// The current time of the node's actor clock (a test clock in tests).
  virtual time_point now() const noexcept = 0;

  /// The envelope being handled, or nullptr outside a handler.
  virtual const envelope* current() const noexcept = 0;

  /// The parameters this instance was started with.
  virtual const params& parameters() const noexcept = 0;

  /// Looks up the agent at `path`. The result is invalid (but keeps the
  /// path) if no agent is bound there now.
  virtual handle resolve(std::string_view path) const = 0;

  /// Sends `msg` to the agent at `to` without waiting for a reply. An
  /// envelope that cannot be delivered becomes a dead letter.
  void send(std::string_view to, const google::protobuf::Message& msg,
            const call_options& opts = {}) {
    send_envelope(resolve(to), make_envelope(msg, opts));
  }

  /// Sends `msg` through a handle from `resolve`, skipping the lookup.
  void send(const handle& to, const google::protobuf::Message& msg,
            const call_options& opts = {}) {
    send_envelope(to, make_envelope(msg, opts));
  }

  /// Sends `msg` through `to` unless the receiver's queue is full (its
  /// queue_cap): then sends nothing and returns false, and no dead letter
  /// is made, so that a producer can wait and try again (the built-in
  /// `source` does). A journal agent's sends from a handler go through
  /// its outbox, which waits for room itself: they are taken while its
  /// undelivered entries are fewer than the receiver's queue_cap.
  bool try_send(const handle& to, const google::protobuf::Message& msg,
                const call_options& opts = {}) {
    return send_envelope(to, make_envelope(msg, opts), false);
  }

  /// Sends `msg` to the agent at `to` after `delay` (a timer). The path is
  /// resolved now; if no agent is bound there, the envelope becomes a dead
  /// letter at once. The envelope inherits the deadline of the one being
  /// handled, as with `send`.
  ///
  /// Not durable: even from a `journal` agent's handler the envelope skips
  /// the outbox and waits in the node's clock, so a crash of the node (or of
  /// the receiver's cell) loses it. An agent that relies on a timer re-arms
  /// it in `on_start`/`on_restart`, and should ignore ticks of an older
  /// instance (e.g. by a generation number in its state).
  void send_after(duration delay, std::string_view to,
                  const google::protobuf::Message& msg) {
    send_envelope_after(resolve(to), make_envelope(msg, call_options{}),
                        delay);
  }

  /// Sends `msg` to `to` and calls `on_reply(reply<Reply>)` with the answer,
  /// or `on_error(const caf::error&)` on failure, `deadline_exceeded` when
  /// no answer came within `timeout`. Both callbacks run in this agent.
  template <class Reply, class OnReply, class OnError>
  void request(std::string_view to, const google::protobuf::Message& msg,
               duration timeout, OnReply on_reply, OnError on_error) {
    request<Reply>(resolve(to), msg, timeout, std::move(on_reply),
                   std::move(on_error));
  }

  /// `request` through a handle from `resolve`.
  template <class Reply, class OnReply, class OnError>
  void request(const handle& to, const google::protobuf::Message& msg,
               duration timeout, OnReply on_reply, OnError on_error) {
    call_options opts;
    opts.timeout = timeout;
    // Both callbacks need on_error: copy it before either is built, since
    // the order in which a call's arguments are evaluated is unspecified
    // (GCC moved it away before the lambda copied it).
    OnError on_bad_reply = on_error;
    std::function<void(const envelope&)> ok
      = [on_reply = std::move(on_reply),
         on_bad_reply = std::move(on_bad_reply)](const envelope& e) mutable {
          reply<Reply> r;
          r.degraded = e.degraded();
          if (!r.value.ParseFromString(e.payload))
            on_bad_reply(
              make_error(errc::bad_payload, "reply of type " + e.type));
          else
            on_reply(std::move(r));
        };
    std::function<void(const caf::error&)> err = std::move(on_error);
    request_envelope(to, make_envelope(msg, opts), timeout, std::move(ok),
                     std::move(err));
  }

  /// Calls the tool declared on the node as `tool` with `req`, through the
  /// tool's stack (total deadline, bulkhead, retries with the shared
  /// budgets, circuit breaker, rate and cost limits, attempt timeout; see
  /// tool.hpp), and calls `on_result(Reply&&)` with its reply or
  /// `on_error(const caf::error&)` when it fails. The callable runs on the
  /// tool's own threads; both callbacks run in this agent's instance, as
  /// with `request`, and only in the instance that called (after a restart
  /// they are dropped). A call refused before any attempt (no such tool,
  /// no time left, bulkhead full, breaker open, rate or cost limit) calls
  /// `on_error` at once, before `call_tool` returns.
  ///
  /// `on_result` may take a second argument, `const tool_answer&`: who
  /// answered (the tool, one of its fallbacks or its default, see
  /// tool_fallback) and whether the answer was replayed from a record.
  ///
  /// A tool with a required dry run (tool_dry_run) runs it first, and one
  /// that needs approval (tool_approval) waits for a person; both before
  /// the stack above, and a journal agent's envelope stays held meanwhile.
  ///
  /// Errors: unknown_tool, bad_payload (the tool takes another request
  /// type), deadline_exceeded (the call's deadline passed; the context
  /// names the attempts made and the last error), bulkhead_full,
  /// circuit_open, rate_limited, cost_exceeded, tool_unavailable (a
  /// transient error and no retry left), tool_rejected (a permanent
  /// error), invalid_output, not_running (called as the agent's cell
  /// ends, from the agent's destructor), in_use and idempotency_mismatch
  /// (see README, "Idempotency keys"), approval_rejected, approval_expired
  /// and approval_unavailable.
  template <class Reply, class OnResult, class OnError>
  void call_tool(std::string_view tool, const google::protobuf::Message& req,
                 const tool_options& opts, OnResult on_result,
                 OnError on_error) {
    std::unique_ptr<google::protobuf::Message> copy{req.New()};
    // MergeFrom into a new message: CopyFrom's check that `req` does not
    // contain `copy` walks the fields by reflection on every call.
    copy->MergeFrom(req);
    std::function<void(std::unique_ptr<google::protobuf::Message>)> ok;
    if constexpr (std::is_invocable_v<OnResult&, Reply&&,
                                      const tool_answer&>)
      ok = [f = std::move(on_result),
            self = this](std::unique_ptr<google::protobuf::Message> rep) mutable {
        f(std::move(static_cast<Reply&>(*rep)), self->answered());
      };
    else
      ok = [f = std::move(on_result)](
             std::unique_ptr<google::protobuf::Message> rep) mutable {
        f(std::move(static_cast<Reply&>(*rep)));
      };
    std::function<void(const caf::error&)> err = std::move(on_error);
    call_tool_raw(tool, std::move(copy), type_symbol<Reply>(), opts,
                  std::move(ok), std::move(err));
  }

  /// `call_tool` with the tool's own options.
  template <class Reply, class OnResult, class OnError>
  void call_tool(std::string_view tool, const google::protobuf::Message& req,
                 OnResult on_result, OnError on_error) {
    call_tool<Reply>(tool, req, tool_options{}, std::move(on_result),
                     std::move(on_error));
  }

  /// Calls the tool declared as `tool` with `req` for its effect alone (a
  /// webhook, an e-mail, a payment): fire-and-forget, under an idempotency
  /// key derived as a call's (from the envelope being handled and the
  /// effect's place among its calls). For a `journal` agent, in a handler
  /// (or in a callback of a call its envelope holds open), the effect is
  /// written to the outbox in the handler's commit and dispatched after
  /// it, through the tool's full stack; a dispatch that fails is sent
  /// again with the same key (the outbox's backoff) up to 5 times in all
  /// (one refused before any attempt, by an open breaker or a limit, is
  /// sent again without counting), and then, or at once on a permanent
  /// error, it is a dead letter with
  /// its key and last error, which `vigil dead-letters replay` puts back
  /// into the outbox, key unchanged. Elsewhere it is dispatched at once,
  /// not durably (a failure is a dead letter). The external system may see
  /// a key more than once (a crash after a dispatch and before its commit);
  /// with the key it can apply it once.
  ///
  /// Errors at once (nothing is sent): unknown_tool, bad_payload (the tool
  /// takes another request type), not_running.
  caf::error effect(std::string_view tool,
                    const google::protobuf::Message& req) {
    std::unique_ptr<google::protobuf::Message> copy{req.New()};
    copy->MergeFrom(req);
    return effect_raw(tool, std::move(copy));
  }

  // -- shared state --------------------------------------------------------
  //
  // kv_get, kv_put, kv_delete; enqueue_task, claim_task, extend_lease,
  // complete_task, fail_task.
  // The node's versioned key-value stores and leased task queues, addressed
  // by name (see README, "Shared state"). Every call is asynchronous: its
  // callback runs in this agent's instance once the operation is
  // committed, and only in the instance that called (after a restart it is
  // dropped, as a `request`'s is). For a `journal` agent, the operations a
  // handler makes (or a callback of a call its held envelope waits for)
  // commit in the same LMDB transaction as the handler's state, its sends
  // and the consumption of its envelope: all of them or none. Their
  // callbacks run after that commit, so the handler cannot branch on their
  // outcome; a callback's own state changes commit with the next envelope.
  // Elsewhere each operation commits on its own.
  //
  // Errors, on `on_error` (at once, before the call returns, for the first
  // two): storage_failed (the node has no data dir, or the commit failed),
  // bad_payload (a malformed name, key or lease; the context names the
  // field), lease_expired (extend, complete and fail under a lease that is
  // no longer live), not_found (no such task), not_running (the instance
  // ended first, for callbacks that cannot be dropped silently).

  /// Reads `key` of store `store` as last committed (not found: version 0).
  void kv_get(std::string_view store, std::string_view key,
              std::function<void(kv_entry)> on_entry,
              std::function<void(const caf::error&)> on_error);

  /// Compare-and-swap: writes `value` if the key's version is still
  /// `expected_version` (0: the key does not exist, create-if-absent).
  /// `on_result` gets the new version, or a conflict with the current one.
  void kv_put(std::string_view store, std::string_view key, std::string value,
              uint64_t expected_version,
              std::function<void(kv_result)> on_result,
              std::function<void(const caf::error&)> on_error);

  /// Deletes `key` if its version is still `expected_version` (not 0),
  /// leaving a tombstone so that versions never repeat.
  void kv_delete(std::string_view store, std::string_view key,
                 uint64_t expected_version,
                 std::function<void(kv_result)> on_result,
                 std::function<void(const caf::error&)> on_error);

  /// Adds a task to `queue`; `on_id` gets its id (the first task's, for a
  /// repeated dedupe key).
  void enqueue_task(std::string_view queue, std::string payload,
               const enqueue_options& opts, std::function<void(uint64_t)> on_id,
               std::function<void(const caf::error&)> on_error);

  /// Claims the oldest claimable task of `queue` under a lease of
  /// `lease_for`: tasks never claimed, failed, or whose lease expired
  /// (each expiry spends an attempt; a task out of attempts becomes a dead
  /// letter). `on_task` gets nullopt when there is none.
  void claim_task(std::string_view queue, duration lease_for,
             std::function<void(std::optional<claimed_task>)> on_task,
             std::function<void(const caf::error&)> on_error);

  /// Extends a live lease to `lease_for` from now.
  void extend_lease(const lease& l, duration lease_for,
              std::function<void(lease)> on_extended,
              std::function<void(const caf::error&)> on_error);

  /// Completes the task of a live lease; it is never claimed again. A
  /// lease that expired is refused with lease_expired even if nobody
  /// claimed the task since.
  void complete_task(const lease& l, std::function<void()> on_done,
                std::function<void(const caf::error&)> on_error);

  /// Gives the task of a live lease back with `reason`: claimable again,
  /// or a dead letter once its attempts are spent (`on_done(true)`).
  void fail_task(const lease& l, std::string reason,
            std::function<void(bool dead)> on_done,
            std::function<void(const caf::error&)> on_error);

  /// Draws one retry from the attempt budget of the request being handled
  /// (in a handler, or in a `request` or `call_tool` callback: the request
  /// whose handler made that call). Every layer of one request tree draws
  /// from the same budget (`envelope::attempt_budget`, default 3 attempts
  /// in all), so that an agent which retries its own requests cannot
  /// multiply the retries of the layers below it. False when it is spent:
  /// give up instead of retrying.
  [[nodiscard]] virtual bool take_retry() = 0;

  /// Takes over the reply to the envelope being handled: the handler's
  /// return value is then ignored, and the reply goes out when the handle is
  /// delivered. Only valid inside a handler.
  virtual deferred_reply defer() = 0;

  /// Ends this instance once the current handler returns. An empty reason is
  /// a normal exit; `caf::exit_reason::user_shutdown` is a shutdown exit.
  /// Both are not failures for a transient child.
  virtual void stop(caf::error reason = caf::error{}) = 0;

protected:
  /// Runs one shared-state operation (see "shared state" above);
  /// `on_result` gets its result once committed.
  virtual void
  shared_raw(records::SharedOp op,
             std::function<void(records::SharedResult&&)> on_result,
             std::function<void(const caf::error&)> on_error)
    = 0;
  virtual void
  call_tool_raw(std::string_view tool,
                std::unique_ptr<google::protobuf::Message> req,
                symbol reply_type, const tool_options& opts,
                std::function<void(std::unique_ptr<google::protobuf::Message>)>
                  on_result,
                std::function<void(const caf::error&)> on_error)
    = 0;
  /// Who answered the call whose callback runs now.
  virtual const tool_answer& answered() const noexcept = 0;
  virtual caf::error effect_raw(std::string_view tool,
                                std::unique_ptr<google::protobuf::Message> req)
    = 0;
  virtual envelope make_envelope(const google::protobuf::Message& msg,
                                 const call_options& opts) = 0;
  /// Sends `env`; `shed`: a full receiver makes it a dead letter
  /// (`overloaded`), else it is not sent. False if it was not sent.
  virtual bool send_envelope(const handle& to, envelope env, bool shed = true)
    = 0;
  /// Delivers `env` to `to` after `delay`, bypassing any outbox.
  virtual void send_envelope_after(const handle& to, envelope env,
                                   duration delay)
    = 0;
  virtual void request_envelope(const handle& to, envelope env,
                                duration timeout,
                                std::function<void(const envelope&)> on_reply,
                                std::function<void(const caf::error&)> on_error)
    = 0;
};

} // namespace vigil
