// Durable sagas, tested with real crashes: `vigil run` runs the checkout
// saga of examples/policies/durable_saga.yaml (three journal `step` agents
// that count what they did, fed by a journal source, outcomes counted by a
// journal `outcomes` agent) on a temp data dir, and is SIGKILLed at random
// points, round after round on the same data dir. A last run without a kill
// drains the rest: the source is done, no saga run is unfinished, and every
// outcome reached `outcomes`. Then every step's effect and every
// compensation must be on disk exactly once, whatever the kills interrupted:
//
//   reserve.executed = N            reserve.compensated = N - ship.executed
//   charge.executed  = N - N/7      charge.refused = N/7
//   charge.compensated = charge.executed - ship.executed
//   ship.executed = #{n : n%7 != 0 && n%11 != 0}, ship.compensated = 0
//   outcomes: completed = ship.executed, compensated = N - ship.executed
//
// and `vigil inspect sagas` lists exactly one finished run per n = 1..N,
// with the outcome that n must get.
//
// Kill points (seeded): a quarter of the kills land during start (1 to
// 60 ms after the fork: opening the store, recovery); the others land a
// random 0..400 ms after the node said "starting" (recovery and resumed
// runs, runs in flight, compensations). The policy's steps sleep a little
// in execute (1..3 ms, far below step_timeout 30s) so that runs are in
// flight most of the time.
//
// Environment: VIGIL_SAGA_KILL_ROUNDS (kills, default 5),
// VIGIL_SAGA_KILL_SEED (default 1), VIGIL_SAGA_KILL_N (orders, default
// max(200, 15 * rounds)), VIGIL_SAGA_KILL_RATE (orders a second, default
// 200), VIGIL_BIN (the vigil binary). Soak:
//   VIGIL_SAGA_KILL_ROUNDS=200 ./build/tests/saga_kill_test
// On failure the data dir is copied to /tmp/vigil-saga-kill-SEED-PID.

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "support/process.hpp"
#include "support/temp_dir.hpp"

using namespace std::chrono_literals;
using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

namespace {

int64_t env_or(const char* name, int64_t fallback) {
  auto* s = std::getenv(name);
  return s != nullptr && *s != '\0' ? std::strtoll(s, nullptr, 10) : fallback;
}

std::string vigil_bin() {
  auto* s = std::getenv("VIGIL_BIN");
  return s != nullptr && *s != '\0' ? s : VIGIL_BIN;
}

std::string read_file(const std::string& path) {
  std::ifstream in{path};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string tail(const std::string& s, size_t n = 3000) {
  return s.size() <= n ? s : "..." + s.substr(s.size() - n);
}

/// The example policy (examples/policies/durable_saga.yaml) with `count`
/// orders at `rate` a second, steps that sleep 1..3 ms in execute, and a
/// checkout intensity that the ship crashes (one in 11 orders) cannot
/// spend at that rate.
std::string policy(int64_t count, int64_t rate) {
  std::ostringstream os;
  os << R"(node:
  name: shop
tree:
  strategy: one_for_one
  intensity: 50
  children:
    - name: outcomes
      agent: outcomes
      durability: journal
    - name: checkout
      durability: journal
      supervisor:
        intensity: 100000
        saga:
          step_timeout: 30s
          retry_delay: 50ms
          compensation_retries: 3
          outcome_to: shop/outcomes
        children:
          - name: reserve
            agent: step
            durability: journal
            params: {delay: 1ms}
          - name: charge
            agent: step
            durability: journal
            params: {refuse_every: 7, delay: 2ms}
          - name: ship
            agent: step
            durability: journal
            params: {crash_every: 11, delay: 3ms}
    - name: orders
      agent: source
      durability: journal
      params: {to: shop/checkout, count: )"
     << count << ", rate: " << rate << "}\n";
  return os.str();
}

/// What the steps and `outcomes` must hold after orders 1..n, each run
/// once: charge refuses every 7th order, ship crashes on every 11th.
struct model {
  int64_t reserve_executed = 0, reserve_compensated = 0;
  int64_t charge_executed = 0, charge_refused = 0, charge_compensated = 0;
  int64_t ship_executed = 0, ship_compensated = 0;
  int64_t completed = 0, compensated = 0;

  explicit model(int64_t n) {
    for (int64_t k = 1; k <= n; ++k) {
      ++reserve_executed;
      if (k % 7 == 0) {
        ++charge_refused;
        continue;
      }
      ++charge_executed;
      if (k % 11 != 0)
        ++ship_executed;
    }
    reserve_compensated = n - ship_executed;
    charge_compensated = charge_executed - ship_executed;
    completed = ship_executed;
    compensated = n - ship_executed;
  }

  /// The outcome `vigil inspect sagas` shows for order k.
  static std::string outcome(int64_t k) {
    if (k % 7 == 0)
      return "failed at shop/checkout/charge, compensated";
    if (k % 11 == 0)
      return "failed at shop/checkout/ship, compensated";
    return "completed";
  }
};

/// A `vigil run` child with stdout and stderr in files. The destructor
/// kills it (SIGKILL) and reaps it if it still runs, so no path leaks it;
/// PR_SET_PDEATHSIG kills it too if this test process dies first.
class node_process {
public:
  node_process(const std::vector<std::string>& argv, const std::string& out,
               const std::string& err) {
    std::vector<char*> args;
    for (auto& a : argv)
      args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    auto parent = getpid();
    pid_ = fork();
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent)
        _exit(126);
      int o = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      int e = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (o < 0 || e < 0)
        _exit(125);
      dup2(o, STDOUT_FILENO);
      dup2(e, STDERR_FILENO);
      close(o);
      close(e);
      execv(args[0], args.data());
      _exit(127);
    }
  }

