#include "services.hpp"

#include <cstdio>
#include <random>
#include <stdexcept>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "support/example_support.hpp"

namespace invoices {

namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

int64_t now_ms() {
  return std::chrono::duration_cast<milliseconds>(
           steady_clock::now().time_since_epoch())
    .count();
}

const char* vendors[] = {"Acme Freight",  "Nordic Pallets", "Blue Harbor",
                         "Delta Fuel",    "Orion Tyres",    "Kestrel Haulage",
                         "Summit Storage", "Vega Customs"};

} // namespace

std::vector<invoice_truth> make_batch(size_t n, uint64_t seed,
                                      const fault_model& f) {
  std::mt19937_64 rng{seed};
  std::uniform_real_distribution<double> u{0.0, 1.0};
  std::vector<invoice_truth> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    invoice_truth t;
    char id[32];
    std::snprintf(id, sizeof id, "INV-%05zu", i + 1);
    t.id = id;
    t.lines_cents = 5000 + static_cast<int64_t>(u(rng) * 2'000'000);
    t.amount_read = t.lines_cents;
    if (u(rng) < f.amount_off)
      t.amount_read += 100 * (1 + static_cast<int64_t>(u(rng) * 90));
    t.vendor = vendors[static_cast<size_t>(u(rng) * 8) % 8];
    char po[32];
    std::snprintf(po, sizeof po, "PO-%06d",
                  100000 + static_cast<int>(u(rng) * 800000));
    t.po = po;
    t.po_ref = t.po;
    t.poor = u(rng) < f.poor_scan;
    t.unreadable = t.poor && u(rng) < f.unreadable;
    t.exact = u(rng) >= f.inexact_ref;
    if (!t.exact) {
      // As printed: a digit dropped, or a prefix the ERP does not use.
      t.po_ref = u(rng) < 0.5 ? t.po.substr(0, t.po.size() - 1)
                              : "P.O. " + t.po.substr(3);
      t.best_score = u(rng) < f.confident ? 0.90 + u(rng) * 0.09
                                          : 0.40 + u(rng) * 0.45;
    }
    out.push_back(std::move(t));
  }
  return out;
}

struct services::server {
  std::string name;
  httplib::Server svr;
  std::thread thread;
  int port = 0;
  service_counts counts;
};

