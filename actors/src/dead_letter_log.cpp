#include "vigil/actors/dead_letter_log.hpp"

#include <caf/all.hpp>

#include "durable.hpp"
#include "vigil/actors/report.hpp"
#include "vigil/actors/writer.hpp"

namespace vigil {

namespace {

/// The code a reason starts with: its leading run of [a-z0-9_].
std::string_view code_of(std::string_view reason) {
  size_t n = 0;
  while (n < reason.size()
         && ((reason[n] >= 'a' && reason[n] <= 'z')
             || (reason[n] >= '0' && reason[n] <= '9') || reason[n] == '_'))
    ++n;
  return n > 0 ? reason.substr(0, n) : std::string_view{"other"};
}

} // namespace

void dead_letter_log::persist(const dead_letter& dl, bool journal) {
  if (writer_)
    caf::anon_send(writer_, write_atom::value, uint64_t{0},
                   owned_write{{},
                               detail::dead_letter_item(dl.path, dl.env,
                                                        dl.reason, journal,
                                                        dl.repeats)});
}

void dead_letter_log::keep(dead_letter dl) {
  {
    // Reported as it is kept: a shed burst is a few samples and one
    // letter that counts the rest, not a line per envelope.
    auto code = code_of(dl.reason);
    bool shed = code == "overloaded";
    std::string_view path = dl.path;
    auto slash = path.rfind('/');
    emit(report{shed ? "shed" : "dead_letter",
                slash == path.npos ? "" : path.substr(0, slash),
                shed ? "overloaded" : "dead_letter", dl.reason, path,
                dl.repeats, &dl.env});
  }
  if (cap_ == 0 || letters_.size() >= cap_) {
    ++dropped_;
    counters::bump(stats_.dead_letters_dropped);
    if (letters_.empty())
      return;
    count_current(letters_.front().reason, -1);
    letters_.pop_front();
  }
  dl.seq = ++seq_;
  count_current(dl.reason, 1);
  letters_.push_back(std::move(dl));
}

void dead_letter_log::count_current(std::string_view reason, int64_t n) {
  auto code = code_of(reason);
  auto i = current_.find(code);
  if (i == current_.end()) {
    if (current_.size() >= max_reasons)
      i = current_.try_emplace("other", 0).first;
    else
      i = current_.emplace(std::string{code}, 0).first;
  }
  i->second += n;
}

std::map<std::string, int64_t> dead_letter_log::current_by_reason() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return {current_.begin(), current_.end()};
}

void dead_letter_log::close(burst& b,
                            std::vector<std::pair<dead_letter, bool>>& out) {
  if (b.counted > 0) {
    b.last.repeats = b.counted - 1;
    out.emplace_back(std::move(b.last), b.journal);
    b.last = dead_letter{};
  }
  b.kept = 0;
  b.counted = 0;
}

void dead_letter_log::add(std::string path, envelope env, std::string reason,
                          bool persist_it, bool journal) {
  counters::bump(stats_.dead_letters);
  dead_letter dl;
  dl.path = std::move(path);
  dl.env = std::move(env);
  dl.reason = std::move(reason);
  auto code = code_of(dl.reason); // (a view of dl.reason: moves come last)
  std::vector<std::pair<dead_letter, bool>> out; // to keep and write
  {
    std::lock_guard<std::mutex> guard{mtx_};
    if (auto i = reasons_.find(code); i != reasons_.end())
      ++i->second;
    else if (reasons_.size() < max_reasons)
      reasons_.emplace(std::string{code}, 1);
    else
      ++reasons_["other"];
    // Only shed envelopes are rate-limited: they were refused, never
    // accepted, and a flood of them must not become a flood of writes.
    // Every other letter may be replayed, so each keeps its envelope.
    if (!persist_it) {
      keep(std::move(dl));
      return;
    }
    auto now = clock::now();
    if (code == "overloaded") {
      std::string key;
      key.reserve(dl.env.sender.size() + dl.path.size() + 2);
      key.append(dl.env.sender).push_back('\0');
      key.append(dl.path);
      auto i = bursts_.find(key);
      if (i == bursts_.end()) {
        i = bursts_.emplace(std::move(key), burst{}).first;
        i->second.start = now;
      } else if (now - i->second.start >= std::chrono::seconds{1}) {
        close(i->second, out);
        i->second.start = now;
      }
      auto& b = i->second;
      if (b.kept < samples_per_second) {
        ++b.kept;
        out.emplace_back(std::move(dl), journal);
      } else {
        ++b.counted;
        b.last = std::move(dl);
        b.journal = journal;
      }
    } else {
      out.emplace_back(std::move(dl), journal);
    }
    if (now >= next_sweep_ && !bursts_.empty())
      sweep_locked(now, out);
    for (auto& [letter, _] : out)
      keep(letter);
  }
  for (auto& [letter, j] : out)
    persist(letter, j);
}

void dead_letter_log::sweep_locked(
  clock::time_point now, std::vector<std::pair<dead_letter, bool>>& out) {
  // Bursts whose second has passed: their counts are kept now, and the
  // idle ones leave.
  next_sweep_ = now + std::chrono::seconds{1};
  for (auto j = bursts_.begin(); j != bursts_.end();) {
    if (now - j->second.start < std::chrono::seconds{1}) {
      ++j;
      continue;
    }
    bool idle = j->second.counted == 0;
    close(j->second, out);
    j = idle ? bursts_.erase(j) : std::next(j);
  }
}

void dead_letter_log::sweep() {
  std::vector<std::pair<dead_letter, bool>> out;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    if (bursts_.empty())
      return;
    sweep_locked(clock::now(), out);
    for (auto& [letter, _] : out)
      keep(letter);
  }
  for (auto& [letter, j] : out)
    persist(letter, j);
}

void dead_letter_log::flush() {
  std::vector<std::pair<dead_letter, bool>> out;
  {
    std::lock_guard<std::mutex> guard{mtx_};
    for (auto& [_, b] : bursts_)
      close(b, out);
    bursts_.clear();
    for (auto& [letter, _] : out)
      keep(letter);
  }
  for (auto& [letter, j] : out)
    persist(letter, j);
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
