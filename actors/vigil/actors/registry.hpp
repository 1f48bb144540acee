#pragma once

#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "vigil/actors/agent.hpp"

namespace vigil {

/// One registered agent type: how to make an instance and how to dispatch
/// its messages. The handler table is built once per type, not per instance.
struct agent_type {
  std::string name;
  std::function<std::unique_ptr<agent_base>(const params&)> make;
  std::shared_ptr<const detail::handler_table> handlers;
};

/// Maps type names to agent types, so that a policy file or a remote node can
/// start an agent by name.
///
/// Register every type before the node starts; afterwards the registry is
/// only read, from any thread. `add` is not thread-safe.
class registry {
public:
  /// Registers `Agent` under `name`. `Agent` must have a public static
  /// `void define(vigil::handlers<Agent>&)` and be constructible from
  /// `const vigil::params&` or by default. Replaces an earlier registration.
  template <class Agent>
  registry& add(std::string name) {
    auto table = std::make_shared<detail::handler_table>();
    handlers<Agent> h{*table};
    Agent::define(h);
    agent_type t;
    t.name = name;
    t.make = [](const params& ps) -> std::unique_ptr<agent_base> {
      if constexpr (std::is_constructible_v<Agent, const params&>)
        return std::make_unique<Agent>(ps);
      else
        return std::make_unique<Agent>();
    };
    t.handlers = std::move(table);
    types_[name] = std::move(t);
    return *this;
  }

  /// Returns the type registered as `name`, or nullptr.
  const agent_type* find(const std::string& name) const noexcept {
    auto i = types_.find(name);
    return i != types_.end() ? &i->second : nullptr;
  }

  /// Names of all registered types, sorted.
  std::vector<std::string> names() const;

private:
  std::unordered_map<std::string, agent_type> types_;
};

} // namespace vigil
