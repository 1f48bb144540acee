// durable_bench CASE IMPL [n] [batch]
//
// Durable throughput and recovery, one JSON line per run (see vigil_bench
// for the format). Data dirs live under ./build/bench-data (a real disk, not
// tmpfs) and are removed afterwards. Every commit uses sync mode `full`.
//
//   durable vigil N BATCH   journal agent, writer max_batch = BATCH: N
//                           envelopes sent at once, timed until all applied
//   durable lmdb-raw N      raw LMDB puts of the same record bytes, 1000 per
//                           transaction (the physical limit here)
//   durable lmdb-raw-ops N  raw LMDB doing a journal agent's five operations
//                           per envelope, 1000 envelopes per transaction
//   durable fsync-each N    raw LMDB, one transaction (one fsync) per record
//   recovery vigil N        node start on a data dir holding N journal
//                           agents' snapshots: open, recover, and all N
//                           agents resumed and serving
//   recovery noverify N     the same start without the structural walk
//                           (node_config::verify_data_dir = false)
//   recovery walk N         the walk alone (vigil verify: a forked child
//                           reads every page, checks every CRC-32C)
//   recovery lmdb-raw N     a raw cursor scan of the same N records

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <mutex>
#include <sstream>
#include <string>

#include <lmdb.h>
#include <unistd.h>

#include "bench.pb.h"
#include "measure.hpp"
#include "vigil/node/node.hpp"
#include "vigil/persistence/integrity.hpp"

using namespace std::chrono;
using vigil::bench::Ball;
using vigil::bench::Tally;

