// How the randomized tests pick their seeds: one seed to replay from an
// environment variable, or a count of seeds (CI's default, more outside it).
#pragma once

#include <cstdint>
#include <cstdlib>

#include <gtest/gtest.h>

namespace vigil::test {

/// Runs `one(seed)` for the seed in `$one_var` if it is set; otherwise for
/// `$count_var` seeds (default `fallback`) from `first` on, up to the first
/// that fails (the test's trace names it, for the replay).
template <class F>
void for_seeds(const char* one_var, const char* count_var, int fallback,
               uint64_t first, F one) {
  if (auto* s = std::getenv(one_var)) {
    one(std::strtoull(s, nullptr, 10));
    return;
  }
  auto* n = std::getenv(count_var);
  int seeds = n != nullptr ? std::atoi(n) : fallback;
  for (int i = 0; i < seeds && !::testing::Test::HasFailure(); ++i)
    one(first + static_cast<uint64_t>(i));
}

} // namespace vigil::test
