#include "vigil/persistence/store.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <system_error>

#include "store_impl.hpp"
#include "vigil/persistence/integrity.hpp"

namespace vigil {

namespace detail {

std::string printable(std::string_view key) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : key) {
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 0xf];
    }
  }
  return out;
}

} // namespace detail

std::string printable_key(std::string_view key) {
  return detail::printable(key);
}

namespace {

using detail::abort_rc;
using detail::get_be64;
using detail::put_be64;
using detail::view;
using detail::unique_fd;

constexpr const char* lock_name = "vigil.lock";
const std::string format_key = "format";

std::string errno_text(int e) {
  return std::error_code{e, std::generic_category()}.message();
}

/// Creates `dir` and its missing parents (mkdir -p).
status make_dirs(const std::string& dir) {
  for (size_t pos = 1; pos <= dir.size(); ++pos) {
    if (pos < dir.size() && dir[pos] != '/')
      continue;
    auto part = dir.substr(0, pos);
    // The data dir itself is its owner's alone; parents as usual.
    if (::mkdir(part.c_str(), pos == dir.size() ? 0700 : 0755) == 0
        || errno == EEXIST)
      continue;
    auto e = errno;
    return {store_errc::io,
            "cannot create data dir " + dir + " (mkdir " + part
              + "): " + errno_text(e)
              + ": choose a writable --data-dir or fix its permissions"};
  }
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return {store_errc::io, "data dir " + dir + " is not a directory: "
                              + "choose another --data-dir"};
  return {};
}

/// Takes the exclusive lock on `<dir>/vigil.lock` and writes our pid into
/// it. flock belongs to the open file description, so a second open of the
/// same dir fails in this process as well as in another.
status lock_dir(const std::string& dir, unique_fd& out) {
  auto path = dir + "/" + lock_name;
  unique_fd fd;
  fd.reset(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (fd.get() < 0) {
    auto e = errno;
    return {store_errc::io,
            "cannot open lock file " + path + ": " + errno_text(e)
              + ": choose a writable --data-dir or fix its permissions"};
  }
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    auto e = errno;
    if (e != EWOULDBLOCK)
      return {store_errc::io,
              "cannot lock " + path + ": " + errno_text(e)
                + ": choose a --data-dir on a local filesystem"};
    char buf[32] = {};
    auto n = ::pread(fd.get(), buf, sizeof(buf) - 1, 0);
    std::string pid{buf, n > 0 ? static_cast<size_t>(n) : 0};
    while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' '))
      pid.pop_back();
    if (pid.empty())
      pid = "unknown";
    return {store_errc::locked,
            "data dir " + dir + " is locked by pid " + pid + " (" + path
              + "): stop that node or use another --data-dir"};
  }
  auto pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd.get(), 0) != 0
      || ::pwrite(fd.get(), pid.data(), pid.size(), 0)
           != static_cast<ssize_t>(pid.size())) {
    auto e = errno;
    return {store_errc::io, "cannot write " + path + ": " + errno_text(e)
                              + ": choose a writable --data-dir"};
  }
  out.reset(fd.release());
  return {};
}

} // namespace

// -- path keys ----------------------------------------------------------------

std::string path_key(std::string_view path, uint64_t n) {
  std::string out;
  out.resize(path.size() + 9);
  path.copy(out.data(), path.size());
  out[path.size()] = '\0';
  put_be64(out.data() + path.size() + 1, n);
  return out;
}

bool split_path_key(std::string_view key, std::string_view& path,
                    uint64_t& n) noexcept {
  if (key.size() < 9 || key[key.size() - 9] != '\0')
    return false;
  path = key.substr(0, key.size() - 9);
  n = get_be64(key.data() + key.size() - 8);
  return true;
}

std::string guard_key(std::string_view path, uint64_t origin, uint64_t id) {
  std::string out;
  out.resize(path.size() + 17);
  path.copy(out.data(), path.size());
  out[path.size()] = '\0';
  put_be64(out.data() + path.size() + 1, origin);
  put_be64(out.data() + path.size() + 9, id);
  return out;
}

bool split_guard_key(std::string_view key, std::string_view& path,
                     uint64_t& origin, uint64_t& id) noexcept {
  if (key.size() < 17 || key[key.size() - 17] != '\0')
    return false;
  path = key.substr(0, key.size() - 17);
  origin = get_be64(key.data() + key.size() - 16);
  id = get_be64(key.data() + key.size() - 8);
  return true;
}

