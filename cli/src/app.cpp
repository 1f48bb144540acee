// The `vigil` command line: run, check, inspect, dead-letters.

#include "vigil/cli/app.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/util/json_util.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "vigil/metrics/exporter.hpp"

#include "approvals.hpp"
#include "data_dir.hpp"
#include "duration.hpp"
#include "inspect.hpp"
#include "report.hpp"
#include "vigil/actors/detail/log.hpp"
#include "vigil/actors/report.hpp"
#include "vigil/cli/policy.hpp"
#include "vigil/persistence/integrity.hpp"
#include "vigil/persistence/store.hpp"
#include "vigil/supervision/check.hpp"
#include "vigil/version.hpp"

namespace vigil::cli {

bool skip_verify = false;

namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::steady_clock;


std::atomic<int> stop_signal{0};

extern "C" void on_signal(int sig) {
  stop_signal = sig;
  // A second Ctrl-C ends the process at once.
  std::signal(sig, SIG_DFL);
}

/// One of `vigil run`'s own lines on stderr (starting, progress,
/// stopping, ...): as text, or under --log-format json through vigil's
/// logger at info, so that stderr is then JSON lines only.
class say {
public:
  say() = default;
  say(const say&) = delete;
  say& operator=(const say&) = delete;
  ~say() {
    auto text = s_.str();
    while (!text.empty() && text.back() == '\n')
      text.pop_back();
    if (text.empty())
      return;
    if (current_log_format() != log_format::json) {
      std::cerr << text << "\n" << std::flush;
      return;
    }
    std::istringstream in{text};
    for (std::string line; std::getline(in, line);)
      detail::log().info("{}", line);
  }
  template <class T>
  say& operator<<(const T& x) {
    s_ << x;
    return *this;
  }
  std::ostream& stream() {
    return s_;
  }

private:
  std::ostringstream s_;
};

void print_errors(const std::vector<policy_error>& errs) {
  for (auto& e : errs)
    std::cerr << e.to_string() << "\n";
  std::cerr << "vigil: " << errs.size() << " error"
            << (errs.size() == 1 ? "" : "s") << "; nothing started\n";
}

/// What is valid but weakens a guarantee (see saga_warnings), on stderr.
void print_warnings(const std::string& file, const loaded_policy& lp) {
  for (auto& w : saga_warnings(lp.tree, lp.name))
    say{} << file << ": warning: " << w.where << ": " << w.field << ": "
          << w.detail;
}

// -- run ----------------------------------------------------------------------

/// The longest an orderly stop of `s` may take: its children stop one
/// after another, each within its shutdown timeout (a supervisor child
/// within its own subtree's budget). Empty if unbounded (a worker with
/// shutdown: infinity).
std::optional<milliseconds> shutdown_budget(const supervisor_spec& s) {
  milliseconds total{0};
  for (auto& c : s.children) {
    auto sd = c.effective_shutdown();
    if (c.kind == child_kind::supervisor && c.sup) {
      auto sub = shutdown_budget(*c.sup);
      if (sd.how == shutdown_spec::kind::timeout) // then it is given up on
        total += sub ? std::min(*sub, sd.timeout) : sd.timeout;
      else if (sd.how == shutdown_spec::kind::infinity && sub)
        total += *sub;
      else if (sd.how == shutdown_spec::kind::infinity)
        return std::nullopt;
    } else if (sd.how == shutdown_spec::kind::infinity) {
      return std::nullopt;
    } else if (sd.how == shutdown_spec::kind::timeout) {
      total += sd.timeout;
    }
  }
  return total;
}

/// Ends the process if the run does not finish in time. CAF cannot preempt
/// a handler: a stuck one keeps its actor, and so the node, from ending.
/// After the tree's shutdown budget the process exits, which a journal agent
/// survives by design (everything it accepted is on disk).
class exit_watchdog {
public:
  exit_watchdog() : thread_([this] { loop(); }) {
    // nop
  }
  ~exit_watchdog() {
    {
      std::lock_guard<std::mutex> g{mtx_};
      quit_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  /// Exits with `code` after `after`, saying `why`, unless re-armed first.
  void arm(milliseconds after, std::string why, int code) {
    {
      std::lock_guard<std::mutex> g{mtx_};
      deadline_ = steady_clock::now() + after;
      why_ = std::move(why);
      code_ = code;
      armed_ = true;
    }
    cv_.notify_all();
  }
  void disarm() {
    std::lock_guard<std::mutex> g{mtx_};
    armed_ = false;
  }

private:
  void loop() {
    std::unique_lock<std::mutex> g{mtx_};
    while (!quit_) {
      if (!armed_) {
        cv_.wait(g);
        continue;
      }
      if (cv_.wait_until(g, deadline_) == std::cv_status::timeout && armed_
          && steady_clock::now() >= deadline_) {
        std::cout.flush();
        say{} << "vigil: " << why_;
        std::_Exit(code_);
      }
    }
  }

  std::mutex mtx_;
  std::condition_variable cv_;
  steady_clock::time_point deadline_;
  std::string why_;
  int code_ = 1;
  bool armed_ = false;
  bool quit_ = false;
  std::thread thread_;
};

void mark_stopped(tree_node& t) {
  for (auto& c : t.children) {
    c.state = "stopped";
    mark_stopped(c);
  }
}

struct run_args {
  std::string file;
  std::string data_dir;
  std::string for_time;
  std::string report = "text";
  std::string progress = "1s";
  bool skip_verify = false;
  std::string metrics;
  std::string log_format;
  std::string log_level;
};

/// Reads --for and --progress; an error message and exit_usage if bad.
int parse_run_times(const run_args& a, milliseconds& run_for,
                    milliseconds& every) {
  if (!a.for_time.empty() && !parse_duration(a.for_time, run_for)) {
    std::cerr << "vigil run: --for " << a.for_time
              << ": not a duration; " << duration_hint << "\n";
    return exit_usage;
  }
  if (!parse_duration(a.progress, every)
      || (every.count() > 0 && every < milliseconds{100})) {
    // The run loop wakes every 100 ms: a shorter period would silently be
    // 100 ms.
    std::cerr << "vigil run: --progress " << a.progress
              << ": not a progress period; write 0 (off) or a duration of "
                 "at least 100ms, like 500ms or 2s\n";
    return exit_usage;
  }
  return exit_ok;
}

/// The paths of durable children in the tree, which need a data dir.
std::vector<std::string> durable_paths(const loaded_policy& lp) {
  std::vector<std::string> durable;
  std::function<void(const supervisor_spec&, const std::string&)> find =
    [&](const supervisor_spec& s, const std::string& at) {
      for (auto& c : s.children) {
        auto p = at + "/" + c.id;
        if (c.durability.mode != durability_mode::none)
          durable.push_back(p);
        if (c.sup)
          find(*c.sup, p);
      }
    };
  find(lp.tree, lp.name);
  return durable;
}

/// Runs until the root exits on its own (escalated), a signal, or --for,
/// printing progress lines. Leaves the last snapshot of the tree in `last`.
void watch(node& nd, const std::string& name, milliseconds run_for,
           milliseconds every, run_outcome& out) {
  auto t0 = steady_clock::now();
  auto next_progress = t0 + every;
  snapshot_tree(nd, name, out.tree);
  caf::error root_exit;
  out.stopped_by = "--for";
  for (;;) {
    // Waits for the root to exit on its own, in 100 ms slices, so that a
    // signal, --for and the progress line are all seen in time.
    if (nd.wait_for_exit(milliseconds{100}, root_exit)) {
      out.escalated = true;
      out.cause = describe(root_exit);
      break;
    }
    auto now = steady_clock::now();
    if (stop_signal != 0) {
      out.stopped_by = stop_signal == SIGINT ? "SIGINT" : "SIGTERM";
      break;
    }
    if (run_for.count() > 0 && now - t0 >= run_for)
      break;
    if (every.count() > 0 && now >= next_progress) {
      next_progress += every;
      snapshot_tree(nd, name, out.tree);
      uint64_t restarts = 0; // the tree's
      size_t degraded = 0;
      totals(out.tree, restarts, degraded);
      say line;
      print_progress(std::chrono::duration<double>(now - t0).count(),
                     nd.rt()->handled(), restarts, degraded,
                     nd.rt()->stand_in_answers(),
                     nd.rt()->dead_letter_count(), line.stream(),
                     read_tools(nd));
    }
  }
  out.seconds = std::chrono::duration<double>(steady_clock::now() - t0)
                  .count();
}

/// Stops the tree in reverse start order, within its shutdown budget.
void stop_tree(node& nd, const loaded_policy& lp, exit_watchdog& watchdog,
               run_outcome& out) {
  snapshot_tree(nd, lp.name, out.tree);
  say{} << "vigil: stopping (" << out.stopped_by
        << ") in reverse start order";
  // Bounded by the tree's shutdown budget, plus a margin.
  if (auto budget = shutdown_budget(lp.tree))
    watchdog.arm(*budget + milliseconds{2000},
                 "the tree did not stop within its shutdown budget ("
                   + std::to_string(budget->count())
                   + "ms): a handler is stuck; exiting without the "
                     "report (journal agents keep what they accepted)",
                 exit_error);
  auto err = nd.stop();
  watchdog.disarm();
  if (err) {
    out.escalated = true;
    out.cause = describe(err);
    out.tree.state = "failed";
  } else {
    out.tree.state = "stopped";
  }
}

int cmd_run(const run_args& a, const registry& types) {
  loaded_policy lp;
  if (auto errs = load_policy_file(a.file, types, lp); !errs.empty()) {
    print_errors(errs);
    return exit_invalid;
  }
  milliseconds run_for{0}, every{1000};
  if (auto rc = parse_run_times(a, run_for, every))
    return rc;
  if (!a.data_dir.empty())
    lp.node.data_dir = a.data_dir;
  if (a.skip_verify)
    lp.node.verify_data_dir = false;
  if (!a.metrics.empty()) {
    std::string host, why;
    uint16_t port = 0;
    if (!metrics::parse_address(a.metrics, host, port, why)) {
      std::cerr << "vigil run: --metrics: " << why << "\n";
      return exit_usage;
    }
    lp.node.metrics = a.metrics;
  }
  if (!a.log_format.empty() || !a.log_level.empty()) {
    auto ls = lp.node.log.value_or(log_settings{});
    if (!a.log_format.empty())
      ls.format = a.log_format == "json" ? log_format::json : log_format::text;
    if (!a.log_level.empty())
      ls.level = spdlog::level::from_str(a.log_level);
    lp.node.log = ls;
  }
  // Before anything is said: the command's own lines follow the format.
  if (lp.node.log)
    apply_log_settings(*lp.node.log);
  print_warnings(a.file, lp);
  if (auto durable = durable_paths(lp);
      lp.node.data_dir.empty() && !durable.empty()) {
    std::string names;
    for (auto& p : durable)
      names += (names.empty() ? "" : ", ") + p;
    std::cerr << a.file << ": durable children " << names
              << " need a data dir: pass --data-dir DIR or set "
                 "node.data_dir\n";
    return exit_usage;
  }
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  exit_watchdog watchdog; // outlives nd: it bounds nd's teardown too
  node nd{types, lp.node};
  say{} << "vigil: starting " << lp.name << " from " << a.file
            << (lp.node.data_dir.empty() ? " (no data dir: memory only)"
                                         : " (data dir " + lp.node.data_dir
                                             + ")")
            << "\n";
  if (auto err = nd.start(lp.name, lp.tree)) {
    say{} << "vigil: the tree did not start: " << describe(err);
    return exit_error;
  }
  if (auto addr = nd.metrics_address(); !addr.empty())
    say{} << "vigil: metrics on http://" << addr
              << "/metrics (health: /healthz, /readyz)\n";
  for (auto& o : nd.orphans())
    say{} << "vigil: " << o
              << " is in the data dir but not in the tree (kept)\n";
  run_outcome out;
  out.name = lp.name;
  watch(nd, lp.name, run_for, every, out);
  if (out.escalated) {
    // Everything below the root was shut down with it; the cause names the
    // child that failed. Counts are those of the last progress snapshot.
    mark_stopped(out.tree);
    out.tree.state = "failed";
    say{} << "vigil: " << lp.name << " escalated: " << out.cause;
  } else {
    stop_tree(nd, lp, watchdog, out);
  }
  // After the stop: dead letters made while stopping count too.
  out.handled = nd.rt()->handled();
  size_t degraded = 0;
  totals(out.tree, out.restarts, degraded);
  out.restarts_all = nd.rt()->restarts();
  out.dead_letters = nd.dead_letters();
  out.stand_in_answers = nd.rt()->stand_in_answers();
  out.dead_total = nd.rt()->stats().dead_letters.load();
  out.dead_by_reason = nd.rt()->dead_log().by_reason();
  auto& c = nd.rt()->stats();
  out.sagas = {c.saga_completed.load(), c.saga_compensated.load(),
               c.saga_compensation_failed.load(), c.saga_resumed.load(),
               c.saga_outcomes_resent.load()};
  out.tools = read_tools(nd);
  print_run_report(out, a.report == "json", std::cout);
  std::cout.flush();
  auto rc = out.escalated ? exit_escalated : exit_ok;
  // The node ends when its last actor does: an instance given up on while
  // stuck in a handler would hold the process until the handler returns.
  watchdog.arm(milliseconds{2000},
               "exiting while a given-up handler is still stuck", rc);
  return rc;
}

// -- check ----------------------------------------------------------------------

int cmd_check(const std::string& file, const registry& types) {
  loaded_policy lp;
  if (auto errs = load_policy_file(file, types, lp); !errs.empty()) {
    print_errors(errs);
    return exit_invalid;
  }
  print_warnings(file, lp);
  size_t n = 0;
  std::function<void(const supervisor_spec&)> count =
    [&](const supervisor_spec& s) {
      for (auto& c : s.children) {
        ++n;
        if (c.sup)
          count(*c.sup);
      }
    };
  count(lp.tree);
  std::cout << file << ": OK (" << lp.name << ", " << n << " children";
  if (!lp.node.tools.empty())
    std::cout << ", " << lp.node.tools.size() << " tools";
  std::cout << ")\n";
  return exit_ok;
}

// -- inspect ------------------------------------------------------------------

int open_or_fail(const std::string& dir, bool write,
                 std::unique_ptr<store>& st) {
  store_options so;
  so.dir = dir;
  so.verify = !skip_verify;
  auto s = write ? store::open(so, st) : store::open_read_only(so, st);
  if (s) {
    std::cerr << "vigil: " << s.message() << "\n";
    if (s.code() == store_errc::locked)
      std::cerr << "vigil: stop the node that runs on " << dir
                << " first; inspect works while it runs\n";
    return exit_error;
  }
  for (auto& note : st->open_notes())
    if (note.find(": verified ") == std::string::npos
        || note.find("fail their checksum") != std::string::npos)
      std::cerr << "vigil: " << note << "\n";
  if (st->upgraded_from() != 0)
    std::cerr << "vigil: " << upgrade_line(dir, {st->upgraded_from(),
                                    st->upgraded_records()})
              << "\n";
  return exit_ok;
}

int cmd_inspect(const std::string& dir, const std::string& what,
                const std::string& path, bool as_json,
                const std::vector<uint64_t>& seqs = {}) {
  std::unique_ptr<store> st;
  if (auto rc = open_or_fail(dir, false, st))
    return rc;
  if (what == "agents")
    return inspect_agents(*st, as_json);
  if (what == "mailbox")
    return inspect_mailbox(*st, dir, path, as_json);
  if (what == "sagas")
    return inspect_sagas(*st, path, as_json);
  if (what == "tools")
    return inspect_tools(*st, as_json);
  if (what == "shared")
    return inspect_shared(*st, path, as_json);
  return inspect_dead_letters(*st, as_json, seqs);
}

// -- dead-letters ---------------------------------------------------------------

int cmd_dead_letters(const std::string& action, const std::string& dir,
                     const std::vector<uint64_t>& ids, bool all) {
  if (action == "list")
    return cmd_inspect(dir, "dead-letters", "", false, ids);
  if (ids.empty() && !all) {
    std::cerr << "vigil dead-letters " << action
              << ": name the dead letters (their seq, see `vigil "
                 "dead-letters list`) or pass --all\n";
    return exit_usage;
  }
  std::unique_ptr<store> st;
  if (auto rc = open_or_fail(dir, true, st))
    return rc;
  if (action == "purge") {
    size_t removed = 0;
    if (auto s = st->remove_dead_letters(ids, all, removed)) {
      std::cerr << "vigil: " << s.message() << "\n";
      return exit_error;
    }
    std::cout << "purged " << removed << " dead letters\n";
    if (!all && removed < ids.size())
      std::cerr << "vigil: " << ids.size() - removed << " of the given seqs "
                << "were not found\n";
    return exit_ok;
  }
  std::vector<std::string> problems;
  std::vector<std::string> notes;
  size_t replayed = 0;
  if (auto s = st->replay_dead_letters(ids, all, problems, replayed, &notes)) {
    std::cerr << "vigil: " << s.message() << "\n";
    return exit_error;
  }
  std::cout << "replayed " << replayed
            << " dead letters into their agents' journals; they run when "
               "the node next starts\n";
  for (auto& n : notes)
    std::cout << n << "\n";
  for (auto& p : problems)
    std::cerr << "vigil: " << p << "\n";
  return problems.empty() ? exit_ok : exit_error;
}

/// With --skip-verify, a read may hit a damaged page of the data dir: say
/// so and exit 70 (EX_SOFTWARE) instead of dying from the signal.
void on_damage_fault(int sig) {
  static const char msg[] =
    "vigil: a read faulted (SIGSEGV/SIGBUS) with --skip-verify: the data "
    "dir is probably damaged; run `vigil verify --data-dir DIR`, then "
    "`vigil repair`\n";
  auto n = ::write(2, msg, sizeof(msg) - 1);
  (void) n;
  (void) sig;
  ::_exit(70);
}

void catch_damage_faults() {
  for (int sig : {SIGSEGV, SIGBUS})
    std::signal(sig, on_damage_fault);
}

/// What main returns for --help (printed): exit 0, nothing to run.
constexpr int exit_help = -1;

/// The command line, parsed; `dispatch` runs the subcommand it names.
struct command_line {
  CLI::App app{"vigil: run and inspect supervision trees of agents"};
  CLI::App* run = nullptr;
  CLI::App* check = nullptr;
  CLI::App* inspect = nullptr;
  run_args ra;
  std::string check_file;
  std::string dir, what = "agents", path;
  bool as_json = false;
  std::string action, dl_dir;
  std::vector<uint64_t> ids;
  bool all = false;
  std::function<int()> approvals;
  std::function<int()> data_dir_cmds;

  command_line();

  /// exit_ok to go on, or the exit code of a parse error or --help (its
  /// message printed).
  int parse(int argc, char** argv) {
    try {
      app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
      auto rc = app.exit(e);
      return rc == 0 ? exit_help : exit_usage;
    }
    return exit_ok;
  }

  int dispatch(registry& types) {
    if (skip_verify || ra.skip_verify)
      catch_damage_faults();
    if (*run)
      return cmd_run(ra, types);
    if (*check)
      return cmd_check(check_file, types);
    if (*inspect)
      return cmd_inspect(dir, what, path, as_json);
    if (app.got_subcommand("approvals"))
      return approvals();
    if (app.got_subcommand("verify") || app.got_subcommand("repair")
        || app.got_subcommand("backup"))
      return data_dir_cmds();
    return cmd_dead_letters(action, dl_dir, ids, all);
  }
};

command_line::command_line() {
  app.require_subcommand(1);
  app.footer("Run `vigil SUBCOMMAND --help` for examples.");
  app.set_version_flag("--version",
                       std::string{"vigil "} + version_string
                         + " (data dir format "
                         + std::to_string(store::format) + ")",
                       "Print vigil's release and the data dir format it "
                       "writes, and exit");

  run = app.add_subcommand(
    "run", "Start the tree in FILE, show progress, stop cleanly on "
           "SIGINT/SIGTERM or after --for, and print a report");
  run->add_option("FILE", ra.file, "Policy file (YAML)")->required();
  run->add_option("--data-dir", ra.data_dir,
                  "LMDB data dir (overrides node.data_dir in FILE)");
  run->add_option("--for", ra.for_time,
                  "Stop after this long, e.g. 30s (default: until a signal)");
  run->add_option("--report", ra.report, "Final report format")
    ->check(CLI::IsMember({"text", "json"}));
  run->add_option("--progress", ra.progress,
                  "Progress line interval, e.g. 500ms (0 = off; default 1s)");
  run->add_option("--metrics", ra.metrics,
                  "Serve /metrics, /healthz and /readyz on HOST:PORT, e.g. "
                  "127.0.0.1:9464 (port 0: a free one; overrides "
                  "node.metrics)");
  run->add_option("--log-format", ra.log_format,
                  "vigil's log lines and supervisor reports as text or JSON "
                  "lines (overrides node.log.format)")
    ->check(CLI::IsMember({"text", "json"}));
  run->add_option("--log-level", ra.log_level,
                  "Least severe log line written (overrides node.log.level)")
    ->check(CLI::IsMember(
      {"trace", "debug", "info", "warn", "error", "critical", "off"}));
  run->footer("Example:\n  vigil run examples/policies/chaos.yaml "
              "--data-dir ./vigil-data --for 10s --report json\n"
              "  vigil run examples/policies/chaos.yaml --metrics "
              "127.0.0.1:9464 --log-format json\n"
              "Exit codes: 0 completed, 1 error, 2 invalid policy, 3 the "
              "root escalated, 64 bad arguments.");

  check = app.add_subcommand(
    "check", "Validate FILE and report every error as FILE:LINE:COL");
  check->add_option("FILE", check_file, "Policy file (YAML)")->required();
  check->footer("Example:\n  vigil check examples/policies/chaos.yaml\n"
                "Exit codes: 0 valid, 2 errors (all of them are listed), "
                "64 bad arguments.");

  inspect = app.add_subcommand(
    "inspect", "Show the durable agents, one agent's pending mailbox, the "
               "durable saga runs, the dead letters, the tools' circuit "
               "breakers or the shared stores and queues of a data dir (also "
               "while a node runs)");
  inspect->add_option("--data-dir", dir, "LMDB data dir")->required();
  inspect->add_option("WHAT", what,
                      "agents | mailbox | sagas | dead-letters | tools | shared")
    ->check(CLI::IsMember(
      {"agents", "mailbox", "sagas", "dead-letters", "tools", "shared"}));
  inspect->add_option("PATH", path,
                      "The agent's path (mailbox), the saga's (sagas), or a "
                      "store or queue name (shared: its keys' histories)");
  inspect->add_flag("--json", as_json, "Print JSON");
  inspect->footer("Examples:\n  vigil inspect --data-dir ./vigil-data\n"
                  "  vigil inspect --data-dir ./vigil-data mailbox "
                  "chaos/counter --json\n"
                  "  vigil inspect --data-dir ./vigil-data sagas\n"
                  "  vigil inspect --data-dir ./vigil-data dead-letters\n"
                  "  vigil inspect --data-dir ./vigil-data tools\n"
                  "  vigil inspect --data-dir ./vigil-data shared\n"
                  "  vigil inspect --data-dir ./vigil-data shared config");

  auto* dl = app.add_subcommand(
    "dead-letters", "List, replay (back into their journal agents) or purge "
                    "the dead letters of a data dir; the node must be "
                    "stopped to replay or purge");
  dl->add_option("ACTION", action, "list | replay | purge")
    ->required()
    ->check(CLI::IsMember({"list", "replay", "purge"}));
  dl->add_option("--data-dir", dl_dir, "LMDB data dir")->required();
  dl->add_option("SEQ", ids, "Dead letters by seq (see list)");
  dl->add_flag("--all", all, "All dead letters");
  dl->footer("Examples:\n  vigil dead-letters list --data-dir ./vigil-data\n"
             "  vigil dead-letters replay --data-dir ./vigil-data 3 4\n"
             "  vigil dead-letters purge --data-dir ./vigil-data --all");

  approvals = add_approvals_command(app);
  data_dir_cmds = add_data_dir_commands(app);
  for (auto* sub : {inspect, dl})
    sub->add_flag("--skip-verify", skip_verify,
                  "Skip the walk of every database before reading (the "
                  "size check stays)");
  run->add_flag("--skip-verify", ra.skip_verify,
                "Skip the walk of every database at start (the size check "
                "stays)");
}

} // namespace

int main(int argc, char** argv, registry types) {
  // The runtime's log lines go to stderr: stdout is the report's (and
  // `--report json` must parse as JSON).
  // vigil's logger is the default one here, so that a runner's own lines
  // go there too.
  vigil::detail::log();
  spdlog::set_default_logger(spdlog::get("vigil"));
  route_protobuf_log(+[](int level, const std::string& line) {
    if (level >= google::protobuf::LOGLEVEL_ERROR)
      detail::log().error("vigil: protobuf: {}", line);
    else
      detail::log().warn("vigil: protobuf: {}", line);
  });
  // Past the file size limit (ulimit -f) a write fails with EFBIG, reported
  // with the data dir's name, instead of killing vigil.
  std::signal(SIGXFSZ, SIG_IGN);
  add_builtin_agents(types);
  command_line cl;
  auto rc = cl.parse(argc, argv);
  if (rc == exit_help)
    return exit_ok;
  if (rc != exit_ok)
    return rc;
  return cl.dispatch(types);
}

int parse_only(int argc, char** argv) {
  command_line cl;
  return cl.parse(argc, argv);
}

} // namespace vigil::cli
