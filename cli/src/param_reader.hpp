#pragma once

// Reading a built-in agent's params (builtin.cpp, builtin_tools.cpp).
// Internal to vigil_cli.

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "duration.hpp"
#include "vigil/actors/context.hpp"
#include "vigil/actors/registry.hpp"

namespace vigil::cli {

/// Reads an agent's params and collects every problem with them, so that
/// `vigil check` lists them all at once; `done()` throws them as one
/// `bad_params` (a start then fails with all of them too).
class param_reader {
public:
  param_reader(const params& ps, std::string_view agent,
               std::initializer_list<std::string_view> allowed)
    : ps_(ps), agent_(agent) {
    // Rejects keys not in `allowed`, so that a typo in a policy fails the
    // check instead of being ignored.
    for (auto& [key, value] : ps) {
      if (std::find(allowed.begin(), allowed.end(), key) != allowed.end())
        continue;
      std::string names;
      for (auto a : allowed)
        names += (names.empty() ? "" : ", ") + std::string{a};
      problems_.push_back(std::string{agent} + ": unknown param '" + key
                          + "'; allowed: "
                          + (names.empty() ? "none" : names));
    }
  }

  const std::string* find(std::string_view key) const {
    auto i = ps_.find(std::string{key});
    return i != ps_.end() ? &i->second : nullptr;
  }

  void bad(std::string_view key, std::string_view value,
           std::string_view allowed) {
    problems_.push_back(std::string{agent_} + ": param '" + std::string{key}
                        + "' is '" + std::string{value} + "'; allowed: "
                        + std::string{allowed});
  }

  void missing(std::string_view key, std::string_view what) {
    problems_.push_back(std::string{agent_} + ": param '" + std::string{key}
                        + "' is required: " + std::string{what});
  }

  /// An integer >= `min`, or `def` if the param is absent or bad.
  int64_t integer(std::string_view key, int64_t def, int64_t min) {
    auto* s = find(key);
    if (s == nullptr)
      return def;
    int64_t x = 0;
    auto [end, ec] = std::from_chars(s->data(), s->data() + s->size(), x);
    if (s->empty() || ec != std::errc{} || end != s->data() + s->size()
        || x < min) {
      bad(key, *s, "an integer >= " + std::to_string(min));
      return def;
    }
    return x;
  }

  /// A real number in [min, max], or `def` if the param is absent or bad.
  double real(std::string_view key, double def, double min, double max,
              std::string_view allowed) {
    auto* s = find(key);
    if (s == nullptr)
      return def;
    char* end = nullptr;
    double x = std::strtod(s->c_str(), &end);
    if (s->empty() || end != s->c_str() + s->size() || !std::isfinite(x)
        || x < min || x > max) {
      bad(key, *s, allowed);
      return def;
    }
    return x;
  }

  /// A duration param, or zero if absent or bad.
  duration time(std::string_view key) {
    auto* s = find(key);
    std::chrono::milliseconds d{0};
    if (s != nullptr && !parse_duration(*s, d)) {
      bad(key, *s, duration_hint);
      return duration{0};
    }
    return d;
  }

  /// Throws every problem found, if any.
  void done() {
    if (!problems_.empty())
      throw bad_params(std::move(problems_));
  }

private:
  const params& ps_;
  std::string_view agent_;
  std::vector<std::string> problems_;
};

} // namespace vigil::cli
