#include "vigil/tools/detail/json_reply.hpp"

#include <cfloat>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <unordered_set>
#include <vector>

namespace vigil::detail {

namespace {

namespace pb = google::protobuf;
using FD = pb::FieldDescriptor;
using json = nlohmann::json;

/// Deeper than this, protobuf's depth rules decide.
constexpr int max_quick_depth = 64;

bool quick_type(const pb::Descriptor* d,
                std::unordered_set<const pb::Descriptor*>& seen) {
  if (!seen.insert(d).second)
    return true; // recursive: judged where it started
  if (d->file()->name().rfind("google/protobuf/", 0) == 0)
    return false; // well-known types have JSON forms of their own
  if (d->extension_range_count() > 0 || d->real_oneof_decl_count() > 0)
    return false;
  for (int i = 0; i < d->field_count(); ++i) {
    auto* f = d->field(i);
    if (f->is_map() || f->is_required())
      return false; // (protobuf checks that a required one is there)
    switch (f->type()) {
      case FD::TYPE_ENUM:
      case FD::TYPE_BYTES:
      case FD::TYPE_GROUP:
        return false;
      case FD::TYPE_MESSAGE:
        if (!quick_type(f->message_type(), seen))
          return false;
        break;
      default:
        break;
    }
  }
  return true;
}

/// A JSON integer, or a string of plain decimal digits (protobuf writes
/// 64-bit integers so), as a signed or unsigned 64-bit value. False for
/// anything else (a fraction, an exponent, a sign on zero, leading
/// zeros): protobuf decides those.
template <class T>
bool integer_of(const json& v, T& out) {
  if (v.is_number_unsigned()) {
    auto u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<T>::max()))
      return false;
    out = static_cast<T>(u);
    return true;
  }
  if (v.is_number_integer()) {
    auto s = v.get<int64_t>();
    if (s < 0 && std::is_unsigned_v<T>)
      return false;
    if constexpr (std::is_signed_v<T>) {
      if (s < std::numeric_limits<T>::min()
          || s > std::numeric_limits<T>::max())
        return false;
    } else {
      if (static_cast<uint64_t>(s) > std::numeric_limits<T>::max())
        return false;
    }
    out = static_cast<T>(s);
    return true;
  }
  if (!v.is_string())
    return false;
  auto& s = v.get_ref<const std::string&>();
  size_t digits = s.size() - (!s.empty() && s[0] == '-' ? 1 : 0);
  if (digits == 0 || digits > 20
      || s.find_first_not_of("-0123456789") != std::string::npos
      || s.find('-', 1) != std::string::npos
      || (s[s.size() - digits] == '0' && digits > 1) || s == "-0")
    return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc{} && end == s.data() + s.size();
}

/// A JSON number as a double (protobuf's rules for text are its own).
bool double_of(const json& v, double& out) {
  if (!v.is_number())
    return false;
  out = v.get<double>();
  return std::isfinite(out);
}

/// Sets (or, repeated, adds) `x` through the reflection's setter of T.
template <class T>
void store(pb::Message& m, const FD* f, bool add, T x) {
  auto* r = m.GetReflection();
  if constexpr (std::is_same_v<T, int32_t>)
    add ? r->AddInt32(&m, f, x) : r->SetInt32(&m, f, x);
  else if constexpr (std::is_same_v<T, int64_t>)
    add ? r->AddInt64(&m, f, x) : r->SetInt64(&m, f, x);
  else if constexpr (std::is_same_v<T, uint32_t>)
    add ? r->AddUInt32(&m, f, x) : r->SetUInt32(&m, f, x);
  else if constexpr (std::is_same_v<T, uint64_t>)
    add ? r->AddUInt64(&m, f, x) : r->SetUInt64(&m, f, x);
  else if constexpr (std::is_same_v<T, double>)
    add ? r->AddDouble(&m, f, x) : r->SetDouble(&m, f, x);
  else if constexpr (std::is_same_v<T, float>)
    add ? r->AddFloat(&m, f, x) : r->SetFloat(&m, f, x);
  else if constexpr (std::is_same_v<T, bool>)
    add ? r->AddBool(&m, f, x) : r->SetBool(&m, f, x);
  else
    add ? r->AddString(&m, f, std::move(x))
        : r->SetString(&m, f, std::move(x));
}

template <class T>
bool integer(const json& v, pb::Message& m, const FD* f, bool add) {
  T x;
  if (!integer_of(v, x))
    return false;
  store(m, f, add, x);
  return true;
}

