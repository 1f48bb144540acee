#include "vigil/cli/policy.hpp"

#include "duration.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <tuple>
#include <unordered_map>

#include <google/protobuf/duration.pb.h>

#include "vigil/supervision/check.hpp"
#include "yaml_map.hpp"

namespace vigil::cli {

std::string policy_error::to_string() const {
  if (line == 0) // about the file as a whole (it cannot be read, say)
    return file + ": " + message;
  return file + ":" + std::to_string(line) + ":" + std::to_string(column)
         + ": " + message;
}

namespace {

namespace pol = vigil::policy;
using google::protobuf::Message;
using std::chrono::milliseconds;

milliseconds to_ms(const google::protobuf::Duration& d) {
  return milliseconds{d.seconds() * 1000 + d.nanos() / 1000000};
}

std::string quote(const std::string& s) {
  return "\"" + s + "\"";
}

sync_mode to_sync(pol::Sync x) {
  switch (x) {
    case pol::SYNC_NOMETASYNC: return sync_mode::nometasync;
    case pol::SYNC_NOSYNC: return sync_mode::nosync;
    default: return sync_mode::full;
  }
}

// The Protobuf enums list their values in the order of vigil's enums; the
// casts below rely on that (and check_child_specs catches any value out of
// range).
template <class To, class From>
To as(From x) {
  return static_cast<To>(static_cast<int>(x));
}

enum tristate { no, yes, unsure };

// Turns a Policy into specs, reporting what the schema alone cannot say.
class loader {
public:
  loader(const std::string& file, const registry& types, const marks& at,
         std::vector<yaml_error>& errors)
    : file_(file), types_(types), at_(at), errors_(errors) {
  }

