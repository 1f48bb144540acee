// Review of issue 22 (a damaged data dir never crashes vigil): attacks on
// verify / repair / backup / move-aside that integrity_test does not cover.

#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "persistence/store_support.hpp"
#include "support/lmdb_dump.hpp"
#include "vigil/persistence/integrity.hpp"

using namespace vigil;
using namespace vigil::test;
using namespace std::chrono_literals;

namespace {

/// `n` dead letters, 500 a commit.
void fill(store& s, uint64_t n, uint64_t first = 1) {
  fill_letters(s, n, first, 500, false);
}

size_t open_fds() {
  size_t n = 0;
  auto d = ::opendir("/proc/self/fd");
  while (auto e = ::readdir(d))
    if (e->d_name[0] != '.')
      ++n;
  ::closedir(d);
  return n;
}

/// Stale reader slots in `dir`'s lock.mdb, counted (and cleared) by
/// mdb_reader_check in a forked child (this process may hold the env).
int stale_readers(const std::string& dir) {
  auto pid = ::fork();
  if (pid == 0) {
    MDB_env* env = nullptr;
    mdb_env_create(&env);
    mdb_env_set_maxdbs(env, 16);
    if (mdb_env_open(env, dir.c_str(), MDB_RDONLY, 0600) != 0)
      ::_exit(200);
    int dead = 0;
    mdb_reader_check(env, &dead);
    ::_exit(dead);
  }
  int ws = 0;
  ::waitpid(pid, &ws, 0);
  return WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
}

class review22 : public store_test {
protected:
  dump_t make(uint64_t n = 2000) {
    {
      auto s = open();
      fill(*s, n);
    }
    return dump(dir_);
  }
};

// ---------------------------------------------------------------- repair

// `--out NEW/` (a trailing slash, as shells complete dir names) puts the
// work dir inside NEW (NEW/.salvage), whose parent does not exist yet.
TEST_F(review22, repair_into_an_out_dir_with_a_trailing_slash) {
  auto before = make(500);
  repair_report rep;
  auto out = root_ + "/fresh/";
  auto st = repair_data_dir(dir_, out, rep);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(dump(out), before);
}

// The work dir is `out`.salvage and is wiped first: a source data dir that
// happens to have that name (e.g. one left by an interrupted repair, or
// named so by an operator) is deleted before it is read.
TEST_F(review22, repair_never_deletes_the_source_data_dir) {
  auto before = make(500);
  auto src = root_ + "/d.salvage";
  std::filesystem::rename(dir_, src);
  repair_report rep;
  auto st = repair_data_dir(src, root_ + "/d", rep);
  EXPECT_TRUE(std::filesystem::exists(src + "/data.mdb"))
    << "repair deleted its own source; status: " << st.message();
  if (std::filesystem::exists(src + "/data.mdb"))
    EXPECT_EQ(dump(src), before);
}

// Refusing an out dir that already holds the source is fine; a file as
// --out must not be called "not empty" and must survive.
TEST_F(review22, repair_into_a_file_or_the_source_itself_is_refused) {
  make(100);
  repair_report rep;
  EXPECT_EQ(repair_data_dir(dir_, dir_, rep).code(), store_errc::invalid);
  auto file = root_ + "/afile";
  std::ofstream{file} << "keep me";
  EXPECT_NE(repair_data_dir(dir_, file, rep).code(), store_errc::ok);
  std::ifstream in{file};
  std::string s;
  std::getline(in, s);
  EXPECT_EQ(s, "keep me");
}

// The format 1 fixture: repair must not quarantine its bare records, and
// the node must open (and upgrade) what it wrote.
TEST_F(review22, repair_of_a_format1_dir_keeps_every_record_and_opens) {
  std::filesystem::create_directories(dir_);
  ::chmod(dir_.c_str(), 0700);
  std::filesystem::copy_file(std::string{VIGIL_FIXTURES} + "/format1/data.mdb",
                             dir_ + "/data.mdb");
  auto before = dump(dir_);
  verify_report vr;
  ASSERT_TRUE(verify_data_dir(dir_, vr).ok());
  EXPECT_TRUE(vr.ok()) << vr.problem << " bad " << vr.bad_records();
  auto out = root_ + "/f1out";
  repair_report rep;
  auto st = repair_data_dir(dir_, out, rep);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(rep.bad_records(), 0u);
  EXPECT_EQ(rep.lost(), 0u);
  EXPECT_EQ(rep.salvaged(), before.size());
  store_options so;
  so.dir = out;
  std::unique_ptr<store> s;
  auto os = store::open(so, s);
  ASSERT_TRUE(os.ok()) << os.message();
  EXPECT_EQ(s->upgraded_from(), 1u);
}

// A damaged meta record whose first byte is >= 8 reads as "format 1": the
// walk then accepts every unframed value, verify says OK, repair copies the
// garbage meta into the new dir and says "it verifies" -- and neither the
// damaged dir nor the repaired one opens.
TEST_F(review22, a_garbage_meta_record_is_not_taken_for_format1) {
  make(200);
  {
    raw_env raw{dir_};
    ASSERT_EQ(raw.rc(), 0);
    ASSERT_EQ(raw.put("meta", "format", "\xff\xff\xff garbage"), 0);
  }
  verify_report vr;
  ASSERT_TRUE(verify_data_dir(dir_, vr).ok());
  store_options so;
  so.dir = dir_;
  std::unique_ptr<store> s;
  auto os = store::open(so, s);
  EXPECT_FALSE(vr.ok() && !os.ok())
    << "verify says OK but the node cannot open it: " << os.message();
  s.reset();
  auto out = root_ + "/mout";
  repair_report rep;
  auto st = repair_data_dir(dir_, out, rep);
  if (st.ok()) {
    so.dir = out;
    auto os2 = store::open(so, s);
    EXPECT_TRUE(os2.ok()) << "repair succeeded (\"it verifies\"), but its "
                             "output does not open: "
                          << os2.message();
  }
}

// ------------------------------------------------------- timeouts, readers

// A healthy dir whose walk runs out of time is not "damaged": store::open
// must not send the operator to `vigil repair`.
TEST_F(review22, a_walk_timeout_is_not_reported_as_a_damaged_btree) {
  make(20000);
  store_options so = options();
  so.verify_timeout = 1ms;
  std::unique_ptr<store> s;
  auto st = store::open(so, s);
  if (!st.ok()) {
    EXPECT_NE(st.code(), store_errc::corrupt) << st.message();
    EXPECT_EQ(st.message().find("B-tree is damaged"), std::string::npos)
      << st.message();
  }
}

// `vigil verify` on a live node's data dir (documented to work) that is
// killed by its timeout leaves its reader slot in lock.mdb: the node's
// writer cannot reuse any page freed after that snapshot until it
// restarts (store::open is the only mdb_reader_check).
TEST_F(review22, a_killed_walk_leaves_no_stale_reader_in_a_live_env) {
  auto s = open();
  fill(*s, 60000);
  int stale = 0;
  int killed = 0;
  for (int ms : {2, 4, 6, 8, 12, 16, 24, 32, 48, 64}) {
    verify_report vr;
    verify_options vo;
    vo.timeout = std::chrono::milliseconds{ms};
    ASSERT_TRUE(verify_data_dir(dir_, vr, vo).ok());
    if (!vr.problem.empty())
      ++killed;
    stale += stale_readers(dir_);
  }
  ASSERT_GT(killed, 0) << "no walk ran out of time: the dir is too small";
  EXPECT_EQ(stale, 0) << killed << " walks were killed; " << stale
                      << " left a stale reader slot in the live env";
}

// Timed-out walks leak neither fds nor zombies.
TEST_F(review22, timed_out_walks_leak_no_fds_or_zombies) {
  make(20000);
  auto fds = open_fds();
  for (int i = 0; i < 30; ++i) {
    verify_report vr;
    verify_options vo;
    vo.timeout = 1ms;
    ASSERT_TRUE(verify_data_dir(dir_, vr, vo).ok());
  }
  EXPECT_EQ(open_fds(), fds);
  errno = 0;
  EXPECT_EQ(::waitpid(-1, nullptr, WNOHANG), -1);
  EXPECT_EQ(errno, ECHILD);
}

// Many threads verifying at once (each forks while the others have pipes
// open) all finish and agree.
TEST_F(review22, concurrent_verifies_from_many_threads) {
  make(3000);
  std::atomic<int> ok{0};
  std::atomic<bool> stop{false};
  std::thread churn{[&] {
    while (!stop) {
      std::vector<std::string> v(1000, std::string(100, 'x'));
    }
  }};
  std::vector<std::thread> ts;
  auto started = std::chrono::steady_clock::now();
  for (int t = 0; t < 8; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < 5; ++i) {
        verify_report vr;
        if (verify_data_dir(dir_, vr).ok() && vr.ok())
          ++ok;
      }
    });
  for (auto& t : ts)
    t.join();
  stop = true;
  churn.join();
  EXPECT_EQ(ok.load(), 40);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 30s);
}