bool scalar(const json& v, pb::Message& m, const FD* f, bool add) {
  double x = 0.0;
  switch (f->cpp_type()) {
    case FD::CPPTYPE_INT32: return integer<int32_t>(v, m, f, add);
    case FD::CPPTYPE_INT64: return integer<int64_t>(v, m, f, add);
    case FD::CPPTYPE_UINT32: return integer<uint32_t>(v, m, f, add);
    case FD::CPPTYPE_UINT64: return integer<uint64_t>(v, m, f, add);
    case FD::CPPTYPE_DOUBLE:
      if (!double_of(v, x))
        return false;
      store(m, f, add, x);
      return true;
    case FD::CPPTYPE_FLOAT:
      if (!double_of(v, x) || std::fabs(x) > FLT_MAX)
        return false; // protobuf refuses it
      // An integer becomes a float in one rounding, as protobuf does it
      // (through a double it could round twice).
      if (v.is_number_unsigned())
        store(m, f, add, static_cast<float>(v.get<uint64_t>()));
      else if (v.is_number_integer())
        store(m, f, add, static_cast<float>(v.get<int64_t>()));
      else
        store(m, f, add, static_cast<float>(x));
      return true;
    case FD::CPPTYPE_BOOL:
      if (!v.is_boolean())
        return false;
      store(m, f, add, v.get<bool>());
      return true;
    case FD::CPPTYPE_STRING:
      if (!v.is_string())
        return false;
      store(m, f, add, v.get<std::string>());
      return true;
    default:
      return false;
  }
}

/// The field whose JSON name (json_name) or proto name is `key`, as
/// protobuf's parser finds it. Scans: replies have few fields.
const FD* field_named(const pb::Descriptor* d, const std::string& key) {
  // By JSON name first: a key that is one field's JSON name and another's
  // proto name is the first one's, as protobuf reads it.
  for (int i = 0; i < d->field_count(); ++i)
    if (d->field(i)->json_name() == key)
      return d->field(i);
  for (int i = 0; i < d->field_count(); ++i)
    if (d->field(i)->name() == key)
      return d->field(i);
  return nullptr;
}

bool onto(const json& doc, pb::Message& m, int depth) {
  // Protobuf's parser refuses nesting deeper than 100; so does this one
  // (by leaving it to protobuf).
  if (!doc.is_object() || depth > max_quick_depth)
    return false;
  auto* d = m.GetDescriptor();
  auto* r = m.GetReflection();
  // Fields named twice (by their JSON and their proto name): protobuf's
  // rule, not this one's.
  uint64_t small_seen = 0;
  std::vector<const FD*> big_seen;
  for (auto& [key, v] : doc.items()) {
    auto* f = field_named(d, key);
    if (f == nullptr)
      continue; // ignore_unknown_fields
    if (f->index() < 64) {
      auto bit = uint64_t{1} << f->index();
      if (small_seen & bit)
        return false;
      small_seen |= bit;
    } else {
      for (auto* g : big_seen)
        if (g == f)
          return false;
      big_seen.push_back(f);
    }
    if (f->is_repeated()) {
      if (!v.is_array())
        return false;
      for (auto& e : v) {
        if (f->cpp_type() == FD::CPPTYPE_MESSAGE) {
          if (!onto(e, *r->AddMessage(&m, f), depth + 1))
            return false;
        } else if (!scalar(e, m, f, true)) {
          return false;
        }
      }
    } else if (f->cpp_type() == FD::CPPTYPE_MESSAGE) {
      if (!onto(v, *r->MutableMessage(&m, f), depth + 1))
        return false;
    } else if (!scalar(v, m, f, false)) {
      return false;
    }
  }
  return true;
}

} // namespace

json parse_json(const std::string& text, bool& quick) {
  // A byte order mark, which nlohmann skips and protobuf refuses.
  quick = text.compare(0, 3, "\xEF\xBB\xBF") != 0;
  // Keys seen in each object open, innermost last: an object that holds
  // fewer than were seen in it named one twice.
  std::vector<size_t> keys;
  json::parser_callback_t cb = [&](int depth, json::parse_event_t ev,
                                   json& v) {
    switch (ev) {
      case json::parse_event_t::object_start:
        // Protobuf counts the depth of the whole document, unknown keys'
        // values too, and refuses one deeper than 100.
        if (depth > max_quick_depth)
          quick = false;
        keys.push_back(0);
        break;
      case json::parse_event_t::key:
        if (!keys.empty())
          ++keys.back();
        if (v.is_string() && v.get_ref<const std::string&>().empty())
          quick = false; // protobuf refuses an empty key (mostly)
        break;
      case json::parse_event_t::object_end:
        if (!keys.empty()) {
          if (v.size() != keys.back())
            quick = false;
          keys.pop_back();
        }
        break;
      default:
        break;
    }
    return true;
  };
  return json::parse(text, cb, false);
}

bool quick_json_type(const pb::Descriptor* d) {
  std::unordered_set<const pb::Descriptor*> seen;
  return d != nullptr && quick_type(d, seen);
}

bool quick_json_onto(const json& doc, pb::Message& out) {
  return onto(doc, out, 0);
}

} // namespace vigil::detail
