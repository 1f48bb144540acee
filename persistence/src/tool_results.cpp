// The recorded results of tool calls (db::tool_results): their keys and
// their compaction.
#include "vigil/persistence/store.hpp"

#include "store_impl.hpp"

namespace vigil {

using detail::get_be64;
using detail::put_be64;

std::string tool_result_key(std::string_view path, uint64_t origin,
                            uint64_t id, std::string_view index_path) {
  std::string out;
  out.resize(path.size() + 17 + index_path.size());
  path.copy(out.data(), path.size());
  auto* p = out.data() + path.size();
  p[0] = '\0';
  put_be64(p + 1, origin);
  put_be64(p + 9, id);
  index_path.copy(p + 17, index_path.size());
  return out;
}

std::string tool_result_key(std::string_view path, uint64_t origin,
                            uint64_t id, uint32_t index) {
  char be[4];
  for (int i = 3; i >= 0; --i, index >>= 8)
    be[i] = static_cast<char>(index & 0xff);
  return tool_result_key(path, origin, id, std::string_view{be, 4});
}

bool split_tool_result_key(std::string_view key, std::string_view& path,
                           uint64_t& origin, uint64_t& id,
                           std::string_view& index_path) noexcept {
  // A path holds no NUL: the first one ends it.
  auto pos = key.find('\0');
  if (pos == std::string_view::npos)
    return false;
  auto tail = key.size() - pos - 1;
  if (tail < 16 + 4 || (tail - 16) % 4 != 0)
    return false;
  path = key.substr(0, pos);
  auto* p = key.data() + pos;
  origin = get_be64(p + 1);
  id = get_be64(p + 9);
  index_path = key.substr(pos + 17);
  return true;
}

bool split_tool_result_key(std::string_view key, std::string_view& path,
                           uint64_t& origin, uint64_t& id,
                           uint32_t& index) noexcept {
  std::string_view ix;
  if (!split_tool_result_key(key, path, origin, id, ix) || ix.size() != 4)
    return false;
  index = 0;
  for (int i = 0; i < 4; ++i)
    index = (index << 8) | static_cast<unsigned char>(ix[i]);
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
          return {rc, name, "mdb_cursor_del", last};
        ++n;
      }
      // After a delete, MDB_NEXT yields the record that followed it.
      rc = c.get(k, v, MDB_NEXT);
    }
    if (rc == MDB_NOTFOUND)
      last.clear(); // the pass is done
    else if (rc != MDB_SUCCESS)
      return {rc, name, "mdb_cursor_get", last};
    return {};
  });
  if (!st) {
    deleted = n;
    next = std::move(last);
  }
  return st;
}

} // namespace vigil
