// store::open_read_only: a view of a data dir for `vigil inspect`, also
// while a node runs in it (LMDB readers never block its writer).

#include "vigil/persistence/store.hpp"

#include <sys/stat.h>

#include "store_impl.hpp"

namespace vigil {

status store::open_read_only(const store_options& opts,
                             std::unique_ptr<store>& out) {
  auto& dir = opts.dir;
  struct stat sb;
  if (dir.empty() || ::stat((dir + "/data.mdb").c_str(), &sb) != 0)
    return {store_errc::not_found,
            "no vigil data dir at \"" + dir
              + "\" (no data.mdb): pass the --data-dir a node ran with"};
  std::unique_ptr<store> self{new store};
  auto& d = *self->impl_;
  d.opts = opts;
  if (auto st = detail::vet_data_dir(opts, d.notes))
    return st;
  auto env_call = [&](int rc, const char* op) {
    return lmdb::check(rc, dir, nullptr, op);
  };
  if (auto st = env_call(d.env.create(), "mdb_env_create"))
    return st;
  auto e = d.env.get();
  if (auto st = env_call(mdb_env_set_maxdbs(e, 16), "mdb_env_set_maxdbs"))
    return st;
  if (auto st = env_call(mdb_env_open(e, dir.c_str(), MDB_RDONLY | MDB_NOTLS,
                                      0600),
                         "mdb_env_open(read-only)"))
    return st;
  d.refresh_map_size();
  impl::reader r;
  if (auto st = d.begin_read(r))
    return st;
  for (size_t i = 0; i < db_count; ++i) {
    auto name = to_string(static_cast<db>(i));
    if (auto rc = mdb_dbi_open(r.txn.get(), name, 0, &d.dbis[i]); rc != 0) {
      if (rc == MDB_NOTFOUND && added_later(static_cast<db>(i))) {
        // Written by a vigil from before it: it has none.
        d.missing[i] = true;
        continue;
      }
      if (rc == MDB_NOTFOUND)
        return {store_errc::not_found,
                "\"" + dir + "\" is an LMDB environment but not a vigil data "
                  + "dir (no \"" + name + "\" database)"};
      return d.fail(rc, static_cast<db>(i), "mdb_dbi_open");
    }
  }
  records::Meta meta;
  MDB_val k{6, const_cast<char*>("format")};
  MDB_val v;
  if (mdb_get(r.txn.get(), d.dbi(db::meta), &k, &v) == MDB_SUCCESS) {
    std::string why;
    auto state = detail::read_meta(detail::view(v), meta, why);
    if (state == detail::meta_state::damaged)
      return {store_errc::corrupt,
              "data dir " + dir + " [meta] \"format\": " + why
                + ": restore the data dir from a backup"};
    if (meta.format() > store::format)
      return {store_errc::newer_format,
              "data dir " + dir + " has format "
                + std::to_string(meta.format()) + "; this vigil reads format "
                + "<= " + std::to_string(store::format) + ": upgrade vigil"};
    if (state == detail::meta_state::format1)
      return {store_errc::older_format,
              "data dir " + dir + " has format 1; this vigil reads format "
                + std::to_string(store::format) + " and upgrades a data dir "
                + "only when it opens it for writing: run the node on it "
                  "once (vigil run), or inspect it with the vigil that "
                  "wrote it"};
  }
  // The dbi handles stay valid after this transaction (LMDB keeps them for
  // the environment's life).
  r.txn.commit();
  d.boots = meta.boots();
  d.node_id = meta.node_id();
  d.read_only = true;
  out = std::move(self);
  return {};
}

} // namespace vigil
