// A policy's tools (Node.tools) as tool_decls, and each child's overrides
// of them (Child.tools), with the checks the schema cannot make.

#include <algorithm>
#include <string>

#include "policy_detail.hpp"

namespace vigil {

namespace {

namespace pol = vigil::policy;
using detail::for_each_entry;
using detail::place;
using google::protobuf::Message;

std::string quote(const std::string& s) {
  return "\"" + s + "\"";
}

// A duration as the tools keep it, saturated at about 114 years (far
// beyond what check_tool allows, and within the steady clock's range).
resilience::duration to_duration(const google::protobuf::Duration& d) {
  constexpr int64_t cap_ms = int64_t{1000} * 3600 * 1000000;
  auto ms = std::clamp<int64_t>(detail::to_ms(d).count(), -cap_ms, cap_ms);
  return std::chrono::milliseconds{ms};
}

void read_retry(const pol::Tool::Retry& x, tool_retry_policy& out) {
  if (x.has_max_attempts())
    out.max_attempts = x.max_attempts();
  if (x.has_initial())
    out.initial = to_duration(x.initial());
  if (x.has_multiplier())
    out.multiplier = x.multiplier();
  if (x.has_max())
    out.max = to_duration(x.max());
  if (x.has_retry_invalid_output())
    out.retry_invalid_output = x.retry_invalid_output();
}

void read_budget(const pol::Tool::Budget& x, tool_budget_policy& out) {
  if (x.has_ratio())
    out.ratio = x.ratio();
  if (x.has_min_per_second())
    out.min_per_second = x.min_per_second();
  if (x.has_max_savings())
    out.max_savings = x.max_savings();
}

void read_breaker(const pol::Tool::Breaker& x, tool_breaker_policy& out) {
  if (x.has_enabled())
    out.enabled = x.enabled();
  if (x.has_consecutive_failures())
    out.consecutive_failures = x.consecutive_failures();
  if (x.has_open_for())
    out.open_for = to_duration(x.open_for());
  if (x.has_max_open_for())
    out.max_open_for = to_duration(x.max_open_for());
  if (x.has_half_open_probes())
    out.half_open_probes = x.half_open_probes();
  if (x.has_failure_rate())
    out.failure_rate = x.failure_rate();
  if (x.has_slow_call_rate())
    out.slow_call_rate = x.slow_call_rate();
  if (x.has_slow_call_duration())
    out.slow_call_duration = to_duration(x.slow_call_duration());
  if (x.has_window())
    out.window = x.window();
  if (x.has_minimum_calls())
    out.minimum_calls = x.minimum_calls();
}

void read_limits(const pol::Tool& t, tool_policy& out) {
  if (t.has_bulkhead()) {
    auto& b = t.bulkhead();
    if (b.has_max_concurrent())
      out.bulkhead.max_concurrent = b.max_concurrent();
    if (b.has_queue())
      out.bulkhead.queue = b.queue();
  }
  if (t.has_rate()) {
    auto& r = t.rate();
    if (r.has_per_second())
      out.rate.per_second = r.per_second();
    if (r.has_burst())
      out.rate.burst = r.burst();
  }
  if (t.has_cost()) {
    auto& c = t.cost();
    if (c.has_limit())
      out.cost.limit = c.limit();
    if (c.has_per_agent())
      out.cost.per_agent = c.per_agent();
    if (c.has_per())
      out.cost.per = to_duration(c.per());
  }
}

constexpr const char* class_words
  = "read_only, idempotent_write, non_idempotent_write or irreversible";

// One tool of the node: its declaration, and every problem with it.
class tool_reader {
public:
  tool_reader(const registry& types, const policy_source& source,
              std::vector<policy_problem>& problems)
    : types_(types), source_(source), problems_(problems) {
  }

