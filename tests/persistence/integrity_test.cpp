// A damaged data dir: the checks before an open, the walk in a child, the
// salvage into a new dir, the backup while writing, moving one record aside,
// permissions and Protobuf's log. Damage is done to real LMDB files; every
// walk that faults does so in a forked child, so this process surviving a
// damaged file is part of what is tested.

#include <sys/stat.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <thread>

#include <google/protobuf/stubs/logging.h>

#include "persistence/store_support.hpp"
#include "support/lmdb_dump.hpp"
#include "vigil/persistence/integrity.hpp"

using namespace vigil;
using namespace vigil::test;

namespace {

/// `n` dead letters and `n` idempotency records, 100 of each a commit.
void fill(store& s, uint64_t n, uint64_t first = 1) {
  fill_letters(s, n, first, 100, true);
}

class integrity_test : public store_test {
protected:
  /// A stopped data dir with `n` letters and idempotency records; returns
  /// its dump.
  dump_t make(uint64_t n = 2000) {
    {
      auto s = open();
      fill(*s, n);
    }
    return dump(dir_);
  }

  std::string copy_of(const std::string& name) {
    auto to = root_ + "/" + name;
    std::filesystem::create_directories(to);
    std::filesystem::copy_file(dir_ + "/data.mdb", to + "/data.mdb");
    return to;
  }
};

TEST_F(integrity_test, a_new_data_dir_is_its_owners_alone) {
  auto s = open();
  EXPECT_EQ(mode_of(dir_), 0700u);
  for (auto f : {"data.mdb", "lock.mdb", "vigil.lock"})
    EXPECT_EQ(mode_of(dir_ + "/" + f), 0600u) << f;
  EXPECT_TRUE(permission_warnings(dir_).empty());
  s.reset();
  ::chmod(dir_.c_str(), 0755);
  ::chmod((dir_ + "/data.mdb").c_str(), 0644);
  auto w = permission_warnings(dir_);
  ASSERT_EQ(w.size(), 2u);
  EXPECT_NE(w[0].find("data dir " + dir_ + " has mode 0755"),
            std::string::npos)
    << w[0];
  EXPECT_NE(w[0].find("chmod 700 " + dir_), std::string::npos) << w[0];
  EXPECT_NE(w[1].find("chmod 600 " + dir_ + "/data.mdb"), std::string::npos)
    << w[1];
  // The open warns and runs on.
  s = open();
  ASSERT_TRUE(s);
  auto& notes = s->open_notes();
  EXPECT_TRUE(std::any_of(notes.begin(), notes.end(), [](auto& n) {
    return n.find("has mode 0755") != std::string::npos;
  }));
}

TEST_F(integrity_test, a_short_or_foreign_file_is_refused_before_lmdb_maps_it) {
  make(3000);
  auto file = dir_ + "/data.mdb";
  auto size = file_size(file);
  data_file_info info;
  ASSERT_TRUE(read_data_file(dir_, info).ok());
  ASSERT_GE(info.used_meta, 0);
  EXPECT_EQ(info.needed_size, size);
  for (double frac : {0.1, 0.5, 0.9}) {
    auto d = copy_of("t" + std::to_string(static_cast<int>(frac * 100)));
    auto cut = static_cast<uint64_t>(static_cast<double>(size) * frac);
    ASSERT_EQ(::truncate((d + "/data.mdb").c_str(), static_cast<off_t>(cut)),
              0);
    auto st = check_data_file(d);
    EXPECT_EQ(st.code(), store_errc::corrupt);
    for (auto part : {d + "/data.mdb is truncated",
                      "holds " + std::to_string(cut) + " bytes",
                      "needs " + std::to_string(size) + " bytes",
                      std::string{"vigil repair"}})
      EXPECT_NE(st.message().find(part), std::string::npos)
        << part << " in " << st.message();
    // Every open refuses the same way, never mapping the missing pages.
    store_options so;
    so.dir = d;
    std::unique_ptr<store> s;
    EXPECT_EQ(store::open_read_only(so, s).code(), store_errc::corrupt);
    EXPECT_EQ(store::open(so, s).code(), store_errc::corrupt);
    so.verify = false;
    EXPECT_EQ(store::open(so, s).code(), store_errc::corrupt);
  }
  auto z = copy_of("zero0");
  zero_page(z + "/data.mdb", 0);
  auto st = check_data_file(z);
  EXPECT_NE(st.message().find("meta page 0 is damaged (it is all zeros)"),
            std::string::npos)
    << st.message();
  auto junk = root_ + "/junk";
  std::filesystem::create_directories(junk);
  std::ofstream{junk + "/data.mdb"} << std::string(20000, 'j');
  st = check_data_file(junk);
  EXPECT_NE(st.message().find("no valid LMDB meta page"), std::string::npos)
    << st.message();
  std::ofstream{junk + "/data.mdb", std::ios::trunc} << "tiny";
  st = check_data_file(junk);
  EXPECT_NE(st.message().find("is not an LMDB file"), std::string::npos)
    << st.message();
  // A missing or empty file is a new data dir.
  EXPECT_TRUE(check_data_file(root_ + "/none").ok());
  std::ofstream{junk + "/data.mdb", std::ios::trunc};
  EXPECT_TRUE(check_data_file(junk).ok());
}

TEST_F(integrity_test, verify_counts_every_record_of_a_sound_dir) {
  auto before = make(1500);
  verify_report r;
  ASSERT_TRUE(verify_data_dir(dir_, r).ok());
  EXPECT_TRUE(r.ok()) << r.problem;
  std::map<std::string, uint64_t> walked, expected;
  for (auto& d : r.dbs) {
    walked[d.name] = d.records;
    EXPECT_TRUE(d.complete) << d.name;
    EXPECT_EQ(d.entries, d.records) << d.name;
  }
  for (auto& [k, v] : before)
    ++expected[k.first];
  for (auto& [name, n] : expected)
    EXPECT_EQ(walked[name], n) << name;
  EXPECT_EQ(walked["dead_letters"], 1500u);
  EXPECT_EQ(r.dbs.size(), db_count);
}

TEST_F(integrity_test, a_record_failing_its_checksum_is_named_and_left) {
  auto before = make(300);
  auto key = guard_key("root/agent", 7, 42);
  auto good = before.at({"idempotency", key});
  auto bad = good;
  bad.back() = static_cast<char>(bad.back() ^ 0x5a);
  {
    raw_env raw{dir_};
    ASSERT_EQ(raw.rc(), 0);
    ASSERT_EQ(raw.put("idempotency", key, bad), 0);
  }
  verify_report r;
  ASSERT_TRUE(verify_data_dir(dir_, r).ok());
  EXPECT_TRUE(r.problem.empty()) << r.problem;
  ASSERT_EQ(r.bad_records(), 1u);
  for (auto& d : r.dbs)
    if (d.name == "idempotency") {
      ASSERT_EQ(d.bad.size(), 1u);
      EXPECT_EQ(d.bad[0].first, key);
      EXPECT_NE(d.bad[0].second.find("checksum mismatch"), std::string::npos);
    }
  auto named = [&](const std::vector<std::string>& notes) {
    return std::any_of(notes.begin(), notes.end(), [](auto& n) {
      return n.find("[idempotency] key \"root/agent") != std::string::npos
             && n.find("--move-aside idempotency KEY") != std::string::npos;
    });
  };
  {
    store_options so;
    so.dir = dir_;
    std::unique_ptr<store> ro;
    ASSERT_TRUE(store::open_read_only(so, ro).ok());
    EXPECT_TRUE(named(ro->open_notes()));
  }
  // A write open names it too and leaves it: a guard moved aside would
  // let a resend of message 42 be applied again. Recovery has nothing.
  {
    auto s = open();
    EXPECT_TRUE(named(s->open_notes()));
    std::map<std::string, recovered_agent> found;
    std::vector<quarantined> q;
    ASSERT_TRUE(s->recover(found, q).ok());
    EXPECT_TRUE(q.empty());
  }
  EXPECT_EQ(dump(dir_).at({"idempotency", key}), bad);
  // The operator moves it aside by name.
  ASSERT_TRUE(move_record_aside(dir_, db::idempotency, key, "damaged").ok());
  auto s = open();
  std::vector<records::DeadLetter> letters;
  ASSERT_TRUE(s->dead_letters(letters).ok());
  ASSERT_EQ(letters.size(), 301u);
  auto& dl = letters.back();
  EXPECT_EQ(dl.db(), "idempotency");
  EXPECT_EQ(dl.key(), key);
  EXPECT_EQ(dl.raw(), bad);
  EXPECT_EQ(dl.path(), "root/agent");
  EXPECT_EQ(dl.reason(), "moved aside: damaged");
  s.reset();
  ASSERT_TRUE(verify_data_dir(dir_, r).ok());
  EXPECT_TRUE(r.ok()) << r.problem << " " << r.bad_records();
}

TEST_F(integrity_test, a_walk_that_faults_is_a_finding_not_a_crash) {
  make(3000);
  int faulted = 0;
  for (uint32_t seed = 1; seed <= 6; ++seed) {
    auto d = copy_of("b" + std::to_string(seed));
    damage_bytes(d + "/data.mdb", seed, 400);
    verify_report r;
    ASSERT_TRUE(verify_data_dir(d, r).ok()) << "seed " << seed;
    EXPECT_FALSE(r.ok()) << "seed " << seed;
    if (r.signal != 0)
      ++faulted;
    store_options so;
    so.dir = d;
    std::unique_ptr<store> s;
    auto st = store::open(so, s);
    if (!r.problem.empty()) {
      EXPECT_EQ(st.code(), store_errc::corrupt) << "seed " << seed;
      EXPECT_NE(st.message().find("failed its structural check"),
                std::string::npos)
        << st.message();
      EXPECT_NE(st.message().find("vigil repair --data-dir " + d),
                std::string::npos)
        << st.message();
    }
  }
  // 400 bytes over every page of the file: some walks die from a signal.
  // (Printed, not asserted: which damage faults depends on LMDB's code.)
  std::printf("walks that died from a signal: %d of 6\n", faulted);
}

TEST_F(integrity_test, repair_of_a_sound_dir_copies_every_record) {
  auto before = make(2000);
  auto out = root_ + "/repaired";
  repair_report rep;
  auto st = repair_data_dir(dir_, out, rep);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(rep.lost(), 0u);
  EXPECT_EQ(rep.bad_records(), 0u);
  EXPECT_EQ(rep.salvaged(), before.size());
  EXPECT_EQ(dump(out), before);
  EXPECT_EQ(mode_of(out), 0700u);
  EXPECT_FALSE(std::filesystem::exists(out + ".salvage"));
  // Not into a dir that holds something, nor from a dir a node holds.
  EXPECT_EQ(repair_data_dir(dir_, out, rep).code(), store_errc::invalid);
  auto s = open();
  EXPECT_EQ(repair_data_dir(dir_, root_ + "/again", rep).code(),
            store_errc::locked);
}

TEST_F(integrity_test, repair_replaces_a_zeroed_meta_page_and_loses_nothing) {
  auto before = make(2000);
  for (int page : {0, 1}) {
    auto d = copy_of("z" + std::to_string(page));
    zero_page(d + "/data.mdb", static_cast<uint64_t>(page));
    repair_report rep;
    auto out = d + ".out";
    auto st = repair_data_dir(d, out, rep);
    ASSERT_TRUE(st.ok()) << st.message();
    ASSERT_EQ(rep.notes.size(), 1u);
    EXPECT_NE(rep.notes[0].find("meta page " + std::to_string(page)
                                + " was damaged"),
              std::string::npos)
      << rep.notes[0];
    // The other meta page is the previous commit's; fill's last batch
    // is the only thing it may lack.
    auto after = dump(out);
    for (auto& [k, v] : after)
      EXPECT_EQ(before.at(k), v);
    EXPECT_GE(after.size() + 200, before.size()) << "page " << page;
  }
}

TEST_F(integrity_test, repair_salvages_only_records_that_check) {
  auto before = make(4000);
  auto seeds = 8;
  if (auto* e = std::getenv("VIGIL_DAMAGE_SEEDS"))
    seeds = std::atoi(e);
  uint64_t salvaged = 0, total = 0, damaged_keys = 0;
  for (uint32_t seed = 1; seed <= static_cast<uint32_t>(seeds); ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed)
                 + " (VIGIL_DAMAGE_SEEDS replays 1..N)");
    auto d = copy_of("s" + std::to_string(seed));
    damage_bytes(d + "/data.mdb", seed, 12);
    auto out = d + ".out";
    repair_report rep;
    auto st = repair_data_dir(d, out, rep);
    ASSERT_TRUE(st.ok()) << st.message();
    auto after = dump(out);
    // Nothing damaged is salvaged as good: every record that came through
    // is the original, byte for byte; the ones that failed their checksum
    // are dead letters that did not exist before. The checksum covers the
    // value, not the key: a record whose key was damaged comes through with
    // its original value under another key (counted, and stated in the
    // README).
    std::map<std::pair<std::string, std::string>, int> values;
    for (auto& [k, v] : before)
      ++values[{k.first, v}];
    uint64_t quarantined = 0;
    for (auto& [k, v] : after) {
      auto it = before.find(k);
      if (it != before.end() && it->second == v)
        continue;
      if (values.count({k.first, v}) != 0) {
        ++damaged_keys;
        continue;
      }
      // Else a letter of the repair's own, under the next seq after the
      // last one salvaged (that seq may have been a letter that was lost).
      ASSERT_EQ(k.first, "dead_letters") << printable_key(k.second);
      records::DeadLetter dl;
      ASSERT_EQ(decode_record(v, dl), record_fault::none);
      EXPECT_NE(dl.reason().find("quarantined by vigil repair"),
                std::string::npos);
      ++quarantined;
    }
    EXPECT_EQ(quarantined, rep.bad_records());
    salvaged += rep.salvaged();
    total += before.size();
    // The repaired dir opens (its own walk included) and verifies.
    store_options so;
    so.dir = out;
    std::unique_ptr<store> s;
    EXPECT_TRUE(store::open(so, s).ok());
  }
  std::printf("salvaged %llu of %llu records over %d seeds; %llu of them "
              "under a damaged key\n",
              static_cast<unsigned long long>(salvaged),
              static_cast<unsigned long long>(total), seeds,
              static_cast<unsigned long long>(damaged_keys));
}

