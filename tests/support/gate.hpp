#pragma once

// Gates that a test opens and closes: a handler or a store hook waits on
// one, so the test holds a stuck handler or a commit exactly as long as it
// needs, then lets it go. Every wait is bounded, so a test that forgets to
// open a gate fails instead of hanging.

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace vigil::test {

class gate {
public:
  /// Lets every waiter through, now and later, until `close`.
  void open() {
    std::lock_guard<std::mutex> guard{mtx_};
    open_ = true;
    cv_.notify_all();
  }

  void close() {
    std::lock_guard<std::mutex> guard{mtx_};
    open_ = false;
  }

  /// Blocks until the gate is open or `limit` passed; false on the limit.
  bool pass(std::chrono::milliseconds limit = std::chrono::seconds{20}) {
    std::unique_lock<std::mutex> guard{mtx_};
    ++waiting_;
    ++arrived_;
    cv_.notify_all();
    bool ok = cv_.wait_for(guard, limit, [this] { return open_; });
    --waiting_;
    return ok;
  }

  /// Like `pass` for the first thread that ever arrives; every later one
  /// passes at once (a handler stuck once, then replayed by a new owner).
  bool pass_first(std::chrono::milliseconds limit = std::chrono::seconds{20}) {
    {
      std::lock_guard<std::mutex> guard{mtx_};
      if (arrived_ > 0) {
        ++arrived_;
        cv_.notify_all();
        return true;
      }
    }
    return pass(limit);
  }

  /// Waits (bounded) until `n` threads in all have arrived at `pass`.
  bool arrived(int n = 1,
               std::chrono::milliseconds limit = std::chrono::seconds{20}) {
    std::unique_lock<std::mutex> guard{mtx_};
    return cv_.wait_for(guard, limit, [&] { return arrived_ >= n; });
  }

  /// Threads waiting in `pass` now.
  int waiting() {
    std::lock_guard<std::mutex> guard{mtx_};
    return waiting_;
  }

private:
  std::mutex mtx_;
  std::condition_variable cv_;
  bool open_ = false;
  int waiting_ = 0;
  int arrived_ = 0;
};

/// Gates by name, for agents that find theirs through a message field.
class gates {
public:
  static gates& get() {
    static gates inst;
    return inst;
  }

  /// The gate called `name`, made closed on first use (open after
  /// `open_all`).
  gate& at(const std::string& name) {
    std::lock_guard<std::mutex> guard{mtx_};
    auto& g = by_name_[name];
    if (!g) {
      g = std::make_unique<gate>();
      if (all_open_ || name.compare(0, closed_prefix_.size(), closed_prefix_))
        g->open();
    }
    return *g;
  }

  /// From now on, only gates whose name starts with `prefix` start closed;
  /// others (of an earlier run, say) are made open.
  void close_only(std::string prefix) {
    std::lock_guard<std::mutex> guard{mtx_};
    closed_prefix_ = std::move(prefix);
  }

  /// Opens every gate made so far; later ones start closed.
  void open_existing() {
    std::lock_guard<std::mutex> guard{mtx_};
    for (auto& kvp : by_name_)
      kvp.second->open();
  }

  /// Opens every gate, also those made from now on.
  void open_all() {
    std::lock_guard<std::mutex> guard{mtx_};
    all_open_ = true;
    for (auto& kvp : by_name_)
      kvp.second->open();
  }

  /// Opens every gate (so no agent stays blocked) and forgets them.
  void reset() {
    std::lock_guard<std::mutex> guard{mtx_};
    for (auto& kvp : by_name_) {
      kvp.second->open();
      retired_.push_back(std::move(kvp.second));
    }
    by_name_.clear();
    all_open_ = false;
    closed_prefix_.clear();
  }

private:
  std::mutex mtx_;
  bool all_open_ = false;
  std::string closed_prefix_; // "": every new gate starts closed
  std::map<std::string, std::unique_ptr<gate>> by_name_;
  // Opened gates stay alive: a handler may still be waking up in one.
  std::vector<std::unique_ptr<gate>> retired_;
};

} // namespace vigil::test