// -- store --------------------------------------------------------------------

store::store() : impl_(std::make_unique<impl>()) {
  // nop
}

store::~store() = default;

const store_options& store::options() const noexcept {
  return impl_->opts;
}

uint64_t store::boots() const noexcept {
  return impl_->boots;
}

uint64_t store::node_id() const noexcept {
  return impl_->node_id;
}

uint32_t store::upgraded_from() const noexcept {
  return impl_->upgraded_from;
}

size_t store::upgraded_records() const noexcept {
  return impl_->upgraded_records;
}

size_t store::map_size() const noexcept {
  return impl_->map_size;
}

store::usage_info store::usage() const {
  usage_info out;
  // Under the resize lock: mdb_env_set_mapsize may not run meanwhile.
  std::shared_lock<std::shared_mutex> lk{impl_->resize_mtx};
  MDB_envinfo info;
  MDB_stat st;
  if (mdb_env_info(impl_->env.get(), &info) == MDB_SUCCESS
      && mdb_env_stat(impl_->env.get(), &st) == MDB_SUCCESS) {
    out.map_size = info.me_mapsize;
    out.used = (info.me_last_pgno + 1) * size_t{st.ms_psize};
  }
  return out;
}

const std::vector<std::string>& store::open_notes() const noexcept {
  return impl_->notes;
}


status store::open(const store_options& opts, std::unique_ptr<store>& out) {
  auto& dir = opts.dir;
  if (dir.empty())
    return {store_errc::invalid, "store_options.dir is empty: set --data-dir"};
  if (opts.map_size == 0)
    return {store_errc::invalid, "map_size is 0: set it to at least 64 KiB"};
  if (opts.max_map_size < opts.map_size)
    return {store_errc::invalid,
            "max_map_size (" + std::to_string(opts.max_map_size)
              + ") is below map_size (" + std::to_string(opts.map_size)
              + "): raise max_map_size"};
  if (auto st = make_dirs(dir))
    return st;
  std::unique_ptr<store> self{new store};
  auto& d = *self->impl_;
  d.opts = opts;
  if (auto st = lock_dir(dir, d.lock))
    return st;
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
  if (auto st = env_call(mdb_env_set_mapsize(e, opts.map_size),
                         "mdb_env_set_mapsize"))
    return st;
  unsigned flags = MDB_NOTLS;
  if (opts.sync == sync_mode::nometasync)
    flags |= MDB_NOMETASYNC;
  else if (opts.sync == sync_mode::nosync)
    flags |= MDB_NOSYNC;
  if (auto st = env_call(mdb_env_open(e, dir.c_str(), flags, 0600),
                         "mdb_env_open"))
    return st;
  // Reader slots of processes that died (a walk that faulted) pin pages.
  int stale = 0;
  mdb_reader_check(e, &stale);
  // LMDB maps max(opts.map_size, used size); keep a map that an earlier run
  // grew beyond opts.map_size (size 0 adopts the size in the meta page).
  if (auto st = env_call(mdb_env_set_mapsize(e, 0), "mdb_env_set_mapsize"))
    return st;
  d.refresh_map_size();
  if (d.map_size < opts.map_size) {
    if (auto st = env_call(mdb_env_set_mapsize(e, opts.map_size),
                           "mdb_env_set_mapsize"))
      return st;
    d.refresh_map_size();
  }
  // Open the databases, upgrade an older format and bump the boot counter,
  // all in one transaction: a failed upgrade leaves the data dir as it was.
  status bad;
  records::Meta meta;
  std::string buf;
  uint32_t from = 0;
  size_t upgraded = 0;
  auto st = d.write([&](MDB_txn* t) -> op_result {
    from = 0;
    upgraded = 0;
    auto meta_dbi = &d.dbis[static_cast<size_t>(db::meta)];
    if (auto rc = mdb_dbi_open(t, "meta", MDB_CREATE, meta_dbi); rc != 0)
      return {rc, "meta", "mdb_dbi_open"};
    auto k = lmdb::val(format_key);
    MDB_val v;
    auto rc = mdb_get(t, *meta_dbi, &k, &v);
    meta.Clear();
    if (rc == MDB_SUCCESS) {
      std::string why;
      auto state = detail::read_meta(view(v), meta, why);
      if (state == detail::meta_state::damaged) {
        bad = {store_errc::corrupt,
               "data dir " + dir + " [meta] \"format\": " + why
                 + ": restore the data dir from a backup or use another "
                 + "--data-dir"};
        return {abort_rc};
      }
      if (meta.format() > store::format) {
        bad = {store_errc::newer_format,
               "data dir " + dir + " has format "
                 + std::to_string(meta.format())
                 + "; this vigil reads format <= "
                 + std::to_string(store::format)
                 + ": upgrade vigil or use another --data-dir"};
        return {abort_rc};
      }
      if (state == detail::meta_state::format1)
        from = 1;
    } else if (rc != MDB_NOTFOUND) {
      return {rc, "meta", "mdb_get", format_key};
    }
    for (size_t i = 1; i < db_count; ++i) {
      auto name = to_string(static_cast<db>(i));
      if (rc = mdb_dbi_open(t, name, MDB_CREATE, &d.dbis[i]); rc != 0)
        return {rc, name, "mdb_dbi_open"};
    }
    if (from == 1)
      if (auto r = d.upgrade_from_format1(t, upgraded);
          r.rc != MDB_SUCCESS)
        return r;
    if (meta.node_id() == 0)
      meta.set_node_id(random_node_id());
    meta.set_format(store::format);
    meta.set_boots(meta.boots() + 1);
    encode_record(meta, buf);
    auto nv = lmdb::val(buf);
    if (rc = mdb_put(t, *meta_dbi, &k, &nv, 0); rc != MDB_SUCCESS)
      return {rc, "meta", "mdb_put", format_key};
    return {};
  });
  if (st)
    return st;
  if (bad)
    return bad;
  d.node_id = meta.node_id();
  d.upgraded_from = from;
  d.upgraded_records = upgraded;
  d.boots = meta.boots();
  out = std::move(self);
  return {};
}