namespace {

void print(const std::string& name, const std::string& impl, double value,
           const std::string& unit,
           std::initializer_list<std::pair<const char*, double>> params) {
  vigil::bench::result r{name, impl, value, unit, {}};
  for (auto& kvp : params)
    r.params[kvp.first] = kvp.second;
  vigil::bench::print(r);
}

[[noreturn]] void die(const std::string& what) {
  vigil::bench::die("durable_bench", what);
}

/// This bench's data dir (bench/measure.hpp).
struct data_dir : vigil::bench::data_dir {
  data_dir() : vigil::bench::data_dir("") {}
};

/// The record a journal agent writes per accepted envelope, so the raw
/// baselines put the same bytes.
std::string journal_record(int64_t i) {
  Ball b;
  b.set_n(i);
  vigil::records::JournalEntry je;
  je.set_format(vigil::store::format);
  je.set_seq(static_cast<uint64_t>(i));
  auto* e = je.mutable_env();
  e->set_type(Ball::descriptor()->full_name());
  e->set_payload(b.SerializeAsString());
  e->set_id(static_cast<uint64_t>(i) + (uint64_t{1} << 40));
  e->set_attempt(1);
  e->set_trace_id(e->id());
  return vigil::encode_record(je); // framed, as vigil writes it
}

// -- vigil ------------------------------------------------------------------

struct finish_line {
  std::mutex mtx;
  std::condition_variable cv;
  int64_t target = 0;
  bool done = false;
};
finish_line finish;

class jcount : public vigil::agent<Tally> {
public:
  static void define(vigil::handlers<jcount>& h) {
    h.on<Ball>([](jcount& self, vigil::context&, const Ball&) {
      auto n = self.state().n() + 1;
      self.state().set_n(n);
      if (n == finish.target) {
        std::lock_guard<std::mutex> g{finish.mtx};
        finish.done = true;
        finish.cv.notify_all();
      }
    });
  }
};

vigil::registry types() {
  vigil::registry r;
  r.add<jcount>("jcount");
  return r;
}

vigil::node_config config(const data_dir& d, size_t batch) {
  vigil::node_config nc;
  nc.threads = 2;
  nc.data_dir = d.path;
  nc.sync = vigil::sync_mode::full;
  nc.writer.max_batch = batch;
  return nc;
}

void durable_vigil(int64_t n, size_t batch) {
  data_dir d;
  vigil::node nd{types(), config(d, batch)};
  vigil::supervisor_spec spec;
  auto sink = vigil::worker("sink", "jcount")
                .with_durability(vigil::durability_mode::journal);
  // The whole burst waits in memory (for its commit, then its handler);
  // the default cap of 10000 would shed the rest as buffer_overflow.
  sink.buffer_cap = static_cast<size_t>(n);
  sink.queue_cap = static_cast<size_t>(n);
  spec.children.push_back(sink);
  if (auto err = nd.start("bench", spec))
    die(vigil::describe(err));
  finish.target = n;
  finish.done = false;
  auto t0 = steady_clock::now();
  Ball b;
  for (int64_t i = 0; i < n; ++i) {
    b.set_n(i);
    if (auto err = nd.send("bench/sink", b))
      die(vigil::describe(err));
  }
  std::unique_lock<std::mutex> g{finish.mtx};
  if (!finish.cv.wait_for(g, minutes{10}, [] { return finish.done; }))
    die("the journal agent did not apply every envelope in 10 minutes");
  double secs = duration<double>(steady_clock::now() - t0).count();
  g.unlock();
  auto stats = nd.writer_stats();
  double commits = stats ? static_cast<double>((*stats)[1]) : 0;
  print("durable", "vigil", n / secs, "envelopes/s",
        {{"n", n}, {"batch", batch}, {"commits", commits}});
}

// -- raw LMDB -----------------------------------------------------------------

struct raw_env {
  MDB_env* env = nullptr;
  MDB_dbi dbi = 0;
  explicit raw_env(const std::string& dir) {
    if (mdb_env_create(&env) != 0)
      die("mdb_env_create");
    mdb_env_set_mapsize(env, size_t{1} << 30);
    if (int rc = mdb_env_open(env, dir.c_str(), 0, 0644))
      die(std::string{"mdb_env_open: "} + mdb_strerror(rc));
    MDB_txn* txn;
    mdb_txn_begin(env, nullptr, 0, &txn);
    mdb_dbi_open(txn, nullptr, 0, &dbi);
    mdb_txn_commit(txn);
  }
  ~raw_env() {
    mdb_env_close(env);
  }
};

std::string be64(uint64_t x) {
  std::string k(8, '\0');
  for (int i = 7; i >= 0; --i, x >>= 8)
    k[static_cast<size_t>(i)] = static_cast<char>(x & 0xff);
  return k;
}

void durable_raw(int64_t n, int64_t per_txn, const char* impl) {
  data_dir d;
  raw_env re{d.path};
  std::vector<std::string> vals;
  vals.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    vals.push_back(journal_record(i));
  auto t0 = steady_clock::now();
  MDB_txn* txn = nullptr;
  for (int64_t i = 0; i < n; ++i) {
    if (txn == nullptr && mdb_txn_begin(re.env, nullptr, 0, &txn) != 0)
      die("mdb_txn_begin");
    auto k = be64(static_cast<uint64_t>(i));
    MDB_val key{k.size(), k.data()};
    MDB_val val{vals[static_cast<size_t>(i)].size(),
                vals[static_cast<size_t>(i)].data()};
    if (int rc = mdb_put(txn, re.dbi, &key, &val, 0))
      die(std::string{"mdb_put: "} + mdb_strerror(rc));
    if ((i + 1) % per_txn == 0 || i + 1 == n) {
      if (int rc = mdb_txn_commit(txn))
        die(std::string{"mdb_txn_commit: "} + mdb_strerror(rc));
      txn = nullptr;
    }
  }
  double secs = duration<double>(steady_clock::now() - t0).count();
  print("durable", impl, n / secs, "envelopes/s",
        {{"n", n}, {"batch", per_txn}});
}

/// Raw LMDB doing per envelope what a journal agent's commits do: check
/// and put the idempotency key, put the journal entry, delete it, put the
/// snapshot; `per_txn` envelopes per transaction. Shows the cost of the
/// layer above LMDB apart from the write amplification of the guarantee.
void durable_raw_ops(int64_t n, int64_t per_txn) {
  data_dir d;
  MDB_env* env;
  mdb_env_create(&env);
  mdb_env_set_maxdbs(env, 8);
  mdb_env_set_mapsize(env, size_t{1} << 30);
  if (int rc = mdb_env_open(env, d.path.c_str(), 0, 0644))
    die(std::string{"mdb_env_open: "} + mdb_strerror(rc));
  MDB_txn* txn;
  MDB_dbi idem, journal, snaps;
  mdb_txn_begin(env, nullptr, 0, &txn);
  mdb_dbi_open(txn, "idempotency", MDB_CREATE, &idem);
  mdb_dbi_open(txn, "journal", MDB_CREATE, &journal);
  mdb_dbi_open(txn, "snapshots", MDB_CREATE, &snaps);
  mdb_txn_commit(txn);
  std::vector<std::string> vals;
  vals.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    vals.push_back(journal_record(i));
  std::string path = "bench/sink";
  std::string snap(64, 's');
  auto t0 = steady_clock::now();
  txn = nullptr;
  for (int64_t i = 0; i < n; ++i) {
    if (txn == nullptr && mdb_txn_begin(env, nullptr, 0, &txn) != 0)
      die("mdb_txn_begin");
    auto ik = path + '\0' + be64(static_cast<uint64_t>(i) + (1ull << 40));
    auto jk = path + '\0' + be64(static_cast<uint64_t>(i));
    MDB_val k1{ik.size(), ik.data()}, v1{8, ik.data()}, probe;
    if (mdb_get(txn, idem, &k1, &probe) == 0)
      die("unexpected duplicate");
    mdb_put(txn, idem, &k1, &v1, 0);
    auto& v = vals[static_cast<size_t>(i)];
    MDB_val k2{jk.size(), jk.data()}, v2{v.size(), v.data()};
    mdb_put(txn, journal, &k2, &v2, 0);
    mdb_del(txn, journal, &k2, nullptr);
    MDB_val k3{path.size(), path.data()}, v3{snap.size(), snap.data()};
    if (int rc = mdb_put(txn, snaps, &k3, &v3, 0))
      die(std::string{"mdb_put: "} + mdb_strerror(rc));
    if ((i + 1) % per_txn == 0 || i + 1 == n) {
      if (int rc = mdb_txn_commit(txn))
        die(std::string{"mdb_txn_commit: "} + mdb_strerror(rc));
      txn = nullptr;
    }
  }
  double secs = duration<double>(steady_clock::now() - t0).count();
  mdb_env_close(env);
  print("durable", "lmdb-raw-ops", n / secs, "envelopes/s",
        {{"n", n}, {"batch", per_txn}});
}

// -- recovery -----------------------------------------------------------------

std::string agent_path(int64_t i) {
  return "bench/a" + std::to_string(i);
}

/// Writes n journal agents' snapshots (untimed preparation).
void seed(const std::string& dir, int64_t n) {
  std::unique_ptr<vigil::store> st;
  vigil::store_options so;
  so.dir = dir;
  so.sync = vigil::sync_mode::nosync;
  if (auto s = vigil::store::open(so, st))
    die(s.message());
  std::vector<vigil::write_item> items;
  for (int64_t i = 0; i < n; ++i) {
    Tally t;
    t.set_n(i);
    vigil::records::Snapshot s;
    s.set_format(vigil::store::format);
    s.set_path(agent_path(i));
    s.set_agent("jcount");
    s.set_state_type(Tally::descriptor()->full_name());
    s.set_state(t.SerializeAsString());
    s.set_next_seq(2);
    s.set_durability(2);
    vigil::write_item item;
    vigil::mutation m;
    m.where = vigil::db::snapshots;
    m.key = s.path();
    vigil::encode_record(s, m.value);
    item.muts.push_back(std::move(m));
    items.push_back(std::move(item));
    if (items.size() == 10000 || i + 1 == n) {
      std::vector<vigil::write_item*> ptrs;
      for (auto& x : items)
        ptrs.push_back(&x);
      std::vector<vigil::write_result> res(items.size());
      if (auto s = st->apply(ptrs.data(), ptrs.size(), res.data()))
        die(s.message());
      items.clear();
    }
  }
}

/// Node start; `verify`: with the structural walk of the data dir first
/// (node_config::verify_data_dir, the default), else without it.
void recovery_vigil(int64_t n, bool verify) {
  data_dir d;
  seed(d.path, n);
  vigil::supervisor_spec spec;
  spec.flags.intensity = 10;
  for (int64_t i = 0; i < n; ++i)
    spec.children.push_back(
      vigil::worker("a" + std::to_string(i), "jcount")
        .with_durability(vigil::durability_mode::journal));
  auto cfg = config(d, 1000);
  cfg.verify_data_dir = verify;
  auto t0 = steady_clock::now();
  vigil::node nd{types(), cfg};
  if (auto err = nd.start("bench", spec))
    die(vigil::describe(err));
  double secs = duration<double>(steady_clock::now() - t0).count();
  if (!nd.orphans().empty())
    die("recovery left orphans: " + nd.orphans().front());
  print("recovery", verify ? "vigil" : "noverify", secs * 1000.0, "ms",
        {{"n", n}});
}

/// The walk alone (vigil verify): a forked child reads every page and
/// checks every record's CRC-32C.
void recovery_walk(int64_t n) {
  data_dir d;
  seed(d.path, n);
  auto t0 = steady_clock::now();
  vigil::verify_report rep;
  if (auto st = vigil::verify_data_dir(d.path, rep))
    die(st.message());
  double secs = duration<double>(steady_clock::now() - t0).count();
  if (!rep.ok())
    die("the walk found a problem: " + rep.problem);
  print("recovery", "walk", secs * 1000.0, "ms", {{"n", n}});
}

void recovery_raw(int64_t n) {
  data_dir d;
  seed(d.path, n);
  auto t0 = steady_clock::now();
  MDB_env* env;
  mdb_env_create(&env);
  mdb_env_set_maxdbs(env, 8);
  if (int rc = mdb_env_open(env, d.path.c_str(), MDB_RDONLY, 0644))
    die(std::string{"mdb_env_open: "} + mdb_strerror(rc));
  MDB_txn* txn;
  mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn);
  MDB_dbi dbi;
  if (int rc = mdb_dbi_open(txn, "snapshots", 0, &dbi))
    die(std::string{"mdb_dbi_open: "} + mdb_strerror(rc));
  MDB_cursor* cur;
  mdb_cursor_open(txn, dbi, &cur);
  MDB_val k, v;
  int64_t seen = 0;
  size_t bytes = 0;
  for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    ++seen;
    bytes += v.mv_size;
  }
  mdb_cursor_close(cur);
  mdb_txn_abort(txn);
  mdb_env_close(env);
  double secs = duration<double>(steady_clock::now() - t0).count();
  if (seen != n)
    die("raw scan saw " + std::to_string(seen) + " records");
  print("recovery", "lmdb-raw", secs * 1000.0, "ms",
        {{"n", n}, {"bytes", static_cast<double>(bytes)}});
}

