#include "vigil/supervision/policy.hpp"

#include <algorithm>
#include <map>
#include <memory>
#include <tuple>
#include <unordered_map>

#include <google/protobuf/duration.pb.h>

#include "policy_detail.hpp"
#include "vigil/supervision/check.hpp"
#include "vigil/supervision/duration.hpp"

namespace vigil {

namespace detail {

std::chrono::milliseconds to_ms(const google::protobuf::Duration& d) {
  using std::chrono::milliseconds;
  constexpr int64_t cap_s = int64_t{1} << 40;
  if (d.seconds() > cap_s)
    return milliseconds{cap_s * 1000};
  if (d.seconds() < -cap_s)
    return milliseconds{-cap_s * 1000};
  return milliseconds{d.seconds() * 1000 + d.nanos() / 1000000};
}

namespace {

// The entry of map field `f` of `m` whose key `rest` names: `rest` is the
// key or starts with the key and a dot (the longest such key, as keys may
// hold dots). Only string keys are looked up.
const google::protobuf::Message*
find_entry(const google::protobuf::Message& m,
           const google::protobuf::FieldDescriptor* f, const std::string& rest,
           std::string& key) {
  auto* kf = f->message_type()->map_key();
  if (kf->cpp_type() != google::protobuf::FieldDescriptor::CPPTYPE_STRING)
    return nullptr;
  auto* r = m.GetReflection();
  const google::protobuf::Message* best = nullptr;
  for (int i = 0; i < r->FieldSize(m, f); ++i) {
    // Through reflection, as the reader marked them: the generated map
    // accessor would hand out copies.
    auto& e = r->GetRepeatedMessage(m, f, i);
    auto k = e.GetReflection()->GetString(e, kf);
    bool fits = rest == k
                || (rest.size() > k.size() && rest.compare(0, k.size(), k) == 0
                    && rest[k.size()] == '.');
    if (fits && (best == nullptr || k.size() > key.size())) {
      best = &e;
      key = std::move(k);
    }
  }
  return best;
}

} // namespace

place locate_field(const google::protobuf::Message& m,
                   const std::string& dotted, const policy_source& source,
                   bool& bad_value) {
  using cpp = google::protobuf::FieldDescriptor::CppType;
  place best{&m};
  bad_value = false;
  const google::protobuf::Message* cur = &m;
  std::string rest = dotted;
  while (!rest.empty()) {
    auto dot = rest.find('.');
    auto part = rest.substr(0, dot);
    rest = dot == std::string::npos ? std::string{} : rest.substr(dot + 1);
    auto* f = cur->GetDescriptor()->FindFieldByName(part);
    if (f == nullptr || !source.written(*cur, f->number()))
      break;
    best = {cur, f->number()};
    bad_value = source.rejected(*cur, f->number());
    if (rest.empty() || f->cpp_type() != cpp::CPPTYPE_MESSAGE)
      break;
    auto* r = cur->GetReflection();
    if (f->is_map()) {
      std::string key;
      auto* e = find_entry(*cur, f, rest, key);
      if (e == nullptr)
        break;
      best = {e};
      bad_value = false;
      rest.erase(0, std::min(rest.size(), key.size() + 1));
      auto* vf = f->message_type()->map_value();
      if (rest.empty() || vf->cpp_type() != cpp::CPPTYPE_MESSAGE)
        break;
      cur = &e->GetReflection()->GetMessage(*e, vf);
      continue;
    }
    if (f->is_repeated() || !r->HasField(*cur, f))
      break;
    cur = &r->GetMessage(*cur, f);
  }
  return best;
}

} // namespace detail

namespace {

namespace pol = vigil::policy;
using detail::place;
using detail::to_ms;
using google::protobuf::Message;
using std::chrono::milliseconds;

std::string quote(const std::string& s) {
  return "\"" + s + "\"";
}

// The Protobuf enums list their values in the order of vigil's enums; the
// casts below rely on that (and check_child_specs catches any value out of
// range).
template <class To, class From>
To as(From x) {
  // vigil's enums are uint8_t: a value beyond them becomes 255, out of
  // range, instead of wrapping into it.
  auto v = static_cast<int>(x);
  return static_cast<To>(v < 0 || v > 254 ? 255 : v);
}

enum tristate { no, yes, unsure };

// Turns a policy's tree into specs, reporting what the schema alone cannot
// say.
class converter {
public:
  converter(const registry& types, const policy_source& source,
            const std::vector<tool_decl>* tools,
            std::vector<policy_problem>& problems)
    : types_(types), source_(source), tools_(tools), problems_(problems) {
  }

