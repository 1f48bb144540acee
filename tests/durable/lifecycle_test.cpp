// The randomized lifecycle test, deterministic part. From a seed, a history
// of operations drives a tree of journal agents through the runtime's own
// lifecycle: fresh and repeated message ids, requests, handlers that throw
// or are stuck past their shutdown timeout, terminate/restart/delete/start
// of children, a parent supervisor killed, failed commits, dead-letter
// replay, orderly stops and crashes of the node. Two children degrade
// once their budget is spent (root/deg/j, a journal tally, and root/deg/m,
// memory only, max_deliveries 2), and their probes fail in each way
// (on_restart throws; a reply callback throws; an error callback throws,
// after an error or a timeout; a callback stops with an error) or succeed.
// It runs on CAF's testing scheduler with virtual time (det_node), so a
// seed replays exactly.
//
// The oracle needs no model of timing: it reads the truth off the disk
// after a final drain (every path ever used started again and run until
// quiet) and checks the journal guarantee (support/lifecycle_oracle.hpp).
// Here every async send that reached a cell must also end accepted or a
// dead letter, unless the node crashed while it could still wait in a
// stuck cell's mailbox (the documented window). The memory-only child is
// checked on its own: each async delivery handled or a dead letter exactly
// once (at most once across a crash); a request answered by the stand-in
// never handled. After every operation, the supervisor of each degrading
// child and its cell must tell the same state (never stranded).
//
// VIGIL_LIFECYCLE_SEEDS=n runs n seeds (default 500), VIGIL_LIFECYCLE_SEED=s
// repeats one. A failure prints the seed and the shortest history the test
// could shrink it to.

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "support/det_node.hpp"
#include "support/durable_agents.hpp"
#include "support/lifecycle_oracle.hpp"
#include "support/lifecycle_tree.hpp"
#include "support/temp_dir.hpp"

using namespace vigil;
using namespace vigil::test;
using namespace std::chrono_literals;