// ------------------------------------------------------------ big values

TEST_F(review22, multi_megabyte_records_verify_and_repair_whole) {
  {
    auto s = open();
    std::vector<mutation> muts;
    for (int i = 0; i < 4; ++i) {
      records::DeadLetter dl;
      dl.set_format(store::format);
      dl.set_seq(static_cast<uint64_t>(i + 1));
      dl.set_raw(std::string(size_t{6} << 20, static_cast<char>('a' + i)));
      muts.push_back(put(db::dead_letters, be64(i + 1), bytes(dl)));
    }
    ASSERT_TRUE(apply(*s, std::move(muts)).ok());
  }
  auto before = dump(dir_);
  verify_report vr;
  ASSERT_TRUE(verify_data_dir(dir_, vr).ok());
  EXPECT_TRUE(vr.ok()) << vr.problem;
  repair_report rep;
  auto out = root_ + "/big";
  auto st = repair_data_dir(dir_, out, rep);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(dump(out), before);
}

// ----------------------------------------------------------------- backup

// A backup "never overwrites" a file, but it silently deletes OUT.tmp.
TEST_F(review22, backup_does_not_delete_an_unrelated_out_tmp_file) {
  make(200);
  auto out = root_ + "/b.mdb";
  std::ofstream{out + ".tmp"} << "an operator's file";
  backup_report br;
  auto st = backup_data_dir(dir_, out, br);
  (void) st;
  std::ifstream in{out + ".tmp"};
  std::string s;
  std::getline(in, s);
  EXPECT_EQ(s, "an operator's file")
    << "backup deleted " << out << ".tmp (status: " << st.message() << ")";
}