  ~node_process() {
    if (pid_ > 0 && !reaped_) {
      kill(pid_, SIGKILL);
      int st = 0;
      waitpid(pid_, &st, 0);
    }
  }

  node_process(const node_process&) = delete;
  node_process& operator=(const node_process&) = delete;

  bool started() const noexcept {
    return pid_ > 0;
  }

  /// True once it exited (reaps it; status() then tells how).
  bool exited() {
    if (reaped_)
      return true;
    int st = 0;
    if (waitpid(pid_, &st, WNOHANG) == pid_) {
      reaped_ = true;
      status_ = st;
    }
    return reaped_;
  }

  void signal(int sig) {
    if (!reaped_)
      kill(pid_, sig);
  }

  /// Waits up to `limit` for it to exit.
  bool wait_exit(milliseconds limit) {
    auto until = steady_clock::now() + limit;
    while (!exited()) {
      if (steady_clock::now() >= until)
        return false;
      std::this_thread::sleep_for(2ms);
    }
    return true;
  }

  int status() const noexcept {
    return status_;
  }

  std::string describe() const {
    if (!reaped_)
      return "still running";
    if (WIFEXITED(status_))
      return "exit " + std::to_string(WEXITSTATUS(status_));
    if (WIFSIGNALED(status_))
      return std::string{"signal "} + strsignal(WTERMSIG(status_));
    return "status " + std::to_string(status_);
  }

private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = 0;
};

/// Polls `ready` every `every` until it holds or `limit` passed.
template <class F>
bool poll_until(milliseconds limit, milliseconds every, F ready) {
  auto until = steady_clock::now() + limit;
  for (;;) {
    if (ready())
      return true;
    if (steady_clock::now() >= until)
      return false;
    std::this_thread::sleep_for(every);
  }
}

