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

services::services(uint64_t seed, fault_model f, size_t clients)
  : seed_(seed), f_(f) {
  for (auto* name : {"extract", "validate", "enrich", "report"}) {
    requests_[name];
    serve(name, clients);
  }
  servers_.start();
}

services::~services() = default;

std::map<std::string, std::string> services::addresses() const {
  return servers_.addresses();
}

int64_t services::requests() const {
  int64_t n = 0;
  for (auto& [name, k] : requests_)
    n += k.load();
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
  examples::wait_drawn(seed_, name, id, k, range);
}

void services::serve(const std::string& name, size_t clients) {
  auto& count = requests_.at(name);
  auto handler = [this, &count, name](const httplib::Request& req,
                            httplib::Response& res) {
    ++count;
    auto id = req.matches[1].str();
    auto k = nth(name, id);
    auto transient = [&](double p) {
      if (draw(name, id, k, 2) >= p)
        return false;
      res.status = 503;
      json_reply(res, {{"error", name + " service overloaded"}});
      return true;
    };
    if (name == "extract") {
      wait(name, id, k, f_.extract_ms);
      if (transient(f_.extract_errors))
        return;
      json_reply(res, {{"id", id},
                       {"title", "Document " + id.substr(4)},
                       {"pages", 1 + int(draw(name, id, 0, 3) * 40)}});
    } else if (name == "validate") {
      // The document's own property: the same on every attempt.
      bool slow = draw(name, id, 0, 4) < f_.slow_validation;
      wait(name, id, k, slow ? f_.slow_ms : f_.validate_ms);
      if (transient(f_.validate_errors))
        return;
      json_reply(res, {{"valid", true}});
    } else if (name == "enrich") {
      wait(name, id, k, f_.enrich_ms);
      if (transient(f_.enrich_errors))
        return;
      json_reply(res,
                 {{"category", categories[int(draw(name, id, 0, 5) * 4) % 4]},
                  {"counterparty", "Party " + id.substr(4, 2)}});
    } else {
      wait(name, id, k, f_.report_ms);
      // Stored once per key: a retry with the same key is answered again.
      auto key = req.get_header_value("Idempotency-Key");
      bool fresh = true;
      if (!key.empty()) {
        std::lock_guard<std::mutex> g{mtx_};
        fresh = stored_keys_.insert(key).second;
      }
      if (fresh)
        ++reports_;
      json_reply(res, {{"report_id", "R-" + id.substr(4)}});
    }
  };
  auto route = "/" + name + R"(/([A-Z0-9-]+))";
  // A slow validation holds a thread for up to 6 s, also after its caller
  // gave up: 15% of 60 documents a second, for 6 s.
  auto& svr = servers_.add(name, clients + 8 + (name == "validate" ? 64 : 0));
  if (name == "extract")
    svr.Get(route, handler);
  else
    svr.Post(route, handler);
}

} // namespace pipeline
