#pragma once

// A node's metrics endpoint and its health checks (node.cpp owns one when
// node_config::metrics is set).

#include <functional>
#include <memory>
#include <string>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/error.hpp>

#include "vigil/actors/runtime.hpp"
#include "vigil/metrics/exporter.hpp"

namespace vigil::detail {

class node_watch {
public:
  /// Serves `rt`'s metrics on `address`. /healthz asks an actor of `sys`
  /// to answer within a second (the scheduler runs); /readyz asks
  /// `ready` (empty: ready, else why not).
  static caf::error start(caf::actor_system& sys,
                          std::shared_ptr<const runtime> rt,
                          const std::string& address,
                          std::function<std::string()> ready,
                          std::unique_ptr<node_watch>& out);

  ~node_watch();

  const metrics::endpoint& endpoint() const noexcept {
    return *ep_;
  }

private:
  node_watch() = default;
  caf::actor pinger_;
  std::unique_ptr<metrics::endpoint> ep_;
};

} // namespace vigil::detail