TEST_F(integrity_test, repair_of_a_truncated_file_keeps_what_the_tree_reaches) {
  auto before = make(3000);
  auto d = copy_of("t90");
  auto size = file_size(d + "/data.mdb");
  ASSERT_EQ(::truncate((d + "/data.mdb").c_str(),
                       static_cast<off_t>(size * 9 / 10)),
            0);
  repair_report rep;
  auto out = d + ".out";
  auto st = repair_data_dir(d, out, rep);
  ASSERT_TRUE(st.ok()) << st.message();
  ASSERT_FALSE(rep.notes.empty());
  EXPECT_NE(rep.notes[0].find("read as zeros"), std::string::npos);
  auto after = dump(out);
  for (auto& [k, v] : after)
    if (before.count(k))
      EXPECT_EQ(before.at(k), v);
  std::printf("truncated to 90%%: salvaged %zu of %zu records\n",
              after.size(), before.size());
}

TEST_F(integrity_test, backup_while_writing_is_a_consistent_prefix) {
  auto s = open();
  fill(*s, 500);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> written{500};
  std::thread writer{[&] {
    for (uint64_t next = 501; !stop && next < 200000; next += 100) {
      fill(*s, 100, next);
      written = next + 99;
    }
  }};
  // Wait for the writer to be under way, then copy.
  while (written.load() < 2000)
    std::this_thread::yield();
  auto file = root_ + "/backup.mdb";
  backup_report rep;
  auto st = backup_data_dir(dir_, file, rep);
  stop = true;
  writer.join();
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(mode_of(file), 0600u);
  EXPECT_GT(rep.records, 0u);
  EXPECT_EQ(rep.bytes, file_size(file));
  auto copy = dump(file, true);
  // One read transaction: letters 1..k, all of them, for some k.
  uint64_t k = 0;
  for (auto& [key, v] : copy)
    if (key.first == "dead_letters")
      ++k;
  EXPECT_GE(k, 2000u);
  for (uint64_t i = 1; i <= k; ++i)
    EXPECT_EQ(copy.count({"dead_letters", be64(i)}), 1u) << i;
  EXPECT_EQ(copy.count({"idempotency", guard_key("root/agent", 7, k)}), 1u);
  EXPECT_EQ(copy.count({"idempotency", guard_key("root/agent", 7, k + 1)}),
            0u);
  EXPECT_EQ(rep.records, copy.size());
  // Restore: the file becomes data.mdb of a new dir, and opens.
  auto restored = root_ + "/restored";
  std::filesystem::create_directories(restored);
  std::filesystem::copy_file(file, restored + "/data.mdb");
  s.reset();
  store_options so;
  so.dir = restored;
  std::unique_ptr<store> r;
  ASSERT_TRUE(store::open(so, r).ok());
  size_t n = 0;
  ASSERT_TRUE(r->count(db::dead_letters, n).ok());
  EXPECT_EQ(n, k);
  // A backup never overwrites.
  EXPECT_EQ(backup_data_dir(dir_, file, rep).code(), store_errc::invalid);
}