namespace {

using namespace vigil::test::lifecycle;

/// The paths an operation can name: the shared ones, then the children
/// that degrade (root/deg/j, a journal tally, and root/deg/m, memory only).
const std::vector<std::string> lpaths = [] {
  auto out = paths;
  out.insert(out.end(), degrade_paths.begin(), degrade_paths.end());
  return out;
}();
const int first_deg = static_cast<int>(paths.size());
const int mem_path = first_deg + 1; // root/deg/m

std::string sup_of_path(int i) {
  return i >= first_deg ? "root/deg" : sup_of(static_cast<size_t>(i));
}

// -- operations ---------------------------------------------------------------

enum class kind : uint8_t {
  send,        // Add(n) with a fresh id
  resend,      // an earlier send again, same id and value
  request,     // Add(n) with a fresh id, as a request
  fail,        // Add(-n): the handler throws
  fanout,      // Fanout: count Adds through the outbox to another path
  stuck,       // Add(n), accepted, then the cell takes no message
  thaw,        // every stuck cell runs again
  terminate,   // terminate_child
  restart,     // restart_child
  remove,      // delete_child
  start,       // start_child of a dynamic child
  kill_sub,    // the nested supervisor is killed (its parent restarts it)
  fail_commit, // the k-th next commit fails
  advance,     // virtual time moves
  stop,        // orderly stop, dead letters replayed or not, start again
  crash,       // crash, start again
  probe_fault, // how the next restarts of a degrading child fail (or not)
};

const char* name(kind k) {
  switch (k) {
    case kind::send: return "send";
    case kind::resend: return "resend";
    case kind::request: return "request";
    case kind::fail: return "fail";
    case kind::fanout: return "fanout";
    case kind::stuck: return "stuck";
    case kind::thaw: return "thaw";
    case kind::terminate: return "terminate";
    case kind::restart: return "restart";
    case kind::remove: return "delete";
    case kind::start: return "start";
    case kind::kill_sub: return "kill_sub";
    case kind::fail_commit: return "fail_commit";
    case kind::advance: return "advance";
    case kind::stop: return "stop";
    case kind::crash: return "crash";
    case kind::probe_fault: return "probe_fault";
  }
  return "?";
}

struct op {
  kind what;
  int path = 0;     // index into `paths`
  int other = 0;    // fanout target, or the send that resend repeats
  uint64_t id = 0;  // message id (unique per send)
  int64_t n = 0;    // the value; fanout: the first value
  int64_t arg = 0;  // fanout count, fail_commit k, advance ms, stop replay
};

std::string describe(const op& o) {
  std::ostringstream os;
  os << name(o.what);
  switch (o.what) {
    case kind::send:
    case kind::request:
    case kind::fail:
    case kind::stuck:
      os << " " << lpaths[o.path] << " id=" << o.id << " n=" << o.n;
      break;
    case kind::resend:
      os << " (repeats op " << o.other << ")";
      break;
    case kind::fanout:
      os << " " << lpaths[o.path] << " -> " << lpaths[o.other]
         << " id=" << o.id << " values " << o.n << ".." << o.n + o.arg - 1;
      break;
    case kind::terminate:
    case kind::restart:
    case kind::remove:
    case kind::start:
      os << " " << lpaths[o.path];
      break;
    case kind::fail_commit:
      os << " after " << o.arg << " commits";
      break;
    case kind::advance:
      os << " " << o.arg << " ms";
      break;
    case kind::stop:
      os << (o.arg != 0 ? " (replay dead letters)" : "");
      break;
    case kind::probe_fault:
      os << " " << lpaths[o.path] << " mode " << o.arg;
      break;
    default:
      break;
  }
  return os.str();
}

/// A history of `len` operations from `seed`.
std::vector<op> generate(uint64_t seed, size_t len) {
  std::mt19937_64 rng{seed};
  auto pick = [&](int n) {
    return static_cast<int>(std::uniform_int_distribution<int>{0, n - 1}(rng));
  };
  // Weights, in the order of `kind`.
  const std::vector<int> weights = {30, 8, 8, 8, 5, 4, 5, 4,
                                    4,  2, 3, 2, 3, 8, 2, 2, 4};
  std::discrete_distribution<int> which{weights.begin(), weights.end()};
  std::vector<op> out;
  std::vector<int> sends; // indexes of send ops, for resend
  uint64_t next_id = 1;
  int64_t next_fan = 1'000'000;
  for (size_t i = 0; i < len; ++i) {
    op o;
    o.what = static_cast<kind>(which(rng));
    o.path = pick(static_cast<int>(lpaths.size()));
    switch (o.what) {
      case kind::send:
      case kind::request:
      case kind::stuck:
        o.id = next_id++;
        o.n = static_cast<int64_t>(o.id);
        if (o.what == kind::send)
          sends.push_back(static_cast<int>(out.size()));
        break;
      case kind::fail:
        o.id = next_id++;
        o.n = -static_cast<int64_t>(o.id);
        if (pick(2) == 0) // half of them spend a degrading child's budget
          o.path = first_deg + pick(2);
        break;
      case kind::resend:
        if (sends.empty()) {
          o.what = kind::advance;
          o.arg = 10;
          break;
        }
        o.other = sends[static_cast<size_t>(pick(static_cast<int>(sends.size())))];
        break;
      case kind::fanout:
        o.id = next_id++;
        // Not the memory-only child: the oracle follows a fanout through
        // the disk, and a memory child's effects are not there.
        if (o.path == mem_path)
          o.path = pick(mem_path);
        o.other = pick(mem_path);
        o.arg = 1 + pick(4);
        o.n = next_fan;
        next_fan += o.arg;
        break;
      case kind::start:
      case kind::remove:
        o.path = static_cast<int>(n_static)
                 + pick(static_cast<int>(paths.size() - n_static));
        break;
      case kind::fail_commit:
        o.arg = pick(6);
        break;
      case kind::advance:
        o.arg = 1 + pick(300);
        break;
      case kind::stop:
        o.arg = pick(2);
        break;
      case kind::probe_fault:
        o.path = first_deg + pick(2);
        o.arg = pick(probe_faults::modes);
        break;
      default:
        break;
    }
    out.push_back(o);
  }
  return out;
}

// -- running a history --------------------------------------------------------

envelope make_env(const google::protobuf::Message& m, uint64_t id) {
  envelope e;
  e.type = type_symbol(m);
  m.SerializeToString(&e.payload);
  e.id = id;
  e.trace_id = id;
  return e;
}

envelope add_env(int64_t n, uint64_t id) {
  Add a;
  a.set_n(n);
  return make_env(a, id);
}

class lifecycle_run {
public:
  lifecycle_run(const std::string& dir, const std::vector<op>& ops)
    : dir_(dir), ops_(ops), nd_(dir, durable_registry()) {
    probe_faults::get().reset();
    handled_log::get().reset();
  }

  ~lifecycle_run() {
    probe_faults::get().reset();
    handled_log::get().reset();
  }

