#pragma once

// Helpers shared by the ports of OTP's supervisor_SUITE: thin wrappers around
// the supervisor's message API and a way to observe an actor's exit reason.

#include <memory>
#include <string>
#include <utility>

#include "support/fixture.hpp"

namespace vigil {

/// Prints counts as OTP's get_child_counts does: [specs,active,sups,workers].
inline std::ostream& operator<<(std::ostream& os, const child_counts& n) {
  return os << "[" << n.specs << "," << n.active << "," << n.supervisors
            << "," << n.workers << "]";
}

} // namespace vigil

namespace vigil::test {

/// An actor's exit, as recorded by `otp_fixture::watch`.
struct exit_watch {
  bool exited = false;
  caf::error reason;
};

/// `err` carries vigil error code `code`.
inline ::testing::AssertionResult has_code(const caf::error& err, errc code) {
  if (is(err, code))
    return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "expected " << to_string(code) << ", got " << describe(err);
}

/// `x` holds an error with vigil error code `code`.
template <class T>
::testing::AssertionResult has_code(const caf::expected<T>& x, errc code) {
  if (x)
    return ::testing::AssertionFailure()
           << "expected " << to_string(code) << ", got a value";
  return has_code(x.error(), code);
}

class otp_fixture : public runtime_fixture {
public:
  /// Records `a`'s exit reason once it terminates (at once if it already
  /// has).
  std::shared_ptr<exit_watch> watch(const caf::actor& a) {
    auto w = std::make_shared<exit_watch>();
    a->attach_functor([w](const caf::error& r) {
      w->exited = true;
      w->reason = r;
    });
    return w;
  }

  caf::expected<child_info> start_child(const caf::actor& sup, child_spec cs) {
    return ask<child_info>(sup, start_child_atom::value, std::move(cs));
  }

  /// start_child of a simple_one_for_one supervisor: a child named `name`.
  caf::expected<child_info> start_simple(const caf::actor& sup,
                                         std::string name,
                                         params extra = {}) {
    return ask<child_info>(sup, start_child_atom::value, std::move(extra),
                           std::move(name));
  }

  caf::error terminate_child(const caf::actor& sup, std::string id) {
    return ask_void(sup, terminate_child_atom::value, std::move(id));
  }

  caf::expected<child_info> restart_child(const caf::actor& sup,
                                          std::string id) {
    return ask<child_info>(sup, restart_child_atom::value, std::move(id));
  }

  caf::error delete_child(const caf::actor& sup, std::string id) {
    return ask_void(sup, delete_child_atom::value, std::move(id));
  }

  /// Stops `sup` as its parent would (children in reverse start order).
  caf::error stop_sup(const caf::actor& sup) {
    return ask_void(sup, stop_cmd{});
  }

  /// The handle of child `id` of `sup` (e.g. a nested supervisor).
  caf::actor child_handle(const caf::actor& sup, const std::string& id) {
    for (auto& ci : which(sup))
      if (ci.id == id)
        return ci.handle;
    return {};
  }

  static int starts(const std::string& path) {
    return switches::get().start_count(path);
  }

  static int stops(const std::string& path) {
    return switches::get().stop_count(path);
  }
};

inline child_counts cc(size_t specs, size_t active, size_t supervisors,
                       size_t workers) {
  child_counts n;
  n.specs = specs;
  n.active = active;
  n.supervisors = supervisors;
  n.workers = workers;
  return n;
}

/// Flags with a fixed backoff of `ms` between restart attempts, so that a
/// restart loop only moves when the test advances the clock.
inline supervisor_spec slow_flags(strategy s, int intensity, int period_ms,
                                  int backoff_ms = 100) {
  auto spec = flags(s, intensity, period_ms);
  spec.flags.backoff.min = std::chrono::milliseconds{backoff_ms};
  spec.flags.backoff.max = std::chrono::milliseconds{backoff_ms};
  return spec;
}

} // namespace vigil::test
