// A tool executor for the tool benches: the call stack without the pool hop.
#pragma once

#include <functional>

#include "vigil/actors/detail/tool_runtime.hpp"

namespace vigil::bench {

/// Runs each execution at once, on the thread that submits it (the calling
/// cell's).
class inline_executor final : public tool_executor {
public:
  void submit(std::function<void()> task) override {
    task();
  }
};

} // namespace vigil::bench
