#include "vigil/actors/symbol.hpp"

#include <mutex>
#include <ostream>
#include <unordered_set>

namespace vigil {

namespace detail {

const std::string empty_symbol_name;

} // namespace detail

namespace {

struct intern_table {
  std::mutex mtx;
  // Node-based, so the strings never move; never shrinks.
  std::unordered_set<std::string> names;
};

intern_table& table() {
  static auto* t = new intern_table; // never destroyed: symbols may outlive main
  return *t;
}

} // namespace

symbol::symbol(std::string_view s) : p_(&detail::empty_symbol_name) {
  if (s.empty())
    return;
  auto& t = table();
  std::lock_guard<std::mutex> guard{t.mtx};
  p_ = &*t.names.emplace(s).first;
}

std::ostream& operator<<(std::ostream& out, const symbol& x) {
  return out << x.str();
}

} // namespace vigil
