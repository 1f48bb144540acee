// The randomized lifecycle test, real-process part: lifecycle_child runs a
// real node (threads, sync full) through a random lifecycle workload, and
// is SIGKILLed at a random point of it (or let finish), round after round
// on one data dir. Then the test drains the data dir with every path
// started and checks the journal guarantee with the same oracle as the
// deterministic part (support/lifecycle_oracle.hpp), from what the child
// printed before each send. The tree includes root/deg/j, a journal tally
// that degrades once its budget is spent, with probes that fail in each
// way (support/durable_agents.hpp, probe_faults).
//
// VIGIL_LIFECYCLE_PROCESS_SEEDS=n runs n seeds (default 5);
// VIGIL_LIFECYCLE_PROCESS_SEED=s repeats one.

#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <sstream>
#include <string>

#include <sys/wait.h>
#include <unistd.h>

#include "support/durable_agents.hpp"
#include "support/eventually.hpp"
#include "support/gate.hpp"
#include "support/lifecycle_oracle.hpp"
#include "support/lifecycle_tree.hpp"
#include "support/temp_dir.hpp"
#include "vigil/node/node.hpp"

using namespace vigil;
using namespace vigil::test;
using namespace vigil::test::lifecycle;
using namespace std::chrono_literals;

namespace {

uint64_t env_u64(const char* name, uint64_t fallback) {
  auto* s = std::getenv(name);
  return s != nullptr ? std::strtoull(s, nullptr, 10) : fallback;
}

/// Requests answered by a stand-in, over every round (shows that the
/// degrading child degraded).
size_t stand_in_answers = 0;

/// One round: runs the child, feeds its lines into `facts`, and SIGKILLs
/// it after `kill_after` lines (0: let it finish). Returns what happened.
std::string run_round(const std::string& dir, uint64_t seed, uint64_t round,
                      size_t kill_after, lifecycle_facts& facts) {
  int fds[2];
  if (pipe(fds) != 0)
    return "pipe failed";
  auto pid = fork();
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    auto s = std::to_string(seed);
    auto r = std::to_string(round);
    execl(VIGIL_LIFECYCLE_CHILD, VIGIL_LIFECYCLE_CHILD, dir.c_str(),
          s.c_str(), r.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  close(fds[1]);
  std::string rest;
  size_t lines = 0;
  bool killed = false;
  bool done = false;
  char buf[4096];
  auto parse = [&](const std::string& l) {
    std::istringstream is{l};
    std::string tag, path;
    is >> tag >> path;
    if (tag == "S") {
      int64_t n = 0;
      is >> n;
      facts.sent[path].insert(n);
    } else if (tag == "A") {
      int64_t n = 0;
      is >> n;
      facts.answered[path].insert(n);
    } else if (tag == "F") {
      uint64_t id = 0;
      fanout_sent f;
      is >> id >> f.to >> f.first >> f.count;
      facts.fanout(path, id, f);
    } else if (tag == "D") {
      ++stand_in_answers; // not applied: no fact to check
    } else if (tag == "DONE") {
      done = true;
    }
  };
  for (;;) {
    auto k = read(fds[0], buf, sizeof(buf));
    if (k <= 0)
      break;
    rest.append(buf, static_cast<size_t>(k));
    size_t nl;
    while ((nl = rest.find('\n')) != std::string::npos) {
      parse(rest.substr(0, nl));
      rest.erase(0, nl + 1);
      if (++lines == kill_after && !killed) {
        kill(pid, SIGKILL);
        killed = true;
      }
    }
  }
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (killed)
    return "";
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !done)
    return "round " + std::to_string(round) + ": the child failed (status "
           + std::to_string(status) + ")";
  return "";
}

/// Starts every path on the data dir and waits until the journal and the
/// outbox are empty (stuck handlers' gates are open in this process).
std::string drain(const std::string& dir) {
  gates::get().open_all();
  node_config nc;
  nc.data_dir = dir;
  nc.threads = 2;
  node nd{durable_registry(), nc};
  if (auto err = nd.start("root", tree(all_dynamic(), true)))
    return "the drain did not start: " + describe(err);
  auto empty = [&] {
    size_t j = 1, o = 1;
    auto& st = *nd.rt()->storage();
    return !st.count(db::journal, j) && !st.count(db::outbox, o) && j == 0
           && o == 0;
  };
  eventually(empty, 30s); // the oracle reports what is left
  nd.stop();
  return "";
}

TEST(lifecycle_process_test, sigkills_during_random_lifecycles) {
  auto one = std::getenv("VIGIL_LIFECYCLE_PROCESS_SEED");
  auto count = one != nullptr ? 1
                              : env_u64("VIGIL_LIFECYCLE_PROCESS_SEEDS", 5);
  auto first = one != nullptr ? env_u64("VIGIL_LIFECYCLE_PROCESS_SEED", 0)
                              : env_u64("VIGIL_LIFECYCLE_PROCESS_FIRST", 1);
  constexpr uint64_t rounds = 4;
  size_t applied = 0, accepted = 0, kills = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (uint64_t seed = first; seed < first + count; ++seed) {
    temp_dir dir;
    lifecycle_facts facts;
    std::mt19937_64 rng{seed};
    std::string trouble;
    for (uint64_t round = 0; round < rounds && trouble.empty(); ++round) {
      // Two rounds in three are killed, at a random line of the workload.
      size_t kill_after = 0;
      if (std::uniform_int_distribution<int>{0, 2}(rng) != 0) {
        kill_after = std::uniform_int_distribution<size_t>{1, 250}(rng);
        ++kills;
      }
      trouble = run_round(dir.path(), seed, round, kill_after, facts);
    }
    if (trouble.empty())
      trouble = drain(dir.path());
    gates::get().reset();
    auto f = check_journal_guarantee(dir.path(), facts);
    applied += f.applied;
    accepted += f.guards;
    if (!trouble.empty())
      f.problems.insert(f.problems.begin(), trouble);
    if (f.problems.empty())
      continue;
    std::ostringstream os;
    os << "seed " << seed << " (repeat with VIGIL_LIFECYCLE_PROCESS_SEED="
       << seed << "):\n";
    for (auto& p : f.problems)
      os << "  " << p << "\n";
    FAIL() << os.str();
  }
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
              std::chrono::steady_clock::now() - t0)
              .count();
  EXPECT_GT(applied, count);
  EXPECT_GT(accepted, count);
  std::printf("lifecycle_process_test: %llu seeds from %llu in %lld ms, "
              "%zu SIGKILLs: %zu values applied, %zu envelopes accepted, "
              "%zu stand-in answers\n",
              static_cast<unsigned long long>(count),
              static_cast<unsigned long long>(first),
              static_cast<long long>(ms), kills, applied, accepted,
              stand_in_answers);
}

} // namespace
