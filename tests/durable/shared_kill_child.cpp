// The process that shared_kill_test kills: a node on DATA_DIR where 100
// journal workers race for TASKS tasks of one leased queue and for ten
// compare-and-swap keys (tests/support/shared_agents.hpp). Their committed
// outcomes are appended to EVENTS, one line each (O_APPEND: a line written
// before a SIGKILL stays). Prints "progress=<done>" every 20 ms or so, and
// "done=<n>" when every task is done or dead, every late completion of
// this run was answered, and three cas_counters (fed 1..300 each by journal
// sources) reached their total, then exits 0; 2 on error.
//
//   shared_kill_child DATA_DIR EVENTS TASKS SEED

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include <fcntl.h>
#include <unistd.h>

#include "support/shared_agents.hpp"
#include "vigil/cli/app.hpp"
#include "vigil/node/node.hpp"
#include "vigil/persistence/shared.hpp"

using namespace vigil;
using namespace std::chrono_literals;

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: shared_kill_child DATA_DIR EVENTS TASKS "
                         "SEED\n");
    return 2;
  }
  int fd = ::open(argv[2], O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (fd < 0) {
    std::perror(argv[2]);
    return 2;
  }
  long tasks = std::strtol(argv[3], nullptr, 10);
  auto& w = test::shared_world::get();
  w.seed = std::strtoull(argv[4], nullptr, 10);
  w.crash_pm = 30;
  w.stall_pm = 30;
  w.lease = 300ms;
  // Stalls of this run and their late completions' answers: the run ends
  // only after every late completion was answered.
  static std::atomic<int64_t> stalls{0}, lates{0};
  w.log = [fd](const std::string& s) {
    if (s.rfind("stall ", 0) == 0)
      ++stalls;
    else if (s.rfind("late_", 0) == 0)
      ++lates;
    auto line = s + '\n';
    if (::write(fd, line.data(), line.size()) < 0)
      std::perror("shared_kill_child: events");
  };
  node_config nc;
  nc.data_dir = argv[1];
  nc.sync = sync_mode::nosync; // survives kill -9 (the page cache stays)
  auto types = test::shared_registry();
  cli::add_builtin_agents(types); // source and cas_counter
  node nd{std::move(types), nc};
  supervisor_spec spec;
  spec.flags.intensity = 100000;
  spec.flags.period = 1s;
  spec.children.push_back(
    worker("feeder", "shared_feeder").with_durability(durability_mode::journal));
  for (int i = 0; i < 100; ++i) {
    auto cs = worker("w" + std::to_string(i), "shared_worker")
                .with_durability(durability_mode::journal);
    cs.max_deliveries = 3; // a crashed Work is delivered again
    spec.children.push_back(std::move(cs));
  }
  // Three journal sources send 1..300 each to three cas_counters on one
  // key: the total must be 3 × 45150 exactly.
  for (int i = 1; i <= 3; ++i) {
    auto c = "c" + std::to_string(i);
    spec.children.push_back(worker(c, "cas_counter")
                              .with_durability(durability_mode::journal)
                              .with_param("store", "counters")
                              .with_param("key", "total"));
    spec.children.push_back(worker("s" + std::to_string(i), "source")
                              .with_durability(durability_mode::journal)
                              .with_param("to", "race/" + c)
                              .with_param("count", "300")
                              .with_param("rate", "2000"));
  }
  if (auto err = nd.start("race", spec)) {
    std::fprintf(stderr, "shared_kill_child: %s\n", describe(err).c_str());
    return 2;
  }
  // The same message id at every start: the feeder applies it once.
  test::Feed f;
  f.set_tasks(tasks);
  f.set_max_attempts(100);
  call_options once;
  once.message_id = 1;
  if (auto err = nd.send("race/feeder", f, once)) {
    std::fprintf(stderr, "shared_kill_child: %s\n", describe(err).c_str());
    return 2;
  }
  auto& st = *nd.rt()->storage();
  auto give_up = std::chrono::steady_clock::now() + 300s;
  while (std::chrono::steady_clock::now() < give_up) {
    std::vector<queue_listing> qs;
    if (auto s = queue_list(st, qs)) {
      std::fprintf(stderr, "shared_kill_child: %s\n", s.message().c_str());
      return 2;
    }
    size_t finished = qs.empty() ? 0 : qs[0].done + qs[0].dead;
    records::KvRecord total;
    bool found = false;
    if (auto s = kv_read(st, "counters", "total", total, found)) {
      std::fprintf(stderr, "shared_kill_child: %s\n", s.message().c_str());
      return 2;
    }
    bool counted = found && std::atoll(total.value().c_str()) >= 3 * 45150;
    if (finished >= static_cast<size_t>(tasks) && lates >= stalls
        && counted) {
      std::printf("done=%zu\n", finished);
      std::fflush(stdout);
      return 0;
    }
    std::printf("progress=%zu\n", finished);
    std::fflush(stdout);
    std::this_thread::sleep_for(20ms); // polling interval, bounded above
  }
  std::fprintf(stderr, "shared_kill_child: not done in 300 s\n");
  return 2;
}