  void node(const pol::Node& n, loaded_policy& out) {
    out.name = n.name().empty() ? "root" : n.name();
    if (out.name.find('/') != std::string::npos)
      fail(pos(n, pol::Node::kNameFieldNumber),
           "node.name: a path segment may not contain '/'");
    out.node.data_dir = n.data_dir();
    out.node.sync = to_sync(n.sync());
    out.node.threads = n.has_threads() ? n.threads() : 2;
    if (n.has_threads() && n.threads() == 0)
      fail(pos(n, pol::Node::kThreadsFieldNumber),
           "node.threads: allowed: 1 or more");
    if (n.has_idempotency_retention())
      out.node.writer.idempotency_retention
        = to_ms(n.idempotency_retention());
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
    }
    // A rejected auto_shutdown word stands as never; blame it only once.
    auto never = f.auto_shutdown != vigil::auto_shutdown::never ? no
                 : at_.bad(&s, pol::Supervisor::kAutoShutdownFieldNumber)
                   ? unsure
                   : yes;
    std::unordered_map<std::string, const pol::Child*> seen;
    for (int i = 0; i < s.children_size(); ++i) {
      auto& c = s.children(i);
      // Unnamed and duplicate children get internal ids of their own, so
      // that check_child_specs tells them apart; `out` is not used then.
      auto id = c.name();
      if (id.empty()) {
        if (!at_.bad(&c, pol::Child::kNameFieldNumber))
          fail(pos(c), "child: missing \"name\"");
        id = "<child " + std::to_string(i + 1) + ">";
      } else if (auto [first, fresh] = seen.emplace(id, &c); !fresh) {
        auto at = pos(*first->second, pol::Child::kNameFieldNumber);
        fail(pos(c, pol::Child::kNameFieldNumber),
             "duplicate child name " + quote(id) + " (first at " + file_ + ":"
               + std::to_string(at.line) + ":" + std::to_string(at.column)
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
      bool bad = false;
      auto at = locate(p, bad);
      if (bad)
        continue; // its value was rejected; the default stands in
      auto field = p.field == "id" ? std::string{"name"} : p.field;
      fail(at, field + ": " + p.detail + " (" + vigil::to_string(p.code) + ")");
    }
  }

  void fail(position at, std::string what) {
    errors_.push_back({at.known() ? at : position{1, 1}, std::move(what)});
  }

private:
  using C = pol::Child;

  struct origin {
    const pol::Child* child = nullptr;
    const pol::Supervisor* sup = nullptr;
  };

  // Where `field` of `m` was written, else where `m` was, else 1:1.
  position pos(const Message& m, int field = -1) const {
    if (auto* p = at_.find(&m, field))
      return *p;
    if (auto* p = at_.find(&m))
      return *p;
    return {1, 1};
  }

  bool written(const Message& m, int field) const {
    return at_.find(&m, field) != nullptr;
  }

  bool bad(const Message& m, int field) const {
    return at_.bad(&m, field);
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
      fail(pos(c), label + ": set either \"agent\" or \"supervisor\"");
    else if (!has_agent && !has_sup)
      fail(pos(c), label
                     + ": needs \"agent\" (a registered agent type) or "
                       "\"supervisor\"");
    if (has_agent && !bad(c, C::kAgentFieldNumber)
        && types_.find(c.agent()) == nullptr) {
      std::string known;
      for (auto& n : types_.names())
        known += (known.empty() ? "" : ", ") + n;
      fail(pos(c, C::kAgentFieldNumber),
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
        fail(pos(c, C::kShutdownFieldNumber),
             "shutdown: " + quote(s)
               + " is not allowed; write brutal_kill, infinity or a "
                 "duration like 5s");
    }
    cs.significant = c.significant();
    if (cs.significant && parent_never != no) {
      if (parent_never == yes)
        fail(pos(c, C::kSignificantFieldNumber),
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
        fail(pos(c, C::kOnFailureFieldNumber),
             "on_failure: degrade needs a child that is restarted; a "
             "temporary child is not");
        said(where, "on_failure", spec_errc::bad_combination);
      }
      if (cs.degrade.fallback.type.empty()) {
        if (!bad(c.degrade(), pol::Degrade::kDefaultFieldNumber)
            && !bad(c, C::kDegradeFieldNumber))
          fail(pos(c, C::kOnFailureFieldNumber),
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
    if (cs.kind == child_kind::supervisor
        && written(c, C::kDurabilityFieldNumber)) {
      fail(pos(c, C::kDurabilityFieldNumber),
           "durability: only agents are durable");
      said(where, "durability", spec_errc::invalid_durability);
    }
    for (auto& [k, v] : c.params())
      cs.params[k] = v;
    if (c.has_buffer_cap())
      cs.buffer_cap = c.buffer_cap();
    if (c.has_max_deliveries())
      cs.max_deliveries = c.max_deliveries();
    return cs;
  }

  // The position of the field a problem names ("backoff.jitter" is field
  // jitter of field backoff), falling back to the nearest enclosing one.
  position locate(const spec_problem& p, bool& bad_value) const {
    auto i = origins_.find(p.where);
    if (i == origins_.end())
      return {1, 1};
    static const char* flag_fields[] = {"strategy", "intensity", "period",
                                        "auto_shutdown", "backoff",
                                        "backoff.jitter", "children"};
    bool flag = std::find(std::begin(flag_fields), std::end(flag_fields),
                          p.field)
                != std::end(flag_fields);
    const Message* m = i->second.child;
    if (m == nullptr || (flag && i->second.sup != nullptr))
      m = i->second.sup;
    if (m == nullptr)
      return {1, 1};
    auto best = pos(*m);
    std::istringstream parts{p.field};
    std::string part;
    while (std::getline(parts, part, '.')) {
      auto* f = m->GetDescriptor()->FindFieldByName(part == "id" ? "name"
                                                                 : part);
      auto* at = f != nullptr ? at_.find(m, f->number()) : nullptr;
      if (at == nullptr)
        break;
      best = *at;
      bad_value = at_.bad(m, f->number());
      auto* r = m->GetReflection();
      if (f->cpp_type() != google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE
          || f->is_repeated() || !r->HasField(*m, f))
        break;
      m = &r->GetMessage(*m, f);
    }
    return best;
  }

  const std::string& file_;
  const registry& types_;
  const marks& at_;
  std::vector<yaml_error>& errors_;
  std::unordered_map<std::string, origin> origins_;
  std::map<std::tuple<std::string, std::string, spec_errc>, int> said_;
};

} // namespace

std::vector<policy_error> load_policy_text(const std::string& text,
                                           const std::string& file,
                                           const registry& types,
                                           loaded_policy& out) {
  out = loaded_policy{};
  std::vector<yaml_error> found;
  YAML::Node doc;
  policy::Policy pb;
  marks at;
  if (parse_yaml(text, doc, found)) {
    map_yaml(doc, pb, at, found);
    loader conv{file, types, at, found};
    conv.node(pb.node(), out);
    if (pb.has_tree()) {
      out.tree = conv.supervisor(pb.tree(), "");
      conv.check(out.tree);
    } else if (!at.find(&pb, policy::Policy::kTreeFieldNumber)
               && (doc.IsMap() || doc.IsNull())) {
      conv.fail({1, 1}, "missing \"tree\": the root supervisor");
    }
  }
  std::stable_sort(found.begin(), found.end(),
                   [](const yaml_error& x, const yaml_error& y) {
                     return std::tie(x.at.line, x.at.column)
                            < std::tie(y.at.line, y.at.column);
                   });
  std::vector<policy_error> errors;
  for (auto& e : found)
    errors.push_back({file, e.at.line, e.at.column, e.message});
  out.pb = std::move(pb);
  return errors;
}

std::vector<policy_error> load_policy_file(const std::string& path,
                                           const registry& types,
                                           loaded_policy& out) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    out = loaded_policy{};
    return {{path, 0, 0, "is a directory; give a policy file (YAML)"}};
  }
  std::ifstream in{path, std::ios::binary};
  if (!in) {
    out = loaded_policy{};
    return {{path, 0, 0, std::string{"cannot read the file: "}
                           + std::strerror(errno)}};
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    out = loaded_policy{};
    return {{path, 0, 0, std::string{"cannot read the file: "}
                           + std::strerror(errno)}};
  }
  return load_policy_text(text.str(), path, types, out);
}

} // namespace vigil::cli
