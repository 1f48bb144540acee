// The checks that need no B-tree walk: data.mdb's meta pages against its
// size, the data dir's permissions, and Protobuf's log routing.

#include "vigil/persistence/integrity.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <system_error>

#include <google/protobuf/stubs/logging.h>

#include "store_impl.hpp"

namespace vigil {

namespace {

// LMDB 0.9's on-disk layout (mdb.c, 64-bit): a page starts with a 16-byte
// header (pgno 8, pad 2, flags 2, lower/upper 4); a meta page's MDB_meta
// follows it: magic 4, version 4, address 8, mapsize 8, two MDB_db of 48
// bytes each (the free DB's md_pad holds the page size), last_pg 8,
// txnid 8.
constexpr size_t page_header = 16;
constexpr uint16_t p_meta = 0x08;
constexpr uint32_t mdb_magic = 0xBEEFC0DE;
constexpr uint32_t mdb_data_version = 1;
constexpr size_t meta_size = 4 + 4 + 8 + 8 + 2 * 48 + 8 + 8;
constexpr size_t off_magic = 0, off_version = 4, off_mapsize = 16,
                 off_psize = 24, off_last_pg = 120, off_txnid = 128;

template <class T>
T load(const unsigned char* p) noexcept {
  T x;
  std::memcpy(&x, p, sizeof(T));
  return x;
}

std::string errno_text(int e) {
  return std::error_code{e, std::generic_category()}.message();
}

bool plausible_page_size(uint32_t x) noexcept {
  return x >= 512 && x <= 65536 && (x & (x - 1)) == 0;
}

/// Parses the meta page at `buf` (read from `pgno`).
data_file_info::meta_page parse_meta(const unsigned char* buf, size_t n,
                                     uint64_t pgno, uint32_t& psize) {
  data_file_info::meta_page m;
  if (n < page_header + meta_size) {
    m.problem = "the file ends inside it";
    return m;
  }
  auto flags = load<uint16_t>(buf + 10);
  auto meta = buf + page_header;
  if ((flags & p_meta) == 0 || load<uint32_t>(meta + off_magic) != mdb_magic) {
    bool zero = true;
    for (size_t i = 0; i < page_header + meta_size && zero; ++i)
      zero = buf[i] == 0;
    m.problem = zero ? "it is all zeros" : "it has no LMDB meta page magic";
    return m;
  }
  if (load<uint64_t>(buf) != pgno) {
    m.problem = "it names page " + std::to_string(load<uint64_t>(buf));
    return m;
  }
  if (auto v = load<uint32_t>(meta + off_version); v != mdb_data_version) {
    m.problem = "LMDB data version " + std::to_string(v) + " (this LMDB "
                + "reads " + std::to_string(mdb_data_version) + ")";
    return m;
  }
  psize = load<uint32_t>(meta + off_psize);
  if (!plausible_page_size(psize)) {
    m.problem = "page size " + std::to_string(psize) + " is not plausible";
    return m;
  }
  m.valid = true;
  m.txnid = load<uint64_t>(meta + off_txnid);
  m.last_page = load<uint64_t>(meta + off_last_pg);
  return m;
}

std::string human_bytes(uint64_t n) {
  char buf[64];
  if (n >= (uint64_t{1} << 20))
    std::snprintf(buf, sizeof(buf), "%llu bytes (%.1f MiB)",
                  static_cast<unsigned long long>(n),
                  static_cast<double>(n) / (1 << 20));
  else
    std::snprintf(buf, sizeof(buf), "%llu bytes",
                  static_cast<unsigned long long>(n));
  return buf;
}

} // namespace

status read_data_file(const std::string& dir, data_file_info& out,
                      bool single_file) {
  out = data_file_info{};
  out.path = single_file ? dir : dir + "/data.mdb";
  detail::unique_fd fd;
  fd.reset(::open(out.path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    auto e = errno;
    if (e == ENOENT)
      return {};
    return {store_errc::io,
            "cannot open " + out.path + ": " + errno_text(e)
              + (e == EACCES ? ": run vigil as the data dir's owner, or fix "
                               "the file's permissions"
                             : ": check the data dir and its disk")};
  }
  struct stat sb;
  if (::fstat(fd.get(), &sb) != 0) {
    auto e = errno;
    return {store_errc::io, "cannot stat " + out.path + ": " + errno_text(e)};
  }
  out.exists = true;
  out.file_size = static_cast<uint64_t>(sb.st_size);
  if (out.file_size == 0)
    return {};
  // Page 0 names the page size; if it is damaged, look for page 1 at the
  // page sizes LMDB uses (the OS page size, 4 KiB on x86-64).
  std::vector<unsigned char> buf(page_header + meta_size);
  auto read_at = [&](uint64_t off) -> size_t {
    auto n = ::pread(fd.get(), buf.data(), buf.size(),
                     static_cast<off_t>(off));
    return n > 0 ? static_cast<size_t>(n) : 0;
  };
  uint32_t psize0 = 0;
  out.meta[0] = parse_meta(buf.data(), read_at(0), 0, psize0);
  std::vector<uint32_t> tries;
  if (out.meta[0].valid)
    tries.push_back(psize0);
  for (uint32_t p : {static_cast<uint32_t>(::sysconf(_SC_PAGESIZE)),
                     uint32_t{4096}, uint32_t{8192}, uint32_t{16384},
                     uint32_t{65536}})
    if (tries.empty() || (!out.meta[0].valid && p != tries.back()))
      tries.push_back(p);
  uint32_t psize1 = 0;
  data_file_info::meta_page first_try;
  for (size_t i = 0; i < tries.size(); ++i) {
    auto p = tries[i];
    out.meta[1] = parse_meta(buf.data(), read_at(p), 1, psize1);
    if (out.meta[1].valid && psize1 == p)
      break;
    if (out.meta[1].valid) {
      out.meta[1] = {};
      out.meta[1].problem = "its page size does not match its place";
    }
    if (i == 0)
      first_try = out.meta[1];
    else if (i + 1 == tries.size())
      out.meta[1] = first_try; // none valid: what the first place held
  }
  int use = -1;
  for (int i = 0; i < 2; ++i)
    if (out.meta[i].valid
        && (use < 0 || out.meta[i].txnid > out.meta[use].txnid))
      use = i;
  out.used_meta = use;
  if (use < 0)
    return {};
  out.page_size = use == 0 ? psize0 : psize1;
  out.needed_size = (out.meta[use].last_page + 1) * out.page_size;
  auto at = use == 0 ? 0 : out.page_size;
  if (read_at(at) >= page_header + meta_size)
    out.map_size = load<uint64_t>(buf.data() + page_header + off_mapsize);
  return {};
}

status detail::existing_data_file(const std::string& dir,
                                  data_file_info& info) {
  if (auto st = read_data_file(dir, info))
    return st;
  if (!info.exists || info.file_size == 0)
    return {store_errc::not_found,
            "no vigil data dir at \"" + dir
              + "\" (no data.mdb): pass the --data-dir a node ran with"};
  return {};
}

status check_data_file(const std::string& dir, bool single_file) {
  return detail::check_data_file(dir, single_file, false);
}

bool detail::ends_early(const data_file_info& f) noexcept {
  return f.exists && f.used_meta >= 0 && f.file_size < f.needed_size;
}

status detail::check_data_file(const std::string& dir, bool single_file,
                               bool short_ok) {
  data_file_info f;
  if (auto st = read_data_file(dir, f, single_file))
    return st;
  if (!f.exists || f.file_size == 0)
    return {};
  auto repair = " Run `vigil verify --data-dir " + dir
                + "` to see what is readable and `vigil repair --data-dir "
                + dir + " --out NEW_DIR` to salvage it, or restore a backup.";
  if (f.used_meta < 0) {
    if (f.file_size < 2 * 4096)
      return {store_errc::corrupt,
              f.path + " is not an LMDB file: it holds "
                + human_bytes(f.file_size) + ", less than its two meta pages"
                + ". Restore the data dir from a backup or use another "
                  "--data-dir."};
    return {store_errc::corrupt,
            f.path + " has no valid LMDB meta page (page 0: "
              + f.meta[0].problem + "; page 1: " + f.meta[1].problem
              + "): it is not an LMDB file, or both meta pages are damaged. "
              + "Restore the data dir from a backup or use another "
                "--data-dir."};
  }
  if (!short_ok && f.file_size < f.needed_size)
    return {store_errc::corrupt,
            f.path + " is truncated: it holds " + human_bytes(f.file_size)
              + " but its meta page (transaction "
              + std::to_string(f.meta[f.used_meta].txnid) + ") needs "
              + human_bytes(f.needed_size) + " ("
              + std::to_string(f.meta[f.used_meta].last_page + 1)
              + " pages of " + std::to_string(f.page_size)
              + " bytes); opening it would read pages past its end." + repair};
  int other = 1 - f.used_meta;
  if (!f.meta[other].valid)
    return {store_errc::corrupt,
            f.path + ": meta page " + std::to_string(other) + " is damaged ("
              + f.meta[other].problem + "); meta page "
              + std::to_string(f.used_meta) + " is intact, but LMDB refuses "
              + "a file with a damaged meta page." + repair};
  return {};
}

status detail::vet_data_dir(const store_options& opts,
                    std::vector<std::string>& notes) {
  auto& dir = opts.dir;
  for (auto& w : permission_warnings(dir))
    notes.push_back(std::move(w));
  // A file that ends before its meta page's last page is not always
  // damaged: LMDB does not write a page that its transaction allocated and
  // freed again (a loose page), so the last pages can be free pages that
  // were never written, after any commit. Only the walk tells those from
  // missing pages in use: such a file is walked even without opts.verify,
  // and refused as truncated only if the walk fails.
  data_file_info f;
  bool short_file = read_data_file(dir, f).ok() && ends_early(f);
  if (auto st = detail::check_data_file(dir, false, short_file))
    return st;
  if (!opts.verify && !short_file)
    return {};
  verify_report rep;
  verify_options vo;
  vo.timeout = opts.verify_timeout;
  if (auto st = verify_data_dir(dir, rep, vo)) {
    if (st.code() == store_errc::not_found)
      return {}; // a new data dir
    return st;
  }
  if (rep.timed_out)
    return {store_errc::io,
            "data dir " + dir + ": the structural check " + rep.problem
              + ": a large dir on a slow disk needs more time (raise "
              + "store_options::verify_timeout) or `vigil verify --data-dir "
              + dir + "` to see where it stalls; --skip-verify skips it"};
  if (rep.problem.rfind("mdb_env_open: ", 0) == 0)
    return {store_errc::io,
            "cannot open data dir " + dir + " to check it: " + rep.problem
              + ": run vigil as the data dir's owner, or fix its "
              + "permissions"};
  if (!rep.problem.empty())
    return {store_errc::corrupt,
            "data dir " + dir + " failed its structural check: " + rep.problem
              + ". Nothing was changed. Run `vigil repair --data-dir " + dir
              + " --out NEW_DIR` to salvage every record that still reads "
              + "into a new data dir, or restore a backup (skipping the "
              + "check, --skip-verify, risks a crash on the damaged pages)"};
  uint64_t records = 0;
  size_t named = 0;
  for (auto& x : rep.dbs) {
    records += x.records;
    for (auto& [key, why] : x.bad)
      if (++named <= 10)
        notes.push_back("data dir " + dir + " [" + x.name + "] key \""
                        + printable(key) + "\" fails its checksum: " + why
                        + (x.name == "snapshots" || x.name == "journal"
                               || x.name == "outbox"
                             ? "; recovery moves it to the dead letters"
                             : "; its reader refuses it by name (`vigil "
                               "repair --move-aside " + x.name
                               + " KEY` moves it aside)"));
  }
  if (short_file)
    notes.push_back(f.path + " ends "
                    + std::to_string((f.needed_size - f.file_size)
                                     / std::max<uint64_t>(f.page_size, 1))
                    + " page(s) before its last page: free pages LMDB never "
                      "wrote (the walk reached every page in use)");
  notes.push_back("data dir " + dir + ": verified " + std::to_string(records)
                  + " records in " + std::to_string(rep.took.count()) + " ms"
                  + (rep.bad_records() > 0
                       ? "; " + std::to_string(rep.bad_records())
                           + " fail their checksum"
                       : std::string{}));
  return {};
}


std::vector<std::string> permission_warnings(const std::string& dir) {
  std::vector<std::string> out;
  auto check = [&](const std::string& path, bool is_dir) {
    struct stat sb;
    if (::stat(path.c_str(), &sb) != 0)
      return;
    auto mode = sb.st_mode & 0777;
    if ((mode & 077) == 0)
      return;
    char buf[8];
    std::snprintf(buf, sizeof(buf), "%04o", mode);
    out.push_back(std::string{is_dir ? "data dir " : "file "} + path
                  + " has mode " + buf
                  + ((mode & 044) != 0 ? ": other users of this machine can "
                                         "read agent state, journals and "
                                         "dead letters"
                                       : ": other users have access to it")
                  + "; run `chmod " + (is_dir ? "700 " : "600 ") + path
                  + "`");
  };
  check(dir, true);
  for (auto name : {"data.mdb", "lock.mdb", "vigil.lock"})
    check(dir + "/" + name, false);
  return out;
}

bool parse_printable_key(std::string_view text, std::string& out) {
  out.clear();
  auto hex = detail::hex_value;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '\\') {
      out += text[i];
      continue;
    }
    if (i + 3 >= text.size() || text[i + 1] != 'x')
      return false;
    int hi = hex(text[i + 2]), lo = hex(text[i + 3]);
    if (hi < 0 || lo < 0)
      return false;
    out += static_cast<char>(hi << 4 | lo);
    i += 3;
  }
  return true;
}

