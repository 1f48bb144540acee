#include "vigil/actors/runtime.hpp"

#include <algorithm>

#include <caf/all.hpp>

#include "durable.hpp"
#include "vigil/actors/local_directory.hpp"
#include "vigil/actors/writer.hpp"

namespace vigil {

std::vector<std::string> registry::names() const {
  std::vector<std::string> out;
  for (auto& kvp : types_)
    out.push_back(kvp.first);
  std::sort(out.begin(), out.end());
  return out;
}

runtime::runtime(registry types, size_t dead_letter_cap,
                 std::unique_ptr<directory> dir)
  : types_(std::move(types)),
    dir_(dir ? std::move(dir) : std::make_unique<local_directory>()),
    dead_cap_(dead_letter_cap) {
  // nop
}

runtime::~runtime() = default;

void runtime::attach_store(std::shared_ptr<store> st, caf::actor writer) {
  ids_.store((st->boots() << 40) + 1);
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
