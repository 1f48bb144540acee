#pragma once

#include <chrono>
#include <functional>
#include <thread>

namespace vigil::test {

/// Polls `pred` every 5 ms until it holds or `limit` passes: a bounded wait
/// for a condition on real threads, never a sleep standing in for one.
inline bool eventually(const std::function<bool()>& pred,
                       std::chrono::milliseconds limit
                       = std::chrono::seconds{20}) {
  auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (pred())
      return true;
    std::this_thread::sleep_for(std::chrono::milliseconds{5});
  }
  return pred();
}

} // namespace vigil::test
