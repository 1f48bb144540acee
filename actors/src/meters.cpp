#include "vigil/actors/detail/meters.hpp"

namespace vigil::detail {

namespace {

void add_cell(type_totals& t, const cell_meter& m, const queue_gauge* q) {
  for (size_t i = 0; i < handling_kinds; ++i)
    t.handled[i] += m.handled[i].get();
  t.seconds.add(m.seconds.read());
  if (q != nullptr)
    t.shed += q->shed.load(std::memory_order_relaxed);
}

} // namespace

void meter_board::enroll(const std::string* type, const cell_meter* m,
                         const queue_gauge* q) {
  std::lock_guard<std::mutex> guard{mtx_};
  live_[m] = entry{type, q};
}

void meter_board::retire(const cell_meter* m) {
  std::lock_guard<std::mutex> guard{mtx_};
  auto i = live_.find(m);
  if (i == live_.end())
    return;
  add_cell(gone_[*i->second.type], *m, i->second.queue);
  live_.erase(i);
}

std::map<std::string, type_totals> meter_board::by_type() const {
  std::lock_guard<std::mutex> guard{mtx_};
  auto out = gone_;
  for (auto& kvp : out) {
    // Gauges are of live cells only.
    kvp.second.queued = 0;
    kvp.second.running = 0;
  }
  for (auto& [m, e] : live_) {
    auto& t = out[*e.type];
    add_cell(t, *m, e.queue);
    ++t.running;
    if (e.queue != nullptr)
      t.queued += e.queue->queued.load(std::memory_order_relaxed);
  }
  return out;
}

void meter_board::dynamic(const std::string& path) {
  std::lock_guard<std::mutex> guard{mtx_};
  dynamic_.insert(path);
}

sup_meter& meter_board::supervisor(const std::string& path) {
  std::lock_guard<std::mutex> guard{mtx_};
  // The label: each segment below a dynamic supervisor becomes "*".
  std::string label;
  size_t start = 0;
  for (;;) {
    auto slash = path.find('/', start);
    auto seg = path.substr(start, slash == std::string::npos
                                    ? std::string::npos
                                    : slash - start);
    // The real path of the parent: is it a dynamic supervisor?
    bool below = start > 0 && dynamic_.count(path.substr(0, start - 1)) != 0;
    label += (label.empty() ? "" : "/") + (below ? std::string{"*"} : seg);
    if (slash == std::string::npos)
      break;
    start = slash + 1;
  }
  auto i = sups_.find(label);
  if (i != sups_.end())
    return *i->second;
  auto key = sups_.size() < max_supervisors ? label : std::string{"other"};
  auto& slot = sups_[key];
  if (!slot)
    slot = std::make_unique<sup_meter>();
  return *slot;
}

std::map<std::string, const sup_meter*> meter_board::supervisors() const {
  std::lock_guard<std::mutex> guard{mtx_};
  std::map<std::string, const sup_meter*> out;
  for (auto& [path, m] : sups_)
    out.emplace(path, m.get());
  return out;
}

} // namespace vigil::detail
