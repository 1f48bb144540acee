// shared_bench cas|queue vigil|lmdb-raw [N] [batch=B]
//
// Shared state (vigil/persistence/shared.hpp) at the store level, one JSON
// line per run as the other benches print. Every commit uses sync mode
// `full` (an fsync per transaction). The data dir lives under
// ./build/bench-data (a real disk, not tmpfs) and is removed afterwards.
//
//   cas vigil N       N KV_PUT operations on store "bench", keys k0..k(B-1)
//                     in turn, each with the expected_version that makes it
//                     succeed and a 64-byte value; one write_item per
//                     operation, B per store::apply (one transaction per B
//                     writes); every result must be OK. writes/s
//   cas lmdb-raw N    raw LMDB: N mdb_put of the bytes vigil stores (the
//                     framed KvRecord, under the same key), B puts per
//                     transaction. writes/s
//   queue vigil N     N tasks (64-byte payloads) enqueued untimed, 1000 per
//                     apply; then, timed, until all N are done: one apply of
//                     B CLAIM operations (lease 60 s), one apply of B
//                     COMPLETE operations for the leases just claimed;
//                     2N operations. ops/s
//   queue lmdb-raw N  raw LMDB: the same N task records put untimed; then,
//                     timed, per B tasks one transaction of B puts of the
//                     claimed records and one of B puts of the done
//                     records. ops/s
//
// Both sides build their bytes the way they would in use: vigil's caller
// serializes its operations and parses the results inside the timed loop,
// the raw baseline puts records encoded beforehand (the physical limit).

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <lmdb.h>
#include <unistd.h>

#include "measure.hpp"
#include "vigil/persistence/record.hpp"
#include "vigil/persistence/shared.hpp"
#include "vigil/persistence/store.hpp"

using namespace std::chrono;
using vigil::records::KvRecord;
using vigil::records::SharedOp;
using vigil::records::SharedResult;
using vigil::records::TaskRecord;

namespace {

[[noreturn]] void die(const std::string& what) {
  vigil::bench::die("shared_bench", what);
}

/// This bench's data dir (bench/measure.hpp).
struct data_dir : vigil::bench::data_dir {
  data_dir() : vigil::bench::data_dir("shared-") {}
};

const std::string name = "bench";
const std::string writer = "bench/w";
constexpr uint64_t lease_ms = 60000;

std::string value64(int64_t i) {
  std::string v = "v" + std::to_string(i);
  v.resize(64, '.');
  return v;
}

void print(const char* case_name, const char* impl, double value,
           const char* unit, int64_t n, int64_t batch) {
  vigil::bench::result r{case_name, impl, value, unit, {}};
  r.params["n"] = static_cast<double>(n);
  r.params["batch"] = static_cast<double>(batch);
  vigil::bench::print(r);
}

// -- vigil --------------------------------------------------------------------

std::unique_ptr<vigil::store> open_store(const data_dir& d) {
  std::unique_ptr<vigil::store> st;
  vigil::store_options so;
  so.dir = d.path;
  so.sync = vigil::sync_mode::full;
  if (auto s = vigil::store::open(so, st))
    die(s.message());
  return st;
}

/// The operations of one apply: one write_item per operation.
struct batch_of_ops {
  std::vector<vigil::write_item> items;
  std::vector<vigil::write_item*> ptrs;
  std::vector<vigil::write_result> res;

  void clear() {
    items.clear();
  }

  void add(const SharedOp& op) {
    vigil::write_item item;
    vigil::mutation m;
    m.what = vigil::mutation::op::shared;
    m.where = vigil::db::shared;
    op.SerializeToString(&m.value);
    item.muts.push_back(std::move(m));
    items.push_back(std::move(item));
  }

