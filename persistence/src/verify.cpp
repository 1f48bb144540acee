// vigil verify and vigil backup: a walk of every database, and a compacted
// copy, each in a forked child (child_walk.hpp).

#include "vigil/persistence/integrity.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

#include "child_walk.hpp"
#include "store_impl.hpp"
#include "vigil/persistence/record.hpp"
#include "walk.hpp"

namespace vigil {

namespace detail {

void walk_db(frame_writer& w, MDB_txn* txn, const char* name,
             const walk_mode& mode) {
  MDB_dbi dbi;
  if (auto rc = mdb_dbi_open(txn, name, 0, &dbi); rc != 0) {
    if (rc == MDB_NOTFOUND)
      w.put(frame::db_absent, name);
    else
      w.put(frame::problem, std::string{"["} + name
                              + "] mdb_dbi_open: " + mdb_strerror(rc));
    return;
  }
  MDB_stat st;
  if (auto rc = mdb_stat(txn, dbi, &st); rc != 0) {
    w.put(frame::problem,
          std::string{"["} + name + "] mdb_stat: " + mdb_strerror(rc));
    return;
  }
  w.put_u64(frame::db_begin, st.ms_entries, name);
  MDB_cursor* c = nullptr;
  if (auto rc = mdb_cursor_open(txn, dbi, &c); rc != 0) {
    w.put(frame::problem, std::string{"["} + name
                            + "] mdb_cursor_open: " + mdb_strerror(rc));
    return;
  }
  MDB_val k, v;
  uint64_t n = 0;
  std::string last;
  auto first = mode.backward ? MDB_LAST : MDB_FIRST;
  auto next = mode.backward ? MDB_PREV : MDB_NEXT;
  int rc;
  while ((rc = mdb_cursor_get(c, &k, &v, n == 0 ? first : next)) == 0) {
    std::string_view key{static_cast<const char*>(k.mv_data), k.mv_size};
    if (mode.backward && mode.has_bound && key <= mode.bound)
      break;
    std::string_view val{static_cast<const char*>(v.mv_data), v.mv_size};
    ++n;
    if (mode.stream) {
      w.put(frame::record, key, val);
    } else if (auto f = check_frame(val);
               f != record_fault::none
               && !(mode.format1 && f == record_fault::unframed)) {
      w.put(frame::bad, key, describe(f, val));
    } else if (db which; !mode.format1 && db_from_string(name, which)
                         && !key_fits(which, key)) {
      w.put(frame::bad, key,
            std::string{"its key does not fit database "} + name
              + " (a damaged page put another database's record here)");
      // (Format 1 keyed idempotency records differently: not checked.)
    } else if (std::string_view{name} == "meta" && key == "format") {
      records::Meta m;
      std::string why;
      if (read_meta(val, m, why) == meta_state::damaged)
        w.put(frame::bad, key, why);
    }
    if (n % 4096 == 0)
      w.put_u64(frame::at, n, key);
    last.assign(key);
  }
  mdb_cursor_close(c);
  if (rc != 0 && rc != MDB_NOTFOUND) {
    w.put_u64(frame::at, n, last);
    w.put(frame::problem,
          std::string{"["} + name + "] mdb_cursor_get after "
            + std::to_string(n) + " records"
            + (n > 0 ? " (last key \"" + printable(last) + "\")" : "")
            + ": " + mdb_strerror(rc));
    return;
  }
  w.put_u64(frame::db_end, n, name);
  if (!mode.stream && n != st.ms_entries)
    w.put(frame::problem, std::string{"["} + name + "] the walk read "
                            + std::to_string(n)
                            + " records, the database's root says "
                            + std::to_string(st.ms_entries));
}

namespace {

void walk_all(frame_writer& w, const std::string& path, bool single_file) {
  MDB_env* env = nullptr;
  if (auto rc = open_for_walk(path, single_file, single_file, &env); rc != 0) {
    w.put(frame::problem, std::string{"mdb_env_open: "} + mdb_strerror(rc));
    return;
  }
  MDB_txn* txn = nullptr;
  if (auto rc = mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn); rc != 0) {
    w.put(frame::problem, std::string{"mdb_txn_begin: "} + mdb_strerror(rc));
    return;
  }
  MDB_envinfo info;
  mdb_env_info(env, &info);
  auto last = static_cast<uint64_t>(info.me_last_pgno);
  // LMDB's free list (database 0): page numbers past the last page mean a
  // damaged list that a writer would hand out.
  MDB_cursor* c = nullptr;
  uint64_t pages = 0;
  if (auto rc = mdb_cursor_open(txn, 0, &c); rc == 0) {
    MDB_val k, v;
    int r;
    bool reported = false;
    while ((r = mdb_cursor_get(c, &k, &v, MDB_NEXT)) == 0) {
      if (v.mv_size < sizeof(size_t)) {
        w.put(frame::problem, "the free list holds a record of "
                                + std::to_string(v.mv_size) + " bytes");
        break;
      }
      size_t count;
      std::memcpy(&count, v.mv_data, sizeof(size_t));
      if ((count + 1) * sizeof(size_t) > v.mv_size) {
        w.put(frame::problem, "the free list holds a damaged page list");
        break;
      }
      auto ids = static_cast<const char*>(v.mv_data) + sizeof(size_t);
      for (size_t i = 0; i < count; ++i) {
        size_t pg;
        std::memcpy(&pg, ids + i * sizeof(size_t), sizeof(size_t));
        if (pg > last && !reported) {
          reported = true;
          w.put(frame::problem, "the free list names page "
                                  + std::to_string(pg)
                                  + " past the last page "
                                  + std::to_string(last));
        }
      }
      pages += count;
    }
    mdb_cursor_close(c);
    if (r != 0 && r != MDB_NOTFOUND)
      w.put(frame::problem,
            std::string{"the free list: mdb_cursor_get: "} + mdb_strerror(r));
  }
  w.put_u64(frame::free_list, pages);
  walk_mode mode;
  // Format 1 wrote bare Protobuf values; its meta record says so.
  MDB_dbi meta;
  if (mdb_dbi_open(txn, "meta", 0, &meta) == 0) {
    MDB_val k{6, const_cast<char*>("format")}, v;
    records::Meta m;
    std::string why;
    if (mdb_get(txn, meta, &k, &v) == 0
        && read_meta(view(v), m, why) == meta_state::format1)
      mode.format1 = true;
  }
  for (size_t i = 0; i < db_count; ++i)
    walk_db(w, txn, to_string(static_cast<db>(i)), mode);
  mdb_txn_abort(txn);
  mdb_env_close(env);
}

std::chrono::milliseconds default_timeout(uint64_t file_size) {
  return std::chrono::milliseconds{60'000 + 10'000 * (file_size >> 30)};
}

std::string errno_text(int e) {
  return std::error_code{e, std::generic_category()}.message();
}

} // namespace

} // namespace detail