  supervisor_spec supervisor(const pol::Supervisor& s,
                             const std::string& where) {
    supervisor_spec spec;
    origins_[where].sup = &s;
    auto& f = spec.flags;
    f.strategy = as<vigil::strategy>(s.strategy());
    f.intensity = s.has_intensity() ? s.intensity() : 1;
    f.period = s.has_period() ? to_ms(s.period()) : milliseconds{5000};
    f.auto_shutdown = as<vigil::auto_shutdown>(s.auto_shutdown());
    if (s.has_backoff()) {
      auto& b = s.backoff();
      f.backoff.min = to_ms(b.min());
      f.backoff.max = to_ms(b.max());
      f.backoff.jitter = b.jitter();
      f.backoff.reset_after = to_ms(b.reset_after());
    }
    if (s.has_saga()) {
      auto& g = s.saga();
      spec.saga.enabled = true;
      if (g.has_compensation_retries())
        spec.saga.compensation_retries = g.compensation_retries();
      if (g.has_retry_delay())
        spec.saga.retry_delay = to_ms(g.retry_delay());
      if (g.has_step_timeout())
        spec.saga.step_timeout = to_ms(g.step_timeout());
      if (g.has_retention())
        spec.saga.retention = to_ms(g.retention());
      spec.saga.outcome_to = g.outcome_to();
    }
    // A rejected auto_shutdown word stands as never; blame it only once.
    auto never = f.auto_shutdown != vigil::auto_shutdown::never ? no
                 : bad(s, pol::Supervisor::kAutoShutdownFieldNumber)
                   ? unsure
                   : yes;
    std::unordered_map<std::string, const pol::Child*> seen;
    for (int i = 0; i < s.children_size(); ++i) {
      auto& c = s.children(i);
      // Unnamed and duplicate children get internal ids of their own, so
      // that check_child_specs tells them apart; `out` is not used then.
      auto id = c.name();
      if (id.empty()) {
        if (!bad(c, pol::Child::kNameFieldNumber))
          fail({&c}, "child: missing \"name\"");
        id = "<child " + std::to_string(i + 1) + ">";
      } else if (auto [first, fresh] = seen.emplace(id, &c); !fresh) {
        fail({&c, pol::Child::kNameFieldNumber},
             "duplicate child name " + quote(id) + " (first at "
               + source_.where(*first->second, pol::Child::kNameFieldNumber)
               + ")");
        id += "<" + std::to_string(i + 1) + ">";
      }
      spec.children.push_back(child(c, never, where, id));
    }
    return spec;
  }

  // Runs check_child_specs and reports what was not said already.
  void check(const supervisor_spec& root) {
    for (auto& p : check_child_specs(root, &types_)) {
      auto i = said_.find({p.where, p.field, p.code});
      if (i != said_.end() && i->second > 0) {
        --i->second;
        continue;
      }
      bool bad_value = false;
      auto at = locate(p, bad_value);
      if (bad_value)
        continue; // its value was rejected; the default stands in
      auto field = p.field == "id" ? std::string{"name"} : p.field;
      fail(at,
           field + ": " + p.detail + " (" + vigil::to_string(p.code) + ")");
    }
  }

private:
  using C = pol::Child;

  struct origin {
    const pol::Child* child = nullptr;
    const pol::Supervisor* sup = nullptr;
  };

  void fail(place at, std::string what) {
    problems_.push_back({at.msg, at.field, std::move(what)});
  }

  bool written(const Message& m, int field) const {
    return source_.written(m, field);
  }

  bool bad(const Message& m, int field) const {
    return source_.rejected(m, field);
  }