TEST_F(integrity_test, backup_of_a_damaged_dir_fails_cleanly) {
  make(3000);
  auto d = copy_of("bad");
  damage_bytes(d + "/data.mdb", 3, 400);
  backup_report rep;
  auto file = root_ + "/b.mdb";
  auto st = backup_data_dir(d, file, rep);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("cannot back up " + d), std::string::npos)
    << st.message();
  EXPECT_FALSE(std::filesystem::exists(file));
  EXPECT_FALSE(std::filesystem::exists(file + ".tmp"));
}

TEST_F(integrity_test, one_named_record_can_be_moved_aside) {
  auto before = make(100);
  auto key = guard_key("root/agent", 7, 9);
  auto text = printable_key(key);
  std::string parsed;
  ASSERT_TRUE(parse_printable_key(text, parsed));
  ASSERT_EQ(parsed, key);
  auto st = move_record_aside(dir_, db::idempotency, parsed, "operator test");
  ASSERT_TRUE(st.ok()) << st.message();
  auto after = dump(dir_);
  EXPECT_EQ(after.count({"idempotency", key}), 0u);
  auto s = open();
  std::vector<records::DeadLetter> letters;
  ASSERT_TRUE(s->dead_letters(letters).ok());
  ASSERT_EQ(letters.size(), 101u);
  EXPECT_EQ(letters.back().reason(), "moved aside: operator test");
  EXPECT_EQ(letters.back().raw(), before.at({"idempotency", key}));
  EXPECT_EQ(letters.back().path(), "root/agent");
  EXPECT_EQ(s->move_aside(db::idempotency, key, "again").code(),
            store_errc::not_found);
  EXPECT_EQ(s->move_aside(db::meta, "format", "no").code(),
            store_errc::invalid);
}