bool verify_report::ok() const noexcept {
  return problem.empty() && bad_records() == 0;
}

uint64_t verify_report::bad_records() const noexcept {
  uint64_t n = 0;
  for (auto& d : dbs)
    n += d.bad_records;
  return n;
}

status verify_data_dir(const std::string& dir, verify_report& out,
                       const verify_options& opts) {
  using namespace detail;
  out = verify_report{};
  auto started = std::chrono::steady_clock::now();
  auto finish = [&] {
    out.took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - started);
  };
  if (auto st = read_data_file(dir, out.file, opts.single_file))
    return st;
  if (!out.file.exists)
    return {store_errc::not_found,
            "no LMDB file at " + out.file.path
              + ": pass the --data-dir a node ran with"};
  // A file that ends early is walked: only pages in use past its end are
  // damage (see vet_data_dir).
  bool short_file = ends_early(out.file);
  if (auto st = check_data_file(dir, opts.single_file, short_file)) {
    out.problem = st.message();
    finish();
    return {};
  }
  if (out.file.file_size == 0) {
    finish();
    return {};
  }
  std::string at_key;
  uint64_t at_n = 0;
  auto add_problem = [&](const std::string& p) {
    if (out.problem.empty())
      out.problem = p;
  };
  bool done = false;
  auto on_frame = [&](frame type, std::string_view a, std::string_view b,
                      uint64_t u) {
    switch (type) {
      case frame::db_begin:
        out.dbs.emplace_back().name.assign(a);
        out.dbs.back().entries = u;
        at_key.clear();
        at_n = 0;
        break;
      case frame::bad:
        if (!out.dbs.empty()) {
          auto& d = out.dbs.back();
          ++d.bad_records;
          if (d.bad.size() < 1000)
            d.bad.emplace_back(std::string{a}, std::string{b});
        }
        break;
      case frame::at:
        at_n = u;
        at_key.assign(a);
        break;
      case frame::db_end:
        if (!out.dbs.empty()) {
          out.dbs.back().records = u;
          out.dbs.back().complete = true;
        }
        break;
      case frame::problem:
        if (!out.dbs.empty() && !out.dbs.back().complete)
          out.dbs.back().records = at_n;
        add_problem(std::string{a});
        break;
      case frame::free_list:
        out.free_pages = u;
        break;
      case frame::done:
        done = true;
        break;
      default:
        break;
    }
  };
  auto timeout = opts.timeout.count() > 0
                   ? opts.timeout
                   : default_timeout(out.file.file_size);
  auto res = run_child(
    [&](frame_writer& w) { walk_all(w, dir, opts.single_file); }, on_frame,
    timeout);
  if ((res.signal != 0 || res.timed_out) && !opts.single_file) {
    // A killed walk leaves its LMDB reader slot behind in a live env:
    // clear it (mdb_reader_check), else the writer keeps its old pages.
    run_child(
      [&](frame_writer&) {
        MDB_env* env = nullptr;
        if (open_for_walk(dir, false, false, &env) == 0) {
          int dead = 0;
          mdb_reader_check(env, &dead);
          mdb_env_close(env);
        }
      },
      [](frame, std::string_view, std::string_view, uint64_t) {},
      std::chrono::milliseconds{10'000});
  }
  if (res.timed_out) {
    out.timed_out = true;
    out.problem = "the walk did not finish in "
                  + std::to_string(timeout.count()) + " ms";
    finish();
    return {};
  }
  if (!done || !res.failure().empty()) {
    out.signal = res.signal;
    std::string where;
    if (!out.dbs.empty() && !out.dbs.back().complete) {
      auto& d = out.dbs.back();
      d.records = std::max(d.records, at_n);
      where = " in database " + d.name + " after about "
              + std::to_string(at_n) + " records"
              + (at_key.empty() ? std::string{}
                                : " (key \"" + printable(at_key) + "\")");
    }
    auto f = res.failure();
    if (f.empty())
      f = "the walk ended early";
    out.problem = f + where + (out.problem.empty() ? "" : "; " + out.problem)
                  + ": the B-tree is damaged";
  }
  if (short_file && !out.problem.empty()) {
    // Pages in use past the end: the file was cut.
    auto cut = check_data_file(dir, opts.single_file);
    out.problem = cut.message() + " (the walk: " + out.problem + ")";
  }
  finish();
  return {};
}

status backup_data_dir(const std::string& dir, const std::string& out_file,
                       backup_report& out) {
  using namespace detail;
  out = backup_report{};
  auto started = std::chrono::steady_clock::now();
  data_file_info info;
  if (auto st = detail::existing_data_file(dir, info))
    return st;
  if (auto st = check_data_file(dir))
    return {st.code(), "cannot back up: " + st.message()};
  struct stat sb;
  if (::stat(out_file.c_str(), &sb) == 0)
    return {store_errc::invalid,
            out_file + " exists: choose a new --out file (a backup never "
                       "overwrites one)"};
  // A name of its own: never an operator's file (mkstemp makes it 0600).
  auto tmp = out_file + ".tmp-XXXXXX";
  unique_fd fd;
  fd.reset(::mkostemp(tmp.data(), O_CLOEXEC));
  if (fd.get() < 0) {
    auto e = errno;
    return {store_errc::io, "cannot create " + tmp + ": " + errno_text(e)
                              + ": choose a writable --out path"};
  }
  std::string problem;
  auto res = run_child(
    [&](frame_writer& w) {
      MDB_env* env = nullptr;
      if (auto rc = open_for_walk(dir, false, false, &env); rc != 0) {
        w.put(frame::problem, std::string{"mdb_env_open: "} + mdb_strerror(rc));
        return;
      }
      if (auto rc = mdb_env_copyfd2(env, fd.get(), MDB_CP_COMPACT); rc != 0) {
        w.put(frame::problem,
              std::string{"mdb_env_copyfd2: "} + mdb_strerror(rc));
        return;
      }
      if (::fsync(fd.get()) != 0) {
        w.put(frame::problem, "fsync: " + errno_text(errno));
        return;
      }
      mdb_env_close(env);
    },
    [&](frame type, std::string_view a, std::string_view, uint64_t) {
      if (type == frame::problem && problem.empty())
        problem.assign(a);
    },
    default_timeout(info.file_size) * 2);
  fd.reset(-1);
  auto fail = [&](std::string why) -> status {
    ::unlink(tmp.c_str());
    return {store_errc::corrupt,
            "cannot back up " + dir + ": " + why + ". Run `vigil verify "
              + "--data-dir " + dir + "`; if it finds damage, `vigil repair "
              + "--data-dir " + dir + " --out NEW_DIR` salvages what reads"};
  };
  if (!problem.empty())
    return fail(problem);
  if (auto f = res.failure(); !f.empty())
    return fail("the copy " + f.substr(f.find(' ') + 1));
  verify_report vr;
  verify_options vo;
  vo.single_file = true;
  if (auto st = verify_data_dir(tmp, vr, vo))
    return fail(st.message());
  if (!vr.ok())
    return fail("the copy does not verify: "
                + (vr.problem.empty()
                     ? std::to_string(vr.bad_records())
                         + " records fail their checksum"
                     : vr.problem));
  if (::rename(tmp.c_str(), out_file.c_str()) != 0) {
    auto e = errno;
    return fail("rename " + tmp + " to " + out_file + ": " + errno_text(e));
  }
  auto slash = out_file.find_last_of('/');
  auto parent = slash == std::string::npos ? std::string{"."}
                                           : out_file.substr(0, slash + 1);
  unique_fd dfd;
  dfd.reset(::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd.get() >= 0)
    ::fsync(dfd.get());
  if (::stat(out_file.c_str(), &sb) == 0)
    out.bytes = static_cast<uint64_t>(sb.st_size);
  for (auto& d : vr.dbs)
    out.records += d.records;
  out.took = std::chrono::duration_cast<std::chrono::milliseconds>(
    std::chrono::steady_clock::now() - started);
  return {};
}

} // namespace vigil
