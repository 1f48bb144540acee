#include "vigil/supervision/wire.hpp"

#include <memory>

namespace vigil {

namespace {

using std::chrono::milliseconds;

/// A tool override's time from the wire (milliseconds, rounded up when
/// written): beyond a duration's range it is taken as the longest, which
/// check_child_specs refuses, instead of wrapping into a valid value.
vigil::duration override_ms(int64_t x) {
  constexpr int64_t top = vigil::duration::max().count() / 1000000;
  if (x > top || x < -top)
    return vigil::duration::max();
  return milliseconds{x};
}

int64_t ms(milliseconds x) {
  return x.count();
}

// vigil's enums and the wire's list their values in the same order.
template <class To, class From>
To as(From x) {
  return static_cast<To>(static_cast<int>(x));
}

// An enum value vigil does not know; `valid` is the Protobuf enum's
// _IsValid function.
template <class To>
caf::error read_enum(int value, bool (*valid)(int), const std::string& what,
                     To& out) {
  if (!valid(value))
    return make_error(errc::bad_payload, what + ": unknown value "
                                           + std::to_string(value));
  out = static_cast<To>(value);
  return caf::none;
}

std::string field(const std::string& id, const char* name) {
  return "child_spec " + (id.empty() ? std::string{"<no id>"} : id) + ": "
         + name;
}

} // namespace

wire::ChildSpec to_wire(const child_spec& x) {
  wire::ChildSpec out;
  out.set_id(x.id);
  out.set_kind(as<wire::ChildKind>(x.kind));
  out.set_agent(x.agent);
  for (auto& [k, v] : x.params)
    (*out.mutable_params())[k] = v;
  out.set_restart(as<policy::Restart>(x.restart));
  if (x.has_shutdown) {
    auto& s = *out.mutable_shutdown();
    s.set_how(as<wire::ShutdownKind>(x.shutdown.how));
    s.set_timeout_ms(ms(x.shutdown.timeout));
  }
  out.set_significant(x.significant);
  out.set_on_failure(as<policy::OnFailure>(x.failure));
  auto& d = *out.mutable_degrade();
  d.set_fallback_type(x.degrade.fallback.type.str());
  d.set_fallback_payload(x.degrade.fallback.payload);
  d.set_fallback_flags(x.degrade.fallback.flags);
  d.set_probe_min_ms(ms(x.degrade.probe_min));
  d.set_probe_max_ms(ms(x.degrade.probe_max));
  out.set_buffer_cap(x.buffer_cap);
  out.set_queue_cap(x.queue_cap);
  out.set_overflow(as<policy::Overflow>(x.overflow));
  out.set_max_deliveries(x.max_deliveries);
  auto& u = *out.mutable_durability();
  u.set_mode(as<policy::Mode>(x.durability.mode));
  u.set_every_messages(x.durability.every_messages);
  u.set_every_ms(ms(x.durability.every));
  for (auto& [name, o] : x.tools) {
    auto& t = (*out.mutable_tools())[name];
    if (o.timeout)
      t.set_timeout_ms(ms(std::chrono::ceil<milliseconds>(*o.timeout)));
    if (o.attempt_timeout)
      t.set_attempt_timeout_ms(
        ms(std::chrono::ceil<milliseconds>(*o.attempt_timeout)));
    if (o.max_attempts)
      t.set_max_attempts(*o.max_attempts);
    if (o.cost_per_agent)
      t.set_cost_per_agent(*o.cost_per_agent);
  }
  if (x.approval.required) {
    auto& a = *out.mutable_approval();
    a.set_required(true);
    a.set_timeout_ms(ms(std::chrono::ceil<milliseconds>(x.approval.timeout)));
    for (auto& t : x.approval.types)
      a.add_types(t);
  }
  if (x.sup)
    *out.mutable_supervisor() = to_wire(*x.sup);
  return out;
}

wire::SupervisorSpec to_wire(const supervisor_spec& x) {
  wire::SupervisorSpec out;
  auto& f = *out.mutable_flags();
  f.set_strategy(as<policy::Strategy>(x.flags.strategy));
  f.set_intensity(x.flags.intensity);
  f.set_period_ms(ms(x.flags.period));
  f.set_auto_shutdown(as<policy::AutoShutdown>(x.flags.auto_shutdown));
  auto& b = *f.mutable_backoff();
  b.set_min_ms(ms(x.flags.backoff.min));
  b.set_max_ms(ms(x.flags.backoff.max));
  b.set_jitter(x.flags.backoff.jitter);
  b.set_reset_after_ms(ms(x.flags.backoff.reset_after));
  f.set_seed(x.flags.seed);
  for (auto& c : x.children)
    *out.add_children() = to_wire(c);
  auto& g = *out.mutable_saga();
  g.set_enabled(x.saga.enabled);
  g.set_compensation_retries(x.saga.compensation_retries);
  g.set_retry_delay_ms(ms(x.saga.retry_delay));
  g.set_step_timeout_ms(ms(x.saga.step_timeout));
  g.set_durable(x.saga.durable);
  g.set_retention_ms(ms(x.saga.retention));
  g.set_outcome_to(x.saga.outcome_to);
  return out;
}

wire::ChildInfo to_wire(const child_info& x) {
  wire::ChildInfo out;
  out.set_id(x.id);
  out.set_path(x.path);
  out.set_kind(as<wire::ChildKind>(x.kind));
  out.set_status(x.status);
  out.set_restarts(x.restarts);
  return out;
}

wire::ChildCounts to_wire(const child_counts& x) {
  wire::ChildCounts out;
  out.set_specs(x.specs);
  out.set_active(x.active);
  out.set_supervisors(x.supervisors);
  out.set_workers(x.workers);
  return out;
}

caf::error from_wire(const wire::ChildSpec& x, child_spec& out) {
  child_spec cs;
  cs.id = x.id();
  if (auto err = read_enum(x.kind(), wire::ChildKind_IsValid,
                           field(cs.id, "kind"), cs.kind))
    return err;
  cs.agent = x.agent();
  for (auto& [k, v] : x.params())
    cs.params[k] = v;
  if (auto err = read_enum(x.restart(), policy::Restart_IsValid,
                           field(cs.id, "restart"), cs.restart))
    return err;
  if (x.has_shutdown()) {
    cs.has_shutdown = true;
    if (auto err = read_enum(x.shutdown().how(), wire::ShutdownKind_IsValid,
                             field(cs.id, "shutdown"), cs.shutdown.how))
      return err;
    cs.shutdown.timeout = milliseconds{x.shutdown().timeout_ms()};
  }
  cs.significant = x.significant();
  if (auto err = read_enum(x.on_failure(), policy::OnFailure_IsValid,
                           field(cs.id, "on_failure"), cs.failure))
    return err;
  if (x.has_degrade()) {
    auto& d = x.degrade();
    cs.degrade.fallback.type = symbol{d.fallback_type()};
    cs.degrade.fallback.payload = d.fallback_payload();
    cs.degrade.fallback.flags = d.fallback_flags();
    cs.degrade.probe_min = milliseconds{d.probe_min_ms()};
    cs.degrade.probe_max = milliseconds{d.probe_max_ms()};
  }
  cs.buffer_cap = x.buffer_cap();
  cs.queue_cap = x.queue_cap();
  if (auto err = read_enum(x.overflow(), policy::Overflow_IsValid,
                           field(cs.id, "overflow"), cs.overflow))
    return err;
  cs.max_deliveries = x.max_deliveries();
  if (x.has_durability()) {
    auto& u = x.durability();
    if (auto err = read_enum(u.mode(), policy::Mode_IsValid,
                             field(cs.id, "durability.mode"),
                             cs.durability.mode))
      return err;
    cs.durability.every_messages = u.every_messages();
    cs.durability.every = milliseconds{u.every_ms()};
  }
  for (auto& [name, t] : x.tools()) {
    auto& o = cs.tools[name];
    if (t.has_timeout_ms())
      o.timeout = override_ms(t.timeout_ms());
    if (t.has_attempt_timeout_ms())
      o.attempt_timeout = override_ms(t.attempt_timeout_ms());
    if (t.has_max_attempts())
      o.max_attempts = t.max_attempts();
    if (t.has_cost_per_agent())
      o.cost_per_agent = t.cost_per_agent();
  }
  if (x.has_approval() && x.approval().required()) {
    cs.approval.required = true;
    cs.approval.timeout = override_ms(x.approval().timeout_ms());
    cs.approval.types.assign(x.approval().types().begin(),
                             x.approval().types().end());
  }
  if (x.has_supervisor()) {
    auto sup = std::make_shared<supervisor_spec>();
    if (auto err = from_wire(x.supervisor(), *sup))
      return err;
    cs.sup = std::move(sup);
  }
  out = std::move(cs);
  return caf::none;
}

caf::error from_wire(const wire::SupervisorSpec& x, supervisor_spec& out) {
  supervisor_spec spec;
  // A message left out keeps the C++ defaults (OTP's flags).
  if (x.has_flags()) {
    auto& f = x.flags();
    if (auto err = read_enum(f.strategy(), policy::Strategy_IsValid,
                             "supervisor_spec: flags.strategy",
                             spec.flags.strategy))
      return err;
    spec.flags.intensity = f.intensity();
    spec.flags.period = milliseconds{f.period_ms()};
    if (auto err = read_enum(f.auto_shutdown(), policy::AutoShutdown_IsValid,
                             "supervisor_spec: flags.auto_shutdown",
                             spec.flags.auto_shutdown))
      return err;
    if (f.has_backoff()) {
      auto& b = f.backoff();
      spec.flags.backoff.min = milliseconds{b.min_ms()};
      spec.flags.backoff.max = milliseconds{b.max_ms()};
      spec.flags.backoff.jitter = b.jitter();
      spec.flags.backoff.reset_after = milliseconds{b.reset_after_ms()};
    }
    spec.flags.seed = f.seed();
  }
  spec.children.reserve(x.children_size());
  for (auto& c : x.children()) {
    spec.children.emplace_back();
    if (auto err = from_wire(c, spec.children.back()))
      return err;
  }
  if (x.has_saga()) {
    auto& g = x.saga();
    spec.saga.enabled = g.enabled();
    spec.saga.compensation_retries = g.compensation_retries();
    spec.saga.retry_delay = milliseconds{g.retry_delay_ms()};
    spec.saga.step_timeout = milliseconds{g.step_timeout_ms()};
    spec.saga.durable = g.durable();
    // 0: written by a vigil without durable sagas, which had no retention
    if (g.retention_ms() != 0)
      spec.saga.retention = milliseconds{g.retention_ms()};
    spec.saga.outcome_to = g.outcome_to();
  }
  out = std::move(spec);
  return caf::none;
}

caf::error from_wire(const wire::ChildInfo& x, child_info& out) {
  child_info ci;
  ci.id = x.id();
  if (auto err = read_enum(x.kind(), wire::ChildKind_IsValid,
                           "child_info " + ci.id + ": kind", ci.kind))
    return err;
  ci.path = x.path();
  ci.status = x.status();
  ci.restarts = x.restarts();
  out = std::move(ci);
  return caf::none;
}

caf::error from_wire(const wire::ChildCounts& x, child_counts& out) {
  out.specs = x.specs();
  out.active = x.active();
  out.supervisors = x.supervisors();
  out.workers = x.workers();
  return caf::none;
}

} // namespace vigil
