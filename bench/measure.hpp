// What every bench binary shares: its one JSON line, the CAF settings of its
// raw baselines, and the process's RSS and CPU time.
#pragma once

#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <utility>

#include <caf/all.hpp>

namespace vigil::bench {

/// CAF scheduler threads on both sides of every case.
constexpr size_t threads = 2;

/// One run of one case on one implementation.
struct result {
  std::string name;
  std::string impl;
  double value = 0;
  std::string unit;
  std::map<std::string, double> params;
};

/// Prints `r` as the one JSON line bench/run reads.
inline void print(const result& r) {
  std::ostringstream os;
  os << "{\"name\":\"" << r.name << "\",\"impl\":\"" << r.impl
     << "\",\"value\":" << r.value << ",\"unit\":\"" << r.unit
     << "\",\"params\":{";
  bool first = true;
  for (auto& kvp : r.params) {
    os << (first ? "" : ",") << "\"" << kvp.first << "\":" << kvp.second;
    first = false;
  }
  os << ",\"threads\":" << threads << "}}";
  std::cout << os.str() << std::endl;
}

/// A fresh data dir build/bench-data/PREFIX<pid> (a real disk, not tmpfs),
/// removed with everything in it on destruction.
struct data_dir {
  std::string path;
  explicit data_dir(const std::string& prefix) {
    path = "build/bench-data/" + prefix + std::to_string(getpid());
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
    // Owner-only, as vigil makes its own (else every start warns).
    std::filesystem::permissions(path, std::filesystem::perms::owner_all);
  }
  ~data_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  data_dir(const data_dir&) = delete;
  data_dir& operator=(const data_dir&) = delete;
};

/// Prints "PROG: WHAT" on stderr and exits with 1.
[[noreturn]] inline void die(const char* prog, const std::string& what) {
  std::cerr << prog << ": " << what << "\n";
  std::exit(1);
}

/// The raw CAF baselines' settings: as a vigil node's.
class raw_config : public caf::actor_system_config {
public:
  raw_config() {
    set("scheduler.max-threads", threads);
    set("scheduler.policy", caf::atom("sharing"));
    set("logger.console", caf::atom("none"));
  }
};

/// Resident set size of this process in bytes (from /proc).
inline double rss_bytes() {
  std::ifstream in{"/proc/self/status"};
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0)
      return std::stod(line.substr(6)) * 1024.0;
  return 0;
}

/// CPU time of the whole process (every thread), in ns.
inline double process_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/// CPU time of this process's threads in ns (clock ticks: 10 ms), split
/// into {the tool pools' threads (named "t:..."), the others}.
inline std::pair<double, double> thread_cpu_ns() {
  static const double tick = 1e9 / double(sysconf(_SC_CLK_TCK));
  double pool = 0, rest = 0;
  auto* dir = opendir("/proc/self/task");
  if (dir == nullptr)
    return {0, 0};
  while (auto* e = readdir(dir)) {
    if (e->d_name[0] == '.')
      continue;
    std::ifstream in{std::string{"/proc/self/task/"} + e->d_name + "/stat"};
    std::string line;
    if (!std::getline(in, line))
      continue;
    // "tid (comm) state ..." with utime and stime the 14th and 15th fields;
    // comm may hold spaces and parentheses, so it ends at the last ')'.
    auto open = line.find('('), close = line.rfind(')');
    if (open == std::string::npos || close == std::string::npos)
      continue;
    auto comm = line.substr(open + 1, close - open - 1);
    std::istringstream fields{line.substr(close + 2)};
    std::string field;
    double ut = 0, st = 0;
    for (int i = 3; i <= 15 && fields >> field; ++i) {
      if (i == 14)
        ut = std::stod(field);
      else if (i == 15)
        st = std::stod(field);
    }
    (comm.rfind("t:", 0) == 0 ? pool : rest) += (ut + st) * tick;
  }
  closedir(dir);
  return {pool, rest};
}

} // namespace vigil::bench
