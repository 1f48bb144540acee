#pragma once

#include <stdexcept>
#include <string>

#include "vigil/actors/agent.hpp"
#include "vigil/saga.pb.h"

namespace vigil {

/// One step of a saga: an agent with an `execute` and a `compensate`.
///
/// `Derived` implements
///   Output execute(context&, const Input&);
///   void compensate(context&, const Input&, const Output&);
/// Both may throw; a throwing execute fails the saga at this step, and a
/// throwing compensate is retried by the saga, then kept as a dead letter.
/// Every step of one saga receives the saga's input. Register the step like
/// any agent: `registry.add<Derived>("reserve")`.
template <class Derived, class Input, class Output>
class saga_step : public agent<void> {
public:
  static void define(handlers<Derived>& h) {
    h.template on<SagaExecute>(
      [](Derived& self, context& ctx, const SagaExecute& m) {
        Input in;
        if (!in.ParseFromString(m.input()))
          throw std::invalid_argument("saga input does not parse as "
                                      + Input::descriptor()->full_name());
        Output out = self.execute(ctx, in);
        SagaStepOutput r;
        r.set_output_type(out.GetDescriptor()->full_name());
        out.SerializeToString(r.mutable_output());
        return r;
      });
    h.template on<SagaCompensate>(
      [](Derived& self, context& ctx, const SagaCompensate& m) {
        Input in;
        Output out;
        if (!in.ParseFromString(m.input()) || !out.ParseFromString(m.output()))
          throw std::invalid_argument("saga record of "
                                      + Input::descriptor()->full_name()
                                      + " does not parse");
        self.compensate(ctx, in, out);
        return SagaStepOutput{};
      });
  }
};

} // namespace vigil
