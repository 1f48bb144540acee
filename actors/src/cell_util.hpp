#pragma once

// Small helpers of the cell (cell_impl.hpp): nanoseconds of a time point,
// and the text of an exception.

#include <chrono>
#include <cstdint>
#include <exception>
#include <string>

#include "vigil/actors/context.hpp"

namespace vigil::detail {

inline int64_t to_ns(time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
           t.time_since_epoch())
    .count();
}

inline std::string what(std::exception_ptr ep) {
  try {
    std::rethrow_exception(ep);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown exception";
  }
}

} // namespace vigil::detail
