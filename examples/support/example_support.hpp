// What the examples with local services share (examples/invoices,
// examples/pipeline): their seeded fault draws, starting a cpp-httplib
// server on a free port of 127.0.0.1, and their policy files, in which
// each ${service} stands for that service's address.
#pragma once

#include <chrono>
#include <cstdint>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>

#include <httplib.h>

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

/// Binds `svr` to a free port of 127.0.0.1, serves it on `thread`, and
/// waits until it listens; returns the port. Throws, naming `name`.
inline int start_server(httplib::Server& svr, std::thread& thread,
                        const std::string& name) {
  // A call that waits (a slow scan, a slow validation) holds a thread:
  // plenty of them.
  svr.new_task_queue = [] { return new httplib::ThreadPool(256); };
  svr.set_keep_alive_max_count(1u << 30);
  svr.set_tcp_nodelay(true);
  int port = svr.bind_to_any_port("127.0.0.1");
  if (port <= 0)
    throw std::runtime_error("the " + name
                             + " service cannot bind a port of 127.0.0.1");
  thread = std::thread{[&svr] { svr.listen_after_bind(); }};
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds{10};
  while (!svr.is_running() && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds{1});
  if (!svr.is_running())
    throw std::runtime_error("the " + name + " service did not start");
  return port;
}

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

} // namespace examples
