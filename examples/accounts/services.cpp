#include "services.hpp"

#include <chrono>
#include <thread>

#include <httplib.h>
#include <nlohmann/json.hpp>

namespace accounts {

services::services(uint64_t seed, fault_model f) : seed_(seed), f_(f) {
  serve("users", "delete");
  serve("subscriptions", "cancel");
  serve("email", nullptr);
  servers_.start();
}

services::~services() {
  servers_.stop();
}

std::map<std::string, std::string> services::addresses() const {
  return servers_.addresses();
}

service_figures services::figures(const std::string& service) const {
  std::lock_guard<std::mutex> g{mtx_};
  auto i = figures_.find(service);
  return i == figures_.end() ? service_figures{} : i->second;
}

bool services::email_refused(const std::string& account) const {
  return examples::draw(seed_, "email-refused", account, 0, 4)
         < f_.email_refused;
}

// POST /NAME/ID creates (or sends); POST /NAME/ID/UNDO undoes. A request's
// faults are drawn from the seed, the service, the operation, the account
// and how many requests about them came before.
void services::serve(const std::string& name, const char* undo) {
  // Threads for every connection the tools keep open (16 per tool, two
  // tools per service).
  auto& svr = servers_.add(name, 48);
  {
    std::lock_guard<std::mutex> g{mtx_};
    figures_[name];
  }
  auto handle = [this, name](const std::string& id, bool undoing,
                             const httplib::Request& req,
                             httplib::Response& res) {
    auto op = name + (undoing ? "/undo" : "/do");
    auto key = req.get_header_value("Idempotency-Key");
    int64_t k = 0;
    {
      std::lock_guard<std::mutex> g{mtx_};
      ++figures_[name].requests;
      k = seen_[op + "/" + id]++;
    }
    examples::wait_drawn(seed_, op, id, k, f_.latency_ms);
    auto transient = [&](int salt, double share) {
      return k < 2 && examples::draw(seed_, op, id, k, salt) < share;
    };
    std::lock_guard<std::mutex> g{mtx_};
    auto& fig = figures_[name];
    if (transient(2, f_.fail_before)) {
      ++fig.faults;
      res.status = 503;
      res.set_content(R"({"error":"unavailable, try again"})",
                      "application/json");
      return;
    }
    auto& store = keys_[name];
    if (!key.empty()) {
      if (auto i = store.find(key); i != store.end()) {
        ++fig.repeats;
        res.status = i->second.status;
        res.set_content(i->second.body, "application/json");
        return;
      }
    }
    auto& acct = fig.accounts[id];
    kept answer;
    if (name == "email" && email_refused(id)) {
      ++acct.refused;
      answer.status = 422;
      answer.body = R"({"error":"no such mailbox: )" + id + R"("})";
    } else {
      ++(undoing ? acct.undone : acct.created);
      const char* status = undoing ? (name == "users" ? "deleted" : "cancelled")
                           : name == "email" ? "sent"
                                             : "active";
      answer.status = 200;
      answer.body = nlohmann::json{{"id", name + "-" + id}, {"status", status}}
                      .dump();
    }
    if (!key.empty())
      store[key] = answer;
    if (answer.status == 200 && transient(3, f_.lose_answer)) {
      ++fig.faults; // applied, and the answer is lost
      res.status = 503;
      res.set_content(R"({"error":"unavailable, try again"})",
                      "application/json");
      return;
    }
    res.status = answer.status;
    res.set_content(answer.body, "application/json");
  };
  svr.Post("/" + name + "/([A-Za-z0-9-]+)",
           [handle](const httplib::Request& req, httplib::Response& res) {
             handle(req.matches[1], false, req, res);
           });
  if (undo != nullptr)
    svr.Post("/" + name + "/([A-Za-z0-9-]+)/" + undo,
             [handle](const httplib::Request& req, httplib::Response& res) {
               handle(req.matches[1], true, req, res);
             });
}

} // namespace accounts