  // Notes that check_child_specs will report what we just did, in its
  // words; `check` drops one such problem.
  void said(const std::string& where, const char* field, spec_errc code) {
    ++said_[{where, field, code}];
  }

  child_spec child(const pol::Child& c, tristate parent_never,
                   const std::string& parent, const std::string& id) {
    child_spec cs;
    cs.id = id;
    auto where = parent.empty() ? id : parent + "/" + id;
    origins_[where].child = &c;
    auto label = c.name().empty() ? std::string{"child"}
                                  : "child " + quote(c.name());
    bool has_agent = written(c, C::kAgentFieldNumber);
    bool has_sup = written(c, C::kSupervisorFieldNumber);
    if (has_agent && has_sup)
      fail({&c}, label + ": set either \"agent\" or \"supervisor\"");
    else if (!has_agent && !has_sup)
      fail({&c}, label
                   + ": needs \"agent\" (a registered agent type) or "
                     "\"supervisor\"");
    if (has_agent && !bad(c, C::kAgentFieldNumber)
        && types_.find(c.agent()) == nullptr) {
      std::string known;
      for (auto& n : types_.names())
        known += (known.empty() ? "" : ", ") + n;
      fail({&c, C::kAgentFieldNumber},
           "agent: unknown agent type " + quote(c.agent()) + "; registered: "
             + (known.empty() ? "none" : known));
    }
    if (c.has_supervisor()) {
      cs.kind = child_kind::supervisor;
      cs.sup = std::make_shared<const supervisor_spec>(
        supervisor(c.supervisor(), where));
    } else {
      cs.agent = c.agent();
      said(where, "agent", spec_errc::unknown_agent_type); // if it applies
    }
    cs.restart = as<restart_type>(c.restart());
    if (written(c, C::kShutdownFieldNumber)
        && !bad(c, C::kShutdownFieldNumber)) {
      auto& s = c.shutdown();
      milliseconds t;
      if (s == "brutal_kill")
        cs.with_shutdown(shutdown_spec::brutal_kill());
      else if (s == "infinity")
        cs.with_shutdown(shutdown_spec::infinity());
      else if (parse_duration(s, t))
        cs.with_shutdown(shutdown_spec::after(t));
      else
        fail({&c, C::kShutdownFieldNumber},
             "shutdown: " + quote(s)
               + " is not allowed; write brutal_kill, infinity or a "
                 "duration like 5s");
    }
    cs.significant = c.significant();
    if (cs.significant && parent_never != no) {
      if (parent_never == yes)
        fail({&c, C::kSignificantFieldNumber},
             "significant: true needs the supervisor's auto_shutdown to be "
             "any_significant or all_significant");
      said(where, "significant", spec_errc::bad_combination);
    }
    cs.failure = as<on_failure>(c.on_failure());
    if (c.has_degrade()) {
      auto& d = c.degrade();
      if (d.has_default_()) {
        cs.degrade.fallback.type = d.default_().type();
        cs.degrade.fallback.payload = d.default_().payload();
      }
      if (d.has_probe_min())
        cs.degrade.probe_min = to_ms(d.probe_min());
      if (d.has_probe_max())
        cs.degrade.probe_max = to_ms(d.probe_max());
    }
    if (cs.failure == on_failure::degrade) {
      if (cs.restart == restart_type::temporary
          && !bad(c, C::kRestartFieldNumber)) {
        fail({&c, C::kOnFailureFieldNumber},
             "on_failure: degrade needs a child that is restarted; a "
             "temporary child is not");
        said(where, "on_failure", spec_errc::bad_combination);
      }
      if (cs.degrade.fallback.type.empty()) {
        if (!bad(c.degrade(), pol::Degrade::kDefaultFieldNumber)
            && !bad(c, C::kDegradeFieldNumber))
          fail({&c, C::kOnFailureFieldNumber},
               "on_failure: degrade needs degrade.default (the stand-in "
               "reply)");
        said(where, "degrade.default", spec_errc::invalid_degrade);
      }
    }
    if (c.has_durability()) {
      auto& d = c.durability();
      cs.durability.mode = as<durability_mode>(d.mode());
      if (d.has_every_messages())
        cs.durability.every_messages = d.every_messages();
      if (d.has_every())
        cs.durability.every = to_ms(d.every());
    }
    // A saga's durability (journal) is checked by check_child_specs.
    if (cs.kind == child_kind::supervisor && !c.supervisor().has_saga()
        && written(c, C::kDurabilityFieldNumber)) {
      fail({&c, C::kDurabilityFieldNumber},
           "durability: only agents and sagas are durable");
      said(where, "durability", spec_errc::invalid_durability);
    }
    if (cs.kind == child_kind::supervisor && written(c, C::kToolsFieldNumber))
      fail({&c, C::kToolsFieldNumber},
           "tools: only agents call tools; set it on the supervisor's "
           "children");
    else
      detail::overrides_from_policy(c, tools_, cs.tools, problems_);
    if (c.has_approval()) {
      auto& a = c.approval();
      cs.approval.required = !a.has_required() || a.required();
      if (a.has_timeout())
        cs.approval.timeout = to_ms(a.timeout());
      cs.approval.types.assign(a.types().begin(), a.types().end());
    }
    if (cs.kind == child_kind::supervisor)
      for (auto [field, name] :
           {std::pair{C::kParamsFieldNumber, "params"},
            std::pair{C::kBufferCapFieldNumber, "buffer_cap"},
            std::pair{C::kQueueCapFieldNumber, "queue_cap"},
            std::pair{C::kOverflowFieldNumber, "overflow"},
            std::pair{C::kMaxDeliveriesFieldNumber, "max_deliveries"}})
        if (written(c, field)) {
          fail({&c, field}, std::string{name}
                              + ": only agents take it; set it on the "
                                "supervisor's children");
          said(where, name, spec_errc::bad_combination);
        }
    for (auto& [k, v] : c.params())
      cs.params[k] = v;
    if (c.has_buffer_cap())
      cs.buffer_cap = c.buffer_cap();
    if (c.has_max_deliveries())
      cs.max_deliveries = c.max_deliveries();
    if (c.has_queue_cap())
      cs.queue_cap = c.queue_cap();
    cs.overflow = c.overflow() == pol::OVERFLOW_WAIT ? overflow_policy::wait
                                                     : overflow_policy::shed;
    return cs;
  }