bool db_from_string(std::string_view name, db& out) noexcept {
  for (size_t i = 0; i < db_count; ++i)
    if (name == to_string(static_cast<db>(i))) {
      out = static_cast<db>(i);
      return true;
    }
  return false;
}

namespace {

std::atomic<void (*)(int, const std::string&)> protobuf_sink{nullptr};

void default_sink(int level, const std::string& line) {
  std::fprintf(stderr, "vigil: protobuf (%s): %s\n",
               level >= google::protobuf::LOGLEVEL_ERROR ? "error"
                                                         : "warning",
               line.c_str());
}

void protobuf_handler(google::protobuf::LogLevel level, const char* file,
                      int line, const std::string& message) {
  auto sink = protobuf_sink.load();
  std::string text = message;
  if (file != nullptr)
    text += " (" + std::string{file} + ":" + std::to_string(line) + ")";
  (sink != nullptr ? sink : default_sink)(static_cast<int>(level), text);
}

} // namespace

void route_protobuf_log(void (*sink)(int, const std::string&)) {
  protobuf_sink.store(sink);
  static bool once = [] {
    google::protobuf::SetLogHandler(protobuf_handler);
    return true;
  }();
  (void) once;
}

std::string upgrade_line(const std::string& dir, const upgrade_note& u) {
  return dir + ": upgraded the data dir from format " + std::to_string(u.from)
         + " to " + std::to_string(store::format) + " ("
         + std::to_string(u.records)
         + " records rewritten, in one transaction)";
}

} // namespace vigil
