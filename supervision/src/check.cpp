#include "vigil/supervision/check.hpp"

#include <algorithm>

#include <google/protobuf/stubs/common.h>

#include <algorithm>
#include <unordered_set>

namespace vigil {

const char* to_string(restart_type x) noexcept {
  switch (x) {
    case restart_type::permanent: return "permanent";
    case restart_type::transient: return "transient";
    case restart_type::temporary: return "temporary";
  }
  return "?";
}

const char* to_string(strategy x) noexcept {
  switch (x) {
    case strategy::one_for_one: return "one_for_one";
    case strategy::one_for_all: return "one_for_all";
    case strategy::rest_for_one: return "rest_for_one";
    case strategy::simple_one_for_one: return "simple_one_for_one";
  }
  return "?";
}

const char* to_string(auto_shutdown x) noexcept {
  switch (x) {
    case auto_shutdown::never: return "never";
    case auto_shutdown::any_significant: return "any_significant";
    case auto_shutdown::all_significant: return "all_significant";
  }
  return "?";
}

const char* to_string(on_failure x) noexcept {
  switch (x) {
    case on_failure::restart: return "restart";
    case on_failure::degrade: return "degrade";
    case on_failure::escalate: return "escalate";
  }
  return "?";
}

const char* to_string(spec_errc x) noexcept {
  switch (x) {
    case spec_errc::missing_id: return "missing_id";
    case spec_errc::invalid_id: return "invalid_id";
    case spec_errc::duplicate_child_name: return "duplicate_child_name";
    case spec_errc::invalid_child_type: return "invalid_child_type";
    case spec_errc::unknown_agent_type: return "unknown_agent_type";
    case spec_errc::invalid_restart_type: return "invalid_restart_type";
    case spec_errc::invalid_shutdown: return "invalid_shutdown";
    case spec_errc::invalid_significant: return "invalid_significant";
    case spec_errc::invalid_on_failure: return "invalid_on_failure";
    case spec_errc::invalid_degrade: return "invalid_degrade";
    case spec_errc::invalid_buffer_cap: return "invalid_buffer_cap";
    case spec_errc::invalid_max_deliveries: return "invalid_max_deliveries";
    case spec_errc::invalid_tool_override: return "invalid_tool_override";
    case spec_errc::invalid_approval: return "invalid_approval";
    case spec_errc::invalid_queue_cap: return "invalid_queue_cap";
    case spec_errc::invalid_durability: return "invalid_durability";
    case spec_errc::invalid_strategy: return "invalid_strategy";
    case spec_errc::invalid_intensity: return "invalid_intensity";
    case spec_errc::invalid_period: return "invalid_period";
    case spec_errc::invalid_params: return "invalid_params";
    case spec_errc::invalid_saga: return "invalid_saga";
    case spec_errc::too_deep: return "too_deep";
    case spec_errc::invalid_auto_shutdown: return "invalid_auto_shutdown";
    case spec_errc::invalid_backoff: return "invalid_backoff";
    case spec_errc::bad_combination: return "bad_combination";
    case spec_errc::bad_start_spec: return "bad_start_spec";
  }
  return "?";
}

std::string spec_problem::to_string() const {
  return (where.empty() ? std::string{"<root>"} : where) + ": " + field
         + ": " + vigil::to_string(code) + ": " + detail;
}

namespace {

using problems = std::vector<spec_problem>;

std::string join(const std::string& where, const std::string& id) {
  return where.empty() ? id : where + "/" + id;
}

/// "1h" for `max_duration`, in the unit a policy file would use.
std::string too_long(milliseconds d) {
  return "got " + std::to_string(d.count()) + "ms; allowed: at most "
         + std::to_string(std::chrono::duration_cast<std::chrono::hours>(
                            max_duration)
                            .count())
         + "h (100 years)";
}

void check_flags(const sup_flags& f, const std::string& where, problems& out) {
  auto add = [&](const char* field, spec_errc code, std::string detail) {
    out.push_back({where, field, code, std::move(detail)});
  };
  if (static_cast<uint8_t>(f.strategy) > 3)
    add("strategy", spec_errc::invalid_strategy,
        "allowed: one_for_one, one_for_all, rest_for_one, "
        "simple_one_for_one");
  if (f.intensity < 0)
    add("intensity", spec_errc::invalid_intensity,
        "got " + std::to_string(f.intensity)
          + "; allowed: a whole number >= 0");
  if (f.period.count() <= 0)
    add("period", spec_errc::invalid_period,
        "got " + std::to_string(f.period.count())
          + "ms; allowed: a duration > 0");
  else if (f.period > max_duration)
    add("period", spec_errc::invalid_period, too_long(f.period));
  if (static_cast<uint8_t>(f.auto_shutdown) > 2)
    add("auto_shutdown", spec_errc::invalid_auto_shutdown,
        "allowed: never, any_significant, all_significant");
  else if (f.auto_shutdown != auto_shutdown::never
           && f.strategy == strategy::simple_one_for_one)
    add("auto_shutdown", spec_errc::bad_combination,
        "simple_one_for_one supervisors allow only auto_shutdown: never");
  auto& b = f.backoff;
  if (b.min.count() < 0 || b.max.count() < 0 || b.reset_after.count() < 0)
    add("backoff", spec_errc::invalid_backoff, "durations must be >= 0");
  else if (auto m = std::max({b.min, b.max, b.reset_after}); m > max_duration)
    add("backoff", spec_errc::invalid_backoff, too_long(m));
  else if (b.min.count() > 0 && b.max < b.min)
    add("backoff", spec_errc::invalid_backoff,
        "max (" + std::to_string(b.max.count()) + "ms) is below min ("
          + std::to_string(b.min.count()) + "ms)");
  if (!(b.jitter >= 0.0 && b.jitter <= 1.0))
    add("backoff.jitter", spec_errc::invalid_backoff,
        "allowed: a fraction from 0 to 1");
}

} // namespace

std::vector<spec_problem> check_child_spec(const child_spec& c,
                                           const sup_flags& flags,
                                           const registry* types,
                                           const std::string& parent) {
  problems out;
  auto where = join(parent, c.id.empty() ? "<no id>" : c.id);
  auto add = [&](std::string field, spec_errc code, std::string detail) {
    out.push_back({where, std::move(field), code, std::move(detail)});
  };
  if (c.id.empty())
    add("id", spec_errc::missing_id, "every child needs a non-empty id");
  else if (c.id.find('/') != std::string::npos)
    add("id", spec_errc::invalid_id, "an id may not contain '/'");
  if (static_cast<uint8_t>(c.kind) > 1) {
    add("kind", spec_errc::invalid_child_type, "allowed: worker, supervisor");
  } else if (c.kind == child_kind::supervisor) {
    if (!c.sup)
      add("kind", spec_errc::invalid_child_type,
          "a supervisor child needs its supervisor spec");
  } else if (c.agent.empty()) {
    add("agent", spec_errc::unknown_agent_type,
        "a worker needs an agent type");
  } else if (types != nullptr && types->find(c.agent) == nullptr) {
    std::string known;
    for (auto& n : types->names())
      known += (known.empty() ? "" : ", ") + n;
    add("agent", spec_errc::unknown_agent_type,
        "'" + c.agent + "' is not registered; known: "
          + (known.empty() ? "none" : known));
  } else if (types != nullptr
             && flags.strategy != strategy::simple_one_for_one) {
    // Every param checked before anything starts, as the agent type says.
    // (A simple_one_for_one template's params are completed by each
    // start_child, whose spec is checked then.)
    if (auto& chk = types->find(c.agent)->check_params)
      for (auto& p : chk(c.params))
        add("params", spec_errc::invalid_params, p);
  }
  bool restart_ok = static_cast<uint8_t>(c.restart) <= 2;
  if (!restart_ok)
    add("restart", spec_errc::invalid_restart_type,
        "allowed: permanent, transient, temporary");
  if (c.has_shutdown) {
    if (static_cast<uint8_t>(c.shutdown.how) > 2)
      add("shutdown", spec_errc::invalid_shutdown,
          "allowed: brutal_kill, a timeout, infinity");
    else if (c.shutdown.how == shutdown_spec::kind::timeout
             && c.shutdown.timeout.count() < 0)
      add("shutdown", spec_errc::invalid_shutdown,
          "a timeout must be >= 0 ms");
    else if (c.shutdown.how == shutdown_spec::kind::timeout
             && c.shutdown.timeout > max_duration)
      add("shutdown", spec_errc::invalid_shutdown,
          too_long(c.shutdown.timeout));
  }
  if (c.significant) {
    if (restart_ok && c.restart == restart_type::permanent)
      add("significant", spec_errc::invalid_significant,
          "bad_combination [{restart,permanent},{significant,true}]: only "
          "transient or temporary children can be significant");
    else if (flags.auto_shutdown == auto_shutdown::never)
      add("significant", spec_errc::bad_combination,
          "bad_combination [{auto_shutdown,never},{significant,true}]: set "
          "the supervisor's auto_shutdown to any_significant or "
          "all_significant");
  }
  if (static_cast<uint8_t>(c.failure) > 2) {
    add("on_failure", spec_errc::invalid_on_failure,
        "allowed: restart, degrade, escalate");
  } else if (c.failure == on_failure::degrade) {
    if (restart_ok && c.restart == restart_type::temporary)
      add("on_failure", spec_errc::bad_combination,
          "a temporary child is never restarted, so it cannot degrade");
    if (c.kind == child_kind::supervisor)
      add("on_failure", spec_errc::bad_combination,
          "only workers can degrade");
    if (c.degrade.fallback.type.empty())
      add("degrade.default", spec_errc::invalid_degrade,
          "degrade needs a default reply");
    if (c.degrade.probe_min.count() <= 0
        || c.degrade.probe_max < c.degrade.probe_min)
      add("degrade.probe", spec_errc::invalid_degrade,
          "need 0 < probe_min <= probe_max");
    else if (c.degrade.probe_max > max_duration)
      add("degrade.probe", spec_errc::invalid_degrade,
          too_long(c.degrade.probe_max));
  }
  if (c.buffer_cap == 0)
    add("buffer_cap", spec_errc::invalid_buffer_cap, "allowed: >= 1");
  if (c.queue_cap == 0)
    add("queue_cap", spec_errc::invalid_queue_cap, "allowed: >= 1");
  if (c.overflow != overflow_policy::shed
      && c.overflow != overflow_policy::wait)
    add("overflow", spec_errc::invalid_queue_cap, "allowed: shed, wait");
  if (c.max_deliveries == 0)
    add("max_deliveries", spec_errc::invalid_max_deliveries,
        "allowed: >= 1");
  if (c.approval.required
      && (c.approval.timeout.count() <= 0
          || c.approval.timeout > std::chrono::hours{720}))
    add("approval.timeout", spec_errc::invalid_approval,
        "must be more than 0 and at most 720h (30 days)");
  if (c.approval.required && c.kind == child_kind::supervisor)
    add("approval", spec_errc::invalid_approval,
        "only agents handle envelopes; set it on the supervisor's children");
  // A type the agent does not handle (a typo) would never wait: the
  // envelopes meant to would run unapproved.
  if (c.approval.required && c.kind == child_kind::worker && types != nullptr)
    if (auto* t = types->find(c.agent); t != nullptr && t->handlers)
      for (auto& name : c.approval.types)
        if (t->handlers->by_type.count(symbol{name}) == 0) {
          std::vector<std::string> handled;
          for (auto& kv : t->handlers->by_type)
            handled.emplace_back(kv.first.str());
          std::sort(handled.begin(), handled.end());
          std::string known;
          for (auto& h : handled)
            known += (known.empty() ? "" : ", ") + h;
          add("approval.types", spec_errc::invalid_approval,
              "'" + name + "' is not a type agent type '" + c.agent
                + "' handles (it handles: "
                + (known.empty() ? "none" : known) + ")");
        }
  for (auto& [tool, ov] : c.tools)
    for (auto& p : check_tool_override(ov))
      add("tools." + tool + "." + p.field, spec_errc::invalid_tool_override,
          p.what);
  if (c.durability.mode > durability_mode::journal)
    add("durability", spec_errc::invalid_durability,
        "allowed: none, snapshot, journal");
  else if (c.durability.mode == durability_mode::snapshot
           && c.durability.every_messages == 0
           && c.durability.every.count() <= 0)
    add("durability", spec_errc::invalid_durability,
        "a snapshot child needs every_messages >= 1 or every > 0");
  else if (c.durability.every.count() < 0)
    add("durability", spec_errc::invalid_durability,
        "every: got " + std::to_string(c.durability.every.count())
          + "ms; allowed: a duration >= 0");
  else if (c.durability.every > max_duration)
    add("durability", spec_errc::invalid_durability,
        too_long(c.durability.every));
  // The wire form carries params as a map with string keys, which Protobuf
  // requires to be UTF-8.
  for (auto& kvp : c.params)
    if (!google::protobuf::internal::IsStructurallyValidUTF8(kvp.first)) {
      add("params", spec_errc::invalid_params,
          "a param name is not UTF-8 text");
      break;
    }
  bool saga = c.kind == child_kind::supervisor && c.sup && c.sup->saga.enabled;
  if (c.kind == child_kind::supervisor && !saga
      && c.durability.mode != durability_mode::none)
    add("durability", spec_errc::invalid_durability,
        "only workers and sagas are durable; set durability on the agents");
  else if (saga && c.durability.mode == durability_mode::snapshot)
    add("durability", spec_errc::invalid_durability,
        "a saga is durable with journal (every run's progress is committed "
        "before each step it calls), not snapshot");
  else if (saga && !c.sup->saga.outcome_to.empty() && !c.sup->saga.durable
           && c.durability.mode != durability_mode::journal)
    add("saga.outcome_to", spec_errc::invalid_saga,
        "outcomes are sent through the saga's outbox, which only a durable "
        "saga has; set durability: journal on the saga");
  if (c.kind == child_kind::supervisor && c.sup) {
    auto nested = check_child_specs(*c.sup, types, where);
    out.insert(out.end(), nested.begin(), nested.end());
  }
  return out;
}

namespace {

int depth_of(const supervisor_spec& spec) {
  int deepest = 0;
  for (auto& c : spec.children)
    if (c.kind == child_kind::supervisor && c.sup)
      deepest = std::max(deepest, depth_of(*c.sup));
  return deepest + 1;
}

// The depth of the call being checked: only the outermost call measures.
thread_local int checking = 0;

} // namespace

void check_saga_step(const child_spec& c, const registry* types,
                     const std::string& where,
                     std::vector<spec_problem>& out) {
  auto at = join(where, c.id);
  if (c.kind != child_kind::worker) {
    out.push_back({at, "kind", spec_errc::invalid_saga,
                   "a saga's children are its steps: agents derived from "
                   "saga_step, not supervisors"});
    return;
  }
  if (c.failure == on_failure::degrade)
    out.push_back({at, "on_failure", spec_errc::invalid_saga,
                   "degrade is refused in a saga: a stand-in can neither "
                   "execute a step nor undo one, so its answer would only "
                   "fail the step; a failing step fails the saga, which "
                   "compensates (allowed: restart, escalate)"});
  if (c.durability.mode == durability_mode::snapshot)
    out.push_back({at, "durability", spec_errc::invalid_saga,
                   "a snapshot step keeps a saga's envelope across a stop "
                   "(its last save lists it) but cannot recognize the "
                   "saga's retry of it, so a compensation could run twice "
                   "(allowed: none, journal)"});
  if (types == nullptr)
    return;
  auto* t = types->find(c.agent);
  if (t == nullptr || !t->handlers)
    return; // unknown_agent_type says it
  auto& table = t->handlers->by_type;
  for (auto* name : {"vigil.SagaExecute", "vigil.SagaCompensate"})
    if (table.count(symbol{name}) == 0) {
      out.push_back({at, "agent", spec_errc::invalid_saga,
                     "agent type '" + c.agent + "' is not a saga step (it "
                       + "has no handler for " + name
                       + "); derive it from vigil::saga_step"});
      break;
    }
}

std::vector<spec_problem> saga_warnings(const supervisor_spec& spec,
                                        const std::string& where) {
  std::vector<spec_problem> out;
  for (auto& c : spec.children) {
    if (c.kind == child_kind::supervisor && c.sup) {
      auto more = saga_warnings(*c.sup, join(where, c.id));
      out.insert(out.end(), more.begin(), more.end());
    } else if (spec.saga.enabled
               && c.durability.mode != durability_mode::journal) {
      out.push_back({join(where, c.id), "durability",
                     spec_errc::invalid_saga,
                     "a saga step that is not a journal agent cannot "
                     "recognize a redelivered execute or compensation "
                     "(duplicate), so exactness rests on the saga alone; "
                     "set durability: journal"});
    }
  }
  return out;
}

std::vector<spec_problem> check_child_specs(const supervisor_spec& spec,
                                            const registry* types,
                                            const std::string& where) {
  problems out;
  if (checking == 0)
    if (auto d = depth_of(spec); d > max_tree_depth) {
      out.push_back({where, "children", spec_errc::too_deep,
                     "supervisors nested " + std::to_string(d)
                       + " deep; allowed: at most "
                       + std::to_string(max_tree_depth)});
      return out; // deeper checks would repeat it at every level
    }
  struct guard {
    guard() {
      ++checking;
    }
    ~guard() {
      --checking;
    }
  } nesting;
  check_flags(spec.flags, where, out);
  auto& sg = spec.saga;
  struct saga_time {
    const char* field;
    milliseconds value;
    const char* why;
  };
  for (auto [field, d, why] :
       {saga_time{"saga.retry_delay", sg.retry_delay,
                  "0 would retry a failing compensation without pause"},
        saga_time{"saga.step_timeout", sg.step_timeout,
                  "0 would expire every step before it starts"},
        saga_time{"saga.retention", sg.retention,
                  "0 would forget a finished run at once, and a resent "
                  "input would run again"}}) {
    if (d.count() <= 0)
      out.push_back({where, field, spec_errc::invalid_saga,
                     "got " + std::to_string(d.count())
                       + "ms; allowed: a duration > 0 (" + why + ")"});
    else if (d > max_duration)
      out.push_back({where, field, spec_errc::invalid_saga, too_long(d)});
  }
  if (sg.enabled && spec.flags.strategy == strategy::simple_one_for_one)
    out.push_back({where, "strategy", spec_errc::bad_combination,
                   "a saga's steps are its children in order; "
                   "simple_one_for_one has none (allowed: one_for_one, "
                   "one_for_all, rest_for_one)"});
  if (!sg.enabled && (sg.durable || !sg.outcome_to.empty()))
    out.push_back({where, sg.durable ? "durability" : "saga.outcome_to",
                   spec_errc::invalid_saga,
                   "only a saga supervisor has durable runs and outcomes"});
  // A nested saga's durability is its child spec's (check_child_spec says
  // it there); the outermost spec's is its own.
  if (sg.enabled && !sg.outcome_to.empty() && !sg.durable && checking == 1)
    out.push_back({where, "saga.outcome_to", spec_errc::invalid_saga,
                   "outcomes are sent through the saga's outbox, which "
                   "only a durable saga has; make the saga durable"});
  if (sg.enabled && !sg.outcome_to.empty()) {
    if (sg.outcome_to.front() == '/' || sg.outcome_to.back() == '/'
             || sg.outcome_to.find("//") != std::string::npos
             || !google::protobuf::internal::IsStructurallyValidUTF8(
               sg.outcome_to))
      out.push_back({where, "saga.outcome_to", spec_errc::invalid_saga,
                     "got \"" + sg.outcome_to
                       + "\"; allowed: an agent path (names separated by "
                         "/, e.g. orders/done)"});
  }
  if (sg.enabled && spec.children.empty())
    out.push_back({where, "children", spec_errc::invalid_saga,
                   "a saga needs at least one step"});
  if (sg.enabled)
    for (auto& c : spec.children)
      check_saga_step(c, types, where, out);
  if (spec.flags.strategy == strategy::simple_one_for_one
      && spec.children.size() != 1)
    out.push_back({where, "children", spec_errc::bad_start_spec,
                   "simple_one_for_one needs exactly one child spec (the "
                   "template), got "
                     + std::to_string(spec.children.size())});
  std::unordered_set<std::string> seen;
  for (auto& c : spec.children) {
    if (!c.id.empty() && !seen.insert(c.id).second)
      out.push_back({join(where, c.id), "id",
                     spec_errc::duplicate_child_name,
                     "another sibling already has id '" + c.id + "'"});
    auto more = check_child_spec(c, spec.flags, types, where);
    out.insert(out.end(), more.begin(), more.end());
  }
  return out;
}

} // namespace vigil
