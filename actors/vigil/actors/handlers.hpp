#pragma once

// How an agent type declares its handlers (`Agent::define`).

#include <type_traits>
#include <utility>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "vigil/actors/context.hpp"
#include "vigil/actors/detail/handler_table.hpp"

namespace vigil {

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
///   failure that a fresh instance might not repeat. A refusal stands even
///   past the envelope's deadline. The codes with which the runtime says
///   "not delivered" (`not_found`, `not_running`, `buffer_overflow`,
///   `storage_failed`, `shutting_down`, and CAF's request timeout) are
///   reported as `refused`, so that an outbox does not deliver again; so
///   are the codes of the runtime's own verdicts (`expired`, `duplicate`,
///   `handler_failed`, `poison_message`, `deadline_exceeded`, `degraded`,
///   `reply_dropped`, `fenced`), so that a requester such as a saga never
///   mistakes a refusal for one (the text is kept). A
///   journal agent's refusal dead letter is not replayed (its effects were
///   committed); resend with a new id to run it again.
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
