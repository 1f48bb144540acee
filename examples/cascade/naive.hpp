// The cascade example's naive run: N threads ("instances") of a document
// agent written the usual way, each taking the next task from the task
// table, inserting its record, sending its webhook and counting it in a
// shared JSON config file, with retries at three layers and no
// idempotency keys (README.md, "The cascade at 100 instances").
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>

#include "services.hpp"

namespace cascade {

struct naive_options {
  size_t documents = 0;
  size_t instances = 0;
  /// The shared config file, {"documents_processed": N, ...}.
  std::string config;
  /// The run fails (`finished` false) if it has not ended by then.
  std::chrono::steady_clock::time_point deadline;
};

/// What the instances counted; the services count the rest.
struct naive_figures {
  bool finished = false;
  double elapsed_s = 0;
  int64_t attempts_failed = 0; ///< agent-loop attempts that threw
  int64_t torn_reads = 0;      ///< config reads that did not parse
  int64_t increments = 0;      ///< config writes that returned no error
  /// The config file at the end: documents_processed in its first JSON
  /// value, and whether the whole file parses.
  int64_t final_count = 0;
  bool file_parses = false;
  std::string file_text;
  /// Failed attempts by what failed: "records: 503 after 9 calls", ...
  std::map<std::string, int64_t> errors;
};

/// Writes the config file with documents_processed 0, then runs the
/// instances against `svc` until the task table is empty or the deadline
/// passes; prints progress to stderr once a second. Throws if the config
/// file cannot be written at the start.
naive_figures run_naive(const naive_options& o, services& svc);

} // namespace cascade
