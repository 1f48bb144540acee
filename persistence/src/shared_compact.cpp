// store::compact_tasks: completed tasks of the shared queues leave after
// their retention, with their dedupe records (see vigil/persistence/shared.hpp).

#include <utility>
#include <vector>

#include "store_impl.hpp"
#include "vigil/persistence/record.hpp"
#include "vigil/persistence/shared.hpp"

namespace vigil {

status store::compact_tasks(uint64_t cutoff_ms, const std::string& from,
                            size_t max_scan, std::string& next,
                            size_t& deleted) {
  auto& d = *impl_;
  constexpr auto name = "shared";
  deleted = 0;
  next.clear();
  if (d.absent(db::shared))
    return {};
  size_t n = 0;
  std::string last;
  auto st = d.write([&](MDB_txn* t) -> op_result {
    n = 0;
    last.clear();
    auto dbi = d.dbi(db::shared);
    lmdb::cursor c;
    if (auto rc = c.open(t, dbi); rc != MDB_SUCCESS)
      return {rc, name, "mdb_cursor_open"};
    std::string start = from.empty() ? std::string{"t"} : from;
    MDB_val k = lmdb::val(start), v;
    int rc = c.get(k, v, MDB_SET_RANGE);
    // `from` itself was looked at in the previous step.
    if (rc == MDB_SUCCESS && !from.empty() && detail::view(k) == from)
      rc = c.get(k, v, MDB_NEXT);
    records::TaskRecord task;
    // (dedupe key, the task id it must name), deleted after the scan
    std::vector<std::pair<std::string, std::string>> dedupes;
    for (size_t scanned = 0; rc == MDB_SUCCESS && scanned < max_scan;
         ++scanned) {
      auto key = detail::view(k);
      if (key.empty() || key[0] != 't') {
        rc = MDB_NOTFOUND; // past the task records: the pass is done
        break;
      }
      last.assign(key.data(), key.size());
      std::string_view queue;
      uint64_t id = 0;
      // Kept: a record that does not parse or has a malformed key (not
      // ours to judge), one not done (ready, leased, or dead: a dead
      // letter may replay it), one done since the cutoff.
      bool drop = shared_key::split_task(key, queue, id)
                  && decode_record(detail::view(v), task) == record_fault::none
                  && task.state() == "done" && task.done_ms() != 0
                  && task.done_ms() < cutoff_ms;
      if (drop) {
        if (!task.dedupe_key().empty())
          dedupes.emplace_back(shared_key::dedupe(queue, task.dedupe_key()),
                               std::string{key.substr(key.size() - 8)});
        if (rc = mdb_cursor_del(c.get(), 0); rc != MDB_SUCCESS)
          return {rc, name, "mdb_cursor_del", last};
        ++n;
      }
      rc = c.get(k, v, MDB_NEXT);
    }
    if (rc == MDB_NOTFOUND)
      last.clear();
    else if (rc != MDB_SUCCESS)
      return {rc, name, "mdb_cursor_get", last};
    // A dedupe record goes with its task, if it still names that task.
    for (auto& [dk, id] : dedupes) {
      auto kk = lmdb::val(dk);
      MDB_val dv;
      auto r = mdb_get(t, dbi, &kk, &dv);
      if (r == MDB_NOTFOUND)
        continue;
      if (r != MDB_SUCCESS)
        return {r, name, "mdb_get", dk};
      if (detail::view(dv) != id)
        continue;
      if (r = mdb_del(t, dbi, &kk, nullptr); r != MDB_SUCCESS)
        return {r, name, "mdb_del", dk};
    }
    return {};
  });
  if (!st) {
    deleted = n;
    next = std::move(last);
  }
  return st;
}

} // namespace vigil
