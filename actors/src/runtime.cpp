#include "vigil/actors/runtime.hpp"

#include <algorithm>

#include "vigil/actors/approvals.hpp"
#include "vigil/actors/local_directory.hpp"

namespace vigil {

std::vector<std::string> registry::names() const {
  std::vector<std::string> out;
  for (auto& kvp : types_)
    out.push_back(kvp.first);
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> registry::tool_names() const {
  std::vector<std::string> out;
  for (auto& kvp : tools_)
    out.push_back(kvp.first);
  std::sort(out.begin(), out.end());
  return out;
}

runtime::runtime(registry types, size_t dead_letter_cap,
                 std::unique_ptr<directory> dir)
  : types_(std::move(types)),
    node_id_(random_node_id()),
    stats_(std::make_shared<counters>()),
    dir_(dir ? std::move(dir) : std::make_unique<local_directory>()),
    dead_(*stats_, dead_letter_cap),
    approvals_(std::make_unique<approval_desk>()) {
  // nop
}

runtime::~runtime() = default;

void runtime::attach_store(std::shared_ptr<store> st, caf::actor writer) {
  ids_.store((st->boots() << 40) + 1);
  node_id_ = st->node_id();
  store_ = std::move(st);
  writer_ = std::move(writer);
  dead_.attach(writer_);
}

} // namespace vigil
