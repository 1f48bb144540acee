#pragma once

// The oracle of the randomized lifecycle tests (durable/lifecycle_test.cpp
// on the deterministic scheduler, durable/lifecycle_process_test.cpp with
// real processes). It reads the truth off a data dir after a final drain,
// with no node running on it, and checks the journal guarantee against
// what the test knows it sent:
// - no value is applied twice, and every applied value was sent to that
//   path (directly, or through an accepted fanout's outbox);
// - every accepted envelope (its message id has a guard in the idempotency
//   table) is applied exactly once if it can succeed, or is a dead letter
//   and never applied if its handler throws (Add with n < 0);
// - every value of an accepted fanout reaches its target exactly once;
// - a request answered with a reply was applied;
// - nothing is left in the journal or the outbox.
// Plain sends use their value as message id, so a guard names its value.

#include <gtest/gtest.h>

#include <lmdb.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "proto/test.pb.h"
#include "vigil/persistence/store.hpp"

namespace vigil::test {

/// A Fanout the test sent: `count` Adds from `first` to `to`.
struct fanout_sent {
  std::string to;
  int64_t first = 0;
  int64_t count = 0;
};

/// What a run knows it did.
struct lifecycle_facts {
  /// Values sent to each path (n < 0: the handler throws).
  std::map<std::string, std::set<int64_t>> sent;
  /// Fanouts by (path, message id).
  std::map<std::pair<std::string, uint64_t>, fanout_sent> fanouts;
  /// Values whose request was answered with a reply, by path.
  std::map<std::string, std::set<int64_t>> answered;
  /// Async sends that reached a cell, by (path, message id): each must end
  /// accepted or a dead letter, unless it is in `may_be_lost` (a crash
  /// while it could still wait in a mailbox). Empty: not checked.
  std::set<std::pair<std::string, uint64_t>> delivered;
  std::set<std::pair<std::string, uint64_t>> may_be_lost;

  void fanout(const std::string& path, uint64_t id, fanout_sent f) {
    for (int64_t v = f.first; v < f.first + f.count; ++v)
      sent[f.to].insert(v);
    fanouts[{path, id}] = std::move(f);
  }
};

/// What the oracle found.
struct findings {
  std::vector<std::string> problems;
  size_t applied = 0;
  size_t dead = 0;
  size_t guards = 0;
  /// Requests answered by a degraded child's stand-in, and dead letters
  /// with reason `degraded` (lifecycle_test's degrading children).
  size_t stand_ins = 0;
  size_t degraded_letters = 0;
  /// Times a supervisor's and a cell's states were compared.
  size_t agreements = 0;

  void fail(std::string what) {
    if (problems.size() < 20)
      problems.push_back(std::move(what));
  }
};

/// Every (path, message id) with a guard in the idempotency table: what
/// was accepted. Read with LMDB's C API; no node may have the dir open.
inline std::set<std::pair<std::string, uint64_t>>
accepted_ids(const std::string& dir) {
  std::set<std::pair<std::string, uint64_t>> out;
  MDB_env* env = nullptr;
  mdb_env_create(&env);
  mdb_env_set_maxdbs(env, 8);
  if (mdb_env_open(env, dir.c_str(), MDB_RDONLY, 0644) != 0) {
    mdb_env_close(env);
    ADD_FAILURE() << "cannot open " << dir << " read-only";
    return out;
  }
  MDB_txn* txn = nullptr;
  MDB_dbi dbi;
  mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn);
  if (mdb_dbi_open(txn, "idempotency", 0, &dbi) == 0) {
    MDB_cursor* c = nullptr;
    mdb_cursor_open(txn, dbi, &c);
    MDB_val k, v;
    for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
      std::string_view path;
      uint64_t origin = 0;
      uint64_t id = 0;
      if (split_guard_key({static_cast<const char*>(k.mv_data), k.mv_size},
                          path, origin, id))
        out.emplace(std::string{path}, id);
      else
        ADD_FAILURE() << "malformed idempotency key of " << k.mv_size
                      << " bytes in " << dir;
    }
    mdb_cursor_close(c);
  }
  mdb_txn_abort(txn);
  mdb_env_close(env);
  return out;
}

