// The cascade at 100 instances: a document agent that passed its tests,
// run as 100 concurrent instances against a records service, a webhook
// receiver and a shared config. Run once the naive way (a task table read
// then claimed, retries at three layers, no idempotency keys, the config
// file rewritten in place) and once as vigil workers (a leased task
// queue, one layer of retries under a shared budget with keys named after
// the document, the config by compare-and-swap), on the same documents,
// seed and services. README.md, "The cascade at 100 instances".
//
//   cascade_demo [--documents 2000] [--instances 100] [--seed 7]
//                [--report FILE] [--policy-dir DIR] [--data-dir DIR]
//                [--time-limit 300]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <thread>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "agents.hpp"
#include "cascade/cascade.pb.h"
#include "naive.hpp"
#include "services.hpp"
#include "support/example_support.hpp"
#include "vigil/cli/policy.hpp"
#include "vigil/node/node.hpp"
#include "vigil/persistence/shared.hpp"
#include "vigil/persistence/store.hpp"

#ifndef CASCADE_POLICY_DIR
#define CASCADE_POLICY_DIR "examples/policies"
#endif

namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using std::chrono::steady_clock;
using vigil::describe;
namespace fs = std::filesystem;

struct options {
  size_t documents = 2000;
  size_t instances = 100;
  uint64_t seed = 7;
  std::string policy_dir = CASCADE_POLICY_DIR;
  std::string data_dir;
  std::string report;
  int time_limit_s = 300;
};

/// Where the runs keep their state: --data-dir (created, and refused if it
/// holds anything, so that no run meets an older one's), kept afterwards;
/// or a fresh temporary directory, removed at the end.
class run_dir {
public:
  explicit run_dir(const std::string& given) : keep_(!given.empty()) {
    std::error_code ec;
    if (keep_) {
      path_ = given;
      fs::create_directories(path_, ec);
      if (ec || !fs::is_directory(path_))
        throw std::runtime_error("cannot create the data dir " + path_);
      if (!fs::is_empty(path_))
        throw std::runtime_error("the data dir " + path_
                                 + " is not empty: remove it, or pass "
                                   "another");
      return;
    }
    auto tmpl = (fs::temp_directory_path() / "cascade-XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr)
      throw std::runtime_error("cannot create a temporary directory");
    path_ = tmpl;
  }
  ~run_dir() {
    std::error_code ec;
    if (!keep_)
      fs::remove_all(path_, ec);
  }
  run_dir(const run_dir&) = delete;
  run_dir& operator=(const run_dir&) = delete;

  const std::string& path() const noexcept {
    return path_;
  }

private:
  bool keep_;
  std::string path_;
};

/// Every figure of one run, as the table and the report show it.
struct run_figures {
  std::string name;
  double elapsed_s = 0;
  cascade::sink_figures records, hooks;
  int64_t done = 0;            ///< documents done
  int64_t processed_again = 0; ///< tasks processed more than once
  int64_t claims = -1;         ///< naive: claims of tasks in all
  int64_t task_calls = 0;      ///< calls to the task table (the queue)
  int64_t failed = 0;          ///< attempts that failed; tasks given back
  int64_t given_up = 0;        ///< left in progress; dead letters
  int64_t increments = 0;      ///< config increments written (applied)
  int64_t final_count = 0;     ///< documents_processed at the end
  bool config_parses = true;
  std::string config_text;
  int64_t torn_reads = -1;     ///< naive only
  int64_t conflicts = -1;      ///< vigil only
  std::map<std::string, int64_t> errors;
  std::map<std::string, std::string> example;

