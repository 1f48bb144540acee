#pragma once

// A counting HTTP service for tests: a real cpp-httplib server (http, or
// https with a given certificate) on 127.0.0.1 at an ephemeral port, on its
// own thread, stopped by its destructor. Per route (an exact path, or a
// prefix written "/items/*"), it
// answers from a script of answers, then fails at a rate drawn from a seed,
// then asks the route's responder; each answer may come after a delay. It
// records every request it executes: its method, path, query, headers and
// body, its Idempotency-Key and the status it got, so that a test asserts
// "executed at most once per key" (and that a retry reused its key, or that
// a secret header arrived) from the service's own records.
//
// Every member is thread-safe; the handlers run on the server's threads.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <httplib.h>

namespace vigil::test {

/// One answer of the service.
struct http_answer {
  int status = 200;
  std::string body;
  std::string content_type = "application/json";
  /// The Retry-After header, if not empty ("2", or an HTTP-date).
  std::string retry_after;
  /// How long the service takes before it answers (released early when
  /// the server stops).
  std::chrono::milliseconds delay{0};
};

class counting_http_server {
public:
  using responder = std::function<http_answer(const httplib::Request&)>;

  /// One request the service executed.
  struct record {
    std::string method;
    std::string path; ///< decoded, without the query
    std::string target; ///< as sent: path and query, encoded
    std::string body;
    httplib::Headers headers;
    std::string key; ///< Idempotency-Key, or empty
    int status = 0;
    std::chrono::steady_clock::time_point at; ///< when it arrived
    std::string header(const std::string& name) const {
      auto i = headers.find(name);
      return i != headers.end() ? i->second : std::string{};
    }
  };

  /// Plain HTTP.
  counting_http_server() : svr_(std::make_unique<httplib::Server>()) {
    start();
  }

  /// HTTPS, with the PEM certificate chain and key at these paths.
  counting_http_server(const std::string& cert_file,
                       const std::string& key_file)
    : svr_(std::make_unique<httplib::SSLServer>(cert_file.c_str(),
                                                key_file.c_str())),
      https_(true) {
    if (!svr_->is_valid())
      throw std::runtime_error("counting_http_server: bad certificate or key");
    start();
  }

  ~counting_http_server() {
    {
      std::lock_guard<std::mutex> guard{mtx_};
      stopping_ = true;
    }
    cv_.notify_all();
    svr_->stop();
    thread_.join();
  }

  counting_http_server(const counting_http_server&) = delete;
  counting_http_server& operator=(const counting_http_server&) = delete;

  int port() const {
    return port_;
  }

  /// "http://127.0.0.1:PORT" + path (https for an https server).
  std::string url(const std::string& path = "") const {
    return std::string{https_ ? "https" : "http"} + "://127.0.0.1:"
           + std::to_string(port_) + path;
  }

  // -- behaviour --------------------------------------------------------------

  /// Answers requests to `path` (exact, or a prefix "/items/*") with `r`
  /// (a path of no route: 404).
  void route(const std::string& path, responder r) {
    std::lock_guard<std::mutex> guard{mtx_};
    routes_[path].respond = std::move(r);
  }

  /// The next requests to `path` get these answers, in order, before the
  /// failure rate and the responder have their say.
  void script(const std::string& path, std::vector<http_answer> answers) {
    std::lock_guard<std::mutex> guard{mtx_};
    auto& s = routes_[path].script;
    s.insert(s.end(), answers.begin(), answers.end());
  }

  /// Every answer of `path` comes `d` later (after the script's own delay).
  void latency(const std::string& path, std::chrono::milliseconds d) {
    std::lock_guard<std::mutex> guard{mtx_};
    routes_[path].latency = d;
  }

  /// Past its script, `path` answers `failure` with probability `rate`,
  /// drawn from a generator seeded with `seed`: the same run every time.
  void failures(const std::string& path, double rate, uint64_t seed,
                http_answer failure = {503, R"({"error":"unavailable"})"}) {
    std::lock_guard<std::mutex> guard{mtx_};
    auto& r = routes_[path];
    r.failure_rate = rate;
    r.rng.seed(seed);
    r.failure = std::move(failure);
  }

  // -- records ----------------------------------------------------------------

  std::vector<record> requests() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return records_;
  }

