// Invoice processing, policies off and on, against real local services:
// the case study of the recovery-patterns document (78% -> 96%),
// reproduced. README.md, "The main job", says what it shows.
//
//   invoice_demo run [--invoices 2000] [--seed 7] [--rate 250]
//                [--data-dir build/invoice-data] [--mode both|on|off]
//   invoice_demo resume --data-dir DIR [--wait 30]
//                      [--expect 1]
//       starts the policies-on node again on DIR (after `vigil approvals
//       approve ID --data-dir DIR/on`) and waits until the approved
//       invoices are posted
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fcntl.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include "agents.hpp"
#include "invoices/invoices.pb.h"
#include "services.hpp"
#include "support/example_support.hpp"
#include "vigil/cli/policy.hpp"
#include "vigil/node/node.hpp"
#include "vigil/tools/http.hpp"

#ifndef INVOICES_POLICY_DIR
#define INVOICES_POLICY_DIR "examples/policies"
#endif

namespace {

using namespace std::chrono_literals;
using std::chrono::steady_clock;
namespace fs = std::filesystem;

struct options {
  size_t invoices = 2000;
  uint64_t seed = 7;
  double rate = 250;       ///< invoices arriving per second
  size_t in_flight = 256;  ///< at most this many waiting for an outcome
  std::string data_dir = "build/invoice-data";
  std::string mode = "both";
  std::string policy_dir = INVOICES_POLICY_DIR;
  double wait_s = 30;
  size_t expect = 1; ///< resume: entries to wait for
  std::string metrics; ///< host:port of each node's /metrics, if set
  bool replace = false; ///< run: replace the data dirs of an earlier run
  std::string report; ///< a JSON file of the figures, if set
};

/// What one run gave.
struct run_stats {
  std::string mode;
  size_t n = 0;
  size_t done = 0;
  size_t degraded = 0;
  size_t review = 0;
  size_t failed = 0;
  std::map<std::string, size_t> why; // failures and reviews, by stage
  std::map<std::string, std::string> example; // the first reason of each
  std::vector<double> ms;            // time to an outcome, each invoice
  double elapsed_s = 0;
  size_t entries = 0;
  size_t double_postings = 0;
  int64_t replayed_keys = 0;
  int64_t requests = 0;