TEST_F(review22, backup_into_a_missing_dir_or_onto_a_dir_fails_cleanly) {
  make(200);
  backup_report br;
  auto st = backup_data_dir(dir_, root_ + "/no/such/dir/b.mdb", br);
  EXPECT_EQ(st.code(), store_errc::io) << st.message();
  std::filesystem::create_directories(root_ + "/adir");
  st = backup_data_dir(dir_, root_ + "/adir", br);
  EXPECT_EQ(st.code(), store_errc::invalid) << st.message();
  EXPECT_TRUE(std::filesystem::is_empty(root_ + "/adir"));
}

// ------------------------------------------------------------ move-aside

// A typo in --data-dir must not create a new data dir.
TEST_F(review22, move_aside_on_a_missing_dir_creates_nothing) {
  auto typo = root_ + "/typo";
  auto st = move_record_aside(typo, db::snapshots, "a/b", "test");
  EXPECT_FALSE(st.ok());
  EXPECT_FALSE(std::filesystem::exists(typo))
    << "move_record_aside created " << typo << " (status "
    << to_string(st.code()) << ": " << st.message() << ")";
}

TEST_F(review22, move_aside_of_a_key_with_nul_and_backslash_bytes) {
  std::string key = std::string{"root/a\\b"} + '\0' + "\x01\xff";
  {
    auto s = open();
    ASSERT_TRUE(
      apply(*s, {put(db::snapshots, key, bytes(snapshot("root/a", 1)))}).ok());
  }
  std::string parsed;
  ASSERT_TRUE(parse_printable_key(printable_key(key), parsed));
  ASSERT_EQ(parsed, key);
  EXPECT_TRUE(move_record_aside(dir_, db::snapshots, parsed, "t").ok());
  EXPECT_EQ(move_record_aside(dir_, db::snapshots, parsed, "t").code(),
            store_errc::not_found);
  EXPECT_EQ(move_record_aside(dir_, db::meta, "format", "t").code(),
            store_errc::invalid);
}

// Damage that flips a byte of a snapshot's key makes it invalid UTF-8;
// moving it aside writes that key as the letter's `path` (a proto3
// string): the letter cannot be read back.
TEST_F(review22, a_record_moved_aside_under_a_non_utf8_key_reads_back) {
  std::string key = "root/a\xff";
  {
    auto s = open();
    ASSERT_TRUE(
      apply(*s, {put(db::snapshots, key, bytes(snapshot("root/a", 1)))}).ok());
  }
  ASSERT_TRUE(move_record_aside(dir_, db::snapshots, key, "t").ok());
  auto s = open();
  std::vector<records::DeadLetter> letters;
  auto st = s->dead_letters(letters);
  ASSERT_TRUE(st.ok()) << st.message();
  ASSERT_EQ(letters.size(), 1u);
  EXPECT_EQ(letters[0].key(), key) << letters[0].reason();
}

