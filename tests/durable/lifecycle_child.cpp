// The process that lifecycle_process_test kills: a real node (threads, sync
// full) on DATA_DIR runs a random lifecycle workload from SEED and ROUND
// over the tree of support/lifecycle_tree.hpp: sends with fresh and
// repeated message ids, requests, handlers that throw or are stuck past
// their shutdown timeout, fanouts through the outbox, terminate / restart /
// delete / start of children, the nested supervisor killed, failed
// commits, and a journal child that degrades (root/deg/j) with probes that
// fail in each way. It prints what it does, one flushed line each, so that a kill
// at any moment leaves the test knowing what was sent:
//   S <path> <value>                 about to send (value < 0 throws)
//   F <path> <id> <to> <first> <n>   about to send a fanout
//   A <path> <value>                 a request was answered with a reply
//   D <path> <value>                 ... by a degraded child's stand-in
//   DONE                             the workload ended; the node stops
// Every plain send uses its value (its absolute value) as message id.
//
//   lifecycle_child DATA_DIR SEED ROUND

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <caf/all.hpp>

#include "support/durable_agents.hpp"
#include "support/gate.hpp"
#include "support/lifecycle_tree.hpp"
#include "vigil/node/node.hpp"

using namespace vigil;
using namespace vigil::test;
using namespace vigil::test::lifecycle;
using namespace std::chrono_literals;