  /// Applies the batch in one transaction; result i of operation i.
  void apply(vigil::store& st, std::vector<SharedResult>& out) {
    ptrs.clear();
    for (auto& x : items)
      ptrs.push_back(&x);
    res.resize(items.size());
    if (auto s = st.apply(ptrs.data(), ptrs.size(), res.data()))
      die(s.message());
    out.resize(items.size());
    for (size_t i = 0; i < items.size(); ++i)
      if (!out[i].ParseFromString(items[i].muts[0].key))
        die("a shared result does not parse");
  }
};

void check_ok(const SharedResult& r, const char* what) {
  if (r.status() != SharedResult::OK)
    die(std::string{what} + ": " + vigil::to_string(r.status()) + " "
        + r.detail());
}

void cas_vigil(int64_t n, int64_t batch) {
  data_dir d;
  auto st = open_store(d);
  batch_of_ops b;
  std::vector<SharedResult> out;
  std::vector<std::string> keys;
  for (int64_t k = 0; k < batch; ++k)
    keys.push_back("k" + std::to_string(k));
  std::vector<uint64_t> version(static_cast<size_t>(batch), 0);
  auto value = value64(0);
  SharedOp op;
  op.set_kind(SharedOp::KV_PUT);
  op.set_name(name);
  op.set_value(value);
  op.set_writer(writer);
  auto t0 = steady_clock::now();
  for (int64_t i = 0; i < n;) {
    b.clear();
    int64_t m = std::min(batch, n - i);
    for (int64_t j = 0; j < m; ++j) {
      op.set_key(keys[static_cast<size_t>(j)]);
      op.set_expected_version(version[static_cast<size_t>(j)]);
      b.add(op);
    }
    b.apply(*st, out);
    for (int64_t j = 0; j < m; ++j) {
      auto& r = out[static_cast<size_t>(j)];
      check_ok(r, "kv_put");
      version[static_cast<size_t>(j)] = r.entry().version();
    }
    i += m;
  }
  double secs = duration<double>(steady_clock::now() - t0).count();
  print("shared_cas", "vigil", n / secs, "writes/s", n, batch);
}

void queue_vigil(int64_t n, int64_t batch) {
  data_dir d;
  auto st = open_store(d);
  batch_of_ops b;
  std::vector<SharedResult> out;
  // Untimed: N tasks, 1000 per apply.
  {
    SharedOp op;
    op.set_kind(SharedOp::ENQUEUE);
    op.set_name(name);
    op.set_writer(writer);
    for (int64_t i = 0; i < n;) {
      b.clear();
      int64_t m = std::min<int64_t>(1000, n - i);
      for (int64_t j = 0; j < m; ++j) {
        op.set_value(value64(i + j));
        b.add(op);
      }
      b.apply(*st, out);
      for (auto& r : out)
        check_ok(r, "enqueue");
      i += m;
    }
  }
  SharedOp claim;
  claim.set_kind(SharedOp::CLAIM);
  claim.set_name(name);
  claim.set_lease_ms(lease_ms);
  claim.set_writer(writer);
  SharedOp complete;
  complete.set_kind(SharedOp::COMPLETE);
  complete.set_name(name);
  complete.set_writer(writer);
  std::vector<std::pair<uint64_t, uint64_t>> leases;
  auto t0 = steady_clock::now();
  for (int64_t done = 0; done < n;) {
    int64_t m = std::min(batch, n - done);
    b.clear();
    for (int64_t j = 0; j < m; ++j)
      b.add(claim);
    b.apply(*st, out);
    leases.clear();
    for (auto& r : out) {
      check_ok(r, "claim");
      leases.emplace_back(r.task().id(), r.task().lease());
    }
    b.clear();
    for (auto& [id, lease] : leases) {
      complete.set_task_id(id);
      complete.set_lease(lease);
      b.add(complete);
    }
    b.apply(*st, out);
    for (auto& r : out)
      check_ok(r, "complete");
    done += m;
  }
  double secs = duration<double>(steady_clock::now() - t0).count();
  print("shared_queue", "vigil", 2.0 * n / secs, "ops/s", n, batch);
}

// -- raw LMDB -----------------------------------------------------------------

/// An LMDB environment opened as vigil opens its own (MDB_NOTLS, the same
/// initial map size, sync full), with one named database.
struct raw_env {
  MDB_env* env = nullptr;
  MDB_dbi dbi = 0;
  explicit raw_env(const std::string& dir) {
    if (mdb_env_create(&env) != 0)
      die("mdb_env_create");
    mdb_env_set_maxdbs(env, 16);
    mdb_env_set_mapsize(env, vigil::store_options{}.map_size);
    if (int rc = mdb_env_open(env, dir.c_str(), MDB_NOTLS, 0644))
      die(std::string{"mdb_env_open: "} + mdb_strerror(rc));
    MDB_txn* txn;
    if (int rc = mdb_txn_begin(env, nullptr, 0, &txn))
      die(std::string{"mdb_txn_begin: "} + mdb_strerror(rc));
    if (int rc = mdb_dbi_open(txn, "shared", MDB_CREATE, &dbi))
      die(std::string{"mdb_dbi_open: "} + mdb_strerror(rc));
    if (int rc = mdb_txn_commit(txn))
      die(std::string{"mdb_txn_commit: "} + mdb_strerror(rc));
  }
  ~raw_env() {
    mdb_env_close(env);
  }