  double share(size_t k) const {
    return n == 0 ? 0 : 100.0 * double(k) / double(n);
  }
  double mean_ms() const {
    double s = 0;
    for (auto x : ms)
      s += x;
    return ms.empty() ? 0 : s / double(ms.size());
  }
  double p99_ms() const {
    if (ms.empty())
      return 0;
    auto v = ms;
    auto k = static_cast<size_t>(std::ceil(0.99 * double(v.size()))) - 1;
    std::nth_element(v.begin(), v.begin() + long(k), v.end());
    return v[k];
  }
  double per_minute() const {
    return elapsed_s <= 0 ? 0 : double(done) * 60.0 / elapsed_s;
  }
};

vigil::registry make_types() {
  vigil::registry types;
  invoices::add_agents(types);
  return types;
}

/// Loads FILE for `addr` onto a node with data dir `dir`; exits on errors.
std::unique_ptr<vigil::node> start_node(const std::string& file,
                                        const invoices::services& svc,
                                        const std::string& dir,
                                        std::string& root,
                                        const std::string& metrics = {}) {
  auto types = make_types();
  auto lp = examples::load_policy(file, svc.addresses(), types);
  lp.node.data_dir = dir;
  if (!metrics.empty())
    lp.node.metrics = metrics;
  root = lp.name;
  auto n = std::make_unique<vigil::node>(std::move(types), lp.node);
  if (auto err = n->start(lp.name, std::move(lp.tree))) {
    std::cerr << "invoices: the node on " << dir
              << " did not start: " << vigil::describe(err) << "\n";
    std::exit(1);
  }
  if (auto addr = n->metrics_address(); !addr.empty())
    std::cerr << "invoices: metrics on http://" << addr << "/metrics\n";
  return n;
}

/// Loads FILE for `svc`'s addresses without starting anything: its errors
/// come before any run does. Exits on errors.
void check_policy(const std::string& file, const invoices::services& svc) {
  (void)examples::load_policy(file, svc.addresses(), make_types());
}

/// Whether a node holds the data dir `dir` (its vigil.lock is locked);
/// `who` gets the pid written there.
bool held(const std::string& dir, std::string& who) {
  auto path = dir + "/vigil.lock";
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return false;
  bool locked = ::flock(fd, LOCK_EX | LOCK_NB) != 0;
  if (locked) {
    char buf[32] = {};
    auto n = ::pread(fd, buf, sizeof buf - 1, 0);
    who.assign(buf, n > 0 ? size_t(n) : 0);
    while (!who.empty() && (who.back() == '\n' || who.back() == ' '))
      who.pop_back();
  }
  ::close(fd);
  return locked;
}

std::string stage_of(const std::string& reason) {
  auto c = reason.find(':');
  return c == std::string::npos ? reason : reason.substr(0, c);
}

run_stats run_mode(const std::string& mode, const options& o,
                   const std::vector<invoices::invoice_truth>& batch,
                   invoices::services& svc) {
  auto file = o.policy_dir + (mode == "on" ? "/invoices.yaml"
                                           : "/invoices_off.yaml");
  auto dir = o.data_dir + "/" + mode;
  fs::remove_all(dir); // checked by run(): no node holds it
  fs::create_directories(dir);
  fs::permissions(dir, fs::perms::owner_all); // a data dir: its owner's
  svc.open_ledger(dir + "/ledger.txt");
  std::string root;
  auto n = start_node(file, svc, dir, root, o.metrics);
  run_stats st;
  st.mode = mode;
  st.n = batch.size();
  st.ms.assign(batch.size(), 0);
  std::vector<invoices::Outcome> outcomes(batch.size());
  int64_t requests0 = 0;
  for (auto* s : {"ocr", "ocr_careful", "validate", "match", "ledger"})
    requests0 += svc.counts(s).requests;
  std::atomic<size_t> next{0};
  std::atomic<size_t> finished{0};
  std::atomic<size_t> done{0}, review{0}, failed{0};
  auto desk = root + "/desk";
  svc.start_run();
  auto t0 = steady_clock::now();
  // Invoice i arrives at t0 + i / rate (an open workload, as mail and EDI
  // deliver them: the same arrivals in both runs, whatever each takes);
  // its time is counted from its arrival to its outcome.
  std::vector<std::thread> drivers;
  for (size_t d = 0; d < std::max<size_t>(o.in_flight, 1); ++d)
    drivers.emplace_back([&] {
      for (size_t i = next++; i < batch.size(); i = next++) {
        invoices::Invoice inv;
        inv.set_id(batch[i].id);
        inv.set_index(int64_t(i));
        inv.set_lines_cents(batch[i].lines_cents);
        auto arrival = t0 + std::chrono::duration_cast<steady_clock::duration>(
                              std::chrono::duration<double>(double(i) / o.rate));
        std::this_thread::sleep_until(arrival);
        auto r = n->call<invoices::Outcome>(desk, inv, 120s);
        st.ms[i] = std::chrono::duration<double, std::milli>(
                     steady_clock::now() - arrival)
                     .count();
        auto& out = outcomes[i];
        if (r) {
          out = r->value;
        } else {
          out.set_id(batch[i].id);
          out.set_status(invoices::Outcome::FAILED);
          out.set_reason("desk: " + vigil::describe(r.error()));
        }
        ++(out.status() == invoices::Outcome::DONE            ? done
           : out.status() == invoices::Outcome::MANUAL_REVIEW ? review
                                                              : failed);
        ++finished;
      }
    });
  // Progress, once a second, until every invoice has its outcome.
  auto last = steady_clock::now();
  while (finished < batch.size()) {
    std::this_thread::sleep_for(50ms);
    if (steady_clock::now() - last >= 1s || finished == batch.size()) {
      last = steady_clock::now();
      std::fprintf(stderr,
                   "invoices: policies %-3s %5.1fs  %zu/%zu  done=%zu "
                   "review=%zu failed=%zu\n",
                   mode.c_str(),
                   std::chrono::duration<double>(last - t0).count(),
                   finished.load(), batch.size(), done.load(), review.load(),
                   failed.load());
    }
  }
  for (auto& t : drivers)
    t.join();
  st.elapsed_s = std::chrono::duration<double>(steady_clock::now() - t0)
                   .count();
  for (auto& out : outcomes) {
    switch (out.status()) {
      case invoices::Outcome::DONE:
        ++st.done;
        st.degraded += out.degraded() ? 1 : 0;
        break;
      case invoices::Outcome::MANUAL_REVIEW:
        ++st.review;
        ++st.why["review: " + stage_of(out.reason())];
        st.example.emplace("review: " + stage_of(out.reason()), out.reason());
        break;
      default:
        ++st.failed;
        ++st.why["failed: " + stage_of(out.reason())];
        st.example.emplace("failed: " + stage_of(out.reason()), out.reason());
    }
  }
  if (auto err = n->stop())
    std::cerr << "invoices: stopping the node: " << vigil::describe(err)
              << "\n";
  n.reset();
  st.entries = svc.entries();
  st.double_postings = svc.double_postings();
  st.replayed_keys = svc.replayed_keys();
  for (auto* s : {"ocr", "ocr_careful", "validate", "match", "ledger"})
    st.requests += svc.counts(s).requests;
  st.requests -= requests0;
  return st;
}

void print_table(const std::vector<run_stats>& runs, const options& o) {
  std::printf("\n== invoice processing: %zu invoices arriving at %.0f/s, "
              "seed %llu\n",
              o.invoices, o.rate, static_cast<unsigned long long>(o.seed));
  std::printf("%-34s", "");
  for (auto& r : runs)
    std::printf("%16s", ("policies " + r.mode).c_str());
  std::printf("\n");
  auto row = [&](const char* name, auto f) {
    std::printf("%-34s", name);
    for (auto& r : runs)
      std::printf("%16s", f(r).c_str());
    std::printf("\n");
  };
  auto fmt = [](const char* f, double v) {
    char b[64];
    std::snprintf(b, sizeof b, f, v);
    return std::string{b};
  };
  row("end-to-end success", [&](auto& r) {
    return fmt("%.1f%%", r.share(r.done));
  });
  row("  of them PO match pending", [&](auto& r) {
    return std::to_string(r.degraded);
  });
  row("routed to manual review", [&](auto& r) {
    return fmt("%.1f%%", r.share(r.review));
  });
  row("failed", [&](auto& r) { return fmt("%.1f%%", r.share(r.failed)); });
  row("mean processing time", [&](auto& r) {
    return fmt("%.0f ms", r.mean_ms());
  });
  row("p99 processing time", [&](auto& r) {
    return fmt("%.0f ms", r.p99_ms());
  });
  row("completed per minute of its run", [&](auto& r) {
    return fmt("%.0f", r.per_minute());
  });
  row("wall time", [&](auto& r) { return fmt("%.1f s", r.elapsed_s); });
  row("service requests", [&](auto& r) {
    return std::to_string(r.requests);
  });
  row("entries posted", [&](auto& r) { return std::to_string(r.entries); });
  row("  for invoices reported failed", [&](auto& r) {
    return std::to_string(r.entries > r.done ? r.entries - r.done : 0);
  });
  row("  repeats answered by key", [&](auto& r) {
    return std::to_string(r.replayed_keys);
  });
  row("  invoices posted twice", [&](auto& r) {
    return std::to_string(r.double_postings);
  });
  std::printf("\nwhy (invoices):\n");
  for (auto& r : runs)
    for (auto& [why, k] : r.why)
      std::printf("  policies %-3s  %-22s %5zu  e.g. %s\n", r.mode.c_str(),
                  why.c_str(), k, r.example.at(why).substr(0, 110).c_str());
  if (runs.size() == 2 && runs[0].done > 0) {
    auto& off = runs[0];
    auto& on = runs[1];
    std::printf("\nsuccess %.1f%% -> %.1f%%, %.1f%% to manual review, mean "
                "time %+.0f%%, %+.0f%% invoices completed (the case study: "
                "78%% -> 96%%, 4%%, +15%%, +23%% more processed)\n",
                off.share(off.done), on.share(on.done), on.share(on.review),
                100.0 * (on.mean_ms() / off.mean_ms() - 1.0),
                100.0 * (double(on.done) / double(off.done) - 1.0));
  }
}

void write_report(const std::vector<run_stats>& runs, const options& o) {
  nlohmann::json j;
  j["invoices"] = o.invoices;
  j["seed"] = o.seed;
  j["rate"] = o.rate;
  j["in_flight"] = o.in_flight;
  for (auto& r : runs)
    j["runs"][r.mode] = {{"done", r.done},
                         {"degraded", r.degraded},
                         {"review", r.review},
                         {"failed", r.failed},
                         {"success_pct", r.share(r.done)},
                         {"review_pct", r.share(r.review)},
                         {"mean_ms", r.mean_ms()},
                         {"p99_ms", r.p99_ms()},
                         {"per_minute", r.per_minute()},
                         {"elapsed_s", r.elapsed_s},
                         {"requests", r.requests},
                         {"entries", r.entries},
                         {"replayed_keys", r.replayed_keys},
                         {"double_postings", r.double_postings},
                         {"why", r.why}};
  std::ofstream out{o.report};
  out << j.dump(2) << "\n";
  if (!out)
    throw std::runtime_error("cannot write the report to " + o.report);
}

int run(const options& o) {
  if (o.mode != "both" && o.mode != "on" && o.mode != "off") {
    std::cerr << "invoices: --mode is both, on or off, not " << o.mode
              << "\n";
    return 2;
  }
  for (auto* mode : {"off", "on"}) {
    auto dir = o.data_dir + "/" + mode;
    std::string who;
    if (held(dir, who)) {
      std::cerr << "invoice_demo: a node (pid " << who << ") holds " << dir
                << ": stop it, or use another --data-dir\n";
      return 1;
    }
    if (fs::exists(dir) && !o.replace) {
      std::cerr << "invoice_demo: " << dir
                << " holds an earlier run (and maybe invoices waiting for a "
                   "person: vigil approvals list --data-dir "
                << o.data_dir << "/on); pass --replace to start afresh, or "
                << "use another --data-dir\n";
      return 1;
    }
  }
  if (!o.report.empty()) { // an unwritable path fails now, not after
    std::ofstream probe{o.report};
    if (!probe)
      throw std::runtime_error("cannot write the report to " + o.report);
  }
  invoices::fault_model f;
  auto batch = invoices::make_batch(o.invoices, o.seed, f);
  invoices::services svc{batch, o.seed, f};
  if (o.mode != "on")
    check_policy(o.policy_dir + "/invoices_off.yaml", svc);
  if (o.mode != "off")
    check_policy(o.policy_dir + "/invoices.yaml", svc);
  std::fprintf(stderr, "invoices: %zu invoices (seed %llu); services on %s\n",
               batch.size(), static_cast<unsigned long long>(o.seed),
               svc.addresses().at("ocr").c_str());
  std::vector<run_stats> runs;
  if (o.mode != "on")
    runs.push_back(run_mode("off", o, batch, svc));
  if (o.mode != "off")
    runs.push_back(run_mode("on", o, batch, svc));
  print_table(runs, o);
  if (!o.report.empty())
    write_report(runs, o);
  if (o.mode != "off" && runs.back().review > 0)
    std::printf("\n%zu invoices wait for a person in %s/on: list them with\n"
                "  vigil approvals list --data-dir %s/on\n"
                "approve one with `vigil approvals approve ID --by NAME "
                "--data-dir %s/on`,\nthen `invoice_demo resume --data-dir %s` "
                "posts it.\n",
                runs.back().review, o.data_dir.c_str(), o.data_dir.c_str(),
                o.data_dir.c_str(), o.data_dir.c_str());
  return 0;
}

/// Starts the policies-on node again on DATA_DIR/on, with fresh services,
/// and waits until the ledger has `expect` entries: those of the invoices
/// whose review a person approved (their effects, kept in the outbox, are
/// dispatched once the node takes the decisions in).
int resume(const options& o) {
  auto dir = o.data_dir + "/on";
  if (!fs::exists(dir + "/data.mdb")) {
    std::cerr << "invoice_demo: " << dir << " holds no run: run "
              << "`invoice_demo run --data-dir " << o.data_dir
              << "` first\n";
    return 1;
  }
  invoices::fault_model f;
  auto batch = invoices::make_batch(o.invoices, o.seed, f);
  invoices::services svc{batch, o.seed, f};
  svc.open_ledger(dir + "/ledger.txt");
  std::string root;
  auto n = start_node(o.policy_dir + "/invoices.yaml", svc, dir, root,
                      o.metrics);
  auto until = steady_clock::now()
               + std::chrono::duration_cast<steady_clock::duration>(
                 std::chrono::duration<double>(o.wait_s));
  while (svc.entries() < o.expect && steady_clock::now() < until)
    std::this_thread::sleep_for(50ms);
  (void)n->stop();
  auto posted = svc.posted_ids();
  for (auto& id : posted)
    std::printf("posted after review: %s\n", id.c_str());
  if (svc.replayed_keys() > 0)
    std::printf("answered by its key (posted before): %lld\n",
                static_cast<long long>(svc.replayed_keys()));
  if (posted.size() < o.expect) {
    std::cerr << "invoice_demo: " << posted.size() << " of " << o.expect
              << " approved invoices posted within " << o.wait_s
              << " s: approve them first (vigil approvals list --data-dir "
              << dir << "); those posted by an earlier resume are in "
              << dir << "/ledger.txt\n";
    return 1;
  }
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  // vigil's log lines go to stderr: stdout is the table, for scripts.
  spdlog::set_default_logger(spdlog::stderr_logger_mt("vigil"));
  CLI::App app{"invoices: invoice processing with vigil's policies off and "
               "on, against local services"};
  options o;
  auto common = [&](CLI::App* c) {
    c->add_option("--invoices", o.invoices, "invoices in the batch")
      ->check(CLI::Range(size_t{1}, size_t{1000000}));
    c->add_option("--seed", o.seed, "the batch's and the faults' seed");
    c->add_option("--data-dir", o.data_dir,
                  "the runs' LMDB data dirs are DIR/off and DIR/on");
    c->add_option("--policy-dir", o.policy_dir,
                  "where invoices.yaml and invoices_off.yaml are");
    c->add_option("--metrics", o.metrics,
                  "serve the node's /metrics, /healthz and /readyz on "
                  "HOST:PORT, e.g. 127.0.0.1:9464");
  };
  auto* r = app.add_subcommand("run", "run the batch, off then on");
  common(r);
  r->add_option("--rate", o.rate, "invoices arriving per second")
    ->check(CLI::Range(1.0, 100000.0));
  r->add_option("--in-flight", o.in_flight,
                "at most this many invoices waiting for an outcome")
    ->check(CLI::Range(size_t{1}, size_t{1024}));
  r->add_option("--mode", o.mode, "both, on or off");
  r->add_option("--report", o.report, "write the figures as JSON to FILE");
  r->add_flag("--replace", o.replace,
              "replace the data dirs of an earlier run (and its invoices "
              "waiting for a person)");
  auto* s = app.add_subcommand("resume", "post the approved invoices");
  common(s);
  s->add_option("--wait", o.wait_s, "seconds to wait for them");
  s->add_option("--expect", o.expect, "approved invoices to wait for");
  app.require_subcommand(0, 1);
  CLI11_PARSE(app, argc, argv);
  try {
    if (*s)
      return resume(o);
    return run(o);
  } catch (const std::exception& e) {
    std::cerr << "invoices: " << e.what() << "\n";
    return 1;
  }
}