TEST(integrity, printable_keys_parse_back) {
  std::string all;
  for (int c = 0; c < 256; ++c)
    all += static_cast<char>(c);
  std::string back;
  ASSERT_TRUE(parse_printable_key(printable_key(all), back));
  EXPECT_EQ(back, all);
  for (auto bad : {"a\\", "a\\x", "a\\x4", "a\\xzz", "\\y00"})
    EXPECT_FALSE(parse_printable_key(bad, back)) << bad;
  db which;
  EXPECT_TRUE(db_from_string("dead_letters", which));
  EXPECT_EQ(which, db::dead_letters);
  EXPECT_FALSE(db_from_string("letters", which));
}

std::vector<std::string>* captured = nullptr;

TEST(integrity, protobuf_log_lines_go_to_the_sink) {
  std::vector<std::string> lines;
  captured = &lines;
  route_protobuf_log([](int, const std::string& line) {
    captured->push_back(line);
  });
  GOOGLE_LOG(WARNING) << "a line from libprotobuf";
  route_protobuf_log(nullptr);
  captured = nullptr;
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].find("a line from libprotobuf"), std::string::npos);
}

} // namespace

// LMDB does not write a page its transaction allocated and freed again (a
// loose page): a file can end before the last page its meta page names,
// the missing pages free, after a clean commit or a kill -9 (crash_test
// met it). Here the last pages are freed by the transaction after the one
// that wrote them, and cut off: free, never read. Every open takes the
// file (the walk finds every page in use), and says so; a cut into pages
// in use is still refused (a_short_or_foreign_file_...).
TEST_F(integrity_test, a_file_that_ends_in_free_pages_opens) {
  auto before = make(3000);
  {
    MDB_env* env = nullptr;
    ASSERT_EQ(mdb_env_create(&env), 0);
    ASSERT_EQ(mdb_env_set_maxdbs(env, 32), 0);
    ASSERT_EQ(mdb_env_set_mapsize(env, size_t{1} << 30), 0);
    ASSERT_EQ(mdb_env_open(env, dir_.c_str(), 0, 0600), 0);
    MDB_txn* txn = nullptr;
    MDB_dbi dbi = 0;
    ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
    ASSERT_EQ(mdb_dbi_open(txn, "journal", 0, &dbi), 0);
    // 64 KiB: overflow pages, a contiguous run at the end of the file.
    std::string big(64 * 1024, 'x');
    std::string k = "zz-free-tail";
    MDB_val key{k.size(), k.data()}, val{big.size(), big.data()};
    ASSERT_EQ(mdb_put(txn, dbi, &key, &val, 0), 0);
    ASSERT_EQ(mdb_txn_commit(txn), 0);
    ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
    ASSERT_EQ(mdb_del(txn, dbi, &key, nullptr), 0);
    ASSERT_EQ(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
  }
  data_file_info f;
  ASSERT_TRUE(read_data_file(dir_, f).ok());
  ASSERT_GE(f.used_meta, 0);
  ASSERT_EQ(f.file_size, f.needed_size);
  // The overflow run was the last pages: 16 full pages of value.
  auto cut = f.file_size - 8 * uint64_t{f.page_size};
  ASSERT_EQ(::truncate((dir_ + "/data.mdb").c_str(), static_cast<off_t>(cut)),
            0);
  // The cheap check alone cannot tell free pages from pages in use.
  EXPECT_EQ(check_data_file(dir_).code(), store_errc::corrupt);
  verify_report rep;
  ASSERT_TRUE(verify_data_dir(dir_, rep).ok());
  EXPECT_TRUE(rep.problem.empty()) << rep.problem;
  for (bool verify : {true, false}) {
    auto d = copy_of(verify ? "tail-verify" : "tail-no-verify");
    store_options so;
    so.dir = d;
    so.verify = verify;
    std::unique_ptr<store> s;
    auto st = store::open(so, s);
    ASSERT_TRUE(st.ok()) << st.message();
    auto& notes = s->open_notes();
    EXPECT_TRUE(std::any_of(notes.begin(), notes.end(), [](auto& n) {
      return n.find("page(s) before its last page: free pages LMDB never "
                    "wrote")
             != std::string::npos;
    })) << "verify " << verify;
    s.reset();
    // Every record is there as it was (but the store's own in "meta",
    // which an open for writing updates).
    auto after = dump(d);
    for (auto& [k, v] : before) {
      if (k.first == "meta")
        continue;
      auto i = after.find(k);
      ASSERT_TRUE(i != after.end()) << k.first;
      EXPECT_EQ(i->second, v) << k.first;
    }
  }
}
