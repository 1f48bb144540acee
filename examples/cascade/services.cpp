#include "services.hpp"

#include <chrono>
#include <cstdio>
#include <thread>

#include <httplib.h>
#include <nlohmann/json.hpp>

namespace cascade {

namespace {

using nlohmann::json;

void json_reply(httplib::Response& res, const json& body) {
  res.set_content(body.dump(), "application/json");
}

void unavailable(httplib::Response& res, const std::string& name) {
  res.status = 503;
  json_reply(res, {{"error", name + " unavailable"}});
}

} // namespace

std::string doc_id(size_t i) {
  char b[32];
  std::snprintf(b, sizeof b, "DOC-%04zu", i + 1);
  return b;
}

services::services(uint64_t seed, fault_model f, size_t documents,
                   size_t threads)
  : seed_(seed), f_(f), threads_(threads) {
  records_.name = "records";
  records_.ms = f_.records_ms;
  hooks_.name = "hooks";
  hooks_.ms = f_.hooks_ms;
  for (size_t i = 0; i < documents; ++i) {
    tasks_.push_back({doc_id(i)});
    task_index_[tasks_.back().id] = i;
  }
  serve_sink(records_);
  serve_sink(hooks_);
  serve_tasks();
  servers_.start();
}

services::~services() = default;

std::map<std::string, std::string> services::addresses() const {
  return servers_.addresses();
}

sink_figures services::records() const {
  return figures(records_);
}

sink_figures services::hooks() const {
  return figures(hooks_);
}

sink_figures services::figures(const sink& s) const {
  std::lock_guard<std::mutex> g{s.mtx};
  sink_figures out;
  out.requests = s.requests;
  out.stored = s.total;
  out.distinct = static_cast<int64_t>(s.stored.size());
  out.by_key = s.by_key;
  return out;
}

table_figures services::tasks() const {
  std::lock_guard<std::mutex> g{tasks_mtx_};
  table_figures out;
  out.requests = task_requests_;
  for (auto& t : tasks_) {
    out.claims += t.claims;
    out.claimed_twice += t.claims > 1;
    out.done += t.done_once;
    out.in_progress += t.status == task::in_progress;
  }
  return out;
}

void services::reset() {
  for (auto* s : {&records_, &hooks_}) {
    std::lock_guard<std::mutex> g{s->mtx};
    s->requests = 0;
    s->seen.clear();
    s->stored.clear();
    s->keys.clear();
    s->total = 0;
    s->by_key = 0;
  }
  std::lock_guard<std::mutex> g{tasks_mtx_};
  task_requests_ = 0;
  for (auto& t : tasks_)
    t = task{t.id};
  oldest_pending_ = 0;
}

void services::serve_sink(sink& s) {
  // POST /records/{id} (/hooks/{id}) with a JSON body: stores one record
  // (one delivery) per request, or answers a repeat of an Idempotency-Key
  // with the key's first answer. The faults come first (refused), then the
  // store, then the lost or late answer: a caller that sees a 503 or a
  // timeout cannot tell whether it was stored.
  auto handler = [this, &s](const httplib::Request& req,
                            httplib::Response& res) {
    ++s.requests;
    auto id = req.matches[1].str();
    int64_t k = 0;
    {
      std::lock_guard<std::mutex> g{s.mtx};
      k = s.seen[id]++;
    }
    examples::wait_drawn(seed_, s.name, id, k, s.ms);
    auto body = json::parse(req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object()) {
      res.status = 400;
      json_reply(res, {{"error", "the body is not a JSON object"}});
      return;
    }
    auto u = examples::draw(seed_, s.name, id, k, 2);
    if (u < f_.refused)
      return unavailable(res, s.name);
    auto key = req.get_header_value("Idempotency-Key");
    json answer;
    {
      std::lock_guard<std::mutex> g{s.mtx};
      auto seen = key.empty() ? s.keys.end() : s.keys.find(key);
      if (seen != s.keys.end()) {
        ++s.by_key;
        answer = json::parse(seen->second);
      } else {
        auto n = ++s.stored[id];
        ++s.total;
        answer = s.name == "records"
                   ? json{{"record_id", id + "-" + std::to_string(n)}}
                   : json{{"received", true}};
        if (!key.empty())
          s.keys.emplace(key, answer.dump());
      }
    }
    if (u < f_.refused + f_.answer_lost)
      return unavailable(res, s.name);
    if (u < f_.refused + f_.answer_lost + f_.answer_late) {
      auto d = examples::draw(seed_, s.name, id, k, 3);
      std::this_thread::sleep_for(std::chrono::milliseconds{
        f_.late_ms[0] + int(d * (f_.late_ms[1] - f_.late_ms[0] + 1))});
    }
    json_reply(res, answer);
  };
  auto& svr = servers_.add(s.name, threads_);
  svr.Post("/" + s.name + R"(/([A-Z0-9-]+))", handler);
}

void services::serve_tasks() {
  // The naive task table: the oldest pending task, a claim that sets a
  // task in progress whatever it was (no condition: the time-of-check to
  // time-of-use race), and done.
  auto wait = [this](const std::string& what) {
    auto k = ++task_requests_;
    examples::wait_drawn(seed_, "tasks", what, k, f_.tasks_ms);
  };
  auto& svr = servers_.add("tasks", threads_);
  svr.Get("/tasks/next", [this, wait](const httplib::Request&,
                                      httplib::Response& res) {
    wait("next");
    std::lock_guard<std::mutex> g{tasks_mtx_};
    while (oldest_pending_ < tasks_.size()
           && tasks_[oldest_pending_].status != task::pending)
      ++oldest_pending_;
    if (oldest_pending_ == tasks_.size()) {
      res.status = 204;
      return;
    }
    json_reply(res, {{"id", tasks_[oldest_pending_].id},
                     {"status", "pending"}});
  });
  auto set = [this, wait](const httplib::Request& req, httplib::Response& res,
                          bool done) {
    auto id = req.matches[1].str();
    wait(id);
    std::lock_guard<std::mutex> g{tasks_mtx_};
    auto i = task_index_.find(id);
    if (i == task_index_.end()) {
      res.status = 404;
      json_reply(res, {{"error", "no task " + id}});
      return;
    }
    auto& t = tasks_[i->second];
    if (done) {
      t.status = task::done;
      t.done_once = true;
    } else {
      t.status = task::in_progress;
      ++t.claims;
    }
    json_reply(res, {{"id", id}, {"status", done ? "done" : "in_progress"}});
  };
  svr.Post(R"(/tasks/([A-Z0-9-]+)/claim)",
           [set](const httplib::Request& req, httplib::Response& res) {
             set(req, res, false);
           });
  svr.Post(R"(/tasks/([A-Z0-9-]+)/done)",
           [set](const httplib::Request& req, httplib::Response& res) {
             set(req, res, true);
           });
}

} // namespace cascade
