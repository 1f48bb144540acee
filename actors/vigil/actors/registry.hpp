#pragma once

#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "vigil/actors/agent.hpp"
#include "vigil/actors/detail/type_symbol.hpp"
#include "vigil/actors/tool.hpp"

namespace vigil {

/// Thrown by an agent's constructor for params it cannot take, with every
/// problem at once (a policy file's `vigil check` lists each of them).
class bad_params : public std::invalid_argument {
public:
  explicit bad_params(std::vector<std::string> problems)
    : std::invalid_argument(join(problems)), problems_(std::move(problems)) {
    // nop
  }
  const std::vector<std::string>& problems() const noexcept {
    return problems_;
  }

private:
  static std::string join(const std::vector<std::string>& xs) {
    std::string out;
    for (auto& x : xs)
      out += (out.empty() ? "" : "; ") + x;
    return out;
  }
  std::vector<std::string> problems_;
};

/// One registered agent type: how to make an instance, how to check its
/// params before anything starts, and how to dispatch its messages. The
/// handler table is built once per type, not per instance.
struct agent_type {
  std::string name;
  std::function<std::unique_ptr<agent_base>(const params&)> make;
  /// Every problem with `params` for this type (empty: fine). Without a
  /// static `Agent::check_params(const params&)`, an agent constructible
  /// from params is made once and its constructor's exception (all of a
  /// `bad_params`) is the answer; other agents take any params.
  std::function<std::vector<std::string>(const params&)> check_params;
  std::shared_ptr<const detail::handler_table> handlers;
};

namespace detail {

template <class Agent, class = void>
struct has_check_params : std::false_type {};

template <class Agent>
struct has_check_params<
  Agent, std::void_t<decltype(Agent::check_params(std::declval<const params&>()))>>
  : std::true_type {};

} // namespace detail

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
    t.check_params = [](const params& ps) -> std::vector<std::string> {
      if constexpr (detail::has_check_params<Agent>::value) {
        return Agent::check_params(ps);
      } else if constexpr (std::is_constructible_v<Agent, const params&>) {
        try {
          Agent probe{ps};
        } catch (const bad_params& e) {
          return e.problems();
        } catch (const std::exception& e) {
          return {e.what()};
        }
        return {};
      } else {
        return {};
      }
    };
    t.handlers = std::move(table);
    types_[name] = std::move(t);
    return *this;
  }

  /// Registers a tool implementation under `name`: `f` is called as
  /// `tool_result<Reply> f(const Request&, tool_call&)` on the tool's own
  /// threads (so it must be thread-safe), may block, and may throw (a
  /// throw is a transient error). `validate`, if given, checks each reply:
  /// a non-empty answer makes it `invalid_output` with that text. A node
  /// declares tools on top of implementations (tool_decl::type).
  template <class Request, class Reply, class F>
  registry& add_tool(std::string name, F f,
                     std::function<std::string(const Reply&)> validate = {}) {
    tool_type t;
    t.name = name;
    t.request_type = Request::descriptor()->full_name();
    t.reply_type = Reply::descriptor()->full_name();
    t.request_symbol = type_symbol<Request>();
    t.reply_symbol = type_symbol<Reply>();
    t.call = [f = std::move(f), validate = std::move(validate)](
               const google::protobuf::Message& req,
               tool_call& call) -> detail::tool_outcome {
      detail::tool_outcome out;
      try {
        tool_result<Reply> r = f(static_cast<const Request&>(req), call);
        out.cost = r.cost;
        if (auto* e = std::get_if<tool_error>(&r.value)) {
          out.error = std::move(*e);
        } else {
          auto& rep = std::get<Reply>(r.value);
          if (validate) {
            if (auto bad = validate(rep); !bad.empty()) {
              out.error = tool_error::invalid_output(std::move(bad));
              return out;
            }
          }
          out.reply = std::make_unique<Reply>(std::move(rep));
        }
      } catch (const std::exception& e) {
        out.error = tool_error::transient(std::string{"threw: "} + e.what());
      } catch (...) {
        out.error = tool_error::transient("threw a non-std exception");
      }
      return out;
    };
    tools_[name] = std::move(t);
    return *this;
  }

  /// The tool implementation registered as `name`, or nullptr.
  /// Marks the tool implementation `name` (registered before) as one
  /// whose calls wait on I/O (tool_type::waits_on_io); false if there is
  /// none of that name.
  bool tool_waits_on_io(const std::string& name, bool yes = true) {
    auto i = tools_.find(name);
    if (i == tools_.end())
      return false;
    i->second.waits_on_io = yes;
    return true;
  }

  const tool_type* find_tool(const std::string& name) const noexcept {
    auto i = tools_.find(name);
    return i != tools_.end() ? &i->second : nullptr;
  }

  /// Names of all registered tool implementations, sorted.
  std::vector<std::string> tool_names() const;

  /// Returns the type registered as `name`, or nullptr.
  const agent_type* find(const std::string& name) const noexcept {
    auto i = types_.find(name);
    return i != types_.end() ? &i->second : nullptr;
  }

  /// Names of all registered types, sorted.
  std::vector<std::string> names() const;

private:
  std::unordered_map<std::string, agent_type> types_;
  std::unordered_map<std::string, tool_type> tools_;
};

} // namespace vigil