  findings run() {
    start(tree({}, true));
    for (size_t i = 0; i < ops_.size(); ++i) {
      if (!nd_.running())
        start(tree(live_extra_, true));
      if (trace_)
        std::printf("op %zu: %s\n", i, describe(ops_[i]).c_str());
      apply(ops_[i]);
      check_agreement(i);
    }
    drain();
    return check();
  }

private:
  void start(const supervisor_spec& spec) {
    if (auto err = nd_.start(spec))
      out_.fail("the node did not start: " + vigil::describe(err));
    nd_.run();
  }

  /// Sends to the path's current cell, if there is one; a delivered send
  /// must end accepted or a dead letter (at the memory-only child: handled
  /// or a dead letter, once per delivery).
  void send(int path, envelope e) {
    auto& p = lpaths[static_cast<size_t>(path)];
    auto id = e.id;
    int64_t n = 0;
    if (path == mem_path) {
      Add a;
      a.ParseFromString(e.payload);
      n = a.n();
    }
    if (!nd_.running() || !nd_.send(p, std::move(e)))
      return;
    if (path == mem_path)
      ++mem_.async[n];
    else
      facts_.delivered.emplace(p, id);
  }

  caf::actor sup(int path) {
    return nd_.cell(sup_of_path(path));
  }

  void apply(const op& o) {
    auto& path = lpaths[static_cast<size_t>(o.path)];
    switch (o.what) {
      case kind::send:
      case kind::fail:
        facts_.sent[path].insert(o.n);
        send(o.path, add_env(o.n, o.id));
        break;
      case kind::resend: {
        auto& s = ops_[static_cast<size_t>(o.other)];
        send(s.path, add_env(s.n, s.id));
        break;
      }
      case kind::request: {
        facts_.sent[path].insert(o.n);
        auto cell = nd_.cell(path);
        if (cell)
          requests_.emplace_back(
            nd_.call(det_node::answer::env, cell, add_env(o.n, o.id)), path,
            o.n);
        if (cell && o.path == mem_path)
          mem_.requests.insert(o.n);
        break;
      }
      case kind::stuck: {
        facts_.sent[path].insert(o.n);
        auto cell = nd_.cell(path);
        if (!cell || nd_.frozen(cell))
          break;
        caf::anon_send(cell, add_env(o.n, o.id));
        if (o.path == mem_path)
          ++mem_.async[o.n];
        nd_.step(cell); // it takes the envelope in, then hangs
        nd_.freeze(cell);
        break;
      }
      case kind::fanout: {
        auto& to = lpaths[static_cast<size_t>(o.other)];
        facts_.fanout(path, o.id, fanout_sent{to, o.n, o.arg});
        Fanout f;
        f.set_to(to);
        f.set_from(o.n);
        f.set_count(o.arg);
        send(o.path, make_env(f, o.id));
        break;
      }
      case kind::thaw:
        nd_.thaw_all();
        break;
      case kind::terminate:
        if (auto s = sup(o.path))
          nd_.call(det_node::answer::unit, s, terminate_child_atom::value,
                   leaf(path));
        break;
      case kind::restart:
        if (auto s = sup(o.path))
          nd_.call(det_node::answer::info, s, restart_child_atom::value,
                   leaf(path));
        break;
      case kind::remove:
        if (auto s = sup(o.path))
          nd_.call(det_node::answer::unit, s, delete_child_atom::value,
                   leaf(path));
        extra_.insert(leaf(path)); // its records stay: drained at the end
        live_extra_.erase(leaf(path));
        break;
      case kind::start:
        if (auto s = sup(o.path)) {
          nd_.call(det_node::answer::info, s, start_child_atom::value,
                   tally_spec(leaf(path), shutdown_spec::after(50ms)));
          extra_.insert(leaf(path));
          live_extra_.insert(leaf(path));
        }
        break;
      case kind::kill_sub:
        if (auto sub = nd_.cell("root/sub"))
          caf::anon_send_exit(sub, caf::exit_reason::kill);
        break;
      case kind::fail_commit:
        nd_.storage().fail_apply_after(static_cast<uint32_t>(o.arg));
        break;
      case kind::advance:
        nd_.advance(std::chrono::milliseconds{o.arg});
        break;
      case kind::stop:
        nd_.stop();
        if (o.arg != 0)
          replay();
        break;
      case kind::crash:
        // What waits in a frozen cell's mailbox is lost with the process:
        // it was never accepted (documented).
        if (nd_.any_frozen())
          facts_.may_be_lost.insert(facts_.delivered.begin(),
                                    facts_.delivered.end());
        // A memory-only child loses what waits in its buffer, and dead
        // letters not yet committed.
        for (auto& kvp : mem_.async)
          mem_.may_be_lost.insert(kvp.first);
        nd_.crash();
        break;
      case kind::probe_fault:
        probe_faults::get().set(
          path, static_cast<probe_faults::mode>(o.arg));
        break;
    }
    if (nd_.running())
      nd_.run();
  }