/// `vigil inspect --data-dir DIR ARGS... --json`, parsed; `null` (and
/// `why` set) if it failed.
json inspect(const std::string& dir, std::vector<std::string> args,
             std::string& why) {
  args.insert(args.begin(), {vigil_bin(), "inspect", "--data-dir", dir});
  args.push_back("--json");
  auto r = vigil::test::run_process(args, 60s);
  if (r.timed_out || r.exit_code != 0) {
    why = "vigil inspect " + args[4] + ": exit " + std::to_string(r.exit_code)
          + (r.timed_out ? " (timed out)" : "") + ": " + tail(r.err);
    return nullptr;
  }
  auto j = json::parse(r.out, nullptr, false);
  if (j.is_discarded() || !j.is_array()) {
    why = "vigil inspect " + args[4] + ": not a JSON array: " + tail(r.out);
    return nullptr;
  }
  return j;
}

/// An int64 field of an agent's state (JSON strings; absent when 0).
int64_t num(const json& state, const char* key) {
  if (!state.is_object() || !state.contains(key))
    return 0;
  auto& v = state[key];
  return v.is_string() ? std::stoll(v.get<std::string>()) : v.get<int64_t>();
}

/// path -> state, from `vigil inspect agents --json`.
std::map<std::string, json> states(const json& agents) {
  std::map<std::string, json> out;
  for (auto& a : agents)
    out[a.value("path", std::string{})] = a.value("state", json::object());
  return out;
}

struct saga_census {
  size_t runs = 0;
  size_t executing = 0;
  size_t compensating = 0;
  size_t unfinished = 0;
  uint64_t resumes = 0;
};

saga_census census(const json& sagas) {
  saga_census c;
  for (auto& r : sagas) {
    ++c.runs;
    auto phase = r.value("phase", std::string{});
    if (phase != "finished")
      ++c.unfinished;
    if (phase == "executing")
      ++c.executing;
    else if (phase == "compensating")
      ++c.compensating;
    c.resumes += r.value("resumes", uint64_t{0});
  }
  return c;
}

/// The JSON report of `vigil run --report json`: all of its stdout (log
/// lines go to stderr), or null.
json report_of(const std::string& out) {
  auto j = json::parse(out, nullptr, false);
  return j.is_object() ? j : json{};
}

} // namespace

