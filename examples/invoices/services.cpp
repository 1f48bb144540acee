#include "services.hpp"

#include <cstdio>
#include <random>
#include <sstream>
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

services::services(const std::vector<invoice_truth>& batch, uint64_t seed,
                   fault_model f)
  : batch_(batch), seed_(seed), f_(f) {
  for (size_t i = 0; i < batch_.size(); ++i)
    by_id_[batch_[i].id] = i;
  for (auto* name : {"ocr", "ocr_careful", "validate", "match", "ledger"})
    counts_[name];
  serve_ocr("ocr", false);
  serve_ocr("ocr_careful", true);
  serve_validate();
  serve_match();
  serve_ledger();
  servers_.start();
  start_run();
}

services::~services() {
  servers_.stop();
  if (ledger_ != nullptr)
    std::fclose(ledger_);
}

std::map<std::string, std::string> services::addresses() const {
  return servers_.addresses();
}

void services::start_run() {
  run_start_ms_ = now_ms();
}

const service_counts& services::counts(const std::string& name) const {
  auto i = counts_.find(name);
  if (i == counts_.end())
    throw std::out_of_range("no service " + name);
  return i->second;
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
  examples::wait_drawn(seed_, name, id, k, range);
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

void services::serve_ocr(const std::string& name, bool careful) {
  auto& c = counts_.at(name);
  servers_.add(name, 128).Get(R"(/ocr/([A-Z0-9-]+))", [this, &c, name, careful](
                                        const httplib::Request& req,
                                        httplib::Response& res) {
    ++c.requests;
    auto id = req.matches[1].str();
    auto k = nth(name, id);
    auto* t = find(id);
    if (t == nullptr)
      return error_reply(res, 404, "no scan " + id);
    if (!careful) {
      auto since = now_ms() - run_start_ms_.load();
      if (since >= f_.outage_ms[0] && since < f_.outage_ms[1]) {
        ++c.errors;
        return error_reply(res, 503, "OCR engine unavailable");
      }
    }
    if (draw(name, id, k, 2) < f_.ocr_errors) {
      ++c.errors;
      return error_reply(res, 503, "OCR worker busy");
    }
    if (t->poor) {
      if (!careful) { // the quick engine grinds on it, past any timeout
        ++c.timeouts;
        wait(name, id, k, f_.poor_ms);
        return error_reply(res, 504, "scan too poor to read in time");
      }
      wait(name, id, k, f_.careful_poor_ms);
      if (t->unreadable)
        return error_reply(res, 422, "unreadable scan");
    } else {
      wait(name, id, k, careful ? f_.careful_ms : f_.ocr_ms);
    }
    if (draw(name, id, k, 3) < f_.corrupt) {
      ++c.corrupt;
      return corrupt_reply(res);
    }
    json_reply(res, {{"id", id},
                     {"vendor", t->vendor},
                     {"amount_cents", t->amount_read},
                     {"po_ref", t->po_ref}});
  });
}

void services::serve_validate() {
  auto& c = counts_.at("validate");
  servers_.add("validate").Post(R"(/validate/([A-Z0-9-]+))", [this, &c](
                                             const httplib::Request& req,
                                             httplib::Response& res) {
    ++c.requests;
    auto id = req.matches[1].str();
    auto k = nth(std::string{"validate"}, id);
    wait(std::string{"validate"}, id, k, f_.validate_ms);
    if (draw(std::string{"validate"}, id, k, 2) < f_.validate_errors) {
      ++c.errors;
      return error_reply(res, 503, "validation backend overloaded");
    }
    if (draw(std::string{"validate"}, id, k, 3) < f_.corrupt) {
      ++c.corrupt;
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

void services::serve_match() {
  auto& c = counts_.at("match");
  auto handler = [this, &c](bool suggest) {
    return [this, &c, suggest](const httplib::Request& req,
                               httplib::Response& res) {
      ++c.requests;
      auto id = req.get_param_value("invoice");
      auto ref = req.matches[1].str();
      auto k = nth(std::string{"match"}, id + (suggest ? "/s" : ""));
      auto since = now_ms() - run_start_ms_.load();
      if (since >= f_.match_outage_ms[0] && since < f_.match_outage_ms[1]) {
        ++c.errors;
        return error_reply(res, 503, "ERP down for maintenance");
      }
      wait(std::string{"match"}, id, k, f_.match_ms);
      if (draw(std::string{"match"}, id, k, suggest ? 4 : 2) < f_.match_errors) {
        ++c.errors;
        return error_reply(res, 503, "ERP connection pool exhausted");
      }
      if (draw(std::string{"match"}, id, k, suggest ? 5 : 3) < f_.corrupt) {
        ++c.corrupt;
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
  auto& svr = servers_.add("match", 64); // two tools' connections
  svr.Get(R"(/po/exact/([^/]+))", handler(false));
  svr.Get(R"(/po/suggest/([^/]+))", handler(true));
}

void services::serve_ledger() {
  auto& c = counts_.at("ledger");
  servers_.add("ledger", 64).Post(R"(/entries/([A-Z0-9-]+))", [this, &c](
                                            const httplib::Request& req,
                                            httplib::Response& res) {
    ++c.requests;
    auto id = req.matches[1].str();
    auto key = req.get_header_value("Idempotency-Key");
    auto k = nth(std::string{"ledger"}, id);
    wait(std::string{"ledger"}, id, k, f_.ledger_ms);
    auto fault = draw(std::string{"ledger"}, id, k, 2);
    if (fault < f_.ledger_errors / 2) { // before posting
      ++c.errors;
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
        posted_.push_back(id);
        if (ledger_ != nullptr) {
          std::fprintf(ledger_, "%s\t%s\t%s\n", key.c_str(), id.c_str(),
                       entry.c_str());
          std::fflush(ledger_);
        }
      }
    }
    if (replay)
      ++replayed_;
    if (fault < f_.ledger_errors) { // posted, but the answer is lost
      ++c.errors;
      return error_reply(res, 503, "ledger gateway reset");
    }
    json_reply(res, {{"entry_id", entry}, {"replayed", replay}});
  });
}

void services::open_ledger(const std::string& file) {
  std::lock_guard<std::mutex> g{mtx_};
  entry_by_key_.clear();
  keys_by_id_.clear();
  posted_.clear();
  seen_.clear();
  replayed_ = 0;
  if (ledger_ != nullptr)
    std::fclose(ledger_);
  ledger_ = std::fopen(file.c_str(), "a+");
  if (ledger_ == nullptr)
    throw std::runtime_error("cannot open the ledger file " + file);
  std::rewind(ledger_);
  char line[512];
  while (std::fgets(line, sizeof line, ledger_) != nullptr) {
    std::istringstream in{line};
    std::string key, id, entry;
    if (!std::getline(in, key, '\t') || !std::getline(in, id, '\t')
        || !std::getline(in, entry, '\n'))
      continue; // a line cut short by a kill: its entry was not answered
    keys_by_id_[id].push_back(key);
    if (!key.empty())
      entry_by_key_[key] = entry;
  }
}

size_t services::entries() const {
  std::lock_guard<std::mutex> g{mtx_};
  return posted_.size();
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

std::vector<std::string> services::posted_ids() const {
  std::lock_guard<std::mutex> g{mtx_};
  return posted_;
}

} // namespace invoices
