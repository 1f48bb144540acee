#include "yaml_map.hpp"

#include "duration.hpp"

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <memory>
#include <optional>

#include <google/protobuf/descriptor.h>

namespace vigil::cli {

namespace pb = google::protobuf;
using cpp = pb::FieldDescriptor::CppType;

namespace {

position to_position(const YAML::Mark& m) {
  if (m.line < 0 || m.column < 0)
    return {};
  return {m.line + 1, m.column + 1};
}

// The position of node `n`, or `fallback` if yaml-cpp has none.
position where_of(const YAML::Node& n, position fallback) {
  auto p = to_position(n.Mark());
  return p.known() ? p : fallback;
}

std::string quote(const std::string& s) {
  return "\"" + s + "\"";
}

// "AutoShutdown" -> "auto_shutdown"
std::string snake(const std::string& camel) {
  std::string out;
  for (size_t i = 0; i < camel.size(); ++i) {
    auto c = static_cast<unsigned char>(camel[i]);
    if (std::isupper(c)) {
      if (i > 0)
        out += '_';
      out += static_cast<char>(std::tolower(c));
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string field_names(const pb::Descriptor* d) {
  std::string out;
  for (int i = 0; i < d->field_count(); ++i)
    out += (i > 0 ? ", " : "") + d->field(i)->name();
  return out;
}

std::string enum_words(const pb::EnumDescriptor* e) {
  std::string out;
  for (int i = 0; i < e->value_count(); ++i)
    out += (i > 0 ? ", " : "") + enum_word(*e->value(i));
  return out;
}

// A message that holds a list of messages (a supervisor, the policy) is a
// scope of its own: its fields are named without the path leading to it.
bool is_scope(const pb::Descriptor* d) {
  for (int i = 0; i < d->field_count(); ++i) {
    auto* f = d->field(i);
    if (f->is_repeated() && !f->is_map()
        && f->cpp_type() == cpp::CPPTYPE_MESSAGE)
      return true;
  }
  return false;
}

bool is_type(const pb::FieldDescriptor* f, const char* full_name) {
  return f->cpp_type() == cpp::CPPTYPE_MESSAGE
         && f->message_type()->full_name() == full_name;
}

// An optional sign, then digits only.
bool whole_number(const std::string& s) {
  size_t i = !s.empty() && (s[0] == '-' || s[0] == '+') ? 1 : 0;
  if (i == s.size())
    return false;
  for (; i < s.size(); ++i)
    if (!std::isdigit(static_cast<unsigned char>(s[i])))
      return false;
  return true;
}

// One scalar read from YAML, before it is stored.
struct scalar_value {
  int64_t i = 0;
  uint64_t u = 0;
  double d = 0;
  bool b = false;
  int e = 0;
  std::string s;
};

class mapper {
public:
  mapper(marks& at, std::vector<yaml_error>& errors)
    : at_(at), errors_(errors) {
  }

  // Maps `n` (a mapping, or null for "all defaults") onto `msg`. `label`
  // names `msg` itself in messages, `prefix` goes before its field names.
  void message(const YAML::Node& n, pb::Message& msg, const std::string& label,
               const std::string& prefix, position where) {
    at_.set(&msg, -1, where);
    if (n.IsNull())
      return;
    if (!n.IsMap()) {
      fail(where, label + ": expected a mapping");
      return;
    }
    auto* d = msg.GetDescriptor();
    auto context = snake(d->name());
    std::set<int> seen;
    for (auto it = n.begin(); it != n.end(); ++it) {
      auto kp = where_of(it->first, where);
      if (!it->first.IsScalar()) {
        fail(kp, "expected a key name in " + context);
        continue;
      }
      auto& name = it->first.Scalar();
      auto* f = d->FindFieldByName(name);
      if (f == nullptr) {
        fail(kp, "unknown key " + quote(name) + " in " + context
                   + "; allowed: " + field_names(d));
        continue;
      }
      if (!seen.insert(f->number()).second) {
        fail(kp, "duplicate key " + quote(name) + " in " + context);
        continue;
      }
      at_.set(&msg, f->number(), kp);
      if (!field(it->second, msg, f, prefix + name, kp))
        at_.set_bad(&msg, f->number());
    }
  }

private:
  void fail(position at, std::string what) {
    errors_.push_back({at, std::move(what)});
  }

  bool field(const YAML::Node& v, pb::Message& msg,
             const pb::FieldDescriptor* f, const std::string& label,
             position at) {
    if (f->is_map())
      return map(v, msg, f, label, at);
    if (!f->is_repeated()) {
      auto prefix = f->cpp_type() == cpp::CPPTYPE_MESSAGE
                        && !is_scope(f->message_type())
                      ? label + "."
                      : std::string{};
      return value(v, msg, f, label, at, false, prefix);
    }
    if (v.IsNull())
      return true;
    if (!v.IsSequence()) {
      fail(at, label + ": expected a list");
      return false;
    }
    bool ok = true;
    // yaml-cpp puts an empty element after its dash; blame the list.
    for (YAML::Node e : v)
      ok = value(e, msg, f, label, e.IsNull() ? at : where_of(e, at), true, "")
           && ok;
    return ok;
  }

  // Maps one value onto field `f` of `msg` (a new element if `add`).
  bool value(const YAML::Node& v, pb::Message& msg,
             const pb::FieldDescriptor* f, const std::string& label,
             position at, bool add, const std::string& prefix) {
    if (f->cpp_type() != cpp::CPPTYPE_MESSAGE) {
      scalar_value x;
      if (!read(v, f, label, at, x))
        return false;
      store(msg, f, x, add);
      return true;
    }
    if (is_type(f, "google.protobuf.Duration"))
      return duration(v, msg, f, label, at, add);
    if (is_type(f, "vigil.policy.Reply"))
      return reply(v, msg, f, label, at, add);
    if (v.IsScalar()) { // the shorthand `durability: journal`
      auto* mode = f->message_type()->FindFieldByName("mode");
      if (mode == nullptr || mode->is_repeated()
          || mode->cpp_type() == cpp::CPPTYPE_MESSAGE) {
        fail(at, label + ": expected a mapping");
        return false;
      }
      scalar_value x;
      if (!read(v, mode, label, at, x))
        return false;
      auto* sub = target(msg, f, add);
      at_.set(sub, -1, at);
      at_.set(sub, mode->number(), at);
      store(*sub, mode, x, false);
      return true;
    }
    if (!v.IsMap() && !v.IsNull()) {
      fail(at, label + ": expected a mapping");
      return false;
    }
    auto* sub = target(msg, f, add);
    message(v, *sub, label, prefix, v.IsMap() ? where_of(v, at) : at);
    return true;
  }

  static pb::Message* target(pb::Message& msg, const pb::FieldDescriptor* f,
                             bool add) {
    auto* r = msg.GetReflection();
    return add ? r->AddMessage(&msg, f) : r->MutableMessage(&msg, f);
  }

  bool read(const YAML::Node& v, const pb::FieldDescriptor* f,
            const std::string& label, position at, scalar_value& out) {
    if (v.IsNull()) {
      fail(at, label + ": missing a value");
      return false;
    }
    if (!v.IsScalar()) {
      fail(at, label + ": expected a scalar");
      return false;
    }
    auto& s = v.Scalar();
    auto got = ", got " + quote(s);
    switch (f->cpp_type()) {
      case cpp::CPPTYPE_STRING:
        out.s = s;
        return true;
      case cpp::CPPTYPE_BOOL:
        if (s == "true" || s == "false") {
          out.b = s == "true";
          return true;
        }
        fail(at, label + ": expected true or false" + got);
        return false;
      case cpp::CPPTYPE_INT32:
      case cpp::CPPTYPE_INT64: {
        bool wide = f->cpp_type() == cpp::CPPTYPE_INT64;
        int64_t lo = wide ? std::numeric_limits<int64_t>::min()
                          : std::numeric_limits<int32_t>::min();
        int64_t hi = wide ? std::numeric_limits<int64_t>::max()
                          : std::numeric_limits<int32_t>::max();
        if (!whole_number(s)) {
          fail(at, label + ": expected an integer" + got);
          return false;
        }
        errno = 0;
        out.i = std::strtoll(s.c_str(), nullptr, 10);
        if (errno == ERANGE || out.i < lo || out.i > hi) {
          fail(at, label + ": expected an integer from " + std::to_string(lo)
                     + " to " + std::to_string(hi) + got);
          return false;
        }
        return true;
      }
      case cpp::CPPTYPE_UINT32:
      case cpp::CPPTYPE_UINT64: {
        uint64_t hi = f->cpp_type() == cpp::CPPTYPE_UINT64
                        ? std::numeric_limits<uint64_t>::max()
                        : std::numeric_limits<uint32_t>::max();
        if (!whole_number(s)) {
          fail(at, label + ": expected an integer" + got);
          return false;
        }
        errno = 0;
        out.u = s[0] == '-' ? 0 : std::strtoull(s.c_str(), nullptr, 10);
        if (s[0] == '-' || errno == ERANGE || out.u > hi) {
          fail(at, label + ": expected an integer from 0 to "
                     + std::to_string(hi) + got);
          return false;
        }
        return true;
      }
      case cpp::CPPTYPE_DOUBLE:
      case cpp::CPPTYPE_FLOAT: {
        char* end = nullptr;
        out.d = s.empty() ? 0 : std::strtod(s.c_str(), &end);
        if (s.empty() || end != s.c_str() + s.size() || !std::isfinite(out.d)) {
          fail(at, label + ": expected a number" + got);
          return false;
        }
        return true;
      }
      case cpp::CPPTYPE_ENUM: {
        auto* e = f->enum_type();
        for (int i = 0; i < e->value_count(); ++i)
          if (enum_word(*e->value(i)) == s) {
            out.e = e->value(i)->number();
            return true;
          }
        fail(at, label + ": " + quote(s) + " is not allowed; allowed: "
                   + enum_words(e));
        return false;
      }
      case cpp::CPPTYPE_MESSAGE:
        break;
    }
    fail(at, label + ": expected a mapping");
    return false;
  }

  static void store(pb::Message& msg, const pb::FieldDescriptor* f,
                    const scalar_value& x, bool add) {
    auto* r = msg.GetReflection();
    switch (f->cpp_type()) {
      case cpp::CPPTYPE_STRING:
        add ? r->AddString(&msg, f, x.s) : r->SetString(&msg, f, x.s);
        break;
      case cpp::CPPTYPE_BOOL:
        add ? r->AddBool(&msg, f, x.b) : r->SetBool(&msg, f, x.b);
        break;
      case cpp::CPPTYPE_INT32: {
        auto v = static_cast<int32_t>(x.i);
        add ? r->AddInt32(&msg, f, v) : r->SetInt32(&msg, f, v);
        break;
      }
      case cpp::CPPTYPE_INT64:
        add ? r->AddInt64(&msg, f, x.i) : r->SetInt64(&msg, f, x.i);
        break;
      case cpp::CPPTYPE_UINT32: {
        auto v = static_cast<uint32_t>(x.u);
        add ? r->AddUInt32(&msg, f, v) : r->SetUInt32(&msg, f, v);
        break;
      }
      case cpp::CPPTYPE_UINT64:
        add ? r->AddUInt64(&msg, f, x.u) : r->SetUInt64(&msg, f, x.u);
        break;
      case cpp::CPPTYPE_DOUBLE:
        add ? r->AddDouble(&msg, f, x.d) : r->SetDouble(&msg, f, x.d);
        break;
      case cpp::CPPTYPE_FLOAT: {
        auto v = static_cast<float>(x.d);
        add ? r->AddFloat(&msg, f, v) : r->SetFloat(&msg, f, v);
        break;
      }
      case cpp::CPPTYPE_ENUM:
        add ? r->AddEnumValue(&msg, f, x.e) : r->SetEnumValue(&msg, f, x.e);
        break;
      case cpp::CPPTYPE_MESSAGE:
        break;
    }
  }

  bool duration(const YAML::Node& v, pb::Message& msg,
                const pb::FieldDescriptor* f, const std::string& label,
                position at, bool add) {
    if (v.IsNull()) {
      fail(at, label + ": missing a value");
      return false;
    }
    if (!v.IsScalar()) {
      fail(at, label + ": expected a scalar");
      return false;
    }
    std::chrono::milliseconds ms;
    if (!parse_duration(v.Scalar(), ms)) {
      fail(at, label + ": " + quote(v.Scalar())
                 + " is not a duration; " + duration_hint);
      return false;
    }
    auto* d = target(msg, f, add);
    at_.set(d, -1, at);
    auto* dd = d->GetDescriptor();
    auto* r = d->GetReflection();
    r->SetInt64(d, dd->FindFieldByName("seconds"), ms.count() / 1000);
    r->SetInt32(d, dd->FindFieldByName("nanos"),
                static_cast<int32_t>(ms.count() % 1000) * 1000000);
    return true;
  }

  // {type: <full name>, value: <mapping>} -> Reply{type, payload}.
  bool reply(const YAML::Node& v, pb::Message& msg,
             const pb::FieldDescriptor* f, const std::string& label,
             position at, bool add) {
    if (!v.IsMap() && !v.IsNull()) {
      fail(at, label + ": expected a mapping");
      return false;
    }
    auto where = v.IsMap() ? where_of(v, at) : at;
    std::optional<YAML::Node> type_node;
    std::optional<YAML::Node> value_node;
    position type_at = where;
    position value_at = where;
    bool ok = true;
    if (v.IsMap()) {
      for (auto it = v.begin(); it != v.end(); ++it) {
        auto kp = where_of(it->first, where);
        auto key = it->first.IsScalar() ? it->first.Scalar() : std::string{};
        bool known = key == "type" || key == "value";
        if (key == "type" && !type_node) {
          type_node.emplace(it->second);
          type_at = kp;
        } else if (key == "value" && !value_node) {
          value_node.emplace(it->second);
          value_at = kp;
        } else {
          fail(kp, (known ? "duplicate key " : "unknown key ") + quote(key)
                     + " in reply"
                     + (known ? "" : "; allowed: type, value"));
          ok = false;
        }
      }
    }
    if (!type_node) {
      fail(where, label + ": missing \"type\" (a Protobuf message name)");
      return false;
    }
    if (!type_node->IsScalar()) {
      fail(type_at, label + ".type: expected a scalar");
      return false;
    }
    auto& type = type_node->Scalar();
    auto* d = pb::DescriptorPool::generated_pool()->FindMessageTypeByName(type);
    if (d == nullptr) {
      fail(type_at, label + ": unknown message type " + quote(type));
      return false;
    }
    auto* proto = pb::MessageFactory::generated_factory()->GetPrototype(d);
    std::unique_ptr<pb::Message> payload{proto->New()};
    // The payload is a temporary: its positions go into marks of their own.
    marks local;
    mapper inner{local, errors_};
    auto before = errors_.size();
    auto value_label = label + ".value";
    YAML::Node value = value_node ? *value_node : YAML::Node{};
    inner.message(value, *payload, value_label, value_label + ".",
                  value.IsMap() ? where_of(value, value_at) : value_at);
    if (errors_.size() != before || !ok)
      return false;
    auto* out = target(msg, f, add);
    auto* od = out->GetDescriptor();
    auto* r = out->GetReflection();
    auto* type_field = od->FindFieldByName("type");
    auto* payload_field = od->FindFieldByName("payload");
    at_.set(out, -1, where);
    at_.set(out, type_field->number(), type_at);
    at_.set(out, payload_field->number(), value_at);
    r->SetString(out, type_field, type);
    r->SetString(out, payload_field, payload->SerializeAsString());
    return true;
  }

  // A YAML mapping onto a map<K, V> field: each key is an entry, marked at
  // the key's position; a message value is mapped like a message field.
  bool map(const YAML::Node& v, pb::Message& msg,
           const pb::FieldDescriptor* f, const std::string& label,
           position at) {
    if (v.IsNull())
      return true;
    if (!v.IsMap()) {
      fail(at, label + ": expected a mapping");
      return false;
    }
    auto* key_field = f->message_type()->map_key();
    auto* value_field = f->message_type()->map_value();
    std::set<std::string> seen;
    bool ok = true;
    for (auto it = v.begin(); it != v.end(); ++it) {
      auto kp = where_of(it->first, at);
      scalar_value k;
      if (!read(it->first, key_field, label, kp, k)) {
        ok = false;
        continue;
      }
      auto& key = it->first.Scalar();
      if (!seen.insert(key).second) {
        fail(kp, "duplicate key " + quote(key) + " in " + label);
        ok = false;
        continue;
      }
      auto entry_label = label + "." + key;
      if (value_field->cpp_type() != cpp::CPPTYPE_MESSAGE) {
        scalar_value x;
        if (!read(it->second, value_field, entry_label, kp, x)) {
          ok = false;
          continue;
        }
        auto* entry = target(msg, f, true);
        at_.set(entry, -1, kp);
        store(*entry, key_field, k, false);
        store(*entry, value_field, x, false);
      } else {
        // A message value's fields are named after its key, as those of
        // a message field are (`node.tools.ocr.retry.max_attempts`).
        auto* entry = target(msg, f, true);
        at_.set(entry, -1, kp);
        store(*entry, key_field, k, false);
        auto prefix = is_scope(value_field->message_type())
                        ? std::string{}
                        : entry_label + ".";
        ok = value(it->second, *entry, value_field, entry_label, kp, false,
                   prefix)
             && ok;
      }
    }
    return ok;
  }

  marks& at_;
  std::vector<yaml_error>& errors_;
};

} // namespace

bool parse_yaml(const std::string& text, YAML::Node& out,
                std::vector<yaml_error>& errors) {
  try {
    out = YAML::Load(text);
    return true;
  } catch (const YAML::Exception& e) {
    auto at = to_position(e.mark);
    auto msg = "YAML syntax: " + e.msg;
    // yaml-cpp reads no implicit key that starts that far right (YAML caps
    // implicit keys at 1024 characters), and says only "bad file": about
    // 170 levels of nested supervisors in block style get there.
    if (at.known() && at.column > 1000)
      msg += " (at column " + std::to_string(at.column)
             + ": the YAML reader takes no key this far right; nest less "
               "deeply, or write inner levels in flow style {...}, which "
               "adds no indentation)";
    errors.push_back({at.known() ? at : position{1, 1}, std::move(msg)});
    return false;
  }
}

void map_yaml(const YAML::Node& node, google::protobuf::Message& msg,
              marks& at, std::vector<yaml_error>& errors,
              const std::string& label) {
  mapper m{at, errors};
  m.message(node, msg,
            label.empty() ? snake(msg.GetDescriptor()->name()) : label, "",
            where_of(node, {1, 1}));
}


std::string enum_word(const google::protobuf::EnumValueDescriptor& value) {
  std::string prefix;
  for (char c : snake(value.type()->name()))
    prefix += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  prefix += '_';
  auto name = value.name();
  if (name.compare(0, prefix.size(), prefix) == 0)
    name.erase(0, prefix.size());
  for (auto& c : name)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return name;
}

} // namespace vigil::cli
