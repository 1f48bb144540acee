#include "vigil/supervision/duration.hpp"

#include <charconv>
#include <string_view>

#include "vigil/supervision/child_spec.hpp"

namespace vigil {

bool parse_duration(const std::string& text, std::chrono::milliseconds& out) {
  if (text == "0") {
    out = std::chrono::milliseconds{0};
    return true;
  }
  int64_t n = 0;
  auto* first = text.data();
  auto* last = first + text.size();
  if (first == last || *first < '0' || *first > '9')
    return false; // no sign, no space
  auto [end, ec] = std::from_chars(first, last, n);
  if (ec != std::errc{})
    return false; // also out of range
  std::string_view unit{end, static_cast<size_t>(last - end)};
  int64_t per = 0;
  if (unit == "ms")
    per = 1;
  else if (unit == "s")
    per = 1000;
  else if (unit == "m")
    per = 60 * 1000;
  else if (unit == "h")
    per = 60 * 60 * 1000;
  else
    return false;
  // Compare before multiplying, so that the product cannot overflow.
  if (n > max_duration.count() / per)
    return false;
  out = std::chrono::milliseconds{n * per};
  return true;
}

} // namespace vigil
