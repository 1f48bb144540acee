// The data dir format upgrade (store::open) and the reading of Meta, which
// must understand every format this build can upgrade from.

#include <random>
#include <utility>
#include <vector>

#include "store_impl.hpp"

namespace vigil::detail {

meta_state read_meta(std::string_view bytes, records::Meta& meta,
                     std::string& why) {
  meta.Clear();
  auto fault = decode_record(bytes, meta);
  if (fault == record_fault::none)
    return meta_state::current;
  if (fault == record_fault::unframed
      && meta.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))
      && meta.format() == 1)
    return meta_state::format1;
  meta.Clear();
  why = fault == record_fault::unframed
          ? "neither a framed record nor a format 1 " + meta.GetTypeName()
          : describe(fault, bytes, meta);
  return meta_state::damaged;
}

} // namespace vigil::detail

namespace vigil {

op_result store::impl::upgrade_from_format1(MDB_txn* t, size_t& n) {
  auto& d = *this;
  n = 0;
  using detail::view;
  // Values: framed in place. Format 1 values are bare Protobuf bytes; the
  // bytes stay as they were (new fields read as their defaults), so a
  // record that did not parse before is framed too and is quarantined by
  // recovery as one that does not parse, as it would have been.
  for (auto which : {db::snapshots, db::journal, db::outbox,
                     db::dead_letters}) {
    auto name = to_string(which);
    lmdb::cursor c;
    if (auto rc = c.open(t, d.dbi(which)); rc != MDB_SUCCESS)
      return {rc, name, "mdb_cursor_open"};
    MDB_val k, v;
    int rc;
    std::string key, framed;
    for (rc = c.get(k, v, MDB_FIRST); rc == MDB_SUCCESS;
         rc = c.get(k, v, MDB_NEXT)) {
      framed = frame_record(view(v));
      // The key is copied first: the put copies the page on write, and
      // `k` points into the page as it was.
      key.assign(view(k));
      auto ck = lmdb::val(key);
      auto nv = lmdb::val(framed);
      if (rc = mdb_cursor_put(c.get(), &ck, &nv, MDB_CURRENT);
          rc != MDB_SUCCESS)
        return {rc, name, "mdb_cursor_put(upgrade)"};
      ++n;
    }
    if (rc != MDB_NOTFOUND)
      return {rc, name, "mdb_cursor_get(upgrade)"};
  }
  // Idempotency: ids of format 1 were unique per data dir only; they move
  // to origin 0, the namespace of caller-chosen ids, which is where a
  // caller's retry of such an id looks after the upgrade.
  constexpr auto name = "idempotency";
  auto idem = d.dbi(db::idempotency);
  std::vector<std::pair<std::string, std::string>> records;
  {
    lmdb::cursor c;
    if (auto rc = c.open(t, idem); rc != MDB_SUCCESS)
      return {rc, name, "mdb_cursor_open"};
    MDB_val k, v;
    int rc;
    for (rc = c.get(k, v, MDB_FIRST); rc == MDB_SUCCESS;
         rc = c.get(k, v, MDB_NEXT)) {
      std::string_view path;
      uint64_t id = 0;
      // A malformed key keeps its key (compaction leaves it alone).
      records.emplace_back(split_path_key(view(k), path, id)
                             ? guard_key(path, 0, id)
                             : std::string{view(k)},
                           frame_record(view(v)));
    }
    if (rc != MDB_NOTFOUND)
      return {rc, name, "mdb_cursor_get(upgrade)"};
  }
  if (auto rc = mdb_drop(t, idem, 0); rc != MDB_SUCCESS)
    return {rc, name, "mdb_drop(upgrade)"};
  for (auto& [key, value] : records) {
    auto k = lmdb::val(key);
    auto v = lmdb::val(value);
    if (auto rc = mdb_put(t, idem, &k, &v, 0); rc != MDB_SUCCESS)
      return {rc, name, "mdb_put(upgrade)"};
    ++n;
  }
  return {};
}

uint64_t random_node_id() {
  std::random_device rd;
  uint64_t id = 0;
  while (id == 0)
    id = (uint64_t{rd()} << 32) ^ rd();
  return id;
}

} // namespace vigil
