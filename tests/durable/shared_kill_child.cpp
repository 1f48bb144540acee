// The process that shared_kill_test kills: a node on DATA_DIR where 100
// journal workers race for TASKS tasks of one leased queue and for ten
// compare-and-swap keys (tests/support/shared_agents.hpp). Their committed
// outcomes are appended to EVENTS, one line each (O_APPEND: a line written
// before a SIGKILL stays). Prints "progress=<done>" every 20 ms or so, and
// "done=<n>" when every task is done or dead and every late completion of
// this run was answered, then exits 0; 2 on error.
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
  node nd{test::shared_registry(), nc};
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
    if (finished >= static_cast<size_t>(tasks) && lates >= stalls) {
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