TEST(saga_kill_test,
     sigkill_at_random_points_runs_every_step_and_compensation_once) {
  vigil::test::temp_dir tmp;
  auto rounds = env_or("VIGIL_SAGA_KILL_ROUNDS", 5);
  auto seed = static_cast<uint64_t>(env_or("VIGIL_SAGA_KILL_SEED", 1));
  auto n = env_or("VIGIL_SAGA_KILL_N", std::max<int64_t>(200, 15 * rounds));
  auto rate = env_or("VIGIL_SAGA_KILL_RATE", 200);
  ASSERT_GT(n, 0);
  ASSERT_GT(rate, 0);
  auto replay = "replay: VIGIL_SAGA_KILL_SEED=" + std::to_string(seed)
                + " VIGIL_SAGA_KILL_ROUNDS=" + std::to_string(rounds)
                + " VIGIL_SAGA_KILL_N=" + std::to_string(n)
                + " VIGIL_SAGA_KILL_RATE=" + std::to_string(rate)
                + " ./build/tests/saga_kill_test";
  SCOPED_TRACE(replay);
  std::printf("saga_kill_test: seed %llu, %lld kills, N = %lld at %lld/s\n",
              static_cast<unsigned long long>(seed),
              static_cast<long long>(rounds), static_cast<long long>(n),
              static_cast<long long>(rate));
  std::fflush(stdout);

  auto data = tmp.path() + "/data";
  auto file = tmp.path() + "/durable_saga.yaml";
  std::ofstream{file} << policy(n, rate);
  auto out_file = tmp.path() + "/run.out";
  auto err_file = tmp.path() + "/run.err";
  auto bin = vigil_bin();
  ASSERT_EQ(access(bin.c_str(), X_OK), 0) << bin << " is not executable";

  // Keeps the data dir and shows what is on it, if anything failed.
  struct on_failure {
    std::string data, err_file, bin;
    uint64_t seed;
    ~on_failure() {
      if (!::testing::Test::HasFailure())
        return;
      auto keep = "/tmp/vigil-saga-kill-" + std::to_string(seed) + "-"
                  + std::to_string(getpid());
      std::error_code ec;
      std::filesystem::copy(data, keep,
                            std::filesystem::copy_options::recursive, ec);
      std::printf("saga_kill_test: the data dir is kept in %s%s\n",
                  keep.c_str(),
                  ec ? (" (copy failed: " + ec.message() + ")").c_str() : "");
      std::printf("saga_kill_test: last run's stderr:\n%s\n",
                  tail(read_file(err_file)).c_str());
      for (auto what : {"agents", "sagas", "dead-letters"}) {
        auto r = vigil::test::run_process(
          {bin, "inspect", "--data-dir", data, what}, 60s);
        std::printf("saga_kill_test: vigil inspect %s (exit %d):\n%s%s\n",
                    what, r.exit_code, r.out.substr(0, 4000).c_str(),
                    tail(r.err, 1000).c_str());
      }
      std::fflush(stdout);
    }
  } report{data, err_file, bin, seed};

  std::mt19937_64 rng{seed};
  std::uniform_int_distribution<int> early_ms{1, 60};
  std::uniform_int_distribution<int> late_ms{0, 400};
  // Every killed run also gets --for 60s: a bound if this test is stopped.
  std::vector<std::string> run_args{bin,    "run",         file,
                                    "--data-dir", data, "--for", "60s",
                                    "--progress", "0"};
  size_t kills_mid_run = 0;     // kills after which a run was unfinished
  size_t kills_compensating = 0; // ... and one was compensating
  size_t kills_before_start = 0; // before the node said "starting"
  bool made_data_dir = false;    // a start got as far as a data dir
  for (int64_t k = 0; k < rounds; ++k) {
    SCOPED_TRACE("round " + std::to_string(k + 1));
    bool early = k % 4 == 0;
    auto delay = milliseconds{early ? early_ms(rng) : late_ms(rng)};
    {
      node_process p{run_args, out_file, err_file};
      ASSERT_TRUE(p.started());
      bool said_starting = false;
      if (!early) {
        // The node is built; the tree starts next (and, on its data dir,
        // recovery and the saga's resumed runs).
        said_starting = poll_until(20s, 1ms, [&] {
          return p.exited()
                 || read_file(err_file).find("vigil: starting")
                      != std::string::npos;
        });
        ASSERT_TRUE(said_starting) << "no \"vigil: starting\" within 20s:\n"
                                   << tail(read_file(err_file));
        ASSERT_FALSE(p.exited()) << p.describe() << ":\n"
                                 << tail(read_file(err_file));
      }
      // This sleep is the chaos itself (where the kill lands), not a wait
      // for a condition.
      std::this_thread::sleep_for(delay);
      ASSERT_FALSE(p.exited()) << "the node exited before its kill: "
                               << p.describe() << ":\n"
                               << tail(read_file(err_file));
      if (read_file(err_file).find("vigil: starting") == std::string::npos)
        ++kills_before_start;
      p.signal(SIGKILL);
      ASSERT_TRUE(p.wait_exit(20s)) << "SIGKILL did not stop it within 20s";
      ASSERT_TRUE(WIFSIGNALED(p.status()) && WTERMSIG(p.status()) == SIGKILL)
        << p.describe() << ":\n"
        << tail(read_file(err_file));
    }
    std::string why;
    if (!std::filesystem::exists(data)) {
      // Killed before it created the data dir: nothing to look at yet.
      std::printf("saga_kill_test: kill %lld/%lld %s +%lldms: no data dir "
                  "yet\n",
                  static_cast<long long>(k + 1),
                  static_cast<long long>(rounds),
                  early ? "after fork" : "after starting",
                  static_cast<long long>(delay.count()));
      continue;
    }
    auto agents = inspect(data, {"agents"}, why);
    if (agents.is_null() && !made_data_dir
        && (why.find("not a vigil data dir") != std::string::npos
            || why.find("(no data.mdb)") != std::string::npos)) {
      // A kill while the very first start creates the data dir leaves the
      // directory without data.mdb yet, or an LMDB environment without
      // vigil's "meta" database; the next start makes it a data dir.
      std::printf("saga_kill_test: kill %lld/%lld %s +%lldms: %s",
                  static_cast<long long>(k + 1),
                  static_cast<long long>(rounds),
                  early ? "after fork" : "after starting",
                  static_cast<long long>(delay.count()), why.c_str());
      continue;
    }
    ASSERT_FALSE(agents.is_null()) << why;
    made_data_dir = true;
    auto sagas = inspect(data, {"sagas"}, why);
    ASSERT_FALSE(sagas.is_null()) << why;
    auto st = states(agents);
    auto c = census(sagas);
    if (c.unfinished > 0)
      ++kills_mid_run;
    if (c.compensating > 0)
      ++kills_compensating;
    std::printf("saga_kill_test: kill %lld/%lld %s +%lldms: orders next=%lld, "
                "%zu runs, %zu unfinished (%zu executing, %zu "
                "compensating), outcomes %lld\n",
                static_cast<long long>(k + 1), static_cast<long long>(rounds),
                early ? "after fork" : "after starting",
                static_cast<long long>(delay.count()),
                static_cast<long long>(num(st["shop/orders"], "next")),
                c.runs, c.unfinished, c.executing, c.compensating,
                static_cast<long long>(num(st["shop/outcomes"], "completed")
                                       + num(st["shop/outcomes"], "compensated")
                                       + num(st["shop/outcomes"],
                                             "compensation_failed")));
    std::fflush(stdout);
  }

  // The last run, not killed: polls until all the work is done, then stops
  // it with SIGTERM (a clean stop).
  model m{n};
  json agents, sagas;
  std::string why;
  auto t0 = steady_clock::now();
  {
    node_process p{{bin, "run", file, "--data-dir", data, "--for", "600s",
                    "--progress", "0", "--report", "json"},
                   out_file, err_file};
    ASSERT_TRUE(p.started());
    auto limit = milliseconds{60000 + 3000 * n / rate};
    std::string last;
    bool done = poll_until(limit, 100ms, [&] {
      if (p.exited())
        return true;
      agents = inspect(data, {"agents"}, why);
      if (agents.is_null()) {
        last = why;
        return false;
      }
      auto st = states(agents);
      auto& o = st["shop/outcomes"];
      auto outcomes = num(o, "completed") + num(o, "compensated")
                      + num(o, "compensation_failed");
      auto source_done = st["shop/orders"].value("done", false);
      last = "orders next=" + std::to_string(num(st["shop/orders"], "next"))
             + (source_done ? " (done)" : "") + ", outcomes "
             + std::to_string(outcomes);
      if (!source_done || outcomes < n)
        return false;
      sagas = inspect(data, {"sagas"}, why);
      if (sagas.is_null()) {
        last = why;
        return false;
      }
      auto c = census(sagas);
      last += ", " + std::to_string(c.runs) + " runs, "
              + std::to_string(c.unfinished) + " unfinished";
      return c.unfinished == 0 && c.runs >= static_cast<size_t>(n);
    });
    ASSERT_FALSE(p.exited()) << "the last run exited on its own: "
                             << p.describe() << ":\n"
                             << tail(read_file(err_file));
    ASSERT_TRUE(done) << "the work was not done within " << limit.count()
                      << "ms: " << last;
    p.signal(SIGTERM);
    ASSERT_TRUE(p.wait_exit(60s)) << "SIGTERM did not stop it within 60s:\n"
                                  << tail(read_file(err_file));
    ASSERT_TRUE(WIFEXITED(p.status()) && WEXITSTATUS(p.status()) == 0)
      << p.describe() << ":\n"
      << tail(read_file(err_file));
  }
  auto drain = std::chrono::duration<double>(steady_clock::now() - t0).count();
  auto report_json = report_of(read_file(out_file));
  std::printf("saga_kill_test: the last run drained the rest in %.1fs; its "
              "sagas: %s, dead letters: %s\n",
              drain,
              report_json.is_object() && report_json.contains("sagas")
                ? report_json["sagas"].dump().c_str()
                : "?",
              report_json.is_object() && report_json.contains("dead_letters")
                ? report_json["dead_letters"].value("by_reason", json{}).dump().c_str()
                : "?");

  // What is on disk once the node stopped.
  agents = inspect(data, {"agents"}, why);
  ASSERT_FALSE(agents.is_null()) << why;
  sagas = inspect(data, {"sagas"}, why);
  ASSERT_FALSE(sagas.is_null()) << why;
  auto st = states(agents);
  auto& reserve = st["shop/checkout/reserve"];
  auto& charge = st["shop/checkout/charge"];
  auto& ship = st["shop/checkout/ship"];
  auto& outs = st["shop/outcomes"];
  auto& orders = st["shop/orders"];
  EXPECT_TRUE(orders.value("done", false)) << orders.dump();
  EXPECT_EQ(num(orders, "next"), n + 1) << orders.dump();
  EXPECT_EQ(num(reserve, "executed"), m.reserve_executed) << reserve.dump();
  EXPECT_EQ(num(reserve, "compensated"), m.reserve_compensated)
    << reserve.dump();
  EXPECT_EQ(num(reserve, "refused"), 0) << reserve.dump();
  EXPECT_EQ(num(charge, "executed"), m.charge_executed) << charge.dump();
  EXPECT_EQ(num(charge, "refused"), m.charge_refused) << charge.dump();
  EXPECT_EQ(num(charge, "compensated"), m.charge_compensated)
    << charge.dump();
  EXPECT_EQ(num(ship, "executed"), m.ship_executed) << ship.dump();
  EXPECT_EQ(num(ship, "compensated"), m.ship_compensated) << ship.dump();
  EXPECT_EQ(num(ship, "refused"), 0) << ship.dump();
  EXPECT_EQ(num(outs, "completed"), m.completed) << outs.dump();
  EXPECT_EQ(num(outs, "compensated"), m.compensated) << outs.dump();
  EXPECT_EQ(num(outs, "compensation_failed"), 0) << outs.dump();

  // One finished run per order, with the outcome that order must get.
  std::map<int64_t, size_t> runs_of;
  size_t completed = 0, compensated = 0, wrong = 0;
  uint64_t resumes = 0;
  for (auto& r : sagas) {
    resumes += r.value("resumes", uint64_t{0});
    auto outcome = r.value("outcome", std::string{});
    auto phase = r.value("phase", std::string{});
    int64_t k = -1;
    if (r.contains("input") && r["input"].contains("payload")
        && r["input"]["payload"].contains("n")) {
      auto& v = r["input"]["payload"]["n"];
      k = v.is_string() ? std::stoll(v.get<std::string>()) : v.get<int64_t>();
    }
    ++runs_of[k];
    if (outcome == "completed")
      ++completed;
    else if (outcome.size() > 13
             && outcome.compare(outcome.size() - 13, 13, ", compensated") == 0)
      ++compensated;
    if (phase != "finished" || outcome != model::outcome(k)) {
      if (++wrong <= 5)
        ADD_FAILURE() << "order " << k << ": phase " << phase << ", outcome \""
                      << outcome << "\", want finished, \""
                      << model::outcome(k) << "\": " << r.dump();
    }
  }
  EXPECT_EQ(wrong, 0u);
  EXPECT_EQ(sagas.size(), static_cast<size_t>(n));
  EXPECT_EQ(completed, static_cast<size_t>(m.completed));
  EXPECT_EQ(compensated, static_cast<size_t>(m.compensated));
  size_t missing = 0, doubled = 0;
  for (int64_t k = 1; k <= n; ++k) {
    auto it = runs_of.find(k);
    if (it == runs_of.end())
      ++missing;
    else if (it->second > 1)
      ++doubled;
  }
  EXPECT_EQ(missing, 0u) << "orders without a saga run";
  EXPECT_EQ(doubled, 0u) << "orders with more than one saga run";
  EXPECT_EQ(runs_of.size(), static_cast<size_t>(n))
    << "saga runs for inputs outside 1.." << n;

  std::printf("saga_kill_test: %zu of %lld kills left a run unfinished (%zu "
              "compensating, %zu before \"starting\"); %llu resumes in all\n",
              kills_mid_run, static_cast<long long>(rounds),
              kills_compensating, kills_before_start,
              static_cast<unsigned long long>(resumes));
  // Otherwise the test tested little: kills must have interrupted runs.
  if (rounds > 0) {
    EXPECT_GE(kills_mid_run, 1u)
      << "no kill left a saga run unfinished: raise the rate or the rounds";
    EXPECT_GT(resumes, 0u) << "no saga run was resumed";
  }
}

