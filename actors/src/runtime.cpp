#include "vigil/actors/runtime.hpp"

#include <algorithm>

#include <caf/all.hpp>

#include "durable.hpp"
#include "vigil/actors/writer.hpp"

namespace vigil {

std::vector<std::string> registry::names() const {
  std::vector<std::string> out;
  for (auto& kvp : types_)
    out.push_back(kvp.first);
  std::sort(out.begin(), out.end());
  return out;
}

void runtime::bind(const std::string& path, caf::actor cell) {
  std::unique_lock<std::shared_mutex> guard{dir_mtx_};
  dir_[path] = std::move(cell);
  // Handles to the cell bound before fall back to the path.
  if (auto h = handles_.find(path); h != handles_.end()) {
    h->second->live.store(false, std::memory_order_release);
    handles_.erase(h);
  }
}

void runtime::unbind(const std::string& path, const caf::actor& cell) {
  std::unique_lock<std::shared_mutex> guard{dir_mtx_};
  auto i = dir_.find(path);
  if (i != dir_.end() && i->second == cell) {
    dir_.erase(i);
    if (auto h = handles_.find(path); h != handles_.end()) {
      h->second->live.store(false, std::memory_order_release);
      handles_.erase(h);
    }
  }
}

caf::actor runtime::lookup(std::string_view path) const {
  std::shared_lock<std::shared_mutex> guard{dir_mtx_};
  auto i = dir_.find(path);
  return i != dir_.end() ? i->second : caf::actor{};
}

std::shared_ptr<const detail::binding>
runtime::binding_of(std::string_view path) const {
  {
    std::shared_lock<std::shared_mutex> guard{dir_mtx_};
    auto i = dir_.find(path);
    if (i == dir_.end())
      return nullptr;
    if (auto h = handles_.find(path); h != handles_.end())
      return h->second; // bind and unbind keep it current
  }
  // The first resolve of this binding: make it.
  std::unique_lock<std::shared_mutex> guard{dir_mtx_};
  auto i = dir_.find(path);
  if (i == dir_.end())
    return nullptr;
  auto h = handles_.find(path);
  if (h == handles_.end())
    h = handles_
          .emplace(std::string{path},
                   std::make_shared<detail::binding>(i->second))
          .first;
  return h->second;
}

std::vector<std::string> runtime::paths() const {
  std::vector<std::string> out;
  {
    std::shared_lock<std::shared_mutex> guard{dir_mtx_};
    for (auto& kvp : dir_)
      out.push_back(kvp.first);
  }
  std::sort(out.begin(), out.end());
  return out;
}

void runtime::attach_store(std::shared_ptr<store> st, caf::actor writer) {
  ids_.store((st->boots() << 40) + 1);
  node_id_ = st->node_id();
  store_ = std::move(st);
  writer_ = std::move(writer);
}

void runtime::add_dead_letter(std::string path, envelope env,
                              std::string reason, bool persist,
                              bool journal) {
  if (writer_ && persist)
    caf::anon_send(
      writer_, write_atom::value, uint64_t{0},
      owned_write{{}, detail::dead_letter_item(path, env, reason, journal)});
  std::lock_guard<std::mutex> guard{dl_mtx_};
  if (dead_cap_ == 0 || dead_.size() >= dead_cap_) {
    ++dead_dropped_;
    if (dead_.empty())
      return;
    dead_.pop_front();
  }
  dead_letter dl;
  dl.seq = ++dead_seq_;
  dl.path = std::move(path);
  dl.env = std::move(env);
  dl.reason = std::move(reason);
  dead_.push_back(std::move(dl));
}

std::vector<dead_letter> runtime::dead_letters() const {
  std::lock_guard<std::mutex> guard{dl_mtx_};
  return {dead_.begin(), dead_.end()};
}

size_t runtime::dead_letters_dropped() const {
  std::lock_guard<std::mutex> guard{dl_mtx_};
  return dead_dropped_;
}

size_t runtime::dead_letter_count() const {
  std::lock_guard<std::mutex> guard{dl_mtx_};
  return dead_.size();
}

} // namespace vigil
