#pragma once

#include <stdexcept>
#include <string>
#include <type_traits>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "vigil/actors/agent.hpp"
#include "vigil/actors/error.hpp"
#include "vigil/saga.pb.h"

namespace vigil {

/// One step of a saga: an agent with an `execute` and a `compensate`.
///
/// `Derived` implements
///   Output execute(context&, const Input&);      // or caf::expected<Output>
///   void compensate(context&, const Input&, const Output&);
///                                  // or caf::error / caf::expected<void>
/// Every step of one saga receives the saga's input, and `compensate` the
/// output of this step's own `execute`. Register the step like any agent:
/// `registry.add<Derived>("reserve")`.
///
/// Outcomes, not crashes: an `execute` that returns an error **refuses**
/// (a declined card, invalid input): the saga fails at this step and
/// compensates the steps before it; the step is not restarted and spends
/// none of its supervisor's restart budget. A refusing execute must leave
/// no effect behind, as any failing step of a saga: a refused step is not
/// compensated. A **thrown** exception is a crash, as in every agent: the
/// step is restarted (or its directive applied) and the saga fails at this
/// step all the same. Throw for a fault that a fresh instance might not
/// repeat; return an error for an answer.
///
/// A `compensate` that throws is a failed attempt: the saga retries it
/// (`compensation_retries`, doubling from `retry_delay`), each retry costing
/// the step a restart; one that returns an error refuses for good: the
/// compensation is a dead letter at once (`compensation_failed`), since a
/// refusal would refuse again.
///
/// `State` is the agent's own Protobuf state (`void` for none), so that a
/// `journal` step commits what it did together with the envelope.
template <class Derived, class Input, class Output, class State = void>
class saga_step : public agent<State> {
public:
  static void define(handlers<Derived>& h) {
    h.template on<SagaExecute>(
      [](Derived& self, context& ctx,
         const SagaExecute& m) -> caf::expected<SagaStepOutput> {
        Input in;
        if (!in.ParseFromString(m.input()))
          return make_error(errc::bad_payload,
                            ctx.path() + ": saga input does not parse as "
                              + Input::descriptor()->full_name());
        SagaStepOutput r;
        using result = decltype(self.execute(ctx, in));
        if constexpr (std::is_same_v<result, caf::expected<Output>>) {
          auto out = self.execute(ctx, in);
          if (!out)
            return std::move(out.error());
          r.set_output_type(out->GetDescriptor()->full_name());
          out->SerializeToString(r.mutable_output());
        } else {
          Output out = self.execute(ctx, in);
          r.set_output_type(out.GetDescriptor()->full_name());
          out.SerializeToString(r.mutable_output());
        }
        return r;
      });
    h.template on<SagaCompensate>(
      [](Derived& self, context& ctx,
         const SagaCompensate& m) -> caf::expected<SagaStepOutput> {
        Input in;
        Output out;
        if (!in.ParseFromString(m.input()) || !out.ParseFromString(m.output()))
          return make_error(errc::bad_payload,
                            ctx.path() + ": saga record of "
                              + Input::descriptor()->full_name()
                              + " does not parse");
        using result = decltype(self.compensate(ctx, in, out));
        if constexpr (std::is_void_v<result>) {
          self.compensate(ctx, in, out);
        } else if constexpr (std::is_same_v<result, caf::error>) {
          if (auto err = self.compensate(ctx, in, out))
            return err;
        } else {
          static_assert(std::is_same_v<result, caf::expected<void>>,
                        "compensate returns void, caf::error or "
                        "caf::expected<void>");
          if (auto r = self.compensate(ctx, in, out); !r)
            return r.error();
        }
        return SagaStepOutput{};
      });
  }
};

} // namespace vigil