// `vigil run --report json` prints the report, and nothing else, on stdout
// (so that `| jq` works), also when the node resumes unfinished saga runs
// left by a kill.
TEST(saga_kill_test, run_report_json_is_only_json_after_resuming_saga_runs) {
  vigil::test::temp_dir tmp;
  auto data = tmp.path() + "/data";
  auto file = tmp.path() + "/durable_saga.yaml";
  std::ofstream{file} << policy(200, 200);
  auto bin = vigil_bin();
  auto out_file = tmp.path() + "/run.out";
  auto err_file = tmp.path() + "/run.err";
  // Kills the node once a run is unfinished on disk (a few tries: the run
  // may finish between the look and the kill).
  saga_census after_kill;
  std::string why;
  for (int attempt = 0; attempt < 5 && after_kill.unfinished == 0;
       ++attempt) {
    node_process p{{bin, "run", file, "--data-dir", data, "--for", "60s",
                    "--progress", "0"},
                   out_file, err_file};
    ASSERT_TRUE(p.started());
    bool seen = poll_until(20s, 10ms, [&] {
      if (p.exited())
        return true;
      auto sagas = std::filesystem::exists(data)
                     ? inspect(data, {"sagas"}, why)
                     : json{};
      return sagas.is_array() && census(sagas).unfinished > 0;
    });
    ASSERT_FALSE(p.exited()) << p.describe() << ":\n"
                             << tail(read_file(err_file));
    ASSERT_TRUE(seen) << "no unfinished saga run within 20s: " << why;
    p.signal(SIGKILL);
    ASSERT_TRUE(p.wait_exit(20s));
    auto sagas = inspect(data, {"sagas"}, why);
    ASSERT_FALSE(sagas.is_null()) << why;
    after_kill = census(sagas);
  }
  ASSERT_GT(after_kill.unfinished, 0u)
    << "no kill of 5 left a saga run unfinished";
  auto r = vigil::test::run_process({bin, "run", file, "--data-dir", data,
                                     "--for", "1s", "--progress", "0",
                                     "--report", "json"},
                                    60s);
  ASSERT_FALSE(r.timed_out) << r.err;
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto whole = json::parse(r.out, nullptr, false);
  EXPECT_TRUE(whole.is_object())
    << "stdout of `vigil run --report json` is not just the JSON report ("
    << after_kill.unfinished << " unfinished runs to resume); it starts:\n"
    << r.out.substr(0, 300);
  ASSERT_TRUE(whole.is_object());
  EXPECT_GT(whole["sagas"].value("resumed", uint64_t{0}), 0u)
    << whole["sagas"].dump();
}