  /// The supervisor of each degrading child and its cell tell the same
  /// state once the node is quiet (a child is never stranded: degraded at
  /// the supervisor while its cell waits for a restart that never comes).
  /// Skipped while either cannot answer (a frozen cell, a supervisor
  /// waiting on one).
  void check_agreement(size_t i) {
    if (!nd_.running())
      return;
    for (auto idx : {first_deg, mem_path}) {
      auto& path = lpaths[static_cast<size_t>(idx)];
      auto cell = nd_.cell(path);
      if (!cell || nd_.frozen(cell))
        continue;
      auto kids = nd_.ask<std::vector<child_info>>("root/deg",
                                                   which_children_atom::value);
      if (!kids)
        continue;
      std::string sup_says = "absent";
      for (auto& k : *kids)
        if (k.path == path)
          sup_says = k.status;
      auto cell_says = nd_.ask<std::string>(path, state_atom::value);
      if (!cell_says)
        continue;
      auto& c = *cell_says;
      ++agreements_;
      bool ok = (sup_says == "running" && c == "running")
                || (sup_says == "restarting" && c == "restarting")
                || (sup_says == "degraded"
                    && (c == "degraded" || c == "half_open"))
                || (sup_says == "stopped"
                    && (c == "stopped" || c == "restarting"));
      if (!ok)
        out_.fail(path + ": after op " + std::to_string(i)
                  + " its supervisor says " + sup_says
                  + " and its cell says " + c);
    }
  }

  /// `vigil dead-letters replay --all`, while the node is down.
  void replay() {
    store_options so;
    so.dir = dir_;
    so.sync = sync_mode::nosync;
    std::unique_ptr<store> st;
    if (auto s = store::open(so, st)) {
      out_.fail("replay: cannot open the store: " + s.message());
      return;
    }
    std::vector<std::string> problems;
    size_t n = 0;
    if (auto s = st->replay_dead_letters({}, true, problems, n))
      out_.fail("replay failed: " + s.message());
    // A letter may be skipped only because its id was accepted since (the
    // oracle checks that id); any other reason is a defect.
    // The memory-only child's letters are not replayable (documented).
    for (auto& p : problems)
      if (p.find("replaying it would apply it twice") == std::string::npos
          && p.find(lpaths[mem_path] + " is not a journal agent")
               == std::string::npos)
        out_.fail("replay skipped a letter: " + p);
  }

  /// Starts every path that was ever used and runs until quiet: stuck
  /// handlers return, restarts and outbox retries happen.
  void drain() {
    if (nd_.running()) {
      // Requests answered by now; later answers do not count.
      collect_requests();
      nd_.stop();
    }
    // Every dynamic path, also those never started: an outbox may be
    // waiting to deliver to one. Probes succeed from now on.
    probe_faults::get().reset();
    start(tree(all_dynamic(), true));
    for (int i = 0; i < 20; ++i)
      nd_.advance(300ms);
    nd_.stop();
  }

  void collect_requests() {
    for (auto& [ticket, path, n] : requests_) {
      auto& r = nd_.result(ticket);
      if (r.done && !r.err && r.reply.degraded()) {
        ++stand_ins_;
        if (path == lpaths[mem_path])
          mem_.stand_in.insert(n);
      } else if (r.done && !r.err) {
        if (path == lpaths[mem_path])
          mem_.answered.insert(n); // not on disk: checked on its own
        else
          facts_.answered[path].insert(n);
      }
    }
  }

  findings check() {
    auto f = check_journal_guarantee(dir_, facts_);
    mem_.handled = handled_log::get().of(lpaths[mem_path]);
    check_memory_child(dir_, lpaths[mem_path], mem_, f);
    f.problems.insert(f.problems.begin(), out_.problems.begin(),
                      out_.problems.end());
    f.stand_ins = stand_ins_;
    f.agreements = agreements_;
    return f;
  }

