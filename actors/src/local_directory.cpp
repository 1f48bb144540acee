#include "vigil/actors/local_directory.hpp"

#include <mutex>

namespace vigil {

directory::~directory() = default;

void local_directory::retire(const std::string& path) {
  if (auto h = bindings_.find(path); h != bindings_.end()) {
    h->second->live.store(false, std::memory_order_release);
    bindings_.erase(h);
  }
}

void local_directory::bind(const std::string& path, caf::actor cell,
                           detail::queue_gauge* gauge) {
  std::unique_lock<std::shared_mutex> guard{mtx_};
  cells_[path] = detail::bound{std::move(cell), gauge};
  // Handles to the cell bound before fall back to the path.
  retire(path);
}

void local_directory::unbind(const std::string& path,
                             const caf::actor& cell) {
  std::unique_lock<std::shared_mutex> guard{mtx_};
  auto i = cells_.find(path);
  if (i != cells_.end() && i->second.actor == cell) {
    cells_.erase(i);
    retire(path);
  }
}

caf::actor local_directory::lookup(std::string_view path) const {
  std::shared_lock<std::shared_mutex> guard{mtx_};
  auto i = cells_.find(path);
  return i != cells_.end() ? i->second.actor : caf::actor{};
}

detail::bound local_directory::lookup_bound(std::string_view path) const {
  std::shared_lock<std::shared_mutex> guard{mtx_};
  auto i = cells_.find(path);
  return i != cells_.end() ? i->second : detail::bound{};
}

std::shared_ptr<const detail::binding>
local_directory::binding_of(std::string_view path) const {
  {
    std::shared_lock<std::shared_mutex> guard{mtx_};
    auto i = cells_.find(path);
    if (i == cells_.end())
      return nullptr;
    if (auto h = bindings_.find(path); h != bindings_.end())
      return h->second; // bind and unbind keep it current
  }
  // The first resolve of this binding: make it.
  std::unique_lock<std::shared_mutex> guard{mtx_};
  auto i = cells_.find(path);
  if (i == cells_.end())
    return nullptr;
  auto h = bindings_.find(path);
  if (h == bindings_.end())
    h = bindings_
          .emplace(std::string{path},
                   std::make_shared<detail::binding>(i->second.actor,
                                                     i->second.gauge))
          .first;
  return h->second;
}

std::vector<std::string> local_directory::paths() const {
  std::vector<std::string> out;
  {
    std::shared_lock<std::shared_mutex> guard{mtx_};
    out.reserve(cells_.size());
    for (auto& kvp : cells_)
      out.push_back(kvp.first);
  }
  // The map is ordered already; kept sorted by construction.
  return out;
}

} // namespace vigil