  size_t count() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return records_.size();
  }

  /// Executions of requests that carried Idempotency-Key `key`.
  size_t executions(const std::string& key) const {
    std::lock_guard<std::mutex> guard{mtx_};
    auto i = per_key_.find(key);
    return i != per_key_.end() ? i->second : 0;
  }

  /// Keys applied: each key's first execution applies it.
  size_t applied() const {
    std::lock_guard<std::mutex> guard{mtx_};
    return per_key_.size();
  }

  /// The most executions of any one key (1: none was executed twice).
  size_t max_executions_per_key() const {
    std::lock_guard<std::mutex> guard{mtx_};
    size_t m = 0;
    for (auto& [k, n] : per_key_)
      m = std::max(m, n);
    return m;
  }

  /// Waits until `n` requests were executed or `limit` passed.
  bool wait_for_count(size_t n, std::chrono::milliseconds limit) const {
    std::unique_lock<std::mutex> guard{mtx_};
    return cv_.wait_for(guard, limit, [&] { return records_.size() >= n; });
  }

private:
  struct route_state {
    responder respond;
    std::vector<http_answer> script;
    std::chrono::milliseconds latency{0};
    double failure_rate = 0.0;
    std::mt19937_64 rng;
    http_answer failure;
  };

  void start() {
    // A connection holds a server thread while it is kept alive: room for
    // every pool thread of the tests and bench, and no forced reconnects.
    svr_->new_task_queue = [] { return new httplib::ThreadPool(64); };
    svr_->set_keep_alive_max_count(1000000);
    // An idle connection holds its thread, and stop() waits for it, until
    // this timeout: short, so that a client still open ends it soon.
    svr_->set_keep_alive_timeout(2);
    svr_->set_tcp_nodelay(true);
    auto handler = [this](const httplib::Request& req, httplib::Response& res) {
      handle(req, res);
    };
    svr_->Get(".*", handler);
    svr_->Post(".*", handler);
    svr_->Put(".*", handler);
    svr_->Patch(".*", handler);
    svr_->Delete(".*", handler);
    // Bound and listening from here: connections wait in the backlog
    // until the thread accepts them.
    port_ = svr_->bind_to_any_port("127.0.0.1");
    if (port_ <= 0)
      throw std::runtime_error("counting_http_server: cannot bind");
    thread_ = std::thread{[this] { svr_->listen_after_bind(); }};
    // stop() does nothing before the server runs: wait for it (bounded).
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds{10};
    while (!svr_->is_running() && std::chrono::steady_clock::now() < until)
      std::this_thread::yield();
    if (!svr_->is_running())
      throw std::runtime_error("counting_http_server: did not start");
  }

  // The exact route, else the longest prefix route ("/items/*").
  std::map<std::string, route_state>::iterator
  find_route(const std::string& path) {
    auto i = routes_.find(path);
    if (i != routes_.end())
      return i;
    auto best = routes_.end();
    for (auto j = routes_.begin(); j != routes_.end(); ++j) {
      auto& k = j->first;
      if (!k.empty() && k.back() == '*'
          && path.compare(0, k.size() - 1, k, 0, k.size() - 1) == 0
          && (best == routes_.end() || k.size() > best->first.size()))
        best = j;
    }
    return best;
  }

  void handle(const httplib::Request& req, httplib::Response& res) {
    http_answer a{404, R"({"error":"no route"})"};
    std::chrono::milliseconds delay{0};
    {
      std::lock_guard<std::mutex> guard{mtx_};
      auto i = find_route(req.path);
      if (i != routes_.end()) {
        auto& r = i->second;
        if (!r.script.empty()) {
          a = r.script.front();
          r.script.erase(r.script.begin());
        } else if (r.failure_rate > 0.0
                   && std::bernoulli_distribution{r.failure_rate}(r.rng)) {
          a = r.failure;
        } else if (r.respond) {
          a = r.respond(req);
        }
        delay = r.latency;
      }
      record rec;
      rec.method = req.method;
      rec.path = req.path;
      rec.target = req.target;
      rec.body = req.body;
      rec.headers = req.headers;
      rec.key = req.get_header_value("Idempotency-Key");
      rec.status = a.status;
      rec.at = std::chrono::steady_clock::now();
      if (!rec.key.empty())
        ++per_key_[rec.key];
      records_.push_back(std::move(rec));
    }
    cv_.notify_all();
    delay += a.delay;
    if (delay.count() > 0) {
      std::unique_lock<std::mutex> guard{mtx_};
      cv_.wait_for(guard, delay, [this] { return stopping_; });
    }
    res.status = a.status;
    if (!a.retry_after.empty())
      res.set_header("Retry-After", a.retry_after);
    if (!a.body.empty())
      res.set_content(a.body, a.content_type.c_str());
  }

  std::unique_ptr<httplib::Server> svr_;
  bool https_ = false;
  int port_ = 0;
  std::thread thread_;
  mutable std::mutex mtx_;
  mutable std::condition_variable cv_;
  bool stopping_ = false;
  std::map<std::string, route_state> routes_;
  std::vector<record> records_;
  std::map<std::string, size_t> per_key_;
};

} // namespace vigil::test
