// The process that crash_test kills: a node on DATA_DIR with a journal
// `source` sending Add(1..N) to a journal `counter`. Prints
// "progress=<count>" every 20 ms or so, and when the counter has counted N
// prints "count=<c> sum=<s>" and exits 0; exits 2 on error.
//
//   crash_child DATA_DIR N [full|nometasync|nosync]

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "support/durable_agents.hpp"
#include "vigil/node/node.hpp"

using namespace vigil;
using namespace std::chrono_literals;

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: crash_child DATA_DIR N [SYNC]\n");
    return 2;
  }
  node_config nc;
  nc.data_dir = argv[1];
  long n = std::strtol(argv[2], nullptr, 10);
  if (argc > 3 && !from_string(argv[3], nc.sync)) {
    std::fprintf(stderr, "crash_child: bad sync mode %s\n", argv[3]);
    return 2;
  }
  node nd{test::durable_registry(), nc};
  supervisor_spec spec;
  spec.flags.intensity = 100;
  spec.children.push_back(
    worker("source", "source").with_durability(durability_mode::journal));
  spec.children.push_back(
    worker("counter", "counter").with_durability(durability_mode::journal));
  if (auto err = nd.start("crash", spec)) {
    std::fprintf(stderr, "crash_child: %s\n", describe(err).c_str());
    return 2;
  }
  // The same message id at every start: the source applies Start once.
  test::Start s;
  s.set_n(n);
  s.set_to("crash/counter");
  s.set_batch(200);
  call_options once;
  once.message_id = 1;
  if (auto err = nd.send("crash/source", s, once)) {
    std::fprintf(stderr, "crash_child: %s\n", describe(err).c_str());
    return 2;
  }
  auto give_up = std::chrono::steady_clock::now() + 600s;
  while (std::chrono::steady_clock::now() < give_up) {
    auto r = nd.call<test::Counter>("crash/counter", test::Get{}, 10s);
    if (r && r->value.count() < n) {
      // crash_test picks its kill points from these lines.
      std::printf("progress=%lld\n",
                  static_cast<long long>(r->value.count()));
      std::fflush(stdout);
    }
    if (r && r->value.count() >= n) {
      std::printf("count=%lld sum=%lld\n",
                  static_cast<long long>(r->value.count()),
                  static_cast<long long>(r->value.sum()));
      std::fflush(stdout);
      return 0;
    }
    std::this_thread::sleep_for(20ms); // polling interval, bounded above
  }
  std::fprintf(stderr, "crash_child: counter did not reach %ld in 600 s\n",
               n);
  return 2;
}