int usage() {
  std::cerr << "usage: durable_bench durable "
               "vigil|lmdb-raw|lmdb-raw-ops|fsync-each [n] "
               "[batch]\n       durable_bench recovery "
               "vigil|noverify|walk|lmdb-raw [n]\n";
  return 2;
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 3)
    return usage();
  std::string name = argv[1];
  std::string impl = argv[2];
  int64_t n = argc > 3 ? std::stoll(argv[3]) : 0;
  int64_t batch = argc > 4 ? std::stoll(argv[4]) : 1000;
  if (name == "durable" && impl == "vigil")
    durable_vigil(n ? n : 100000, static_cast<size_t>(batch));
  else if (name == "durable" && impl == "lmdb-raw")
    durable_raw(n ? n : 100000, 1000, "lmdb-raw");
  else if (name == "durable" && impl == "lmdb-raw-ops")
    durable_raw_ops(n ? n : 100000, 1000);
  else if (name == "durable" && impl == "fsync-each")
    durable_raw(n ? n : 2000, 1, "fsync-each");
  else if (name == "recovery" && impl == "vigil")
    recovery_vigil(n ? n : 100000, true);
  else if (name == "recovery" && impl == "noverify")
    recovery_vigil(n ? n : 100000, false);
  else if (name == "recovery" && impl == "walk")
    recovery_walk(n ? n : 100000);
  else if (name == "recovery" && impl == "lmdb-raw")
    recovery_raw(n ? n : 100000);
  else
    return usage();
  return 0;
}