/// Checks the data dir `dir` against `facts` (see the top of this file).
inline findings check_journal_guarantee(const std::string& dir,
                                        lifecycle_facts& facts) {
  findings out;
  auto accepted = accepted_ids(dir);
  out.guards = accepted.size();
  store_options so;
  so.dir = dir;
  so.verify = false; // (see det_node::start)
  std::unique_ptr<store> st;
  if (auto s = store::open(so, st)) {
    out.fail("check: cannot open the store: " + s.message());
    return out;
  }
  // What each path applied.
  std::map<std::string, std::multiset<int64_t>> applied;
  std::vector<records::Snapshot> snaps;
  if (auto s = st->snapshots(snaps))
    out.fail("snapshots: " + s.message());
  for (auto& s : snaps) {
    Tally t;
    if (!t.ParseFromString(s.state())) {
      out.fail(s.path() + ": state does not parse");
      continue;
    }
    auto& a = applied[s.path()];
    int64_t sum = 0;
    for (auto v : t.seen()) {
      a.insert(v);
      sum += v;
    }
    out.applied += static_cast<size_t>(t.seen_size());
    // A Fanout counts but adds nothing to seen or sum.
    if (t.count() < t.seen_size() || t.sum() != sum)
      out.fail(s.path() + ": count " + std::to_string(t.count()) + ", sum "
               + std::to_string(t.sum()) + " do not match what it saw");
  }
  for (auto& [path, vs] : applied)
    for (auto v : vs) {
      if (vs.count(v) > 1)
        out.fail(path + " applied " + std::to_string(v) + " "
                 + std::to_string(vs.count(v)) + " times");
      if (facts.sent[path].count(v) == 0)
        out.fail(path + " applied " + std::to_string(v)
                 + ", which was never sent to it");
    }
  std::vector<records::DeadLetter> dls;
  if (auto s = st->dead_letters(dls))
    out.fail("dead letters: " + s.message());
  std::set<std::pair<std::string, uint64_t>> dead;
  std::map<std::pair<std::string, uint64_t>, std::string> why;
  for (auto& d : dls) {
    dead.emplace(d.path(), d.env().id());
    why[{d.path(), d.env().id()}] = d.reason();
  }
  out.dead = dls.size();
  for (auto& [path, id] : accepted) {
    if (auto it = facts.fanouts.find({path, id}); it != facts.fanouts.end()) {
      auto& f = it->second;
      for (int64_t v = f.first; v < f.first + f.count; ++v)
        if (applied[f.to].count(v) != 1)
          out.fail("accepted fanout " + std::to_string(id) + " of " + path
                   + ": value " + std::to_string(v) + " applied "
                   + std::to_string(applied[f.to].count(v)) + " times at "
                   + f.to);
      continue;
    }
    auto n = static_cast<int64_t>(id);
    if (facts.sent[path].count(n) != 0) {
      if (applied[path].count(n) != 1)
        out.fail("accepted " + std::to_string(id) + " at " + path
                 + " applied " + std::to_string(applied[path].count(n))
                 + " times"
                 + (why.count({path, id}) != 0
                      ? "; dead letter: " + why[{path, id}]
                      : std::string{}));
    } else if (facts.sent[path].count(-n) != 0) {
      if (dead.count({path, id}) == 0)
        out.fail("accepted " + std::to_string(id) + " at " + path
                 + " throws, but is no dead letter");
    }
    // Any other id is an outbox delivery, checked with its fanout.
  }
  for (auto& key : facts.delivered)
    if (accepted.count(key) == 0 && dead.count(key) == 0
        && facts.may_be_lost.count(key) == 0)
      out.fail("send " + std::to_string(key.second) + " to " + key.first
               + " was neither accepted nor a dead letter");
  for (auto& [path, ns] : facts.answered)
    for (auto n : ns)
      if (applied[path].count(n) != 1)
        out.fail("request " + std::to_string(n) + " at " + path
                 + " was answered, but applied "
                 + std::to_string(applied[path].count(n)) + " times");
  size_t left = 0;
  if (!st->count(db::journal, left) && left != 0)
    out.fail(std::to_string(left)
             + " journal entries left after the final drain");
  if (!st->count(db::outbox, left) && left != 0)
    out.fail(std::to_string(left)
             + " outbox entries left after the final drain");
  return out;
}

/// What a run knows about a memory-only child (values are unique per send,
/// except resends, which repeat one): async deliveries by value, values
/// requested, values a crash may have lost, requests answered by the agent
/// and by the stand-in, and what the agent handled (each time).
struct memory_facts {
  std::map<int64_t, int64_t> async;
  std::set<int64_t> requests;
  std::set<int64_t> may_be_lost;
  std::set<int64_t> answered;
  std::set<int64_t> stand_in;
  std::multiset<int64_t> handled;
};

/// The memory-only child: each async delivery was handled or is a dead
/// letter, exactly once (at most once if a crash could lose it); a
/// request was handled at most once, exactly once if answered by the
/// agent, and not at all if the stand-in answered it.
inline void check_memory_child(const std::string& dir,
                               const std::string& path,
                               const memory_facts& m, findings& f) {
  auto& handled = m.handled;
  std::multiset<int64_t> dead;
  store_options so;
  so.dir = dir;
  so.verify = false; // (see det_node::start)
  std::unique_ptr<store> st;
  std::vector<records::DeadLetter> dls;
  if (auto s = store::open(so, st); s || st->dead_letters(dls)) {
    f.fail("check: cannot read the dead letters of " + path);
    return;
  }
  for (auto& d : dls) {
    if (d.path() != path)
      continue;
    Add a;
    if (d.env().type() != Add::descriptor()->full_name()
        || !a.ParseFromString(d.env().payload())) {
      f.fail(path + ": a dead letter that is no Add: " + d.reason());
      continue;
    }
    dead.insert(a.n());
    if (d.reason().rfind("degraded", 0) == 0)
      ++f.degraded_letters;
  }
  auto count = [](const std::multiset<int64_t>& s, int64_t v) {
    return static_cast<int64_t>(s.count(v));
  };
  for (auto& [n, k] : m.async) {
    auto got = count(handled, n) + count(dead, n);
    bool lossy = m.may_be_lost.count(n) != 0;
    if (got > k || (!lossy && got != k))
      f.fail(path + ": value " + std::to_string(n) + " delivered "
             + std::to_string(k) + " times, handled "
             + std::to_string(count(handled, n)) + " times, "
             + std::to_string(count(dead, n)) + " dead letters");
  }
  for (auto n : m.requests) {
    auto h = count(handled, n);
    auto d = count(dead, n);
    bool answered = m.answered.count(n) != 0;
    bool stand_in = m.stand_in.count(n) != 0;
    if (h + d > 1 || (answered && h != 1) || (stand_in && h + d != 0))
      f.fail(path + ": request " + std::to_string(n) + " handled "
             + std::to_string(h) + " times, " + std::to_string(d)
             + " dead letters"
             + (answered ? ", answered by the agent"
                         : stand_in ? ", answered by the stand-in" : ""));
  }
  for (auto n : handled)
    if (m.async.count(n) == 0 && m.requests.count(n) == 0)
      f.fail(path + " handled " + std::to_string(n)
             + ", which was never sent to it");
}

} // namespace vigil::test
