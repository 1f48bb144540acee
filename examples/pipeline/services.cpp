#include "services.hpp"

#include <chrono>
#include <stdexcept>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "support/example_support.hpp"

namespace pipeline {

namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

void json_reply(httplib::Response& res, const nlohmann::json& body) {
  res.set_content(body.dump(), "application/json");
}

const char* categories[] = {"contract", "invoice", "claim", "statement"};

} // namespace

struct services::server {
  std::string name;
  httplib::Server svr;
  std::thread thread;
  int port = 0;
  std::atomic<int64_t> requests{0};
};

services::services(uint64_t seed, fault_model f) : seed_(seed), f_(f) {
  for (auto* name : {"extract", "validate", "enrich", "report"}) {
    auto s = std::make_unique<server>();
    s->name = name;
    serve(*s);
    s->port = examples::start_server(s->svr, s->thread, s->name);
    servers_.push_back(std::move(s));
  }
}

services::~services() {
  for (auto& s : servers_)
    s->svr.stop();
  for (auto& s : servers_)
    s->thread.join();
}

std::map<std::string, std::string> services::addresses() const {
  std::map<std::string, std::string> out;
  for (auto& s : servers_)
    out[s->name] = "127.0.0.1:" + std::to_string(s->port);
  return out;
}

int64_t services::requests() const {
  int64_t n = 0;
  for (auto& s : servers_)
    n += s->requests;
  return n;
}

int64_t services::reports() const {
  return reports_;
}

double services::draw(const std::string& name, const std::string& id,
                      int64_t k, int salt) const {
  return examples::draw(seed_, name, id, k, salt);
}

int64_t services::nth(const std::string& name, const std::string& id) {
  std::lock_guard<std::mutex> g{mtx_};
  return seen_[name + "/" + id]++;
}

void services::wait(const std::string& name, const std::string& id, int64_t k,
                    const int range[2]) const {
  auto ms = range[0] + int(draw(name, id, k, 1) * (range[1] - range[0] + 1));
  std::this_thread::sleep_for(milliseconds{ms});
}

void services::serve(server& s) {
  auto handler = [this, &s](const httplib::Request& req,
                            httplib::Response& res) {
    ++s.requests;
    auto id = req.matches[1].str();
    auto k = nth(s.name, id);
    auto transient = [&](double p) {
      if (draw(s.name, id, k, 2) >= p)
        return false;
      res.status = 503;
      json_reply(res, {{"error", s.name + " service overloaded"}});
      return true;
    };
    if (s.name == "extract") {
      wait(s.name, id, k, f_.extract_ms);
      if (transient(f_.extract_errors))
        return;
      json_reply(res, {{"id", id},
                       {"title", "Document " + id.substr(4)},
                       {"pages", 1 + int(draw(s.name, id, 0, 3) * 40)}});
    } else if (s.name == "validate") {
      // The document's own property: the same on every attempt.
      bool slow = draw(s.name, id, 0, 4) < f_.slow_validation;
      wait(s.name, id, k, slow ? f_.slow_ms : f_.validate_ms);
      if (transient(f_.validate_errors))
        return;
      json_reply(res, {{"valid", true}});
    } else if (s.name == "enrich") {
      wait(s.name, id, k, f_.enrich_ms);
      if (transient(f_.enrich_errors))
        return;
      json_reply(res,
                 {{"category", categories[int(draw(s.name, id, 0, 5) * 4) % 4]},
                  {"counterparty", "Party " + id.substr(4, 2)}});
    } else {
      wait(s.name, id, k, f_.report_ms);
      ++reports_;
      json_reply(res, {{"report_id", "R-" + id.substr(4)}});
    }
  };
  auto route = "/" + s.name + R"(/([A-Z0-9-]+))";
  if (s.name == "extract")
    s.svr.Get(route, handler);
  else
    s.svr.Post(route, handler);
}

} // namespace pipeline
