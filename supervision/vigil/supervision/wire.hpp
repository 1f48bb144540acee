#pragma once

// The wire form of child specs, supervisor specs and child info: Protobuf
// messages (proto/vigil/supervision.proto), the conversions to and from
// them, and the CAF `inspect` overloads that serialize these types as those
// messages' bytes, so that a supervisor's messages can leave the process.

#include <string>
#include <type_traits>

#include <caf/detail/stringification_inspector.hpp>
#include <caf/error.hpp>
#include <caf/meta/load_callback.hpp>
#include <caf/meta/type_name.hpp>
#include <caf/none.hpp>

#include "vigil/actors/error.hpp"
#include "vigil/supervision.pb.h"
#include "vigil/supervision/child_info.hpp"
#include "vigil/supervision/child_spec.hpp"

namespace vigil {

/// Converts a spec, a child's info or its counts into its wire form. Pure;
/// lossless except where the wire form says otherwise (a child_info's
/// handle; a degrade fallback's envelope keeps only type, payload and
/// flags, the fields a stand-in reply uses).
wire::ChildSpec to_wire(const child_spec& x);
wire::SupervisorSpec to_wire(const supervisor_spec& x);
wire::ChildInfo to_wire(const child_info& x);
wire::ChildCounts to_wire(const child_counts& x);

/// Reads a wire form back. Fails with `bad_payload`, naming the field, for
/// an enum value that vigil does not know (a newer sender); every other
/// value is taken as it is, and `check_child_specs` judges it as it judges
/// a spec written in C++. `out` is valid only on success.
[[nodiscard]] caf::error from_wire(const wire::ChildSpec& x, child_spec& out);
[[nodiscard]] caf::error from_wire(const wire::SupervisorSpec& x,
                                   supervisor_spec& out);
[[nodiscard]] caf::error from_wire(const wire::ChildInfo& x, child_info& out);
[[nodiscard]] caf::error from_wire(const wire::ChildCounts& x,
                                   child_counts& out);

namespace detail {

/// Parses `bytes` as `Wire` and reads it into `out` (see `inspect` below).
template <class Wire, class T>
caf::error load_wire(const std::string& bytes, T& out, const char* what) {
  Wire w;
  if (!w.ParseFromString(bytes))
    return make_error(errc::bad_payload,
                      std::string{what} + ": bytes do not parse as "
                        + Wire::descriptor()->full_name());
  return from_wire(w, out);
}

/// CAF serialization through the wire form: saving writes the Protobuf
/// bytes; loading parses them and fails with the error of `from_wire`;
/// `caf::to_string` prints the message as Protobuf text.
template <class Wire, class Inspector, class T>
typename Inspector::result_type inspect_wire(Inspector& f, T& x,
                                             const char* name) {
  if constexpr (std::is_same<Inspector,
                             caf::detail::stringification_inspector>::value) {
    auto text = to_wire(x).ShortDebugString();
    return f(caf::meta::type_name(name), text);
  } else if constexpr (Inspector::reads_state) {
    auto bytes = to_wire(x).SerializeAsString();
    return f(caf::meta::type_name(name), bytes);
  } else {
    std::string bytes;
    auto load = caf::meta::load_callback(
      [&]() -> caf::error { return load_wire<Wire>(bytes, x, name); });
    return f(caf::meta::type_name(name), bytes, load);
  }
}

} // namespace detail

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, child_spec& x) {
  return detail::inspect_wire<wire::ChildSpec>(f, x, "vigil.child_spec");
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, child_info& x) {
  return detail::inspect_wire<wire::ChildInfo>(f, x, "vigil.child_info");
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, child_counts& x) {
  return detail::inspect_wire<wire::ChildCounts>(f, x, "vigil.child_counts");
}

} // namespace vigil
