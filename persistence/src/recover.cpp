// The read side of `store`: recover (with quarantine), mailbox, snapshots.

#include <chrono>
#include <type_traits>

#include "store_impl.hpp"

namespace vigil {

namespace {

using detail::view;

int64_t unix_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch())
    .count();
}

/// A record that cannot be used, with what is known about it.
struct suspect {
  db where;
  std::string key;
  std::string raw;
  std::string path; // empty if the key is malformed
  std::string reason;
};

/// Why the record at `key` cannot be used, or an empty string. Fills `rec`,
/// `path` and `seq` (snapshots are keyed by path, the others by path_key).
template <class Record>
std::string judge(db where, std::string_view key, const MDB_val& v,
                  Record& rec, std::string_view& path, uint64_t& seq) {
  std::string name = to_string(where);
  if (where == db::snapshots)
    path = key;
  else if (!split_path_key(key, path, seq))
    return "corrupt record in " + name
           + ": malformed key (expected <path>\\0<8-byte seq>)";
  if (auto f = decode_record(view(v), rec); f != record_fault::none)
    return "corrupt record in " + name + ": " + describe(f, view(v), rec);
  if (rec.format() > store::format)
    return "record in " + name + " has format " + std::to_string(rec.format())
           + "; this vigil reads format <= " + std::to_string(store::format);
  // The checksum covers the value only: a damaged key would read as
  // another agent's record, or at another seq. The value says which it is.
  if constexpr (std::is_same_v<Record, records::Snapshot>) {
    if (!rec.path().empty() && rec.path() != key)
      return "corrupt record in " + name + ": key \""
             + detail::printable(key) + "\" holds the snapshot of \""
             + detail::printable(rec.path()) + "\" (a damaged key)";
  } else if constexpr (std::is_same_v<Record, records::JournalEntry>
                       || std::is_same_v<Record, records::OutboxEntry>) {
    if (rec.seq() != seq)
      return "corrupt record in " + name + ": key seq " + std::to_string(seq)
             + " holds entry seq " + std::to_string(rec.seq())
             + " (a damaged key)";
  }
  return {};
}

/// Visits every record of `where` whose key starts with `prefix`, in key
/// order: `good(path, seq, Record&)` or `bad(suspect&&)`.
template <class Record, class Impl, class Good, class Bad>
status scan(const Impl& d, MDB_txn* t, db where,
            std::string_view prefix, Good&& good, Bad&& bad) {
  lmdb::cursor c;
  if (auto rc = c.open(t, d.dbi(where)); rc != MDB_SUCCESS)
    return d.fail(rc, where, "mdb_cursor_open");
  MDB_val k{prefix.size(), const_cast<char*>(prefix.data())};
  MDB_val v;
  auto rc = c.get(k, v, prefix.empty() ? MDB_FIRST : MDB_SET_RANGE);
  for (; rc == MDB_SUCCESS; rc = c.get(k, v, MDB_NEXT)) {
    auto key = view(k);
    if (key.substr(0, prefix.size()) != prefix)
      break;
    Record rec;
    std::string_view path;
    uint64_t seq = 0;
    auto reason = judge(where, key, v, rec, path, seq);
    if (reason.empty())
      good(path, seq, rec);
    else
      bad(suspect{where, std::string{key}, std::string{view(v)},
                  std::string{path}, std::move(reason)});
  }
  if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
    return d.fail(rc, where, "mdb_cursor_get");
  return {};
}

} // namespace

