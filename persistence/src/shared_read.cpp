// Reads of shared state for `vigil inspect` and the tests: current keys,
// their histories, and queues (see vigil/persistence/shared.hpp).

#include <map>

#include "store_impl.hpp"
#include "vigil/persistence/record.hpp"
#include "vigil/persistence/shared.hpp"
#include "vigil/persistence/store.hpp"

namespace vigil {

status kv_read(store& st, std::string_view name, std::string_view key,
               records::KvRecord& out, bool& found) {
  std::string raw;
  auto k = shared_key::kv(name, key);
  if (auto s = st.get(db::shared, k, raw, found); s || !found)
    return s;
  if (auto f = decode_record(raw, out); f != record_fault::none)
    return {store_errc::corrupt, "data dir " + st.options().dir
                                   + ": shared record \""
                                   + detail::printable(k)
                                   + "\": " + describe(f, raw, out)};
  return {};
}

status kv_read_mine(store& st, std::string_view name, std::string_view key,
                    std::string_view writer, records::SharedResult& out) {
  std::string raw;
  bool found = false;
  auto k = shared_key::mine(name, key, writer);
  if (k.size() > 500) // not kept for so long a path (src/shared.cpp)
    return {};
  if (auto s = st.get(db::shared, k, raw, found); s || !found)
    return s;
  if (raw.size() != 24)
    return {store_errc::corrupt, "data dir " + st.options().dir
                                   + ": shared record \""
                                   + detail::printable(k) + "\": "
                                   + std::to_string(raw.size())
                                   + " bytes, not 24"};
  out.set_mine_version(detail::get_be64(raw.data()));
  out.set_mine_origin(detail::get_be64(raw.data() + 8));
  out.set_mine_id(detail::get_be64(raw.data() + 16));
  return {};
}

status kv_history(store& st, std::string_view name, std::string_view key,
                  std::vector<records::KvRecord>& out) {
  out.clear();
  auto prefix = shared_key::history(name, key, 0);
  prefix.resize(prefix.size() - 8);
  std::vector<std::pair<std::string, std::string>> kvs;
  if (auto s = st.scan_prefix(db::shared, prefix, kvs))
    return s;
  for (auto& [k, v] : kvs) {
    if (k.size() != prefix.size() + 8)
      continue;
    records::KvRecord r;
    if (decode_record(v, r) == record_fault::none)
      out.push_back(std::move(r));
  }
  return {};
}

status kv_list(store& st, std::vector<kv_listing>& out) {
  out.clear();
  std::vector<std::pair<std::string, std::string>> kvs;
  if (auto s = st.scan_prefix(db::shared, "k", kvs))
    return s;
  for (auto& [k, v] : kvs) {
    kv_listing x;
    std::string_view name, key;
    if (!shared_key::split_kv(k, name, key)) {
      x.key = detail::printable(k);
      x.readable = false;
      x.problem = "malformed key";
    } else {
      x.name = std::string{name};
      x.key = std::string{key};
      if (auto f = decode_record(v, x.current); f != record_fault::none) {
        x.readable = false;
        x.problem = describe(f, v, x.current);
      }
    }
    out.push_back(std::move(x));
  }
  return {};
}

status queue_tasks(store& st, std::string_view name,
                   std::vector<records::TaskRecord>& out, size_t* unreadable) {
  out.clear();
  if (unreadable != nullptr)
    *unreadable = 0;
  auto prefix = shared_key::task(name, 0);
  prefix.resize(prefix.size() - 8);
  std::vector<std::pair<std::string, std::string>> kvs;
  if (auto s = st.scan_prefix(db::shared, prefix, kvs))
    return s;
  for (auto& [k, v] : kvs) {
    records::TaskRecord t;
    if (k.size() != prefix.size() + 8
        || decode_record(v, t) != record_fault::none) {
      if (unreadable != nullptr)
        ++*unreadable;
      continue;
    }
    out.push_back(std::move(t));
  }
  return {};
}

status queue_list(store& st, std::vector<queue_listing>& out) {
  out.clear();
  std::vector<std::pair<std::string, std::string>> kvs;
  if (auto s = st.scan_prefix(db::shared, "t", kvs))
    return s;
  std::map<std::string, queue_listing> by_name;
  for (auto& [k, v] : kvs) {
    std::string_view name;
    uint64_t id = 0;
    if (!shared_key::split_task(k, name, id))
      continue;
    auto& q = by_name[std::string{name}];
    q.name = std::string{name};
    records::TaskRecord t;
    if (decode_record(v, t) != record_fault::none) {
      ++q.unreadable;
      continue;
    }
    if (t.state() == "ready")
      ++q.ready;
    else if (t.state() == "leased") {
      ++q.leased;
      q.live_leases.push_back(std::move(t));
    } else if (t.state() == "done")
      ++q.done;
    else
      ++q.dead;
  }
  for (auto& [n, q] : by_name)
    out.push_back(std::move(q));
  return {};
}

} // namespace vigil