status store::apply(write_item* const* items, size_t n,
                    write_result* results) {
  if (n == 0)
    return {};
  auto& d = *impl_;
  if (d.has_hook.load(std::memory_order_acquire)) {
    std::shared_ptr<const apply_hook> h;
    {
      std::lock_guard<std::mutex> guard{d.hook_mtx};
      h = d.hook;
    }
    if (h && *h && (*h)(items, n))
      return {store_errc::io, "data dir " + d.opts.dir
                                + ": injected write failure "
                                  "(store::set_apply_hook)"};
  }
  if (auto k = d.inject.load(std::memory_order_relaxed); k >= 0) {
    d.inject.store(k - 1, std::memory_order_relaxed);
    if (k == 0)
      return {store_errc::io, "data dir " + d.opts.dir
                                + ": injected write failure "
                                  "(store::fail_apply_after)"};
  }
  return d.write([&](MDB_txn* t) -> op_result {
    auto idem = d.dbi(db::idempotency);
    for (size_t i = 0; i < n; ++i) {
      auto& item = *items[i];
      if (!item.guard.empty()) {
        auto k = lmdb::val(item.guard);
        MDB_val v;
        auto rc = mdb_get(t, idem, &k, &v);
        if (rc == MDB_SUCCESS) {
          results[i] = write_result::duplicate;
          continue;
        }
        if (rc != MDB_NOTFOUND)
          return {rc, "idempotency", "mdb_get", item.guard};
        v = lmdb::val(item.guard_value);
        if (rc = mdb_put(t, idem, &k, &v, 0); rc != MDB_SUCCESS)
          return {rc, "idempotency", "mdb_put", item.guard};
      }
      for (auto& m : item.muts)
        if (auto r = m.what == mutation::op::shared ? d.run_shared(t, m)
                                                    : d.mutate(t, m);
            r.rc != MDB_SUCCESS)
          return r;
      results[i] = write_result::applied;
    }
    return {};
  });
}

status store::dead_letters(std::vector<records::DeadLetter>& out) {
  auto& d = *impl_;
  impl::reader r;
  if (auto st = d.begin_read(r))
    return st;
  lmdb::cursor c;
  if (auto rc = c.open(r.txn.get(), d.dbi(db::dead_letters)); rc != 0)
    return d.fail(rc, db::dead_letters, "mdb_cursor_open");
  out.clear();
  MDB_val k, v;
  int rc;
  for (rc = c.get(k, v, MDB_FIRST); rc == MDB_SUCCESS;
       rc = c.get(k, v, MDB_NEXT)) {
    auto& x = out.emplace_back();
    if (auto f = decode_record(view(v), x); f != record_fault::none) {
      // Keep it visible (and removable) rather than hide it.
      x.Clear();
      x.set_format(store::format);
      x.set_reason("dead letter cannot be read: " + describe(f, view(v), x));
      x.set_db("dead_letters");
      x.set_key(std::string{view(k)});
      x.set_raw(std::string{view(v)});
    }
    x.set_seq(k.mv_size == 8 ? get_be64(k.mv_data) : 0);
  }
  if (rc != MDB_NOTFOUND)
    return d.fail(rc, db::dead_letters, "mdb_cursor_get");
  return {};
}

