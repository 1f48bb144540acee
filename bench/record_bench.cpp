// record_bench tool_record vigil|unrecorded [N] [batch=B] [sync=full|nosync]
//   [pool=1]
//
// The cost of recording a journal agent's tool calls (issue 17), one JSON
// line per run as the other benches print. A `journal` agent gets N / B
// envelopes sent at once; each handler calls a trivial tool B times at
// once, so that B calls are in flight and the writer can commit their
// records together; the agent holds each envelope until its calls are
// answered, so the next envelope's calls start after. Timed from the first
// send until the last callback ran; ns per call.
//
//   vigil       the tool declared with `record: true` (the default): each
//               result is recorded under its idempotency key, and its
//               callback runs once that record is committed
//   unrecorded  the same tool with `record: false`: no key, no record
//
// Both sides are the same read_only tool (the default effect), run on the
// calling cell's thread (no pool hop; `pool=1` takes the tool's own pool),
// and the same journal agent with `sync: full` (`sync=nosync` skips the
// fsyncs). The data dir lives under ./build/bench-data (a real disk, not
// tmpfs) and is removed afterwards.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <iostream>
#include <map>
#include <mutex>
#include <string>

#include <unistd.h>

#include "bench.pb.h"
#include "inline_executor.hpp"
#include "measure.hpp"
#include "vigil/node/node.hpp"

using namespace std::chrono;
using vigil::bench::Ball;
using vigil::bench::Tally;

namespace {

[[noreturn]] void die(const std::string& what) {
  vigil::bench::die("record_bench", what);
}

/// This bench's data dir (bench/measure.hpp).
struct data_dir : vigil::bench::data_dir {
  data_dir() : vigil::bench::data_dir("record-") {}
};

/// Where the agent says it is done: its callbacks counted up to `target`,
/// or a call failed.
struct finish_line {
  std::mutex mtx;
  std::condition_variable cv;
  int64_t target = 0;
  bool done = false;
  std::string failed;

  void reached() {
    std::lock_guard<std::mutex> g{mtx};
    done = true;
    cv.notify_all();
  }
  void fail(const caf::error& e) {
    std::lock_guard<std::mutex> g{mtx};
    if (failed.empty())
      failed = vigil::describe(e);
    cv.notify_all();
  }
};
finish_line finish;

/// The trivial tool: answers its request's n + 1.
vigil::tool_result<Ball> noop_tool(const Ball& req, vigil::tool_call&) {
  Ball b;
  b.set_n(req.n() + 1);
  return b;
}

/// On Ball{n}: calls tool `tool` `batch` times at once; each callback
/// counts in the state (Tally.n), committed with the envelope's consume.
class rcaller : public vigil::agent<Tally> {
public:
  explicit rcaller(const vigil::params& ps)
    : tool_(ps.at("tool")), batch_(std::stoll(ps.at("batch"))) {
    // nop
  }

  static void define(vigil::handlers<rcaller>& h) {
    h.on<Ball>(&rcaller::ball);
  }

  void ball(vigil::context& ctx, const Ball& m) {
    for (int64_t i = 0; i < batch_; ++i) {
      Ball b;
      b.set_n(m.n() * batch_ + i);
      ctx.call_tool<Ball>(
        tool_, b, [this](const Ball&) { answered(); },
        [](const caf::error& e) { finish.fail(e); });
    }
  }

private:
  void answered() {
    auto n = state().n() + 1;
    state().set_n(n);
    if (n == finish.target)
      finish.reached();
  }