  std::string dir_;
  std::vector<op> ops_;
  det_node nd_;
  findings out_;
  lifecycle_facts facts_;
  std::vector<std::tuple<uint64_t, std::string, int64_t>> requests_;
  std::set<std::string> extra_;      // dynamic children ever started
  bool trace_ = std::getenv("VIGIL_LIFECYCLE_TRACE") != nullptr;
  std::set<std::string> live_extra_; // ... and not deleted since
  memory_facts mem_; // the memory-only child's
  size_t stand_ins_ = 0;
  size_t agreements_ = 0;
};

findings run_history(const std::vector<op>& ops) {
  temp_dir dir;
  lifecycle_run r{dir.path(), ops};
  return r.run();
}

/// Drops operations while the history still fails with `problem`, to
/// show a short one.
std::vector<op> shrink(std::vector<op> ops, const std::string& problem) {
  for (size_t chunk = ops.size() / 2; chunk >= 1; chunk /= 2) {
    for (size_t i = 0; i + chunk <= ops.size();) {
      std::vector<op> fewer;
      fewer.insert(fewer.end(), ops.begin(), ops.begin() + i);
      fewer.insert(fewer.end(), ops.begin() + i + chunk, ops.end());
      // A resend names another op by index: keep those consistent.
      bool valid = true;
      for (auto& o : fewer)
        if (o.what == kind::resend) {
          if (o.other >= static_cast<int>(i + chunk))
            o.other -= static_cast<int>(chunk);
          else if (o.other >= static_cast<int>(i))
            valid = false;
        }
      auto still = [&] {
        auto ps = run_history(fewer).problems;
        return std::find(ps.begin(), ps.end(), problem) != ps.end();
      };
      if (valid && still())
        ops = std::move(fewer);
      else
        i += chunk;
    }
  }
  return ops;
}

uint64_t env_u64(const char* name, uint64_t fallback) {
  auto* s = std::getenv(name);
  return s != nullptr ? std::strtoull(s, nullptr, 10) : fallback;
}

TEST(lifecycle_test, random_histories_keep_the_journal_guarantee) {
  auto one = std::getenv("VIGIL_LIFECYCLE_SEED");
  auto count = one != nullptr ? 1 : env_u64("VIGIL_LIFECYCLE_SEEDS", 500);
  auto first = one != nullptr ? env_u64("VIGIL_LIFECYCLE_SEED", 0)
                              : env_u64("VIGIL_LIFECYCLE_FIRST", 1);
  size_t applied = 0;
  size_t dead = 0;
  size_t accepted = 0;
  size_t stand_ins = 0;
  size_t degraded_letters = 0;
  size_t agreements = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (uint64_t seed = first; seed < first + count; ++seed) {
    auto ops = generate(seed, 60);
    auto f = run_history(ops);
    applied += f.applied;
    dead += f.dead;
    accepted += f.guards;
    stand_ins += f.stand_ins;
    degraded_letters += f.degraded_letters;
    agreements += f.agreements;
    if (f.problems.empty())
      continue;
    std::ostringstream os;
    os << "seed " << seed << " (repeat with VIGIL_LIFECYCLE_SEED=" << seed
       << "):\n";
    for (auto& p : f.problems)
      os << "  " << p << "\n";
    auto small = shrink(ops, f.problems.front());
    os << "shortest failing history (" << small.size() << " of "
       << ops.size() << " operations):\n";
    for (size_t i = 0; i < small.size(); ++i)
      os << "  " << i << ": " << describe(small[i]) << "\n";
    for (auto& p : run_history(small).problems)
      os << "  -> " << p << "\n";
    FAIL() << os.str();
  }
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
              std::chrono::steady_clock::now() - t0)
              .count();
  // Not vacuous: the histories applied, accepted and dead-lettered.
  EXPECT_GT(applied, count);
  EXPECT_GT(accepted, count);
  EXPECT_GT(dead, 0u);
  if (count >= 50) { // and degraded children answered and dead-lettered
    EXPECT_GT(stand_ins, 0u);
    EXPECT_GT(degraded_letters, 0u);
    EXPECT_GT(agreements, count);
  }
  std::printf("lifecycle_test: %llu seeds from %llu in %lld ms: %zu values "
              "applied, %zu envelopes accepted, %zu dead letters, %zu "
              "stand-in answers, %zu degraded letters, %zu states "
              "compared\n",
              static_cast<unsigned long long>(count),
              static_cast<unsigned long long>(first),
              static_cast<long long>(ms), applied, accepted, dead, stand_ins,
              degraded_letters, agreements);
}

} // namespace
