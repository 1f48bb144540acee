// The invoice example's outside world: a generated batch of invoices, and
// the services the agents call, each a real cpp-httplib server on
// 127.0.0.1 with its own latency, transient errors and corrupt replies,
// all drawn from the batch's seed (see the fault model in README.md,
// "Invoice processing").
#pragma once

#include <atomic>
#include <cstdio>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "support/example_support.hpp"

namespace invoices {

/// The fault model, fixed before the first run (README.md states it).
struct fault_model {
  double poor_scan = 0.08;   ///< scans on which the quick OCR times out
  double unreadable = 0.25;  ///< of those, the careful OCR cannot read either
  double amount_off = 0.01;  ///< amounts read that differ from the lines' sum
  double inexact_ref = 0.10; ///< PO references that do not match exactly
  double confident = 0.70;   ///< of those, the best suggestion scores >= 0.9
  double ocr_errors = 0.03;  ///< transient errors (503) of each service
  double validate_errors = 0.02;
  double match_errors = 0.02;
  double ledger_errors = 0.02; ///< half of them after the entry is posted
  double corrupt = 0.005;      ///< replies cut short (not JSON)
  /// Latencies, uniform in [lo, hi] milliseconds.
  int ocr_ms[2] = {30, 90};
  int poor_ms[2] = {1500, 3000}; ///< the quick OCR on a poor scan
  int careful_ms[2] = {150, 300};
  int careful_poor_ms[2] = {500, 1200};
  int validate_ms[2] = {5, 20};
  int match_ms[2] = {10, 30};
  int ledger_ms[2] = {10, 40};
  /// Outages (503 at once) during these windows of each run, in ms from
  /// the run's start: the quick OCR, then the matching service.
  int outage_ms[2] = {3000, 4000};
  int match_outage_ms[2] = {6000, 6500};
};

/// One invoice's truth, drawn from the seed.
struct invoice_truth {
  std::string id;
  int64_t lines_cents = 0;
  int64_t amount_read = 0; ///< what OCR reads (differs if amount_off)
  std::string vendor;
  std::string po_ref;      ///< as printed on the invoice
  std::string po;          ///< the real purchase order
  bool poor = false;
  bool unreadable = false;
  bool exact = true;
  double best_score = 1.0; ///< the best suggestion's score, if not exact
};

std::vector<invoice_truth> make_batch(size_t n, uint64_t seed,
                                      const fault_model& f);

/// Counts of what the services saw, for the report and the tests.
struct service_counts {
  std::atomic<int64_t> requests{0};
  std::atomic<int64_t> errors{0};   ///< transient errors and outage
  std::atomic<int64_t> corrupt{0};
  std::atomic<int64_t> timeouts{0}; ///< poor scans answered too late
};

/// The five services: quick OCR, careful OCR (a second vendor, slower),
/// validation, PO matching (exact and suggestions), accounting. Started by
/// the constructor on free ports of 127.0.0.1, stopped by the destructor.
class services {
public:
  services(const std::vector<invoice_truth>& batch, uint64_t seed,
           fault_model f);
  ~services();
  services(const services&) = delete;
  services& operator=(const services&) = delete;

  /// "127.0.0.1:PORT" of each: ocr, ocr_careful, validate, match, ledger.
  std::map<std::string, std::string> addresses() const;

  /// Starts a run's clock (the outage window counts from here).
  void start_run();

  /// Starts the ledger afresh from `file` (its entries, one line each:
  /// key, invoice id, entry id), to which every new entry is appended: the
  /// ledger keeps its entries and keys across processes, as a real one
  /// does, so that an effect sent again with its key after a restart is
  /// answered from the store. Throws if the file cannot be opened.
  void open_ledger(const std::string& file);

  /// Entries posted by this process; invoices with entries under two keys
  /// (double postings, in the file too); repeats answered by their key.
  size_t entries() const;
  size_t double_postings() const;
  int64_t replayed_keys() const;
  /// The invoices this process posted an entry for, in order.
  std::vector<std::string> posted_ids() const;

  const service_counts& counts(const std::string& name) const;

private:
  void serve_ocr(const std::string& name, bool careful);
  void serve_validate();
  void serve_match();
  void serve_ledger();
  /// The fault draw for the k-th request about `id` at `name`, in [0, 1).
  double draw(const std::string& name, const std::string& id, int64_t k,
              int salt) const;
  int64_t nth(const std::string& name, const std::string& id);
  const invoice_truth* find(const std::string& id) const;
  void wait(const std::string& name, const std::string& id, int64_t k,
            const int range[2]) const;

  const std::vector<invoice_truth>& batch_;
  std::map<std::string, size_t> by_id_;
  uint64_t seed_;
  fault_model f_;
  std::map<std::string, service_counts> counts_;
  std::atomic<int64_t> run_start_ms_{0};
  mutable std::mutex mtx_;
  std::map<std::string, int64_t> seen_; ///< requests per service and id
  std::map<std::string, std::string> entry_by_key_;
  std::map<std::string, std::vector<std::string>> keys_by_id_;
  std::vector<std::string> posted_;
  std::FILE* ledger_ = nullptr;
  std::atomic<int64_t> replayed_{0};
  /// Last: stopped first, while what its handlers use still exists.
  examples::local_services servers_;
};

} // namespace invoices