  std::string tool_;
  int64_t batch_;
};

vigil::registry types() {
  vigil::registry r;
  r.add<rcaller>("rcaller");
  r.add_tool<Ball, Ball>("noop", &noop_tool);
  return r;
}

/// Sends `envelopes` envelopes at once and waits until the agent counted
/// `target` callbacks in all.
void pass(vigil::node& nd, int64_t first, int64_t envelopes, int64_t target) {
  {
    std::lock_guard<std::mutex> g{finish.mtx};
    finish.target = target;
    finish.done = false;
  }
  Ball b;
  for (int64_t i = 0; i < envelopes; ++i) {
    b.set_n(first + i);
    if (auto err = nd.send("bench/c", b))
      die(vigil::describe(err));
  }
  std::unique_lock<std::mutex> g{finish.mtx};
  if (!finish.cv.wait_for(g, minutes{10}, [] {
        return finish.done || !finish.failed.empty();
      }))
    die("the journal agent did not answer every call in 10 minutes");
  if (!finish.failed.empty())
    die("a call failed: " + finish.failed);
}

uint64_t commits(vigil::node& nd) {
  auto s = nd.writer_stats();
  if (!s)
    die("writer_stats: " + vigil::describe(s.error()));
  return (*s)[1];
}

vigil::bench::result tool_record(bool record, int64_t n, int64_t batch,
                                 vigil::sync_mode sync, bool pool) {
  if (n < batch || n % batch != 0)
    die("N must be a multiple of batch");
  data_dir d;
  vigil::node_config nc;
  nc.threads = vigil::bench::threads;
  nc.data_dir = d.path;
  nc.sync = sync;
  vigil::tool_decl t;
  t.name = "t";
  t.type = "noop";
  t.record = record;
  // All of an envelope's calls in flight at once (the bulkhead holds a
  // place until the cell takes the answer back, also with no pool).
  t.policy.bulkhead.queue =
    std::max<uint32_t>(t.policy.bulkhead.queue, static_cast<uint32_t>(batch));
  nc.tools.push_back(t);
  if (!pool)
    nc.tool_executors = [](const vigil::tool_decl&) {
      return std::make_shared<vigil::bench::inline_executor>();
    };
  vigil::node nd{types(), nc};
  auto warm = std::min<int64_t>(n / 10, 1000 * batch);
  warm -= warm % batch;
  vigil::supervisor_spec tree;
  auto c = vigil::worker("c", "rcaller")
             .with_durability(vigil::durability_mode::journal);
  c.params = {{"tool", "t"}, {"batch", std::to_string(batch)}};
  // The whole burst waits in memory (the default cap would shed it).
  c.buffer_cap = static_cast<size_t>((warm + n) / batch + 1);
  c.queue_cap = c.buffer_cap;
  tree.children.push_back(c);
  if (auto err = nd.start("bench", tree))
    die("node start: " + vigil::describe(err));
  if (warm > 0)
    pass(nd, 0, warm / batch, warm);
  auto commits0 = commits(nd);
  auto cpu0 = vigil::bench::process_cpu_ns();
  auto t0 = steady_clock::now();
  pass(nd, warm / batch, n / batch, warm + n);
  auto ns = duration<double, std::nano>(steady_clock::now() - t0).count();
  auto cpu = vigil::bench::process_cpu_ns() - cpu0;
  auto commit_n = static_cast<double>(commits(nd) - commits0);
  auto& stats = nd.rt()->find_tool("t")->stats();
  auto ran = stats.executions.load();
  auto recorded = stats.recorded.load();
  if (ran != static_cast<uint64_t>(warm + n))
    die("the tool ran " + std::to_string(ran) + " times");
  if (recorded != (record ? ran : 0))
    die(std::to_string(recorded) + " results recorded of "
        + std::to_string(ran));
  return {"tool_record", record ? "vigil" : "unrecorded", ns / n, "ns/call",
          {{"n", double(n)},
           {"batch", double(batch)},
           {"cpu_ns_per_call", cpu / n},
           {"commits_per_call", commit_n / n},
           {"recorded", double(recorded)}}};
}

int usage() {
  std::cerr << "usage: record_bench tool_record vigil|unrecorded [N] "
               "[batch=1] [sync=full|nometasync|nosync] [pool=1]\n";
  return 2;
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 3 || std::string{argv[1]} != "tool_record")
    return usage();
  std::string impl = argv[2];
  if (impl != "vigil" && impl != "unrecorded")
    return usage();
  int64_t n = argc > 3 ? std::stoll(argv[3]) : 0;
  std::map<std::string, std::string> kv;
  for (int i = 4; i < argc; ++i) {
    std::string a = argv[i];
    auto eq = a.find('=');
    if (eq == std::string::npos)
      return usage();
    kv[a.substr(0, eq)] = a.substr(eq + 1);
  }
  int64_t batch = kv.count("batch") ? std::stoll(kv["batch"]) : 1;
  auto sync = vigil::sync_mode::full;
  if (kv.count("sync") && !vigil::from_string(kv["sync"], sync))
    return usage();
  if (batch < 1)
    return usage();
  vigil::bench::print(tool_record(impl == "vigil", n ? n : 2000 * batch,
                                  batch, sync, kv.count("pool") > 0));
  return 0;
}