status store::remove_dead_letters(const std::vector<uint64_t>& seqs, bool all,
                                  size_t& removed) {
  auto& d = *impl_;
  removed = 0;
  if (seqs.empty() && !all)
    return {};
  size_t n = 0;
  auto dl = d.dbi(db::dead_letters);
  auto st = d.write([&](MDB_txn* t) -> op_result {
    n = 0;
    if (seqs.empty()) {
      MDB_stat ms;
      if (auto rc = mdb_stat(t, dl, &ms); rc != MDB_SUCCESS)
        return {rc, "dead_letters", "mdb_stat"};
      n = ms.ms_entries;
      if (auto rc = mdb_drop(t, dl, 0); rc != MDB_SUCCESS)
        return {rc, "dead_letters", "mdb_drop"};
      return {};
    }
    for (auto seq : seqs) {
      char buf[8];
      put_be64(buf, seq);
      MDB_val k{sizeof(buf), buf};
      auto rc = mdb_del(t, dl, &k, nullptr);
      if (rc == MDB_SUCCESS)
        ++n;
      else if (rc != MDB_NOTFOUND)
        return {rc, "dead_letters", "mdb_del"};
    }
    return {};
  });
  if (!st)
    removed = n;
  return st;
}

void store::fail_apply_after(uint32_t n_ok) noexcept {
  impl_->inject.store(n_ok, std::memory_order_relaxed);
}

void store::set_apply_hook(apply_hook hook) {
  auto& d = *impl_;
  std::lock_guard<std::mutex> guard{d.hook_mtx};
  bool set = static_cast<bool>(hook);
  d.hook = set ? std::make_shared<const apply_hook>(std::move(hook)) : nullptr;
  d.has_hook.store(set, std::memory_order_release);
}

status store::snapshot(std::string_view path, records::Snapshot& out,
                       bool& found) {
  auto& d = *impl_;
  found = false;
  impl::reader r;
  if (auto st = d.begin_read(r))
    return st;
  MDB_val k{path.size(), const_cast<char*>(path.data())};
  MDB_val v;
  auto rc = mdb_get(r.txn.get(), d.dbi(db::snapshots), &k, &v);
  if (rc == MDB_NOTFOUND)
    return {};
  if (rc != MDB_SUCCESS)
    return d.fail(rc, db::snapshots, "mdb_get");
  if (auto f = decode_record(view(v), out); f != record_fault::none)
    return {store_errc::corrupt,
            "data dir " + d.opts.dir + " [snapshots] \"" + std::string{path}
              + "\": " + describe(f, view(v), out)
              + "; restart the node so that recovery moves it to the dead "
                "letters"};
  found = true;
  return {};
}

status store::get(db which, std::string_view key, std::string& raw,
                  bool& found) {
  auto& d = *impl_;
  found = false;
  raw.clear();
  if (d.absent(which))
    return {};
  impl::reader r;
  if (auto st = d.begin_read(r))
    return st;
  MDB_val k{key.size(), const_cast<char*>(key.data())};
  MDB_val v;
  auto rc = mdb_get(r.txn.get(), d.dbi(which), &k, &v);
  if (rc == MDB_NOTFOUND)
    return {};
  if (rc != MDB_SUCCESS)
    return d.fail(rc, which, "mdb_get");
  raw.assign(static_cast<const char*>(v.mv_data), v.mv_size);
  found = true;
  return {};
}

