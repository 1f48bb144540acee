#include "vigil/actors/recovery_table.hpp"

namespace vigil {

recovery_table::recovery_table(
  std::map<std::string, recovered_agent> found) {
  // Same order, so each node goes in at the end: no allocation, no search.
  while (!found.empty())
    found_.insert(found_.end(), found.extract(found.begin()));
}

bool recovery_table::claim(std::string_view path, recovered_agent& out) {
  auto i = found_.find(path);
  if (i == found_.end())
    return false;
  out = std::move(i->second);
  found_.erase(i);
  return true;
}

std::vector<std::string> recovery_table::take_unclaimed() {
  std::vector<std::string> out;
  out.reserve(found_.size());
  for (auto& kvp : found_)
    out.push_back(kvp.first);
  found_.clear();
  return out;
}

bool recovery_table::contains(std::string_view path) const {
  return found_.find(path) != found_.end();
}

} // namespace vigil
