// /metrics, /healthz and /readyz on one cpp-httplib server.

#include <arpa/inet.h>
#include <netinet/in.h>

#include <charconv>
#include <future>
#include <shared_mutex>
#include <sstream>
#include <thread>

#include <httplib.h>
#include <prometheus/text_serializer.h>

#include "vigil/metrics/exporter.hpp"

namespace vigil::metrics {

bool parse_address(std::string_view address, std::string& host,
                   uint16_t& port, std::string& error) {
  auto fail = [&](const std::string& why) {
    error = "metrics address \"" + std::string{address} + "\": " + why
            + " (write IP:PORT, e.g. 127.0.0.1:9464 or [::1]:9464; port 0 "
              "takes a free one)";
    return false;
  };
  std::string_view h, p;
  if (!address.empty() && address.front() == '[') {
    auto close = address.find(']');
    if (close == std::string_view::npos)
      return fail("an IPv6 address needs its closing ]");
    h = address.substr(1, close - 1);
    if (close + 1 >= address.size() || address[close + 1] != ':')
      return fail("no port after the address");
    p = address.substr(close + 2);
  } else {
    auto colon = address.rfind(':');
    if (colon == std::string_view::npos)
      return fail("no port");
    h = address.substr(0, colon);
    if (h.find(':') != std::string_view::npos)
      return fail("an IPv6 address goes in brackets");
    p = address.substr(colon + 1);
  }
  if (h.empty())
    return fail("no host");
  // An address of this machine, as a literal: nothing to resolve, and
  // nothing `vigil check` passes that `vigil run` cannot listen on.
  std::string hs{h};
  unsigned char buf[sizeof(in6_addr)];
  if (hs != "localhost" && ::inet_pton(AF_INET, hs.c_str(), buf) != 1
      && ::inet_pton(AF_INET6, hs.c_str(), buf) != 1)
    return fail("\"" + hs + "\" is not an IP address");
  unsigned v = 0;
  auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), v);
  if (p.empty() || ec != std::errc{} || end != p.data() + p.size()
      || v > 65535)
    return fail("the port is not a number from 0 to 65535");
  host = hs == "localhost" ? "127.0.0.1" : hs;
  port = static_cast<uint16_t>(v);
  return true;
}

struct endpoint::impl {
  httplib::Server server;
  /// Open while the endpoint lives: a handler runs the checks and reads
  /// the node only under it (shared), and the destructor closes it
  /// (exclusive), so that a request still in a server thread after the
  /// endpoint went touches nothing of the node.
  std::shared_mutex gate;
  bool open = true;
  std::promise<void> ended_promise;
  std::vector<std::shared_ptr<prometheus::Collectable>> sources;
  health_checks checks;
  std::string host;
  uint16_t port = 0;
  std::thread thread;
  std::atomic<bool> ended{false};
  std::future<void> ended_future;

  std::string scrape() const {
    std::vector<prometheus::MetricFamily> all;
    for (auto& s : sources) {
      auto fs = s->Collect();
      all.insert(all.end(), std::make_move_iterator(fs.begin()),
                 std::make_move_iterator(fs.end()));
    }
    std::ostringstream out;
    prometheus::TextSerializer{}.Serialize(out, all);
    return out.str();
  }
};

