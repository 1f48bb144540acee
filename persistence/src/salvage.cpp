// vigil repair: salvage what still reads into a new data dir; and moving
// one named record aside.

#include "vigil/persistence/integrity.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "child_walk.hpp"
#include "store_impl.hpp"
#include "vigil/persistence/record.hpp"
#include "walk.hpp"

namespace vigil {

namespace {

using detail::frame;
using detail::unique_fd;

std::string errno_text(int e) {
  return std::error_code{e, std::generic_category()}.message();
}

uint64_t unix_now_ms() {
  return static_cast<uint64_t>(
    std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::system_clock::now().time_since_epoch())
      .count());
}

/// False if `dir` exists and holds anything.
bool absent_or_empty(const std::string& dir) {
  auto d = ::opendir(dir.c_str());
  if (d == nullptr)
    return errno == ENOENT;
  bool empty = true;
  while (auto e = ::readdir(d))
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
      empty = false;
  ::closedir(d);
  return empty;
}

/// Refuses while a node holds `dir` (its vigil.lock).
status not_held(const std::string& dir) {
  auto path = dir + "/vigil.lock";
  unique_fd fd;
  fd.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0)
    return {};
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK)
    return {store_errc::locked,
            "data dir " + dir + " is held by a running node: stop it first "
              + "(to copy a live data dir, use `vigil backup`)"};
  return {};
}