status store::scan_prefix(db which, std::string_view prefix,
                   std::vector<std::pair<std::string, std::string>>& out,
                   std::string_view after, size_t max, bool* more) {
  auto& d = *impl_;
  out.clear();
  if (more != nullptr)
    *more = false;
  if (d.absent(which))
    return {};
  impl::reader r;
  if (auto st = d.begin_read(r))
    return st;
  lmdb::cursor c;
  if (auto rc = c.open(r.txn.get(), d.dbi(which)); rc != MDB_SUCCESS)
    return d.fail(rc, which, "mdb_cursor_open");
  std::string_view from = after.empty() ? prefix : after;
  MDB_val k{from.size(), const_cast<char*>(from.data())};
  MDB_val v;
  auto rc = from.empty() ? c.get(k, v, MDB_FIRST) : c.get(k, v, MDB_SET_RANGE);
  if (rc == MDB_SUCCESS && !after.empty() && view(k) == after)
    rc = c.get(k, v, MDB_NEXT);
  for (; rc == MDB_SUCCESS; rc = c.get(k, v, MDB_NEXT)) {
    auto key = view(k);
    if (key.substr(0, prefix.size()) != prefix)
      break;
    if (out.size() == max) {
      if (more != nullptr)
        *more = true;
      break;
    }
    out.emplace_back(std::string{key}, std::string{view(v)});
  }
  if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
    return d.fail(rc, which, "mdb_cursor_get");
  return {};
}

status store::count(db which, size_t& out) {
  auto& d = *impl_;
  impl::reader r;
  if (auto st = d.begin_read(r))
    return st;
  if (d.absent(which)) {
    out = 0;
    return {};
  }
  MDB_stat ms;
  if (auto rc = mdb_stat(r.txn.get(), d.dbi(which), &ms); rc != MDB_SUCCESS)
    return d.fail(rc, which, "mdb_stat");
  out = ms.ms_entries;
  return {};
}

std::string idempotency_value(uint64_t seq) {
  records::IdempotencyRecord idem;
  idem.set_format(store::format);
  idem.set_seq(seq);
  idem.set_accepted_ms(static_cast<uint64_t>(
    std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::system_clock::now().time_since_epoch())
      .count()));
  return encode_record(idem);
}

status store::compact_idempotency(uint64_t cutoff_ms, const std::string& from,
                                  size_t max_scan, std::string& next,
                                  size_t& deleted) {
  auto& d = *impl_;
  constexpr auto name = "idempotency";
  deleted = 0;
  next.clear();
  size_t n = 0;
  std::string last;
  auto st = d.write([&](MDB_txn* t) -> op_result {
    n = 0;
    last.clear();
    lmdb::cursor c;
    if (auto rc = c.open(t, d.dbi(db::idempotency)); rc != MDB_SUCCESS)
      return {rc, name, "mdb_cursor_open"};
    MDB_val k, v;
    int rc;
    if (from.empty()) {
      rc = c.get(k, v, MDB_FIRST);
    } else {
      k = lmdb::val(from);
      rc = c.get(k, v, MDB_SET_RANGE);
      // `from` itself was looked at in the previous step.
      if (rc == MDB_SUCCESS && std::string_view{static_cast<char*>(k.mv_data),
                                                k.mv_size}
                                 == from)
        rc = c.get(k, v, MDB_NEXT);
    }
    records::IdempotencyRecord rec;
    auto journal = d.dbi(db::journal);
    std::string jkey;
    for (size_t scanned = 0; rc == MDB_SUCCESS && scanned < max_scan;
         ++scanned) {
      last.assign(static_cast<char*>(k.mv_data), k.mv_size);
      std::string_view path;
      uint64_t origin = 0;
      uint64_t id = 0;
      if (decode_record(view(v), rec) != record_fault::none
          || rec.accepted_ms() == 0
          || !split_guard_key(last, path, origin, id)) {
        rc = c.get(k, v, MDB_NEXT); // kept: not ours to judge
        continue;
      }
      // Ids do not sort by time (producers may choose their own), so every
      // record is looked at.
      if (rec.accepted_ms() >= cutoff_ms) {
        rc = c.get(k, v, MDB_NEXT);
        continue;
      }
      // Old, but its envelope may still wait in the journal (the agent is
      // restarting, degraded, or gone from the tree): the guard stays until
      // it is consumed, or a redelivery would be accepted a second time.
      jkey = path_key(path, rec.seq());
      MDB_val jk = lmdb::val(jkey);
      MDB_val jv;
      if (auto jrc = mdb_get(t, journal, &jk, &jv); jrc == MDB_NOTFOUND) {
        if (rc = mdb_cursor_del(c.get(), 0); rc != MDB_SUCCESS)
          return {rc, name, "mdb_cursor_del", last};
        ++n;
      } else if (jrc != MDB_SUCCESS) {
        return {jrc, "journal", "mdb_get", jkey};
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