TEST(review22_keys, parse_printable_key_edges) {
  std::string out;
  for (int c = 0; c < 256; ++c) {
    std::string k(1, static_cast<char>(c));
    ASSERT_TRUE(parse_printable_key(printable_key(k), out)) << c;
    EXPECT_EQ(out, k) << c;
  }
  for (auto bad : {"\\", "\\x", "\\x4", "a\\x4", "\\xg0", "\\X41", "\\y41"})
    EXPECT_FALSE(parse_printable_key(bad, out)) << bad;
  EXPECT_TRUE(parse_printable_key("\\x41\\x42", out));
  EXPECT_EQ(out, "AB");
  EXPECT_TRUE(parse_printable_key("", out));
  EXPECT_EQ(out, "");
}

// --------------------------------------------------------- the data file

void patch_u32(const std::string& file, uint64_t off, uint32_t v) {
  std::fstream f{file, std::ios::in | std::ios::out | std::ios::binary};
  f.seekp(static_cast<std::streamoff>(off));
  f.write(reinterpret_cast<const char*>(&v), 4);
}

// Page size 0 or 2^31 in meta page 0: refused, never mapped; repair mends.
TEST_F(review22, an_absurd_page_size_in_a_meta_page_is_refused_and_mended) {
  auto before = make(500);
  for (uint32_t ps : {0u, 0x80000000u, 4097u}) {
    SCOPED_TRACE(ps);
    auto d = root_ + "/ps" + std::to_string(ps);
    std::filesystem::create_directories(d);
    std::filesystem::copy_file(dir_ + "/data.mdb", d + "/data.mdb");
    patch_u32(d + "/data.mdb", 16 + 24, ps);
    auto st = check_data_file(d);
    EXPECT_EQ(st.code(), store_errc::corrupt) << st.message();
    store_options so;
    so.dir = d;
    std::unique_ptr<store> s;
    EXPECT_EQ(store::open(so, s).code(), store_errc::corrupt);
    repair_report rep;
    auto rs = repair_data_dir(d, d + ".out", rep);
    ASSERT_TRUE(rs.ok()) << rs.message();
    EXPECT_GE(dump(d + ".out").size() + 500, before.size());
  }
}

TEST_F(review22, odd_data_files_are_refused_or_accepted_never_mapped) {
  // A directory named data.mdb.
  auto d1 = root_ + "/d1";
  std::filesystem::create_directories(d1 + "/data.mdb");
  EXPECT_FALSE(check_data_file(d1).ok());
  store_options so;
  so.dir = d1;
  std::unique_ptr<store> s;
  EXPECT_FALSE(store::open(so, s).ok());
  // An empty data.mdb: a new data dir.
  auto d2 = root_ + "/d2";
  std::filesystem::create_directories(d2);
  std::ofstream{d2 + "/data.mdb"};
  EXPECT_TRUE(check_data_file(d2).ok());
  verify_report vr;
  EXPECT_TRUE(verify_data_dir(d2, vr).ok());
  EXPECT_TRUE(vr.ok()) << vr.problem;
  // One page: meta 0 only.
  make(10);
  auto d3 = root_ + "/d3";
  std::filesystem::create_directories(d3);
  std::filesystem::copy_file(dir_ + "/data.mdb", d3 + "/data.mdb");
  std::filesystem::resize_file(d3 + "/data.mdb", 4096);
  EXPECT_EQ(check_data_file(d3).code(), store_errc::corrupt);
  so.dir = d3;
  EXPECT_EQ(store::open(so, s).code(), store_errc::corrupt);
  // A symlinked data.mdb to a sound file.
  auto d4 = root_ + "/d4";
  std::filesystem::create_directories(d4);
  std::filesystem::create_symlink(dir_ + "/data.mdb", d4 + "/data.mdb");
  EXPECT_TRUE(check_data_file(d4).ok());
  // A huge sparse tail after a sound file.
  auto d5 = root_ + "/d5";
  std::filesystem::create_directories(d5);
  std::filesystem::copy_file(dir_ + "/data.mdb", d5 + "/data.mdb");
  std::filesystem::resize_file(d5 + "/data.mdb", uint64_t{1} << 40);
  EXPECT_TRUE(check_data_file(d5).ok());
  verify_report v5;
  EXPECT_TRUE(verify_data_dir(d5, v5).ok());
  EXPECT_TRUE(v5.ok()) << v5.problem;
}

TEST_F(review22, permission_warnings_on_odd_modes) {
  make(10);
  ::chmod(dir_.c_str(), 0711);
  ::chmod((dir_ + "/data.mdb").c_str(), 0640);
  auto w = permission_warnings(dir_);
  EXPECT_EQ(w.size(), 2u);
  ::chmod(dir_.c_str(), 0700);
  ::chmod((dir_ + "/data.mdb").c_str(), 0600);
  EXPECT_TRUE(permission_warnings(dir_).empty());
}

} // namespace