  /// Puts (keys[i], vals[i]) for i in [from, to) in one transaction.
  void put_txn(const std::vector<std::string>& keys,
               const std::vector<std::string>& vals, size_t from, size_t to,
               size_t key_mod) {
    MDB_txn* txn;
    if (int rc = mdb_txn_begin(env, nullptr, 0, &txn))
      die(std::string{"mdb_txn_begin: "} + mdb_strerror(rc));
    for (size_t i = from; i < to; ++i) {
      auto& k = keys[i % key_mod];
      MDB_val key{k.size(), const_cast<char*>(k.data())};
      MDB_val val{vals[i].size(), const_cast<char*>(vals[i].data())};
      if (int rc = mdb_put(txn, dbi, &key, &val, 0))
        die(std::string{"mdb_put: "} + mdb_strerror(rc));
    }
    if (int rc = mdb_txn_commit(txn))
      die(std::string{"mdb_txn_commit: "} + mdb_strerror(rc));
  }
};

uint64_t now_ms() {
  return static_cast<uint64_t>(
    duration_cast<milliseconds>(system_clock::now().time_since_epoch())
      .count());
}

void cas_raw(int64_t n, int64_t batch) {
  data_dir d;
  raw_env re{d.path};
  // The keys and records vigil writes: write i goes to key i % B as its
  // version i / B + 1.
  std::vector<std::string> keys;
  for (int64_t k = 0; k < batch; ++k)
    keys.push_back(vigil::shared_key::kv(name, "k" + std::to_string(k)));
  std::vector<std::string> vals;
  vals.reserve(static_cast<size_t>(n));
  auto t = now_ms();
  for (int64_t i = 0; i < n; ++i) {
    KvRecord r;
    r.set_format(1);
    r.set_value(value64(0));
    r.set_version(static_cast<uint64_t>(i / batch + 1));
    r.set_writer(writer);
    r.set_written_ms(t);
    vals.push_back(vigil::encode_record(r));
  }
  auto t0 = steady_clock::now();
  for (int64_t i = 0; i < n; i += batch)
    re.put_txn(keys, vals, static_cast<size_t>(i),
               static_cast<size_t>(std::min(n, i + batch)),
               static_cast<size_t>(batch));
  double secs = duration<double>(steady_clock::now() - t0).count();
  print("shared_cas", "lmdb-raw", n / secs, "writes/s", n, batch);
}

void queue_raw(int64_t n, int64_t batch) {
  data_dir d;
  raw_env re{d.path};
  auto t = now_ms();
  std::vector<std::string> keys, ready, claimed, done;
  for (int64_t i = 0; i < n; ++i) {
    auto id = static_cast<uint64_t>(i + 1);
    keys.push_back(vigil::shared_key::task(name, id));
    TaskRecord task;
    task.set_format(1);
    task.set_id(id);
    task.set_payload(value64(i));
    task.set_state("ready");
    task.set_max_attempts(vigil::default_max_attempts);
    task.set_enqueued_ms(t);
    task.set_enqueued_by(writer);
    ready.push_back(vigil::encode_record(task));
    task.set_state("leased");
    task.set_attempts(1);
    task.set_lease(1);
    task.set_lease_expires_ms(t + lease_ms);
    task.set_holder(writer);
    task.set_claimed_ms(t);
    claimed.push_back(vigil::encode_record(task));
    task.set_state("done");
    task.set_done_ms(t);
    done.push_back(vigil::encode_record(task));
  }
  auto all = static_cast<size_t>(n);
  // Untimed: the N ready tasks, 1000 per transaction.
  for (size_t i = 0; i < all; i += 1000)
    re.put_txn(keys, ready, i, std::min(all, i + 1000), all);
  auto t0 = steady_clock::now();
  for (size_t i = 0; i < all; i += static_cast<size_t>(batch)) {
    auto to = std::min(all, i + static_cast<size_t>(batch));
    re.put_txn(keys, claimed, i, to, all);
    re.put_txn(keys, done, i, to, all);
  }
  double secs = duration<double>(steady_clock::now() - t0).count();
  print("shared_queue", "lmdb-raw", 2.0 * n / secs, "ops/s", n, batch);
}

int usage() {
  std::cerr << "usage: shared_bench cas|queue vigil|lmdb-raw [N] [batch=B]\n";
  return 2;
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 3)
    return usage();
  std::string what = argv[1];
  std::string impl = argv[2];
  // bench/run.py's case names are accepted too.
  if (what.rfind("shared_", 0) == 0)
    what = what.substr(7);
  if ((what != "cas" && what != "queue")
      || (impl != "vigil" && impl != "lmdb-raw"))
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
  if (batch < 1 || n < 0)
    return usage();
  if (n == 0)
    n = std::min<int64_t>(1000 * batch, 100000);
  if (what == "cas")
    (impl == "vigil" ? cas_vigil : cas_raw)(n, batch);
  else
    (impl == "vigil" ? queue_vigil : queue_raw)(n, batch);
  return 0;
}