  int64_t lost() const {
    return increments - final_count;
  }
};

/// The naive run, and what the services saw of it.
run_figures naive_run(const options& o, cascade::services& svc,
                      const std::string& dir) {
  cascade::naive_options no;
  no.documents = o.documents;
  no.instances = o.instances;
  no.config = dir + "/config.json";
  no.deadline = steady_clock::now() + std::chrono::seconds{o.time_limit_s};
  auto nf = cascade::run_naive(no, svc);
  if (!nf.finished)
    throw std::runtime_error("the naive run did not end within "
                             + std::to_string(o.time_limit_s) + " s");
  run_figures r;
  r.name = "naive";
  r.elapsed_s = nf.elapsed_s;
  r.records = svc.records();
  r.hooks = svc.hooks();
  auto t = svc.tasks();
  r.done = t.done;
  r.processed_again = t.claimed_twice;
  r.claims = t.claims;
  r.task_calls = t.requests;
  r.failed = nf.attempts_failed;
  r.given_up = t.in_progress;
  r.increments = nf.increments;
  r.final_count = nf.final_count;
  r.config_parses = nf.file_parses;
  r.config_text = nf.file_text;
  r.torn_reads = nf.torn_reads;
  r.errors = nf.errors;
  return r;
}

/// The workers' template params (queue, store, key) from the policy.
vigil::params worker_params(const vigil::supervisor_spec& tree) {
  for (auto& c : tree.children)
    if (c.sup && c.sup->flags.strategy == vigil::strategy::simple_one_for_one
        && !c.sup->children.empty())
      return c.sup->children.front().params;
  throw std::runtime_error("cascade.yaml has no simple_one_for_one "
                           "supervisor of workers");
}

/// Polls the tally until every document is done (completed, or a dead
/// letter) or the deadline passes, with progress; true if done.
bool wait_done(vigil::node& n, const std::string& tally, const options& o,
               cascade::services& svc, steady_clock::time_point t0,
               cascade::Tally& out) {
  auto deadline = t0 + std::chrono::seconds{o.time_limit_s};
  auto last = t0;
  for (;;) {
    if (auto t = n.call<cascade::Tally>(tally, cascade::Get{}, 5s))
      out = t->value;
    auto finished = out.completed() + out.dead();
    if (finished >= static_cast<int64_t>(o.documents))
      return true;
    if (steady_clock::now() >= deadline)
      return false;
    std::this_thread::sleep_for(20ms);
    if (steady_clock::now() - last >= 1s) {
      last = steady_clock::now();
      std::fprintf(stderr,
                   "cascade: vigil %5.1fs  %lld/%zu documents done, %lld "
                   "records stored\n",
                   std::chrono::duration<double>(last - t0).count(),
                   static_cast<long long>(finished), o.documents,
                   static_cast<long long>(svc.records().stored));
    }
  }
}

/// The vigil run: the tree of examples/policies/cascade.yaml, the
/// instances started under its workers' supervisor; then the queue and
/// the config read back from the data dir.
run_figures vigil_run(const options& o, cascade::services& svc,
                      const std::string& dir) {
  vigil::registry types;
  cascade::add_agents(types);
  auto lp = examples::load_policy(o.policy_dir + "/cascade.yaml",
                                  svc.addresses(), types);
  lp.node.data_dir = dir;
  auto wp = worker_params(lp.tree);
  run_figures r;
  r.name = "vigil";
  cascade::Tally tally;
  {
    vigil::node n{std::move(types), lp.node};
    if (auto err = n.start(lp.name, std::move(lp.tree)))
      throw std::runtime_error("the node did not start: " + describe(err));
    auto t0 = steady_clock::now();
    cascade::Feed feed;
    feed.set_documents(static_cast<int64_t>(o.documents));
    if (auto err = n.send(lp.name + "/feeder", feed))
      throw std::runtime_error("cannot feed the batch: " + describe(err));
    for (size_t i = 1; i <= o.instances; ++i)
      if (auto c = n.start_child(lp.name + "/workers", {},
                                 "w" + std::to_string(i));
          !c)
        throw std::runtime_error("instance w" + std::to_string(i)
                                 + " did not start: " + describe(c.error()));
    bool done = wait_done(n, lp.name + "/tally", o, svc, t0, tally);
    r.elapsed_s = std::chrono::duration<double>(steady_clock::now() - t0)
                    .count();
    (void) n.stop();
    if (!done)
      throw std::runtime_error(
        "the vigil run did not end within " + std::to_string(o.time_limit_s)
        + " s (" + std::to_string(tally.completed() + tally.dead()) + " of "
        + std::to_string(o.documents) + " documents)");
  }
  r.records = svc.records();
  r.hooks = svc.hooks();
  r.task_calls = tally.queue_calls();
  r.failed = tally.given_back();
  r.increments = tally.increments();
  r.conflicts = tally.conflicts();
  r.errors = {tally.errors().begin(), tally.errors().end()};
  r.example = {tally.example().begin(), tally.example().end()};
  // Read back from the data dir, the node stopped.
  std::unique_ptr<vigil::store> st;
  vigil::store_options so;
  so.dir = dir;
  if (auto s = vigil::store::open_read_only(so, st))
    throw std::runtime_error("cannot read the data dir: " + s.message());
  vigil::records::KvRecord cfg;
  bool found = false;
  if (auto s = vigil::kv_read(*st, wp.at("store"), wp.at("key"), cfg, found))
    throw std::runtime_error("cannot read the config: " + s.message());
  r.config_text = cfg.value();
  auto j = json::parse(r.config_text, nullptr, false);
  r.config_parses = found && j.is_object();
  r.final_count = r.config_parses ? j.value("documents_processed", int64_t{0})
                                  : 0;
  std::vector<vigil::records::TaskRecord> tasks;
  if (auto s = vigil::queue_tasks(*st, wp.at("queue"), tasks))
    throw std::runtime_error("cannot read the queue: " + s.message());
  for (auto& t : tasks) {
    r.done += t.state() == "done";
    r.processed_again += t.attempts() > 1;
  }
  r.given_up = tally.dead();
  return r;
}

std::string num(int64_t v) {
  return v < 0 ? "-" : std::to_string(v);
}

void print(const std::vector<run_figures>& runs, const options& o,
           const cascade::fault_model& f) {
  std::printf("\n== the cascade at %zu instances: %zu documents, seed %llu\n"
              "   records service and webhook receiver, per request: %.0f%% "
              "503 before storing, %.0f%% stored then 503,\n"
              "   %.0f%% stored then answered after %d-%d ms (the callers "
              "give up at 200 ms)\n",
              o.instances, o.documents,
              static_cast<unsigned long long>(o.seed), f.refused * 100,
              f.answer_lost * 100, f.answer_late * 100, f.late_ms[0],
              f.late_ms[1]);
  std::printf("%-36s%14s%14s\n", "", "naive", "vigil");
  auto row = [&](const char* name, auto cell) {
    std::printf("%-36s", name);
    for (auto& r : runs)
      std::printf("%14s", cell(r).c_str());
    std::printf("\n");
  };
  row("documents done", [](auto& r) { return num(r.done); });
  row("tasks processed more than once",
      [](auto& r) { return num(r.processed_again); });
  row("duplicate records", [](auto& r) { return num(r.records.duplicates()); });
  row("duplicate webhooks", [](auto& r) { return num(r.hooks.duplicates()); });
  row("config increments written", [](auto& r) { return num(r.increments); });
  row("config count at the end", [](auto& r) { return num(r.final_count); });
  row("lost config updates", [](auto& r) { return num(r.lost()); });
  row("config parses at the end",
      [](auto& r) { return std::string{r.config_parses ? "yes" : "no"}; });
  row("torn config reads (reset to 0)",
      [](auto& r) { return num(r.torn_reads); });
  row("config CAS conflicts retried", [](auto& r) { return num(r.conflicts); });
  row("repeats answered by key", [](auto& r) {
    return num(r.records.by_key + r.hooks.by_key);
  });
  row("calls to the records service",
      [](auto& r) { return num(r.records.requests); });
  row("calls to the webhook receiver",
      [](auto& r) { return num(r.hooks.requests); });
  row("calls to the task table", [](auto& r) { return num(r.task_calls); });
  row("tasks failed/retried", [](auto& r) { return num(r.failed); });
  row("tasks never done (stuck, dead)", [](auto& r) { return num(r.given_up); });
  row("wall time", [](auto& r) {
    char b[32];
    std::snprintf(b, sizeof b, "%.1f s", r.elapsed_s);
    return std::string{b};
  });
  std::printf(
    "\nhow each is measured: records and webhooks by the services (duplicates"
    " = stored - distinct\ndocuments; repeats answered by key = requests whose"
    " Idempotency-Key was seen before).\nnaive: tasks by the task table (done"
    " = marked done at least once; more than once = claimed more\nthan once;"
    " stuck = left in progress); failed = agent-loop attempts that threw;"
    " lost = config\nwrites that returned without error - documents_processed"
    " in the file's first JSON value.\nvigil: tasks read back from the queue"
    " (done; more than once = more than one lease); failed =\ntasks given back"
    " (fail_task); task table = claim (empty ones too), complete and fail"
    " calls;\nlost = compare-and-swaps applied - documents_processed in the"
    " store after the run.\n");
  std::printf("\nwhy attempts failed:\n");
  for (auto& r : runs)
    for (auto& [what, k] : r.errors) {
      std::printf("  %-6s %-44s %6lld\n", r.name.c_str(), what.c_str(),
                  static_cast<long long>(k));
      auto ex = r.example.find(what);
      if (ex == r.example.end())
        continue;
      // The example without what the row says and the last error's URL.
      auto text = ex->second.substr(std::min(what.size() + 2,
                                             ex->second.size()));
      std::printf("         e.g. %s\n",
                  text.substr(0, text.find("; the last")).c_str());
    }
}

void write_report(const std::vector<run_figures>& runs, const options& o,
                  const cascade::fault_model& f) {
  json j;
  j["documents"] = o.documents;
  j["instances"] = o.instances;
  j["seed"] = o.seed;
  j["faults"] = {{"refused", f.refused},
                 {"answer_lost", f.answer_lost},
                 {"answer_late", f.answer_late},
                 {"late_ms", {f.late_ms[0], f.late_ms[1]}}};
  auto sink = [](const cascade::sink_figures& s) {
    return json{{"requests", s.requests},
                {"stored", s.stored},
                {"distinct", s.distinct},
                {"duplicates", s.duplicates()},
                {"by_key", s.by_key}};
  };
  for (auto& r : runs)
    j["runs"][r.name] = {{"documents_done", r.done},
                         {"processed_more_than_once", r.processed_again},
                         {"claims", r.claims},
                         {"records", sink(r.records)},
                         {"hooks", sink(r.hooks)},
                         {"task_calls", r.task_calls},
                         {"failed", r.failed},
                         {"never_done", r.given_up},
                         {"config_increments", r.increments},
                         {"config_final_count", r.final_count},
                         {"lost_config_updates", r.lost()},
                         {"config_parses", r.config_parses},
                         {"config_text", r.config_text},
                         {"torn_reads", r.torn_reads},
                         {"cas_conflicts", r.conflicts},
                         {"elapsed_s", r.elapsed_s},
                         {"errors", r.errors},
                         {"error_examples", r.example}};
  std::ofstream out{o.report};
  out << j.dump(2) << "\n";
  if (!out)
    throw std::runtime_error("cannot write the report to " + o.report);
}

} // namespace

