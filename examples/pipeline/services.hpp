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
#include <string>
#include <thread>
#include <vector>

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
  services(uint64_t seed, fault_model f);
  ~services();
  services(const services&) = delete;
  services& operator=(const services&) = delete;

  /// "127.0.0.1:PORT" of each: extract, validate, enrich, report.
  std::map<std::string, std::string> addresses() const;
  int64_t requests() const;
  int64_t reports() const;

private:
  struct server;
  double draw(const std::string& name, const std::string& id, int64_t k,
              int salt) const;
  int64_t nth(const std::string& name, const std::string& id);
  void wait(const std::string& name, const std::string& id, int64_t k,
            const int range[2]) const;
  void serve(server& s);

  uint64_t seed_;
  fault_model f_;
  std::vector<std::unique_ptr<server>> servers_;
  std::mutex mtx_;
  std::map<std::string, int64_t> seen_;
  std::atomic<int64_t> reports_{0};
};

} // namespace pipeline
