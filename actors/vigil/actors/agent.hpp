#pragma once

// The first header a user reads: an agent is a class derived from
// `agent<State>` with hooks (below) and handlers (`define`, see
// handlers.hpp) that see the runtime through a `context` (context.hpp).

#include <google/protobuf/message.h>

#include "vigil/actors/context.hpp"
#include "vigil/actors/handlers.hpp"

namespace vigil {

/// Base of every agent. Users derive from `agent<State>`.
///
/// Hooks run inside the agent's actor, one at a time: `on_start` after the
/// first start, `on_restart` (which calls `on_start` unless overridden) after
/// every restart, `on_stop` on an orderly stop (not after a crash or a
/// brutal_kill). A throwing hook or handler is a failure of this child: its
/// supervisor applies the child's directive.
class agent_base {
public:
  virtual ~agent_base() = default;
  virtual void on_start(context&) {
    // nop
  }
  virtual void on_restart(context& ctx, const caf::error& /*reason*/) {
    on_start(ctx);
  }
  virtual void on_stop(context&) {
    // nop
  }
  /// The agent's Protobuf state, or nullptr if it has none.
  virtual google::protobuf::Message* state_message() noexcept {
    return nullptr;
  }
};

/// An agent with a Protobuf state of type `State` (or none if `void`).
template <class State = void>
class agent : public agent_base {
public:
  State& state() noexcept {
    return state_;
  }
  google::protobuf::Message* state_message() noexcept override {
    return &state_;
  }

private:
  State state_;
};

template <>
class agent<void> : public agent_base {};

} // namespace vigil