  // The place of the field a problem names ("backoff.jitter" is field
  // jitter of field backoff), falling back to the nearest enclosing one
  // that was written.
  place locate(const spec_problem& p, bool& bad_value) const {
    auto i = origins_.find(p.where);
    if (i == origins_.end())
      return {};
    static const char* flag_fields[] = {"strategy", "intensity", "period",
                                        "auto_shutdown", "backoff",
                                        "backoff.jitter", "children",
                                        "saga.retry_delay",
                                        "saga.step_timeout",
                                        "saga.retention",
                                        "saga.outcome_to"};
    bool flag = std::find(std::begin(flag_fields), std::end(flag_fields),
                          p.field)
                != std::end(flag_fields);
    const Message* m = i->second.child;
    if (m == nullptr || (flag && i->second.sup != nullptr))
      m = i->second.sup;
    if (m == nullptr)
      return {};
    auto field = p.field == "id" ? std::string{"name"} : p.field;
    return detail::locate_field(*m, field, source_, bad_value);
  }

  const registry& types_;
  const policy_source& source_;
  const std::vector<tool_decl>* tools_;
  std::vector<policy_problem>& problems_;
  std::unordered_map<std::string, origin> origins_;
  std::map<std::tuple<std::string, std::string, spec_errc>, int> said_;
};

} // namespace

std::vector<policy_problem> spec_from_policy(const policy::Supervisor& tree,
                                             const registry& types,
                                             const policy_source& source,
                                             supervisor_spec& out,
                                             const std::vector<tool_decl>* tools) {
  std::vector<policy_problem> problems;
  converter conv{types, source, tools, problems};
  out = conv.supervisor(tree, "");
  conv.check(out);
  return problems;
}

} // namespace vigil
