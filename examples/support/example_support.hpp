// What the examples with local services share (examples/invoices,
// examples/pipeline): their seeded fault draws, starting a cpp-httplib
// server on a free port of 127.0.0.1, and their policy files, in which
// each ${service} stands for that service's address.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>

#include "vigil/cli/policy.hpp"

namespace examples {

/// splitmix64's finalizer.
inline uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/// FNV-1a.
inline uint64_t hash_of(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s)
    h = (h ^ c) * 1099511628211ull;
  return h;
}

/// A number in [0, 1) fixed by the seed, the service, the document and
/// the k-th request about it, and `salt` (which fault): the same in every
/// run with that seed, whatever the order of the requests.
inline double draw(uint64_t seed, const std::string& service,
                   const std::string& id, int64_t k, int salt) {
  auto h = mix(seed ^ mix(hash_of(service) ^ mix(hash_of(id) + uint64_t(k))
                          + uint64_t(salt)));
  return double(h >> 11) * 0x1.0p-53;
}

/// Sleeps a time drawn (as `draw`, with salt 1) uniformly from `range`
/// milliseconds: a service's latency for that request.
inline void wait_drawn(uint64_t seed, const std::string& service,
                       const std::string& id, int64_t k, const int range[2]) {
  auto d = draw(seed, service, id, k, 1);
  std::this_thread::sleep_for(std::chrono::milliseconds{
    range[0] + int(d * (range[1] - range[0] + 1))});
}

/// Named cpp-httplib servers, each on a free port of 127.0.0.1: add them,
/// register their routes, start them; the destructor stops and joins those
/// started (also when start threw halfway).
class local_services {
public:
  local_services() = default;
  local_services(const local_services&) = delete;
  local_services& operator=(const local_services&) = delete;

  ~local_services() {
    stop();
  }

  /// Stops and joins the servers started (a handler running finishes).
  void stop() {
    for (auto& s : all_)
      if (s->thread.joinable())
        s->svr.stop();
    for (auto& s : all_)
      if (s->thread.joinable())
        s->thread.join();
  }

  /// A new server named `name` with `threads` threads, to register routes
  /// on before start(). A kept-alive connection holds one of them as long
  /// as it is open (and a request that waits, a slow scan, holds one):
  /// give it more than the connections its clients keep.
  httplib::Server& add(const std::string& name, size_t threads = 32) {
    all_.push_back(std::make_unique<one>());
    all_.back()->name = name;
    all_.back()->svr.new_task_queue = [threads] {
      return new httplib::ThreadPool(threads);
    };
    return all_.back()->svr;
  }

  /// Binds each server to a free port of 127.0.0.1, serves it on a thread
  /// of its own, and waits until it listens. Throws, naming the server.
  void start() {
    for (auto& s : all_) {
      s->svr.set_keep_alive_max_count(1u << 30);
      s->svr.set_tcp_nodelay(true);
      s->port = s->svr.bind_to_any_port("127.0.0.1");
      if (s->port <= 0)
        throw std::runtime_error("the " + s->name
                                 + " service cannot bind a port of "
                                   "127.0.0.1");
      auto* svr = &s->svr;
      s->thread = std::thread{[svr] { svr->listen_after_bind(); }};
      auto until = std::chrono::steady_clock::now() + std::chrono::seconds{10};
      while (!svr->is_running() && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(std::chrono::milliseconds{1});
      if (!svr->is_running())
        throw std::runtime_error("the " + s->name + " service did not start");
    }
  }

  /// "127.0.0.1:PORT" of each, by name.
  std::map<std::string, std::string> addresses() const {
    std::map<std::string, std::string> out;
    for (auto& s : all_)
      out[s->name] = "127.0.0.1:" + std::to_string(s->port);
    return out;
  }

private:
  struct one {
    std::string name;
    httplib::Server svr;
    std::thread thread;
    int port = 0;
  };
  std::vector<std::unique_ptr<one>> all_;
};

/// The policy file at `path` with each ${name} of `addresses` replaced by
/// its address. Throws if it cannot be read.
inline std::string policy_text(const std::string& path,
                               const std::map<std::string, std::string>& addresses) {
  std::ifstream in{path};
  if (!in)
    throw std::runtime_error("cannot read " + path
                             + " (run from the checkout, or pass "
                               "--policy-dir)");
  std::stringstream ss;
  ss << in.rdbuf();
  auto text = ss.str();
  for (auto& [name, at] : addresses) {
    auto token = "${" + name + "}";
    for (auto p = text.find(token); p != std::string::npos;
         p = text.find(token, p + at.size()))
      text.replace(p, token.size(), at);
  }
  return text;
}

/// The policy file at `path` for services at `addresses` (see
/// policy_text), loaded against `types`; prints every problem (file, line,
/// column) and exits with 2 if there is any.
inline vigil::cli::loaded_policy
load_policy(const std::string& path,
            const std::map<std::string, std::string>& addresses,
            const vigil::registry& types) {
  vigil::cli::loaded_policy lp;
  auto errors = vigil::cli::load_policy_text(policy_text(path, addresses),
                                             path, types, lp);
  for (auto& e : errors)
    std::cerr << e.to_string() << "\n";
  if (!errors.empty())
    std::exit(2);
  return lp;
}

} // namespace examples