status store::recover(std::map<std::string, recovered_agent>& out,
                      std::vector<quarantined>& bad) {
  auto& d = *impl_;
  out.clear();
  bad.clear();
  std::vector<suspect> found;
  auto on_bad = [&](suspect&& x) { found.push_back(std::move(x)); };
  auto agent = [&](std::string_view path) -> recovered_agent& {
    auto [i, added] = out.try_emplace(std::string{path});
    if (added)
      i->second.path = i->first;
    return i->second;
  };
  {
    impl::reader r;
    if (auto st = d.begin_read(r))
      return st;
    auto t = r.txn.get();
    auto st = scan<records::Snapshot>(
      d, t, db::snapshots, {},
      [&](std::string_view path, uint64_t, records::Snapshot& x) {
        auto& a = agent(path);
        a.has_snapshot = true;
        a.snapshot = std::move(x);
      },
      on_bad);
    if (st)
      return st;
    st = scan<records::JournalEntry>(
      d, t, db::journal, {},
      [&](std::string_view path, uint64_t, records::JournalEntry& x) {
        agent(path).journal.push_back(std::move(x));
      },
      on_bad);
    if (st)
      return st;
    st = scan<records::OutboxEntry>(
      d, t, db::outbox, {},
      [&](std::string_view path, uint64_t, records::OutboxEntry& x) {
        agent(path).outbox.push_back(std::move(x));
      },
      on_bad);
    if (st)
      return st;
  }
  if (found.empty())
    return {};
  // Move the suspects to the dead letters, all in one transaction.
  std::vector<std::string> letters;
  letters.reserve(found.size());
  auto now = unix_ms();
  for (auto& x : found) {
    records::DeadLetter dl;
    dl.set_format(store::format);
    dl.set_path(detail::printable(x.path)); // a string field: UTF-8 only
    dl.set_reason(x.reason);
    dl.set_unix_ms(now);
    dl.set_db(to_string(x.where));
    dl.set_key(x.key);
    dl.set_raw(x.raw);
    encode_record(dl, letters.emplace_back());
  }
  auto st = d.write([&](MDB_txn* t) -> op_result {
    for (size_t i = 0; i < found.size(); ++i) {
      if (auto r = d.append_dead_letter(t, letters[i]); r.rc != MDB_SUCCESS)
        return r;
      auto k = lmdb::val(found[i].key);
      auto rc = mdb_del(t, d.dbi(found[i].where), &k, nullptr);
      if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
        return {rc, to_string(found[i].where), "mdb_del", found[i].key};
    }
    return {};
  });
  if (st)
    return st;
  for (auto& x : found)
    bad.push_back(quarantined{x.where, std::move(x.key), std::move(x.reason),
                              std::move(x.path)});
  return {};
}

namespace {

/// The records of one path in `which` (journal or outbox), in seq order,
/// read in transaction `t`; `corrupt`, naming the key, if one does not
/// parse.
template <class Record, class Impl>
status records_in(Impl& d, MDB_txn* t, db which, std::string_view path,
                  std::vector<Record>& out) {
  out.clear();
  std::string prefix{path};
  prefix += '\0';
  status corrupt;
  auto st = scan<Record>(
    d, t, which, prefix,
    [&](std::string_view p, uint64_t, Record& x) {
      if (p == path) // not a longer path that contains '\0'
        out.push_back(std::move(x));
    },
    [&](suspect&& x) {
      if (!corrupt)
        corrupt = {store_errc::corrupt,
                   "data dir " + d.opts.dir + " [" + to_string(which)
                     + "] key \"" + detail::printable(x.key) + "\": "
                     + x.reason
                     + ": restart the node so that recovery moves it to "
                     + "the dead letters"};
    });
  if (st)
    return st;
  if (corrupt)
    out.clear();
  return corrupt;
}

template <class Record, class Impl>
status records_of(Impl& d, db which, std::string_view path,
                  std::vector<Record>& out) {
  out.clear();
  typename Impl::reader r;
  if (auto st = d.begin_read(r))
    return st;
  return records_in(d, r.txn.get(), which, path, out);
}

} // namespace

status store::mailbox(std::string_view path,
                      std::vector<records::JournalEntry>& out) {
  return records_of(*impl_, db::journal, path, out);
}

status store::outbox(std::string_view path,
                     std::vector<records::OutboxEntry>& out) {
  return records_of(*impl_, db::outbox, path, out);
}

status store::load(std::string_view path, recovered_agent& out) {
  auto& d = *impl_;
  out = recovered_agent{};
  out.path = std::string{path};
  impl::reader r;
  if (auto st = d.begin_read(r))
    return st;
  auto t = r.txn.get();
  MDB_val k{path.size(), const_cast<char*>(path.data())};
  MDB_val v;
  auto rc = mdb_get(t, d.dbi(db::snapshots), &k, &v);
  if (rc == MDB_SUCCESS) {
    std::string_view p;
    uint64_t seq = 0;
    auto reason = judge(db::snapshots, path, v, out.snapshot, p, seq);
    if (!reason.empty())
      return {store_errc::corrupt,
              "data dir " + d.opts.dir + " [snapshots] \""
                + detail::printable(path) + "\": " + reason
                + ": restart the node so that recovery moves it to the "
                  "dead letters"};
    out.has_snapshot = true;
  } else if (rc != MDB_NOTFOUND) {
    return d.fail(rc, db::snapshots, "mdb_get");
  }
  if (auto st = records_in(d, t, db::journal, path, out.journal))
    return st;
  return records_in(d, t, db::outbox, path, out.outbox);
}

