// The recorded results of tool calls (db::tool_results): their keys and
// their compaction.
#include "vigil/persistence/store.hpp"

#include "store_impl.hpp"

namespace vigil {

using detail::get_be64;
using detail::put_be64;

namespace {

constexpr size_t tail_size = 1 + 8 + 8 + 4; // \0, origin, id, index

} // namespace

std::string tool_result_key(std::string_view path, uint64_t origin,
                            uint64_t id, uint32_t index) {
  std::string out;
  out.resize(path.size() + tail_size);
  path.copy(out.data(), path.size());
  auto* p = out.data() + path.size();
  p[0] = '\0';
  put_be64(p + 1, origin);
  put_be64(p + 9, id);
  for (int i = 3; i >= 0; --i, index >>= 8)
    p[17 + i] = static_cast<char>(index & 0xff);
  return out;
}

bool split_tool_result_key(std::string_view key, std::string_view& path,
                           uint64_t& origin, uint64_t& id,
                           uint32_t& index) noexcept {
  if (key.size() < tail_size || key[key.size() - tail_size] != '\0')
    return false;
  path = key.substr(0, key.size() - tail_size);
  auto* p = key.data() + key.size() - tail_size;
  origin = get_be64(p + 1);
  id = get_be64(p + 9);
  index = 0;
  for (int i = 0; i < 4; ++i)
    index = (index << 8) | static_cast<unsigned char>(p[17 + i]);
  return true;
}

status store::compact_tool_results(uint64_t cutoff_ms, const std::string& from,
                                   size_t max_scan, std::string& next,
                                   size_t& deleted) {
  auto& d = *impl_;
  constexpr auto name = "tool_results";
  deleted = 0;
  next.clear();
  size_t n = 0;
  std::string last;
  auto st = d.write([&](MDB_txn* t) -> op_result {
    n = 0;
    last.clear();
    lmdb::cursor c;
    if (auto rc = c.open(t, d.dbi(db::tool_results)); rc != MDB_SUCCESS)
      return {rc, name, "mdb_cursor_open"};
    MDB_val k, v;
    int rc;
    if (from.empty()) {
      rc = c.get(k, v, MDB_FIRST);
    } else {
      k = lmdb::val(from);
      rc = c.get(k, v, MDB_SET_RANGE);
      // `from` itself was looked at in the previous step.
      if (rc == MDB_SUCCESS && detail::view(k) == from)
        rc = c.get(k, v, MDB_NEXT);
    }
    records::ToolResultRecord rec;
    for (size_t scanned = 0; rc == MDB_SUCCESS && scanned < max_scan;
         ++scanned) {
      last.assign(static_cast<char*>(k.mv_data), k.mv_size);
      // Kept: a record that does not parse (not ours to judge), one still
      // running (its execution may yet report), one without a time, and
      // one recorded since the cutoff.
      bool drop = decode_record(detail::view(v), rec) == record_fault::none
                  && !rec.running() && rec.recorded_ms() != 0
                  && rec.recorded_ms() < cutoff_ms;
      if (drop) {
        if (rc = mdb_cursor_del(c.get(), 0); rc != MDB_SUCCESS)
          return {rc, name, "mdb_cursor_del", &last};
        ++n;
      }
      // After a delete, MDB_NEXT yields the record that followed it.
      rc = c.get(k, v, MDB_NEXT);
    }
    if (rc == MDB_NOTFOUND)
      last.clear(); // the pass is done
    else if (rc != MDB_SUCCESS)
      return {rc, name, "mdb_cursor_get", &last};
    return {};
  });
  if (!st) {
    deleted = n;
    next = std::move(last);
  }
  return st;
}

} // namespace vigil