services::services(const std::vector<invoice_truth>& batch, uint64_t seed,
                   fault_model f)
  : batch_(batch), seed_(seed), f_(f) {
  for (size_t i = 0; i < batch_.size(); ++i)
    by_id_[batch_[i].id] = i;
  for (auto* name : {"ocr", "ocr_careful", "validate", "match", "ledger"}) {
    auto s = std::make_unique<server>();
    s->name = name;
    servers_.push_back(std::move(s));
  }
  serve_ocr(*servers_[0], false);
  serve_ocr(*servers_[1], true);
  serve_validate(*servers_[2]);
  serve_match(*servers_[3]);
  serve_ledger(*servers_[4]);
  for (auto& s : servers_)
    s->port = examples::start_server(s->svr, s->thread, s->name);
  start_run();
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

void services::start_run() {
  run_start_ms_ = now_ms();
}

const service_counts& services::counts(const std::string& name) const {
  for (auto& s : servers_)
    if (s->name == name)
      return s->counts;
  throw std::out_of_range("no service " + name);
}

double services::draw(const std::string& name, const std::string& id,
                      int64_t k, int salt) const {
  return examples::draw(seed_, name, id, k, salt);
}

int64_t services::nth(const std::string& name, const std::string& id) {
  std::lock_guard<std::mutex> g{mtx_};
  return seen_[name + "/" + id]++;
}

const invoice_truth* services::find(const std::string& id) const {
  auto i = by_id_.find(id);
  return i == by_id_.end() ? nullptr : &batch_[i->second];
}

void services::wait(const std::string& name, const std::string& id, int64_t k,
                    const int range[2]) const {
  auto ms = range[0] + int(draw(name, id, k, 1) * (range[1] - range[0] + 1));
  std::this_thread::sleep_for(milliseconds{ms});
}

namespace {

void json_reply(httplib::Response& res, const nlohmann::json& body) {
  res.set_content(body.dump(), "application/json");
}

void error_reply(httplib::Response& res, int status, const std::string& why) {
  res.status = status;
  json_reply(res, {{"error", why}});
}

/// A reply cut short: what a proxy or a crashed worker leaves.
void corrupt_reply(httplib::Response& res) {
  res.set_content("{\"vendor\": \"Acme", "application/json");
}

} // namespace

void services::serve_ocr(server& s, bool careful) {
  s.svr.Get(R"(/ocr/([A-Z0-9-]+))", [this, &s, careful](
                                        const httplib::Request& req,
                                        httplib::Response& res) {
    ++s.counts.requests;
    auto id = req.matches[1].str();
    auto k = nth(s.name, id);
    auto* t = find(id);
    if (t == nullptr)
      return error_reply(res, 404, "no scan " + id);
    if (!careful) {
      auto since = now_ms() - run_start_ms_.load();
      if (since >= f_.outage_ms[0] && since < f_.outage_ms[1]) {
        ++s.counts.errors;
        return error_reply(res, 503, "OCR engine unavailable");
      }
    }
    if (draw(s.name, id, k, 2) < f_.ocr_errors) {
      ++s.counts.errors;
      return error_reply(res, 503, "OCR worker busy");
    }
    if (t->poor) {
      if (!careful) { // the quick engine grinds on it, past any timeout
        ++s.counts.timeouts;
        wait(s.name, id, k, f_.poor_ms);
        return error_reply(res, 504, "scan too poor to read in time");
      }
      wait(s.name, id, k, f_.careful_poor_ms);
      if (t->unreadable)
        return error_reply(res, 422, "unreadable scan");
    } else {
      wait(s.name, id, k, careful ? f_.careful_ms : f_.ocr_ms);
    }
    if (draw(s.name, id, k, 3) < f_.corrupt) {
      ++s.counts.corrupt;
      return corrupt_reply(res);
    }
    json_reply(res, {{"id", id},
                     {"vendor", t->vendor},
                     {"amount_cents", t->amount_read},
                     {"po_ref", t->po_ref}});
  });
}

void services::serve_validate(server& s) {
  s.svr.Post(R"(/validate/([A-Z0-9-]+))", [this, &s](
                                             const httplib::Request& req,
                                             httplib::Response& res) {
    ++s.counts.requests;
    auto id = req.matches[1].str();
    auto k = nth(s.name, id);
    wait(s.name, id, k, f_.validate_ms);
    if (draw(s.name, id, k, 2) < f_.validate_errors) {
      ++s.counts.errors;
      return error_reply(res, 503, "validation backend overloaded");
    }
    if (draw(s.name, id, k, 3) < f_.corrupt) {
      ++s.counts.corrupt;
      return corrupt_reply(res);
    }
    auto body = nlohmann::json::parse(req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object())
      return error_reply(res, 400, "the body is not a JSON object");
    auto num = [&](const char* k) -> int64_t {
      auto i = body.find(k);
      if (i == body.end())
        return 0;
      if (i->is_string()) // protobuf's JSON writes int64 as a string
        return std::stoll(i->get<std::string>());
      return i->is_number() ? i->get<int64_t>() : 0;
    };
    auto amount = num("amount_cents");
    auto lines = num("lines_cents");
    if (amount != lines)
      return json_reply(res, {{"ok", false},
                              {"reason", "amount " + std::to_string(amount)
                                           + " differs from the lines' sum "
                                           + std::to_string(lines)}});
    json_reply(res, {{"ok", true}});
  });
}

void services::serve_match(server& s) {
  auto handler = [this, &s](bool suggest) {
    return [this, &s, suggest](const httplib::Request& req,
                               httplib::Response& res) {
      ++s.counts.requests;
      auto id = req.get_param_value("invoice");
      auto ref = req.matches[1].str();
      auto k = nth(s.name, id + (suggest ? "/s" : ""));
      wait(s.name, id, k, f_.match_ms);
      if (draw(s.name, id, k, suggest ? 4 : 2) < f_.match_errors) {
        ++s.counts.errors;
        return error_reply(res, 503, "ERP connection pool exhausted");
      }
      if (draw(s.name, id, k, suggest ? 5 : 3) < f_.corrupt) {
        ++s.counts.corrupt;
        return corrupt_reply(res);
      }
      auto* t = find(id);
      if (t == nullptr)
        return error_reply(res, 404, "no invoice " + id);
      if (!suggest) {
        if (ref != t->po || !t->exact)
          return error_reply(res, 404, "no purchase order " + ref);
        return json_reply(res, {{"po", t->po}, {"score", 1.0}, {"exact", true}});
      }
      json_reply(res, {{"po", t->po},
                       {"score", t->exact ? 1.0 : t->best_score},
                       {"exact", t->exact}});
    };
  };
  s.svr.Get(R"(/po/exact/([^/]+))", handler(false));
  s.svr.Get(R"(/po/suggest/([^/]+))", handler(true));
}

void services::serve_ledger(server& s) {
  s.svr.Post(R"(/entries/([A-Z0-9-]+))", [this, &s](
                                            const httplib::Request& req,
                                            httplib::Response& res) {
    ++s.counts.requests;
    auto id = req.matches[1].str();
    auto key = req.get_header_value("Idempotency-Key");
    auto k = nth(s.name, id);
    wait(s.name, id, k, f_.ledger_ms);
    auto fault = draw(s.name, id, k, 2);
    if (fault < f_.ledger_errors / 2) { // before posting
      ++s.counts.errors;
      return error_reply(res, 503, "ledger locked by a batch job");
    }
    std::string entry;
    bool replay = false;
    {
      std::lock_guard<std::mutex> g{mtx_};
      auto i = key.empty() ? entry_by_key_.end() : entry_by_key_.find(key);
      if (i != entry_by_key_.end()) {
        entry = i->second;
        replay = true;
      } else {
        entry = "E-" + id.substr(4) + "-"
                + std::to_string(keys_by_id_[id].size() + 1);
        keys_by_id_[id].push_back(key);
        if (!key.empty())
          entry_by_key_[key] = entry;
      }
    }
    if (replay)
      ++replayed_;
    if (fault < f_.ledger_errors) { // posted, but the answer is lost
      ++s.counts.errors;
      return error_reply(res, 503, "ledger gateway reset");
    }
    json_reply(res, {{"entry_id", entry}, {"replayed", replay}});
  });
}

size_t services::entries() const {
  std::lock_guard<std::mutex> g{mtx_};
  return keys_by_id_.size();
}

size_t services::double_postings() const {
  std::lock_guard<std::mutex> g{mtx_};
  size_t n = 0;
  for (auto& [id, keys] : keys_by_id_)
    n += keys.size() > 1 ? 1 : 0;
  return n;
}

int64_t services::replayed_keys() const {
  return replayed_.load();
}

bool services::posted(const std::string& id) const {
  std::lock_guard<std::mutex> g{mtx_};
  return keys_by_id_.count(id) > 0;
}

std::vector<std::string> services::posted_ids() const {
  std::lock_guard<std::mutex> g{mtx_};
  std::vector<std::string> out;
  for (auto& [id, keys] : keys_by_id_)
    out.push_back(id);
  return out;
}

void services::clear_entries() {
  std::lock_guard<std::mutex> g{mtx_};
  entry_by_key_.clear();
  keys_by_id_.clear();
  seen_.clear();
  replayed_ = 0;
}

} // namespace invoices
