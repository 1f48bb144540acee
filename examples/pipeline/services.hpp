// The document pipeline's services: extraction, validation, enrichment
// and report, each a real cpp-httplib server on 127.0.0.1 with its own
// latency and transient errors, drawn from the seed; validation is slow on
// a share of the documents (README.md, "A document pipeline without
// cascades").
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "support/example_support.hpp"

namespace pipeline {

struct fault_model {
  double slow_validation = 0.15; ///< documents on which validation is slow
  int slow_ms[2] = {2000, 6000}; ///< ... and how slow
  double extract_errors = 0.01;  ///< transient errors (503)
  double validate_errors = 0.01;
  double enrich_errors = 0.03;
  int extract_ms[2] = {20, 60};
  int validate_ms[2] = {10, 30};
  int enrich_ms[2] = {30, 80};
  int report_ms[2] = {5, 15};
};

/// The four services, started on free ports by the constructor and stopped
/// by the destructor. Each counts its requests; the report service keeps
/// the reports stored.
class services {
public:
  /// `clients`: the connections each service may see at once (the plain
  /// pipeline's threads and the tools' calls in flight).
  services(uint64_t seed, fault_model f, size_t clients);
  ~services();
  services(const services&) = delete;
  services& operator=(const services&) = delete;

  /// "127.0.0.1:PORT" of each: extract, validate, enrich, report.
  std::map<std::string, std::string> addresses() const;
  int64_t requests() const;
  /// Reports stored: one per idempotency key (a plain request, with none,
  /// is one each).
  int64_t reports() const;

private:
  double draw(const std::string& name, const std::string& id, int64_t k,
              int salt) const;
  int64_t nth(const std::string& name, const std::string& id);
  void wait(const std::string& name, const std::string& id, int64_t k,
            const int range[2]) const;
  void serve(const std::string& name, size_t clients);

  uint64_t seed_;
  fault_model f_;
  std::map<std::string, std::atomic<int64_t>> requests_;
  std::mutex mtx_;
  std::map<std::string, int64_t> seen_;
  std::set<std::string> stored_keys_;
  std::atomic<int64_t> reports_{0};
  /// Last: stopped first, while what its handlers use still exists.
  examples::local_services servers_;
};

} // namespace pipeline