int main(int argc, char** argv) {
  // vigil's log lines go to stderr: stdout is the table, for scripts.
  spdlog::set_default_logger(spdlog::stderr_logger_mt("vigil"));
  CLI::App app{"cascade_demo: a document agent at 100 concurrent instances "
               "against real local services, the naive way and vigil's"};
  options o;
  app.add_option("--documents", o.documents, "documents in the batch")
    ->check(CLI::Range(size_t{1}, size_t{100000}));
  app.add_option("--instances", o.instances, "concurrent instances")
    ->check(CLI::Range(size_t{1}, size_t{1000}));
  app.add_option("--seed", o.seed, "the faults' seed");
  app.add_option("--policy-dir", o.policy_dir, "where cascade.yaml is");
  app.add_option("--data-dir", o.data_dir,
                 "keep the runs' config file and LMDB data here (created; "
                 "must be empty)");
  app.add_option("--time-limit", o.time_limit_s,
                 "seconds each run may take before it fails")
    ->check(CLI::Range(1, 3600));
  app.add_option("--report", o.report, "write every figure as JSON to FILE");
  CLI11_PARSE(app, argc, argv);
  try {
    if (!o.report.empty()) { // an unwritable path fails now, not after
      std::ofstream probe{o.report};
      if (!probe)
        throw std::runtime_error("cannot write the report to " + o.report);
    }
    run_dir dir{o.data_dir};
    fs::create_directories(dir.path() + "/naive");
    cascade::fault_model f;
    // Each naive instance keeps a connection to each service, and a late
    // answer holds a thread after its caller gave up.
    cascade::services svc{o.seed, f, o.documents, o.instances + 64};
    { // the policy first: a mistake in it should not wait for a naive run
      vigil::registry types;
      cascade::add_agents(types);
      (void) examples::load_policy(o.policy_dir + "/cascade.yaml",
                                   svc.addresses(), types);
    }
    std::vector<run_figures> runs;
    runs.push_back(naive_run(o, svc, dir.path() + "/naive"));
    svc.reset();
    runs.push_back(vigil_run(o, svc, dir.path() + "/vigil"));
    print(runs, o, f);
    if (!o.report.empty())
      write_report(runs, o, f);
    if (!o.data_dir.empty())
      std::printf("\nkept in %s: naive/config.json, and vigil's data dir "
                  "(vigil inspect --data-dir %s/vigil shared)\n",
                  dir.path().c_str(), dir.path().c_str());
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "cascade_demo: " << e.what() << "\n";
    return 1;
  }
}
