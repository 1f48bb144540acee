#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <typeinfo>
#include <unordered_map>
#include <utility>

#include <caf/actor.hpp>
#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <google/protobuf/message.h>

#include "vigil/actors/envelope.hpp"
#include "vigil/actors/error.hpp"

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
};

namespace detail {

/// One binding of a path to the cell that hosts its agent. The runtime's
/// directory makes a new binding each time a path is bound to another
/// cell, and clears `live` on the old one when it is replaced or unbound,
/// so a cached handle notices at once.
struct binding {
  explicit binding(caf::actor x) : actor(std::move(x)) {
    // nop
  }
  const caf::actor actor;
  std::atomic<bool> live{true};
};

} // namespace detail

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

/// The interned Protobuf type name of `msg`. Each thread caches names by
/// C++ type in a small direct-mapped table: a hit neither calls
/// GetDescriptor() (a call_once each time) nor takes the interning lock,
/// also for senders that alternate types.
inline symbol type_symbol(const google::protobuf::Message& msg) {
  struct slot {
    const std::type_info* type = nullptr;
    symbol name;
  };
  thread_local slot cache[16];
  auto* ti = &typeid(msg);
  auto& sl = cache[(reinterpret_cast<uintptr_t>(ti) >> 4) % 16];
  if (sl.type != ti) {
    sl.name = symbol{msg.GetDescriptor()->full_name()};
    sl.type = ti;
  }
  return sl.name;
}

/// The interned Protobuf type name of `T`.
template <class T>
const symbol& type_symbol() {
  static const symbol name{T::descriptor()->full_name()};
  return name;
}

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
    auto ok = std::move(st_->ok);
    st_->ok = nullptr;
    st_->err = nullptr;
    ok(std::move(e));
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
    auto ok = std::move(st_->ok);
    st_->ok = nullptr;
    st_->err = nullptr;
    ok(std::move(e));
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
  struct state {
    std::function<void(envelope)> ok;
    std::function<void(caf::error)> err;
    ~state() {
      if (err)
        err(make_error(errc::not_running, "the agent dropped this reply"));
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

  /// Takes over the reply to the envelope being handled: the handler's
  /// return value is then ignored, and the reply goes out when the handle is
  /// delivered. Only valid inside a handler.
  virtual deferred_reply defer() = 0;

  /// Ends this instance once the current handler returns. An empty reason is
  /// a normal exit; `caf::exit_reason::user_shutdown` is a shutdown exit.
  /// Both are not failures for a transient child.
  virtual void stop(caf::error reason = caf::error{}) = 0;

protected:
  virtual envelope make_envelope(const google::protobuf::Message& msg,
                                 const call_options& opts) = 0;
  virtual void send_envelope(const handle& to, envelope env) = 0;
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

/// Base of every agent. Users derive from `agent<State>`.
///
/// Hooks run inside the agent's actor, one at a time: `on_start` after the
/// first start, `on_restart` (which calls `on_start` unless overridden) after
/// every restart, `on_stop` on an orderly stop (not after a crash or a
/// brutal_kill). A throwing hook or handler is a failure of this child: its
/// supervisor applies the child's directive.
class agent_base {
public:
  virtual ~agent_base() = default;
  virtual void on_start(context&) {
    // nop
  }
  virtual void on_restart(context& ctx, const caf::error& /*reason*/) {
    on_start(ctx);
  }
  virtual void on_stop(context&) {
    // nop
  }
  /// The agent's Protobuf state, or nullptr if it has none.
  virtual google::protobuf::Message* state_message() noexcept {
    return nullptr;
  }
};

/// An agent with a Protobuf state of type `State` (or none if `void`).
template <class State = void>
class agent : public agent_base {
public:
  State& state() noexcept {
    return state_;
  }
  google::protobuf::Message* state_message() noexcept override {
    return &state_;
  }

private:
  State state_;
};

template <>
class agent<void> : public agent_base {};

namespace detail {

/// What a type-erased handler did with an envelope.
enum class handler_status : uint8_t {
  /// Handled; `out` holds the reply, if the handler returned one.
  done,
  /// The payload does not parse as the handler's request type.
  bad_payload,
  /// The handler refused the envelope with the error in `refusal`.
  refused,
};

/// Type-erased handler: parses `in.payload`, runs the handler and, if it
/// returns a message, serializes it into `out`.
using erased_handler
  = std::function<handler_status(agent_base&, context&, const envelope& in,
                                 envelope& out, caf::error& refusal)>;

template <class T>
struct is_expected : std::false_type {};

template <class T>
struct is_expected<caf::expected<T>> : std::true_type {};

struct handler_table {
  std::unordered_map<symbol, erased_handler, symbol_hash> by_type;
};

} // namespace detail

/// Collects the handlers of agent type `Agent`; passed to `Agent::define`.
///
/// Each handler takes `(context&, const Request&)` as a member function of
/// `Agent`, or `(Agent&, context&, const Request&)` as any callable, and
/// returns one of:
/// - `void`, or a Protobuf reply message;
/// - `caf::expected<Reply>`, `caf::expected<void>` or `caf::error`, to be
///   able to refuse: an error
///   refuses the envelope without throwing. The requester gets that error,
///   an async envelope becomes a dead letter (replayable, for a `journal`
///   agent), and the child is not restarted and spends no restart
///   intensity. A refusal is an outcome like a reply: what the handler did
///   before refusing (its state, its sends) stands and is committed with
///   it. Use it for input that can never succeed (validation); throw for a
///   failure that a fresh instance might not repeat.
template <class Agent>
class handlers {
public:
  explicit handlers(detail::handler_table& table) : table_(table) {
    // nop
  }

  template <class Request, class F>
  handlers& on(F f) {
    table_.by_type[type_symbol<Request>()] =
      [f](agent_base& self, context& ctx, const envelope& in, envelope& out,
          caf::error& refusal) -> detail::handler_status {
      using detail::handler_status;
      Request req;
      if (!req.ParseFromString(in.payload))
        return handler_status::bad_payload;
      auto& me = static_cast<Agent&>(self);
      using result = std::decay_t<decltype(invoke(f, me, ctx, req))>;
      if constexpr (std::is_void_v<result>) {
        invoke(f, me, ctx, req);
      } else if constexpr (std::is_same_v<result, caf::error>) {
        if (auto err = invoke(f, me, ctx, req)) {
          refusal = std::move(err);
          return handler_status::refused;
        }
      } else if constexpr (std::is_same_v<result, caf::expected<void>>) {
        auto rep = invoke(f, me, ctx, req);
        if (!rep) {
          refusal = rep.error();
          return handler_status::refused;
        }
      } else if constexpr (detail::is_expected<result>::value) {
        auto rep = invoke(f, me, ctx, req);
        if (!rep) {
          refusal = std::move(rep.error());
          return handler_status::refused;
        }
        out.type = type_symbol<typename result::value_type>();
        rep->SerializeToString(&out.payload);
      } else {
        auto rep = invoke(f, me, ctx, req);
        out.type = type_symbol<result>();
        rep.SerializeToString(&out.payload);
      }
      return handler_status::done;
    };
    return *this;
  }

private:
  template <class F, class Request>
  static decltype(auto) invoke(F& f, Agent& me, context& ctx,
                               const Request& req) {
    if constexpr (std::is_member_function_pointer_v<F>)
      return (me.*f)(ctx, req);
    else
      return f(me, ctx, req);
  }

  detail::handler_table& table_;
};

} // namespace vigil