status store::journal_paths(std::vector<std::string>& out) {
  auto& d = *impl_;
  out.clear();
  impl::reader r;
  if (auto st = d.begin_read(r))
    return st;
  lmdb::cursor c;
  if (auto rc = c.open(r.txn.get(), d.dbi(db::journal)); rc != MDB_SUCCESS)
    return d.fail(rc, db::journal, "mdb_cursor_open");
  MDB_val k, v;
  auto rc = c.get(k, v, MDB_FIRST);
  for (; rc == MDB_SUCCESS; rc = c.get(k, v, MDB_NEXT)) {
    std::string_view path;
    uint64_t seq = 0;
    if (split_path_key(view(k), path, seq)
        && (out.empty() || out.back() != path))
      out.emplace_back(path);
  }
  if (rc != MDB_NOTFOUND)
    return d.fail(rc, db::journal, "mdb_cursor_get");
  return {};
}

status store::snapshots(std::vector<records::Snapshot>& out,
                        std::vector<quarantined>* bad) {
  auto& d = *impl_;
  out.clear();
  impl::reader r;
  if (auto st = d.begin_read(r))
    return st;
  return scan<records::Snapshot>(
    d, r.txn.get(), db::snapshots, {},
    [&](std::string_view, uint64_t, records::Snapshot& x) {
      out.push_back(std::move(x));
    },
    [&](suspect&& x) {
      if (bad != nullptr)
        bad->push_back(
          quarantined{x.where, std::move(x.key), std::move(x.reason), {}});
    });
}

} // namespace vigil

namespace vigil {

bool detail::key_fits(db which, std::string_view key) noexcept {
  std::string_view path;
  uint64_t n = 0;
  switch (which) {
    case db::snapshots:
      return !key.empty() && key.find('\0') == std::string_view::npos;
    case db::journal:
    case db::outbox:
      return split_path_key(key, path, n);
    case db::dead_letters:
      return key.size() == 8;
    default:
      // idempotency, sagas, tool results (own keys too), approvals, shared
      // and meta hold more than one key layout: not checked.
      return true;
  }
}

std::string detail::path_of(db which, std::string_view key) {
  std::string_view path;
  uint64_t n = 0, origin = 0, id = 0;
  if (which == db::snapshots)
    return std::string{key};
  if (split_path_key(key, path, n) || split_guard_key(key, path, origin, id))
    return std::string{path};
  return {};
}

status store::move_aside(db which, const std::string& key,
                         const std::string& reason) {
  auto& d = *impl_;
  if (d.read_only)
    return {store_errc::invalid,
            "data dir " + d.opts.dir + " is open read-only: cannot move a "
              + "record aside"};
  if (which == db::meta)
    return {store_errc::invalid,
            "the meta record cannot be moved aside: without it the data dir "
            "is not vigil's; use `vigil repair` or restore a backup"};
  bool found = false;
  auto st = d.write([&](MDB_txn* t) -> op_result {
    found = false;
    auto k = lmdb::val(key);
    MDB_val v;
    auto rc = mdb_get(t, d.dbi(which), &k, &v);
    if (rc == MDB_NOTFOUND)
      return {};
    if (rc != MDB_SUCCESS)
      return {rc, to_string(which), "mdb_get", key};
    found = true;
    records::DeadLetter dl;
    dl.set_format(store::format);
    dl.set_reason(reason);
    dl.set_unix_ms(unix_ms());
    dl.set_db(to_string(which));
    dl.set_key(key);
    dl.set_raw(std::string{detail::view(v)});
    // A string field: a damaged key's bytes as vigil prints them.
    dl.set_path(detail::printable(detail::path_of(which, key)));
    auto letter = encode_record(dl);
    if (auto r = d.append_dead_letter(t, letter); r.rc != MDB_SUCCESS)
      return r;
    if (rc = mdb_del(t, d.dbi(which), &k, nullptr); rc != MDB_SUCCESS)
      return {rc, to_string(which), "mdb_del", key};
    return {};
  });
  if (st)
    return st;
  if (!found)
    return {store_errc::not_found,
            "data dir " + d.opts.dir + " [" + to_string(which)
              + "] has no key \"" + printable_key(key)
              + "\": copy the key as vigil printed it (\\xNN for other "
                "bytes)"};
  return {};
}

} // namespace vigil