  tool_decl read(const Message& entry, const std::string& name,
                 const pol::Tool& t) {
    using T = pol::Tool;
    auto label = "node.tools." + name;
    tool_decl d;
    d.name = name;
    d.type = t.type();
    if (!source_.written(t, -1))
      return d; // its value was rejected (not a mapping): said already
    if (t.has_class_() && t.class_() >= pol::SIDE_EFFECT_READ_ONLY
        && t.class_() <= pol::SIDE_EFFECT_IRREVERSIBLE) {
      d.effect = static_cast<side_effect>(static_cast<int>(t.class_()));
    } else if (t.has_class_()) {
      fail({&t, T::kClassFieldNumber},
           label + ".class: allowed: " + class_words);
    } else if (!source_.rejected(t, T::kClassFieldNumber)) {
      fail({&entry}, label + ": missing \"class\": write " + class_words
                       + " (what a call may do to the world decides what "
                         "is retried)");
    }
    auto& p = d.policy;
    if (t.has_timeout())
      p.timeout = to_duration(t.timeout());
    if (t.has_attempt_timeout())
      p.attempt_timeout = to_duration(t.attempt_timeout());
    if (t.has_retry())
      read_retry(t.retry(), p.retry);
    // An irreversible tool's only allowed attempts, unless written.
    if (d.effect == side_effect::irreversible
        && !(t.has_retry() && t.retry().has_max_attempts()))
      p.retry.max_attempts = 1;
    if (t.has_budget())
      read_budget(t.budget(), p.budget);
    if (t.has_breaker())
      read_breaker(t.breaker(), p.breaker);
    read_limits(t, p);
    if (t.has_record())
      d.record = t.record();
    if (t.has_fallback()) {
      auto& f = t.fallback();
      d.fallback.tools.assign(f.tools().begin(), f.tools().end());
      if (f.has_default_()) {
        d.fallback.default_type = f.default_().type();
        d.fallback.default_payload = f.default_().payload();
      }
    }
    if (t.has_dry_run()) {
      d.dry_run.tool = t.dry_run().tool();
      d.dry_run.required = !t.dry_run().has_required()
                           || t.dry_run().required();
    }
    if (t.has_approval()) {
      d.approval.required = !t.approval().has_required()
                            || t.approval().required();
      if (t.approval().has_timeout())
        d.approval.timeout = to_duration(t.approval().timeout());
    }
    // An http block written, even one rejected already (not a mapping),
    // stands for the implementation.
    bool http = source_.written(t, T::kHttpFieldNumber);
    if (http && !source_.rejected(t, T::kHttpFieldNumber))
      detail::http_from_policy(entry, name, t, source_, d, problems_);
    auto impl = d.type.empty() ? d.name : d.type;
    if (!http && !source_.rejected(t, T::kTypeFieldNumber)
        && types_.find_tool(impl) == nullptr) {
      bool typed = source_.written(t, T::kTypeFieldNumber);
      fail(typed ? place{&t, T::kTypeFieldNumber} : place{&entry},
           label + ".type: no tool implementation is registered as "
             + quote(impl) + (typed ? "" : " (the tool's name; set \"type\")")
             + "; register it with registry::add_tool");
    }
    for (auto& pr : check_tool(d)) {
      if (pr.field == "name") {
        fail({&entry}, "node.tools: " + quote(name) + ": " + pr.what);
        continue;
      }
      bool bad_value = false;
      auto at = detail::locate_field(t, pr.field, source_, bad_value);
      if (bad_value)
        continue; // its value was rejected; the default stands in
      if (at.msg == &t && at.field < 0)
        at = {&entry}; // not written: the tool's key
      fail(at, label + "." + pr.field + ": " + pr.what);
    }
    return d;
  }

private:
  void fail(place at, std::string what) {
    problems_.push_back({at.msg, at.field, std::move(what)});
  }

  const registry& types_;
  const policy_source& source_;
  std::vector<policy_problem>& problems_;
};

} // namespace

namespace detail {

void overrides_from_policy(const policy::Child& c,
                           const std::vector<tool_decl>* declared,
                           std::map<std::string, tool_override>& out,
                           std::vector<policy_problem>& problems) {
  for_each_entry<pol::ToolOverride>(
    c, pol::Child::kToolsFieldNumber,
    [&](const Message& entry, const std::string& name,
        const pol::ToolOverride& o) {
      tool_override ov;
      if (o.has_timeout())
        ov.timeout = to_duration(o.timeout());
      if (o.has_attempt_timeout())
        ov.attempt_timeout = to_duration(o.attempt_timeout());
      if (o.has_max_attempts())
        ov.max_attempts = o.max_attempts();
      if (o.has_cost_per_agent())
        ov.cost_per_agent = o.cost_per_agent();
      out[name] = ov;
      if (declared == nullptr
          || std::any_of(declared->begin(), declared->end(),
                         [&](const tool_decl& d) { return d.name == name; }))
        return;
      std::string names;
      for (auto& d : *declared)
        names += (names.empty() ? "" : ", ") + d.name;
      problems.push_back(
        {&entry, -1,
         "tools." + name + ": the node declares no tool " + quote(name)
           + "; declared: "
           + (names.empty() ? "none (declare tools in node.tools)" : names)});
    });
}

} // namespace detail

std::vector<policy_problem> tools_from_policy(const policy::Node& node,
                                              const registry& types,
                                              const policy_source& source,
                                              std::vector<tool_decl>& out) {
  std::vector<policy_problem> problems;
  out.clear();
  tool_reader reader{types, source, problems};
  for_each_entry<pol::Tool>(
    node, pol::Node::kToolsFieldNumber,
    [&](const Message& entry, const std::string& name, const pol::Tool& t) {
      out.push_back(reader.read(entry, name, t));
    });
  // The tools a tool names are the node's (their types the node checks).
  auto declared = [&](const std::string& n) {
    return std::any_of(out.begin(), out.end(),
                       [&](const tool_decl& d) { return d.name == n; });
  };
  for_each_entry<pol::Tool>(
    node, pol::Node::kToolsFieldNumber,
    [&](const Message&, const std::string& name, const pol::Tool& t) {
      auto label = "node.tools." + name;
      if (t.has_fallback())
        for (auto& f : t.fallback().tools())
          if (f != name && !declared(f))
            problems.push_back(
              {&t.fallback(), pol::Tool::Fallback::kToolsFieldNumber,
               label + ".fallback.tools: " + quote(f)
                 + " is not a tool of node.tools; declare it there"});
      if (t.has_dry_run() && !t.dry_run().tool().empty()
          && t.dry_run().tool() != name && !declared(t.dry_run().tool()))
        problems.push_back(
          {&t.dry_run(), pol::Tool::DryRun::kToolFieldNumber,
           label + ".dry_run.tool: " + quote(t.dry_run().tool())
             + " is not a tool of node.tools; declare it there"});
    });
  return problems;
}

} // namespace vigil