std::unique_ptr<endpoint>
endpoint::start(std::string_view address,
                std::vector<std::shared_ptr<prometheus::Collectable>> sources,
                health_checks checks, std::string& error) {
  auto p = std::make_unique<impl>();
  if (!parse_address(address, p->host, p->port, error))
    return nullptr;
  p->sources = std::move(sources);
  p->checks = std::move(checks);
  auto* self = p.get();
  // A few threads, not a pool the size of the machine next to the node's
  // own; one request per connection (no keep-alive), so that a scraper's
  // idle connection does not hold a thread that a probe needs; a client
  // that sends nothing is dropped after 1 s, one that stops mid-request
  // after 2 s.
  p->server.new_task_queue = [] { return new httplib::ThreadPool(8); };
  p->server.set_keep_alive_max_count(1);
  p->server.set_keep_alive_timeout(1);
  p->server.set_read_timeout(2, 0);
  p->server.set_write_timeout(5, 0);
  // Only GET: anything else is answered before its body is read, and the
  // connection closes.
  p->server.set_pre_routing_handler(
    [](const httplib::Request& req, httplib::Response& res) {
      if (req.method == "GET" || req.method == "HEAD")
        return httplib::Server::HandlerResponse::Unhandled;
      res.status = 405;
      res.set_header("Allow", "GET");
      res.set_content("only GET\n", "text/plain");
      return httplib::Server::HandlerResponse::Handled;
    });
  // Nothing here takes a body: one that says it is larger is refused
  // before it is read.
  p->server.set_payload_max_length(64 * 1024);
  p->server.Get("/metrics", [self](const httplib::Request&,
                                   httplib::Response& res) {
    std::shared_lock<std::shared_mutex> lk{self->gate};
    if (!self->open) {
      res.status = 503;
      res.set_content("the node is gone\n", "text/plain");
      return;
    }
    res.set_content(self->scrape(), "text/plain; version=0.0.4; charset=utf-8");
  });
  auto probe = [self](const std::function<std::string()>& check) {
    return [self, check](const httplib::Request&, httplib::Response& res) {
      std::shared_lock<std::shared_mutex> lk{self->gate};
      auto why = !self->open ? std::string{"the node is gone"}
                 : check     ? check()
                             : std::string{};
      if (why.empty()) {
        res.set_content("ok\n", "text/plain");
      } else {
        res.status = 503;
        res.set_content(why + "\n", "text/plain");
      }
    };
  };
  p->server.Get("/healthz", probe(p->checks.live));
  p->server.Get("/readyz", probe(p->checks.ready));
  if (p->port == 0) {
    auto port = p->server.bind_to_any_port(p->host);
    if (port <= 0) {
      error = "metrics address " + std::string{address}
              + ": cannot listen on " + p->host
              + " (is it an address of this machine?)";
      return nullptr;
    }
    p->port = static_cast<uint16_t>(port);
  } else if (!p->server.bind_to_port(p->host, p->port)) {
    error = "metrics address " + std::string{address}
            + ": cannot listen there (port in use, or not an address of "
              "this machine): choose another in node.metrics";
    return nullptr;
  }
  auto ended = p->ended_promise.get_future();
  // The thread owns the state (a shared_ptr): a server thread still
  // reading from a slow client when the endpoint goes keeps it alive,
  // behind the closed gate, instead of holding up the node's end.
  std::shared_ptr<impl> keep = std::move(p);
  keep->thread = std::thread{[keep] {
    keep->server.listen_after_bind();
    keep->ended = true;
    keep->ended_promise.set_value();
  }};
  keep->ended_future = std::move(ended);
  // stop() does nothing until the loop runs: wait for it, so that an
  // endpoint destroyed at once still ends.
  while (!keep->server.is_running() && !keep->ended)
    std::this_thread::sleep_for(std::chrono::milliseconds{1});
  return std::unique_ptr<endpoint>{new endpoint(std::move(keep))};
}

endpoint::endpoint(std::shared_ptr<impl> p) : impl_(std::move(p)) {
  // nop
}

endpoint::~endpoint() {
  {
    // Waits for the handlers running now (a scrape, a probe: at most the
    // live check's second); later ones find the gate closed.
    std::unique_lock<std::shared_mutex> lk{impl_->gate};
    impl_->open = false;
  }
  impl_->server.stop(); // the port is free from here
  // The server's threads end once their connections do. One that a slow
  // client holds is left to end on its own, with the state it owns.
  if (impl_->ended_future.wait_for(std::chrono::milliseconds{500})
      == std::future_status::ready)
    impl_->thread.join();
  else
    impl_->thread.detach();
}

uint16_t endpoint::port() const noexcept {
  return impl_->port;
}

std::string endpoint::address() const {
  auto h = impl_->host.find(':') != std::string::npos
             ? "[" + impl_->host + "]"
             : impl_->host;
  return h + ":" + std::to_string(impl_->port);
}

std::string endpoint::scrape() const {
  return impl_->scrape();
}

} // namespace vigil::metrics
