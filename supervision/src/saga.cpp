#include "vigil/supervision/saga.hpp"

#include <caf/all.hpp>

#include "vigil/resilience/backoff.hpp"
#include "vigil/saga.pb.h"

namespace vigil {

namespace {

using retry_atom = caf::atom_constant<caf::atom("vsagaretry")>;

struct saga_state {
  std::shared_ptr<runtime> rt;
  std::vector<std::string> steps;
  saga_spec opts;
  envelope input;
  SagaOutcome outcome;
  size_t next = 0;
  caf::response_promise rp;
  static inline const char* name = "vigil.saga";
};

using saga_actor = caf::stateful_actor<saga_state>;

envelope wrap(const saga_state& st, const google::protobuf::Message& m) {
  envelope e;
  e.type = vigil::type_symbol(m);
  m.SerializeToString(&e.payload);
  st.rt->stamp(e, 0, 0, &st.input);
  e.idempotency_key = st.input.idempotency_key;
  e.sender = "saga";
  return e;
}

void finish(saga_actor* self) {
  auto& st = self->state;
  envelope out;
  out.type = SagaOutcome::descriptor()->full_name();
  st.outcome.SerializeToString(&out.payload);
  st.rp.deliver(std::move(out));
  self->quit();
}

void compensate(saga_actor* self, size_t i);

/// The delay before retry `n` (from 0) of a compensation: `retry_delay`,
/// doubling, at most 2^16 times it.
resilience::duration retry_delay(const saga_spec& opts, uint32_t n) {
  resilience::backoff_policy p;
  p.initial = opts.retry_delay;
  p.max = p.initial <= resilience::max_delay / 65536 ? p.initial * 65536
                                                      : resilience::max_delay;
  // Only the base delay is read, so no clock is needed beyond a stand-in.
  resilience::backoff b{p, resilience::steady_clock::instance()};
  return b.base(n);
}

void compensate_from(saga_actor* self, size_t count) {
  if (count == 0)
    return finish(self);
  compensate(self, count - 1);
}

/// Undoes step `i`, retrying with a doubling delay, then steps i-1..0.
void compensate(saga_actor* self, size_t i) {
  auto& st = self->state;
  auto* step = st.outcome.mutable_steps(static_cast<int>(i));
  SagaCompensate msg;
  msg.set_input_type(st.input.type);
  msg.set_input(st.input.payload);
  msg.set_output_type(step->output_type());
  msg.set_output(step->output());
  auto env = wrap(st, msg);
  auto on_error = [self, i, env](const std::string& why) {
    auto& st = self->state;
    auto* step = st.outcome.mutable_steps(static_cast<int>(i));
    auto attempts = step->compensation_attempts() + 1;
    step->set_compensation_attempts(attempts);
    if (attempts <= st.opts.compensation_retries) {
      self->delayed_send(self, retry_delay(st.opts, attempts - 1),
                         retry_atom::value, i);
      return;
    }
    // Out of retries: keep it where an operator will see it, and go on.
    step->set_status("compensation_failed");
    step->set_error(why);
    st.outcome.set_compensation_failed(true);
    st.rt->add_dead_letter(step->path(), env,
                           "compensation_failed after "
                             + std::to_string(attempts) + " attempts: "
                             + why);
    compensate_from(self, i);
  };
  auto dest = st.rt->lookup(step->path());
  if (!dest)
    return on_error("not_found: no agent at " + step->path());
  self->request(dest, caf::duration{st.opts.step_timeout}, env)
    .then(
      [self, i](envelope&) {
        auto* step = self->state.outcome.mutable_steps(static_cast<int>(i));
        step->set_status("compensated");
        compensate_from(self, i);
      },
      [on_error](caf::error& err) { on_error(describe(err)); });
}

void fail(saga_actor* self, size_t k, const std::string& why) {
  auto& st = self->state;
  auto* step = st.outcome.mutable_steps(static_cast<int>(k));
  step->set_status("failed");
  step->set_error(why);
  st.outcome.set_failed_step(step->path());
  st.outcome.set_failure(why);
  compensate_from(self, k);
}

void execute_next(saga_actor* self) {
  auto& st = self->state;
  if (st.next == st.steps.size()) {
    st.outcome.set_completed(true);
    return finish(self);
  }
  auto k = st.next;
  auto dest = st.rt->lookup(st.steps[k]);
  if (!dest)
    return fail(self, k, "not_found: no agent at " + st.steps[k]);
  SagaExecute msg;
  msg.set_input_type(st.input.type);
  msg.set_input(st.input.payload);
  auto env = wrap(st, msg);
  env.deadline = st.input.deadline;
  self->request(dest, caf::duration{st.opts.step_timeout}, std::move(env))
    .then(
      [self, k](envelope& rep) {
        auto& st = self->state;
        SagaStepOutput out;
        if (!out.ParseFromString(rep.payload))
          return fail(self, k, "bad_payload: step reply does not parse");
        auto* step = st.outcome.mutable_steps(static_cast<int>(k));
        step->set_status("executed");
        step->set_output_type(out.output_type());
        step->set_output(out.output());
        ++st.next;
        execute_next(self);
      },
      [self, k](caf::error& err) { fail(self, k, describe(err)); });
}

caf::behavior saga_run(saga_actor* self, std::shared_ptr<runtime> rt,
                       std::vector<std::string> steps, saga_spec opts) {
  auto& st = self->state;
  st.rt = std::move(rt);
  st.steps = std::move(steps);
  st.opts = opts;
  for (auto& p : st.steps) {
    auto* s = st.outcome.add_steps();
    s->set_path(p);
    s->set_status("not_run");
  }
  return {
    [self](run_saga_atom, envelope& input) -> caf::result<envelope> {
      auto& st = self->state;
      st.input = std::move(input);
      st.rp = self->make_response_promise();
      execute_next(self);
      return caf::delegated<envelope>{};
    },
    [self](retry_atom, size_t i) { compensate(self, i); },
  };
}

} // namespace

caf::actor spawn_saga_run(caf::actor_system& sys, std::shared_ptr<runtime> rt,
                          std::vector<std::string> steps, saga_spec opts) {
  return sys.spawn(saga_run, std::move(rt), std::move(steps), opts);
}

} // namespace vigil