/// Copies `from` to `to` (created 0600); unreadable blocks (EIO) become
/// zeros, counted in `zeroed`.
status copy_file(const std::string& from, const std::string& to,
                 uint64_t& zeroed) {
  unique_fd in, out;
  in.reset(::open(from.c_str(), O_RDONLY | O_CLOEXEC));
  if (in.get() < 0) {
    auto e = errno;
    return {store_errc::io, "cannot open " + from + ": " + errno_text(e)};
  }
  out.reset(
    ::open(to.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (out.get() < 0) {
    auto e = errno;
    return {store_errc::io, "cannot create " + to + ": " + errno_text(e)};
  }
  std::vector<char> buf(size_t{1} << 20);
  off_t off = 0;
  for (;;) {
    auto n = ::pread(in.get(), buf.data(), buf.size(), off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno == EIO) {
      // An unreadable stretch: read it page by page, zeros for the bad ones.
      std::memset(buf.data(), 0, 4096);
      n = ::pread(in.get(), buf.data(), 4096, off);
      if (n < 0) {
        n = 4096;
        std::memset(buf.data(), 0, 4096);
        zeroed += 4096;
      }
    }
    if (n < 0) {
      auto e = errno;
      return {store_errc::io, "cannot read " + from + ": " + errno_text(e)};
    }
    if (n == 0)
      break;
    if (::pwrite(out.get(), buf.data(), static_cast<size_t>(n), off) != n) {
      auto e = errno;
      return {store_errc::io, "cannot write " + to + ": " + errno_text(e)};
    }
    off += n;
  }
  return {};
}

/// Makes the copy at `work` readable by LMDB: pads a truncated file, and
/// replaces a damaged meta page by the intact one.
status mend_copy(const std::string& work, repair_report& rep) {
  data_file_info f;
  if (auto st = read_data_file(work, f))
    return st;
  if (f.used_meta < 0)
    return {store_errc::corrupt,
            "neither meta page of data.mdb is valid (page 0: "
              + f.meta[0].problem + "; page 1: " + f.meta[1].problem
              + "): nothing can be read through LMDB. Restore a backup"};
  auto path = work + "/data.mdb";
  if (f.file_size < f.needed_size) {
    if (::truncate(path.c_str(), static_cast<off_t>(f.needed_size)) != 0) {
      auto e = errno;
      return {store_errc::io, "cannot pad " + path + ": " + errno_text(e)};
    }
    rep.notes.push_back("data.mdb held " + std::to_string(f.file_size)
                        + " bytes of the " + std::to_string(f.needed_size)
                        + " its meta page needs: the missing "
                        + std::to_string((f.needed_size - f.file_size)
                                         / f.page_size)
                        + " pages read as zeros");
  }
  int good = f.used_meta, other = 1 - good;
  if (!f.meta[other].valid) {
    std::vector<char> page(f.page_size);
    unique_fd fd;
    fd.reset(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    if (fd.get() < 0
        || ::pread(fd.get(), page.data(), page.size(),
                   static_cast<off_t>(good) * f.page_size)
             != static_cast<ssize_t>(page.size()))
      return {store_errc::io, "cannot read the meta pages of " + path};
    uint64_t pgno = static_cast<uint64_t>(other);
    std::memcpy(page.data(), &pgno, sizeof(pgno));
    if (::pwrite(fd.get(), page.data(), page.size(),
                 static_cast<off_t>(other) * f.page_size)
        != static_cast<ssize_t>(page.size()))
      return {store_errc::io, "cannot write the meta pages of " + path};
    rep.notes.push_back("meta page " + std::to_string(other) + " was damaged ("
                        + f.meta[other].problem + "); it was replaced by meta "
                        + "page " + std::to_string(good) + " (transaction "
                        + std::to_string(f.meta[good].txnid) + ")");
  }
  return {};
}

struct salvaged_record {
  db where;
  std::string key;
  std::string value;
};

/// Writes `batch` into `st` as puts, one transaction.
status put_all(store& st, std::vector<salvaged_record>& batch) {
  if (batch.empty())
    return {};
  write_item item;
  item.muts.reserve(batch.size());
  for (auto& r : batch)
    item.muts.push_back(mutation{mutation::op::put, r.where, std::move(r.key),
                                 std::move(r.value)});
  batch.clear();
  write_item* items[] = {&item};
  write_result res;
  return st.apply(items, 1, &res);
}

void remove_tree(const std::string& dir) {
  auto d = ::opendir(dir.c_str());
  if (d == nullptr)
    return;
  while (auto e = ::readdir(d)) {
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0)
      continue;
    ::unlink((dir + "/" + e->d_name).c_str());
  }
  ::closedir(d);
  ::rmdir(dir.c_str());
}

} // namespace

uint64_t repair_report::salvaged() const noexcept {
  uint64_t n = 0;
  for (auto& d : dbs)
    n += d.salvaged;
  return n;
}

uint64_t repair_report::bad_records() const noexcept {
  uint64_t n = 0;
  for (auto& d : dbs)
    n += d.bad_records;
  return n;
}

uint64_t repair_report::lost() const noexcept {
  uint64_t n = 0;
  for (auto& d : dbs)
    if (d.entries > d.salvaged + d.bad_records)
      n += d.entries - d.salvaged - d.bad_records;
  return n;
}

status repair_data_dir(const std::string& dir, const std::string& out_dir,
                       repair_report& rep) {
  rep = repair_report{};
  data_file_info info;
  if (auto st = detail::existing_data_file(dir, info))
    return st;
  if (auto st = not_held(dir))
    return st;
  if (!absent_or_empty(out_dir))
    return {store_errc::invalid,
            "--out " + out_dir + " exists and is not empty: repair writes "
              + "into a new data dir; choose another --out"};
  // The copy goes into a new dir of its own beside --out (mkdtemp: never
  // one that exists, such as the source).
  auto out_path = out_dir;
  while (out_path.size() > 1 && out_path.back() == '/')
    out_path.pop_back();
  if (auto slash = out_path.find_last_of('/');
      slash != std::string::npos && slash > 0) {
    std::error_code ec;
    std::filesystem::create_directories(out_path.substr(0, slash), ec);
  }
  auto work = out_path + ".salvage-XXXXXX";
  if (::mkdtemp(work.data()) == nullptr) {
    auto e = errno;
    return {store_errc::io, "cannot create " + work + ": " + errno_text(e)
                              + ": choose a writable --out path"};
  }
  struct cleanup {
    std::string dir;
    ~cleanup() {
      remove_tree(dir);
    }
  } cleanup_work{work};
  uint64_t zeroed = 0;
  if (auto st = copy_file(info.path, work + "/data.mdb", zeroed))
    return st;
  if (zeroed > 0)
    rep.notes.push_back(std::to_string(zeroed / 4096)
                        + " pages of data.mdb could not be read (EIO) and "
                          "read as zeros");
  if (auto st = mend_copy(work, rep))
    return st;
  data_file_info winfo;
  if (auto st = read_data_file(work, winfo))
    return st;
  auto timeout = std::chrono::milliseconds{60'000
                                           + 10'000 * (winfo.file_size >> 30)};
  store_options so;
  so.dir = out_dir;
  so.verify = false;
  std::unique_ptr<store> out;
  if (auto st = store::open(so, out))
    return {st.code(), "cannot create the new data dir: " + st.message()};
  std::vector<salvaged_record> bad_ones, batch;
  bool format1 = false;
  constexpr size_t batch_size = 4096;
  status write_failed;
  for (size_t i = 0; i < db_count; ++i) {
    auto which = static_cast<db>(i);
    auto name = to_string(which);
    auto& d = rep.dbs.emplace_back();
    d.name = name;
    bool absent = false;
    std::string last_fwd, last_bwd;
    bool have_fwd = false, have_bwd = false;
    auto walk = [&](bool backward, bool& complete, std::string& last,
                    bool& have_last, std::string& problem) {
      detail::walk_mode mode;
      mode.stream = true;
      mode.backward = backward;
      if (backward && have_fwd) {
        mode.has_bound = true;
        mode.bound = last_fwd;
      }
      complete = false;
      auto on_frame = [&](frame type, std::string_view a, std::string_view b,
                          uint64_t u) {
        switch (type) {
          case frame::db_absent:
            absent = true;
            complete = true;
            break;
          case frame::db_begin:
            if (!backward)
              d.entries = u;
            break;
          case frame::record: {
            last.assign(a);
            have_last = true;
            auto fault = check_frame(b);
            bool bad_meta = false;
            // Format 1 (bare Protobuf, upgraded when a node opens it): its
            // meta record, walked first, says so. A meta record that is
            // neither is damage (the new dir keeps its own).
            if (which == db::meta && a == "format") {
              records::Meta m;
              std::string why;
              auto state = detail::read_meta(b, m, why);
              format1 = state == detail::meta_state::format1;
              bad_meta = state == detail::meta_state::damaged;
            }
            // A key LMDB cannot store (empty, or past its 511 bytes) is
            // damage whatever the format: the new dir could not take it.
            if (bad_meta || a.empty() || a.size() > 511
                || (!format1 && !detail::key_fits(which, a))
                || (fault != record_fault::none
                    && !(format1 && fault == record_fault::unframed))) {
              ++d.bad_records;
              bad_ones.push_back(
                salvaged_record{which, std::string{a}, std::string{b}});
              break;
            }
            ++d.salvaged;
            batch.push_back(
              salvaged_record{which, std::string{a}, std::string{b}});
            if (batch.size() >= batch_size && !write_failed)
              write_failed = put_all(*out, batch);
            break;
          }
          case frame::db_end:
            complete = true;
            break;
          case frame::problem:
            if (problem.empty())
              problem.assign(a);
            break;
          default:
            break;
        }
      };
      auto res = detail::run_child(
        [&](detail::frame_writer& w) {
          MDB_env* env = nullptr;
          if (auto rc = detail::open_for_walk(work, false, true, &env);
              rc != 0) {
            w.put(frame::problem,
                  std::string{"mdb_env_open: "} + mdb_strerror(rc));
            return;
          }
          MDB_txn* txn = nullptr;
          if (auto rc = mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn);
              rc != 0) {
            w.put(frame::problem,
                  std::string{"mdb_txn_begin: "} + mdb_strerror(rc));
            return;
          }
          detail::walk_db(w, txn, name, mode);
        },
        on_frame, timeout);
      if (!complete && problem.empty())
        problem = res.failure();
    };
    bool fwd_done = false, bwd_done = false;
    std::string fwd_problem, bwd_problem;
    walk(false, fwd_done, last_fwd, have_fwd, fwd_problem);
    if (!fwd_done && !absent) {
      walk(true, bwd_done, last_bwd, have_bwd, bwd_problem);
      std::string gap = "the walk stopped";
      gap += have_fwd ? " after key \"" + printable_key(last_fwd) + "\""
                      : " at the first key";
      gap += " (" + fwd_problem + ")";
      if (bwd_done)
        gap += "; the backward walk reached it again";
      else
        gap += "; the backward walk stopped"
               + (have_bwd ? " before key \"" + printable_key(last_bwd) + "\""
                           : std::string{" at the last key"})
               + " (" + bwd_problem + ")";
      d.gaps.push_back(std::move(gap));
    }
    if (!write_failed)
      write_failed = put_all(*out, batch);
    if (write_failed)
      return {write_failed.code(),
              "cannot write the new data dir: " + write_failed.message()};
  }
  // What losing a record of the effect databases means.
  for (auto& d : rep.dbs) {
    bool effects = d.name == "idempotency" || d.name == "sagas"
                   || d.name == "tool_results" || d.name == "approvals"
                   || d.name == "shared";
    if (effects && (d.bad_records > 0 || !d.gaps.empty()))
      rep.notes.push_back(
        d.name + ": records were lost or moved to the dead letters; they "
        + "recorded effects (accepted message ids, saga runs, tool results, "
        + "approvals, shared state), so a resend of what they covered may "
        + "run again: check the dead letters before you start the node");
  }
  // Records that fail their checksum: kept as dead letters, never read.
  if (!bad_ones.empty()) {
    write_item item;
    for (auto& r : bad_ones) {
      records::DeadLetter dl;
      dl.set_format(store::format);
      auto f = check_frame(r.value);
      dl.set_reason("quarantined by vigil repair: "
                    + (f != record_fault::none
                         ? describe(f, r.value)
                         : std::string{"its key does not fit the database, "
                                       "or it is a damaged meta record"}));
      dl.set_unix_ms(unix_now_ms());
      dl.set_db(to_string(r.where));
      dl.set_key(r.key);
      dl.set_raw(r.value);
      mutation m;
      m.what = mutation::op::append_dead_letter;
      m.where = db::dead_letters;
      m.value = encode_record(dl);
      item.muts.push_back(std::move(m));
    }
    write_item* items[] = {&item};
    write_result res;
    if (auto st = out->apply(items, 1, &res))
      return {st.code(), "cannot write the new data dir: " + st.message()};
  }
  out.reset();
  verify_report vr;
  if (auto st = verify_data_dir(out_dir, vr))
    return st;
  if (!vr.ok())
    return {store_errc::corrupt,
            "the repaired data dir " + out_dir + " does not verify: "
              + (vr.problem.empty() ? "records fail their checksum"
                                    : vr.problem)
              + "; this is a bug in vigil repair, please report it"};
  return {};
}

status move_record_aside(const std::string& dir, db which,
                         const std::string& key, const std::string& reason,
                         upgrade_note* upgraded) {
  data_file_info info; // never create a data dir at a mistyped path
  if (auto st = detail::existing_data_file(dir, info))
    return st;
  store_options so;
  so.dir = dir;
  std::unique_ptr<store> st;
  if (auto s = store::open(so, st))
    return s;
  if (upgraded != nullptr)
    *upgraded = {st->upgraded_from(), st->upgraded_records()};
  return st->move_aside(which, key, "moved aside: " + reason);
}

} // namespace vigil
