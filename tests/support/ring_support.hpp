// What the tests of detail::ring share (tool_ring_test, its review,
// bulkhead_ring_test): where a callback runs, and a tool with a pool.
#pragma once

#include <chrono>
#include <string>

#include <pthread.h>

#include "vigil/actors/tool.hpp"

namespace vigil::test {

/// Whether this thread is one of a tool's pool ("t:<tool>").
inline bool on_tool_thread() {
  char name[16] = {};
  pthread_getname_np(pthread_self(), name, sizeof name);
  return std::string{name}.rfind("t:", 0) == 0;
}

/// Tool `name` on implementation `type`, with a pool of `threads`, `queue`
/// more calls waiting, and 10 s timeouts.
inline tool_decl pool_of(std::string name, uint32_t threads,
                         std::string type = "svc", uint32_t queue = 64) {
  tool_decl d;
  d.name = std::move(name);
  d.type = std::move(type);
  d.policy.timeout = std::chrono::seconds{10};
  d.policy.attempt_timeout = std::chrono::seconds{10};
  d.policy.bulkhead.max_concurrent = threads;
  d.policy.bulkhead.queue = queue;
  return d;
}

} // namespace vigil::test
