#include "vigil/actors/dead_letter_log.hpp"

#include <caf/all.hpp>

#include "durable.hpp"
#include "vigil/actors/writer.hpp"

namespace vigil {

void dead_letter_log::add(std::string path, envelope env, std::string reason,
                          bool persist, bool journal) {
  if (writer_ && persist)
    caf::anon_send(
      writer_, write_atom::value, uint64_t{0},
      owned_write{{}, detail::dead_letter_item(path, env, reason, journal)});
  counters::bump(stats_.dead_letters);
  // The code a reason starts with: its leading run of [a-z0-9_].
  std::string_view code{reason};
  size_t n = 0;
  while (n < code.size()
         && ((code[n] >= 'a' && code[n] <= 'z')
             || (code[n] >= '0' && code[n] <= '9') || code[n] == '_'))
    ++n;
  code = n > 0 ? code.substr(0, n) : std::string_view{"other"};
  std::lock_guard<std::mutex> guard{mtx_};
  if (auto i = reasons_.find(code); i != reasons_.end())
    ++i->second;
  else if (reasons_.size() < max_reasons)
    reasons_.emplace(std::string{code}, 1);
  else
    ++reasons_["other"];
  if (cap_ == 0 || letters_.size() >= cap_) {
    ++dropped_;
    counters::bump(stats_.dead_letters_dropped);
    if (letters_.empty())
      return;
    letters_.pop_front();
  }
  dead_letter dl;
  dl.seq = ++seq_;
  dl.path = std::move(path);
  dl.env = std::move(env);
  dl.reason = std::move(reason);
  letters_.push_back(std::move(dl));
}

std::vector<dead_letter> dead_letter_log::snapshot() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return {letters_.begin(), letters_.end()};
}

size_t dead_letter_log::size() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return letters_.size();
}

std::map<std::string, uint64_t> dead_letter_log::by_reason() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return {reasons_.begin(), reasons_.end()};
}

size_t dead_letter_log::dropped() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return dropped_;
}

} // namespace vigil