namespace {

void line(const std::string& text) {
  std::printf("%s\n", text.c_str());
  std::fflush(stdout);
}

envelope env_of(const google::protobuf::Message& m, uint64_t id) {
  envelope e;
  e.type = type_symbol(m);
  m.SerializeToString(&e.payload);
  e.id = id;
  e.trace_id = id;
  return e;
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: lifecycle_child DATA_DIR SEED ROUND\n");
    return 2;
  }
  auto seed = std::strtoull(argv[2], nullptr, 10);
  auto round = std::strtoull(argv[3], nullptr, 10);
  // Only this round's handlers get stuck: a stuck envelope of an earlier
  // (killed) round, replayed here from the start on, passes its gate.
  auto prefix = "r" + std::to_string(round) + "g";
  gates::get().close_only(prefix);
  node_config nc;
  nc.data_dir = argv[1];
  nc.threads = 2;
  node nd{durable_registry(), nc};
  if (auto err = nd.start("root", tree({}, true))) {
    std::fprintf(stderr, "lifecycle_child: %s\n", describe(err).c_str());
    return 2;
  }
  std::mt19937_64 rng{seed * 1000 + round};
  auto pick = [&](size_t n) {
    return std::uniform_int_distribution<size_t>{0, n - 1}(rng);
  };
  // Values and ids of this round; no other round of this data dir uses them.
  int64_t next = static_cast<int64_t>(round + 1) * 1'000'000;
  int64_t next_fan = next + 500'000;
  std::vector<std::pair<size_t, int64_t>> sends;
  int gate_no = 0;
  enum op {
    send, resend, request, fail, fanout, stuck, release, terminate, restart,
    remove, start, kill_sub, fail_commit, pause, probe_fault
  };
  std::discrete_distribution<int> which{
    {30, 8, 6, 6, 5, 3, 4, 3, 3, 2, 3, 1, 2, 10, 3}};
  // The shared paths, then root/deg/j: a journal tally that degrades once
  // its budget is spent, whose probes fail as probe_fault says.
  auto lpaths = paths;
  lpaths.push_back(degrade_paths.front());
  const size_t deg = paths.size();
  auto sup_of_path = [&](size_t p) {
    return p == deg ? std::string{"root/deg"} : sup_of(p);
  };
  auto ops = 100 + pick(200);
  for (size_t i = 0; i < ops; ++i) {
    auto p = pick(lpaths.size());
    auto kind = static_cast<op>(which(rng));
    if (kind == fail && pick(2) == 0)
      p = deg; // half of them spend the degrading child's budget
    auto& path = lpaths[p];
    switch (kind) {
      case send: {
        auto n = next++;
        line("S " + path + " " + std::to_string(n));
        Add a;
        a.set_n(n);
        call_options id;
        id.message_id = static_cast<uint64_t>(n);
        static_cast<void>(nd.send(path, a, id));
        sends.emplace_back(p, n);
        break;
      }
      case resend: {
        if (sends.empty())
          break;
        auto [q, n] = sends[pick(sends.size())];
        Add a;
        a.set_n(n);
        call_options id;
        id.message_id = static_cast<uint64_t>(n);
        static_cast<void>(nd.send(lpaths[q], a, id));
        break;
      }
      case request: {
        auto n = next++;
        auto cell = nd.rt()->lookup(path);
        if (!cell)
          break;
        line("S " + path + " " + std::to_string(n));
        Add a;
        a.set_n(n);
        caf::scoped_actor self{nd.system()};
        self->request(cell, caf::duration{200ms},
                      env_of(a, static_cast<uint64_t>(n)))
          .receive(
            [&](envelope& rep) {
              line((rep.degraded() ? "D " : "A ") + path + " "
                   + std::to_string(n));
            },
            [](caf::error&) {});
        break;
      }
      case fail: {
        auto n = next++;
        line("S " + path + " " + std::to_string(-n));
        Add a;
        a.set_n(-n);
        call_options id;
        id.message_id = static_cast<uint64_t>(n);
        static_cast<void>(nd.send(path, a, id));
        break;
      }
      case fanout: {
        auto id = next++;
        auto to = lpaths[pick(lpaths.size())];
        auto count = static_cast<int64_t>(1 + pick(4));
        line("F " + path + " " + std::to_string(id) + " " + to + " "
             + std::to_string(next_fan) + " " + std::to_string(count));
        Fanout f;
        f.set_to(to);
        f.set_from(next_fan);
        f.set_count(count);
        next_fan += count;
        call_options o;
        o.message_id = static_cast<uint64_t>(id);
        static_cast<void>(nd.send(path, f, o));
        break;
      }
      case stuck: {
        // At most one handler stuck at a time: the node has two scheduler
        // threads, and a handler that never returns keeps its thread (CAF
        // cannot preempt it; see the README). Two stuck ones stall it all.
        gates::get().open_existing();
        auto n = next++;
        line("S " + path + " " + std::to_string(n));
        Block b;
        b.set_gate(prefix + std::to_string(gate_no++));
        gates::get().at(b.gate()); // exists (closed) before it is reached
        b.set_n(n);
        b.set_first_only(true);
        call_options id;
        id.message_id = static_cast<uint64_t>(n);
        static_cast<void>(nd.send(path, b, id));
        break;
      }
      case release:
        gates::get().open_existing(); // stuck handlers return
        break;
      case terminate:
        static_cast<void>(nd.terminate_child(sup_of_path(p), leaf(path)));
        break;
      case restart:
        static_cast<void>(nd.restart_child(sup_of_path(p), leaf(path)));
        break;
      case remove:
        static_cast<void>(nd.delete_child(sup_of_path(p), leaf(path)));
        break;
      case start:
        if (p >= n_static && p < deg)
          static_cast<void>(nd.start_child(
            "root", tally_spec(leaf(path), shutdown_spec::after(50ms))));
        break;
      case kill_sub:
        if (auto sub = nd.rt()->lookup("root/sub"))
          caf::anon_send_exit(sub, caf::exit_reason::kill);
        break;
      case fail_commit:
        nd.rt()->storage()->fail_apply_after(
          static_cast<uint32_t>(pick(5)));
        break;
      case pause:
        std::this_thread::sleep_for(std::chrono::milliseconds{pick(10)});
        break;
      case probe_fault:
        probe_faults::get().set(
          lpaths[deg], static_cast<probe_faults::mode>(
                         pick(static_cast<size_t>(probe_faults::modes))));
        break;
    }
  }
  gates::get().open_all();
  line("DONE");
  nd.stop();
  return 0;
}
