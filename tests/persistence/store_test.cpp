// The LMDB store on real files: one fresh temporary data dir per test, a raw
// LMDB handle to plant records the store would never write, and real child
// processes for the lock and for a map grown by someone else.

#include <gtest/gtest.h>

#include <lmdb.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "persistence/store_support.hpp"
#include "vigil/persistence/store.hpp"

namespace {

using namespace vigil;
using namespace vigil::test;

// -- open ---------------------------------------------------------------------

TEST_F(store_test, open_creates_the_databases_and_counts_boots) {
  for (uint64_t boot = 1; boot <= 3; ++boot) {
    auto s = open();
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(s->boots(), boot);
    EXPECT_EQ(s->options().dir, dir_);
    EXPECT_EQ(s->map_size(), size_t{64} << 20);
    EXPECT_EQ(count(*s, db::meta), 1u);
    for (auto d : {db::snapshots, db::journal, db::outbox, db::idempotency,
                   db::dead_letters})
      EXPECT_EQ(count(*s, d), 0u) << to_string(d);
    std::ifstream lock{dir_ + "/vigil.lock"};
    pid_t pid = 0;
    lock >> pid;
    EXPECT_EQ(pid, ::getpid());
  }
  raw_env raw{dir_};
  ASSERT_EQ(raw.rc(), 0);
  auto rec = raw.get("meta", "format");
  ASSERT_TRUE(rec.has_value());
  records::Meta meta;
  ASSERT_EQ(decode_record(*rec, meta), record_fault::none);
  EXPECT_EQ(meta.format(), 2u);
  EXPECT_NE(meta.node_id(), 0u);
  EXPECT_EQ(meta.boots(), 3u);
  for (auto name : {"meta", "snapshots", "journal", "outbox", "idempotency",
                    "dead_letters"})
    EXPECT_EQ(raw.put(name, "probe", "x"), 0) << name; // the db exists
}

TEST_F(store_test, newer_format_is_refused) {
  std::filesystem::create_directories(dir_);
  {
    raw_env raw{dir_};
    ASSERT_EQ(raw.rc(), 0);
    records::Meta meta;
    meta.set_format(99);
    meta.set_boots(7);
    ASSERT_EQ(raw.put("meta", "format", bytes(meta)), 0);
  }
  std::unique_ptr<store> s;
  auto st = store::open(options(), s);
  EXPECT_EQ(st.code(), store_errc::newer_format);
  EXPECT_EQ(st.message(), "data dir " + dir_
                            + " has format 99; this vigil reads format <= 2: "
                              "upgrade vigil or use another --data-dir");
  EXPECT_EQ(s, nullptr);
  raw_env raw{dir_}; // untouched: still format 99, boot 7
  records::Meta meta;
  ASSERT_EQ(decode_record(raw.get("meta", "format").value(), meta),
            record_fault::none);
  EXPECT_EQ(meta.format(), 99u);
  EXPECT_EQ(meta.boots(), 7u);
}

TEST_F(store_test, unparsable_meta_is_corrupt) {
  std::filesystem::create_directories(dir_);
  {
    raw_env raw{dir_};
    ASSERT_EQ(raw.put("meta", "format", garbage), 0);
  }
  std::unique_ptr<store> s;
  auto st = store::open(options(), s);
  EXPECT_EQ(st.code(), store_errc::corrupt);
  EXPECT_EQ(st.message(), "data dir " + dir_
                            + " [meta] \"format\": neither a framed record "
                              "nor a format 1 vigil.records.Meta: restore the "
                              "data dir from a backup or use another "
                              "--data-dir");
}

TEST_F(store_test, foreign_data_file_is_corrupt) {
  std::filesystem::create_directories(dir_);
  std::ofstream{dir_ + "/data.mdb"} << std::string(64 * kib, 'x');
  std::unique_ptr<store> s;
  auto st = store::open(options(), s);
  // Refused by the check of its meta pages, before LMDB opens it.
  EXPECT_EQ(st.code(), store_errc::corrupt);
  EXPECT_EQ(st.message(),
            dir_ + "/data.mdb has no valid LMDB meta page (page 0: it has no "
                   "LMDB meta page magic; page 1: it has no LMDB meta page "
                   "magic): it is not an LMDB file, or both meta pages are "
                   "damaged. Restore the data dir from a backup or use "
                   "another --data-dir.");
}

TEST_F(store_test, second_open_is_locked_in_process_and_across_processes) {
  auto a = open();
  ASSERT_NE(a, nullptr);
  std::unique_ptr<store> b;
  auto st = store::open(options(), b);
  EXPECT_EQ(st.code(), store_errc::locked);
  EXPECT_EQ(st.message(), "data dir " + dir_ + " is locked by pid "
                            + std::to_string(::getpid()) + " (" + dir_
                            + "/vigil.lock): stop that node or use another "
                              "--data-dir");
  EXPECT_EQ(b, nullptr);
  auto child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    std::unique_ptr<store> c;
    auto cst = store::open(options(), c);
    ::_exit(cst.code() == store_errc::locked ? 0 : 1);
  }
  int wstatus = 0;
  ASSERT_EQ(::waitpid(child, &wstatus, 0), child);
  ASSERT_TRUE(WIFEXITED(wstatus));
  EXPECT_EQ(WEXITSTATUS(wstatus), 0);
  a.reset();
  auto c = open();
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->boots(), 2u);
}

TEST_F(store_test, uncreatable_dir_is_an_io_error) {
  // chmod does not stop root; a regular file in the path stops everyone.
  std::ofstream{root_ + "/file"} << "not a dir";
  auto opts = options();
  opts.dir = root_ + "/file/sub";
  std::unique_ptr<store> s;
  auto st = store::open(opts, s);
  EXPECT_EQ(st.code(), store_errc::io);
  EXPECT_EQ(st.message(), "cannot create data dir " + opts.dir + " (mkdir "
                            + opts.dir + "): Not a directory: choose a "
                              "writable --data-dir or fix its permissions");
  EXPECT_EQ(s, nullptr);
}

TEST_F(store_test, bad_options_are_invalid) {
  std::unique_ptr<store> s;
  EXPECT_EQ(store::open(store_options{}, s).code(), store_errc::invalid);
  auto opts = options();
  opts.max_map_size = opts.map_size - 1;
  auto st = store::open(opts, s);
  EXPECT_EQ(st.code(), store_errc::invalid);
  EXPECT_EQ(st.message(), "max_map_size (67108863) is below map_size "
                          "(67108864): raise max_map_size");
  opts = options();
  opts.map_size = 0;
  EXPECT_EQ(store::open(opts, s).code(), store_errc::invalid);
  EXPECT_FALSE(std::filesystem::exists(dir_));
}

// -- apply --------------------------------------------------------------------

TEST_F(store_test, puts_and_dels_are_recovered) {
  auto s = open();
  ASSERT_NE(s, nullptr);
  ASSERT_TRUE(apply(*s, {put(db::snapshots, "a", bytes(snapshot("a", 0))),
                         put(db::journal, path_key("a", 1),
                             bytes(journal_entry(1))),
                         put(db::journal, path_key("a", 2),
                             bytes(journal_entry(2)))})
                .ok());
  ASSERT_TRUE(apply(*s, {del(db::journal, path_key("a", 1)),
                         del(db::journal, path_key("a", 9)), // absent: fine
                         put(db::snapshots, "a", bytes(snapshot("a", 1)))})
                .ok());
  std::map<std::string, recovered_agent> out;
  std::vector<quarantined> bad;
  ASSERT_TRUE(s->recover(out, bad).ok());
  EXPECT_TRUE(bad.empty());
  ASSERT_EQ(out.size(), 1u);
  auto& a = out.at("a");
  EXPECT_EQ(a.path, "a");
  EXPECT_TRUE(a.has_snapshot);
  EXPECT_EQ(a.snapshot.applied_seq(), 1u);
  EXPECT_EQ(seqs(a.journal), std::vector<uint64_t>{2});
  EXPECT_EQ(a.journal[0].env().id(), 20u);
  EXPECT_TRUE(a.outbox.empty());
}

TEST_F(store_test, guarded_duplicate_applies_nothing) {
  auto s = open();
  ASSERT_NE(s, nullptr);
  std::vector<write_item> items(3);
  items[0].guard = guard_key("a", 0, 100);
  items[0].guard_value = "first";
  items[0].muts = {put(db::journal, path_key("a", 1), bytes(journal_entry(1)))};
  items[1].guard = guard_key("a", 0, 100); // same message id in the same batch
  items[1].guard_value = "second";
  items[1].muts = {put(db::journal, path_key("a", 2), bytes(journal_entry(2)))};
  items[2].muts = {put(db::journal, path_key("b", 1), bytes(journal_entry(1)))};
  std::vector<write_result> res;
  ASSERT_TRUE(apply(*s, items, &res).ok());
  EXPECT_EQ(res, (std::vector<write_result>{write_result::applied,
                                            write_result::duplicate,
                                            write_result::applied}));
  // And again in a later batch.
  std::vector<write_item> again(1);
  again[0].guard = guard_key("a", 0, 100);
  again[0].muts = {put(db::journal, path_key("a", 3), bytes(journal_entry(3)))};
  ASSERT_TRUE(apply(*s, again, &res).ok());
  EXPECT_EQ(res, std::vector<write_result>{write_result::duplicate});
  std::vector<records::JournalEntry> mb;
  ASSERT_TRUE(s->mailbox("a", mb).ok());
  EXPECT_EQ(seqs(mb), std::vector<uint64_t>{1});
  EXPECT_EQ(count(*s, db::idempotency), 1u);
  EXPECT_EQ(count(*s, db::journal), 2u);
}

TEST_F(store_test, dead_letter_seqs_count_up_across_reopen) {
  {
    auto s = open();
    ASSERT_NE(s, nullptr);
    ASSERT_TRUE(apply(*s, {dead_letter("one"), dead_letter("two")}).ok());
    ASSERT_TRUE(apply(*s, {dead_letter("three")}).ok());
  }
  auto s = open();
  ASSERT_NE(s, nullptr);
  ASSERT_TRUE(apply(*s, {dead_letter("four")}).ok());
  std::vector<records::DeadLetter> dls;
  ASSERT_TRUE(s->dead_letters(dls).ok());
  ASSERT_EQ(dls.size(), 4u);
  std::vector<std::string> reasons{"one", "two", "three", "four"};
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(dls[i].seq(), i + 1);
    EXPECT_EQ(dls[i].reason(), reasons[i]);
  }
  size_t removed = 0;
  ASSERT_TRUE(s->remove_dead_letters({2, 42}, false, removed).ok());
  EXPECT_EQ(removed, 1u);
  ASSERT_TRUE(s->remove_dead_letters({}, false, removed).ok());
  EXPECT_EQ(removed, 0u);
  EXPECT_EQ(count(*s, db::dead_letters), 3u);
  ASSERT_TRUE(s->remove_dead_letters({}, true, removed).ok());
  EXPECT_EQ(removed, 3u);
  EXPECT_EQ(count(*s, db::dead_letters), 0u);
  // The seq does not go back while the store is open.
  ASSERT_TRUE(apply(*s, {dead_letter("five")}).ok());
  ASSERT_TRUE(s->dead_letters(dls).ok());
  ASSERT_EQ(dls.size(), 1u);
  EXPECT_EQ(dls[0].seq(), 5u);
}

TEST_F(store_test, failed_batch_keeps_the_dead_letter_seq) {
  auto s = open();
  ASSERT_NE(s, nullptr);
  ASSERT_TRUE(apply(*s, {dead_letter("one")}).ok());
  // An empty key makes mdb_put fail after the append: nothing commits.
  auto st = apply(*s, {dead_letter("lost"), put(db::journal, "", "x")});
  EXPECT_EQ(st.code(), store_errc::invalid);
  EXPECT_EQ(st.lmdb_rc(), MDB_BAD_VALSIZE);
  EXPECT_EQ(st.message(), "lmdb: " + dir_ + " [journal] mdb_put key \"\": "
                            + mdb_strerror(MDB_BAD_VALSIZE)
                            + ": a key is empty or longer than LMDB's maximum "
                              "key size (511 bytes); use shorter agent paths "
                              "or idempotency keys");
  ASSERT_TRUE(apply(*s, {dead_letter("two")}).ok());
  std::vector<records::DeadLetter> dls;
  ASSERT_TRUE(s->dead_letters(dls).ok());
  ASSERT_EQ(dls.size(), 2u);
  EXPECT_EQ(dls[1].seq(), 2u);
  EXPECT_EQ(dls[1].reason(), "two");
}

// -- map growth ---------------------------------------------------------------

TEST_F(store_test, map_grows_on_map_full_up_to_max_map_size) {
  auto opts = options();
  opts.map_size = 64 * kib;
  opts.max_map_size = 64 * mib;
  {
    auto s = open(opts);
    ASSERT_NE(s, nullptr);
    EXPECT_EQ(s->map_size(), 64 * kib);
    for (uint64_t b = 0; b < 8; ++b) // 8 x 64 x 8 KiB = 4 MiB of values
      ASSERT_TRUE(apply(*s, big_batch("a", b * 64, 64, 8 * kib)).ok());
    EXPECT_EQ(count(*s, db::journal), 512u);
    EXPECT_GE(s->map_size(), 4 * mib);
    EXPECT_LE(s->map_size(), 64 * mib);
  }
  // A reopen keeps the grown map although opts.map_size is small.
  auto s = open(opts);
  ASSERT_NE(s, nullptr);
  EXPECT_GE(s->map_size(), 4 * mib);
  std::vector<records::JournalEntry> mb;
  EXPECT_EQ(count(*s, db::journal), 512u);
}

TEST_F(store_test, map_full_at_max_map_size_loses_nothing) {
  auto opts = options();
  opts.map_size = 64 * kib;
  opts.max_map_size = 256 * kib;
  auto s = open(opts);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->map_size(), 64 * kib);
  std::vector<mutation> small;
  for (uint64_t i = 1; i <= 4; ++i)
    small.push_back(
      put(db::journal, path_key("a", i), bytes(journal_entry(i))));
  ASSERT_TRUE(apply(*s, small).ok());
  auto st = apply(*s, big_batch("b", 1, 64, 8 * kib)); // 512 KiB
  EXPECT_EQ(st.code(), store_errc::map_full);
  EXPECT_EQ(st.lmdb_rc(), MDB_MAP_FULL);
  auto& msg = st.message();
  auto head = "lmdb: " + dir_ + " [journal] mdb_put key \"b\\x00";
  EXPECT_EQ(msg.substr(0, head.size()), head) << msg;
  EXPECT_NE(msg.find(std::string{"\": "} + mdb_strerror(MDB_MAP_FULL)
                     + ": the map reached max_map_size; raise max_map_size"),
            std::string::npos)
    << msg;
  EXPECT_NE(st.message().find("(map_size = max_map_size = 262144 bytes)"),
            std::string::npos)
    << st.message();
  EXPECT_EQ(s->map_size(), 256 * kib); // grew 64 -> 128 -> 256 KiB first
  std::map<std::string, recovered_agent> out;
  std::vector<quarantined> bad;
  ASSERT_TRUE(s->recover(out, bad).ok());
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(seqs(out.at("a").journal), (std::vector<uint64_t>{1, 2, 3, 4}));
  // Still usable after the failure.
  ASSERT_TRUE(apply(*s, {put(db::journal, path_key("a", 5),
                             bytes(journal_entry(5)))})
                .ok());
  EXPECT_EQ(count(*s, db::journal), 5u);
}

TEST_F(store_test, readers_run_while_the_map_grows) {
  auto opts = options();
  opts.map_size = 64 * kib;
  auto s = open(opts);
  ASSERT_NE(s, nullptr);
  std::atomic<bool> stop{false};
  std::atomic<size_t> reads{0};
  status reader_error;
  std::thread reader{[&] {
    do {
      size_t n = 0;
      if (auto st = s->count(db::journal, n)) {
        reader_error = st;
        return;
      }
      std::vector<records::JournalEntry> mb;
      if (auto st = s->mailbox("a", mb)) {
        reader_error = st;
        return;
      }
      ++reads;
    } while (!stop);
  }};
  for (uint64_t b = 0; b < 16; ++b)
    ASSERT_TRUE(apply(*s, big_batch("a", b * 16, 16, 16 * kib)).ok());
  stop = true;
  reader.join();
  EXPECT_TRUE(reader_error.ok()) << reader_error.message();
  EXPECT_GE(reads.load(), 1u);
  EXPECT_GE(s->map_size(), 4 * mib);
  EXPECT_EQ(count(*s, db::journal), 256u);
}

TEST_F(store_test, map_grown_by_another_process_is_adopted) {
  auto opts = options();
  opts.map_size = 64 * kib;
  auto s = open(opts);
  ASSERT_NE(s, nullptr);
  ASSERT_EQ(s->map_size(), 64 * kib);
  auto child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // LMDB allows other processes on the env; write past our 64 KiB map.
    raw_env raw{dir_, 8 * mib};
    int rc = raw.rc();
    if (rc == 0)
      rc = raw.put("idempotency", "filler", std::string(mib, 'f'));
    ::_exit(rc == 0 ? 0 : 1);
  }
  int wstatus = 0;
  ASSERT_EQ(::waitpid(child, &wstatus, 0), child);
  ASSERT_TRUE(WIFEXITED(wstatus));
  ASSERT_EQ(WEXITSTATUS(wstatus), 0);
  EXPECT_EQ(count(*s, db::idempotency), 1u); // MDB_MAP_RESIZED handled
  EXPECT_EQ(s->map_size(), 8 * mib);
  ASSERT_TRUE(apply(*s, {put(db::journal, path_key("a", 1),
                             bytes(journal_entry(1)))})
                .ok());
}

// -- recover ------------------------------------------------------------------

TEST_F(store_test, corrupt_records_are_quarantined_once) {
  {
    auto s = open();
    ASSERT_NE(s, nullptr);
    ASSERT_TRUE(apply(*s, {put(db::snapshots, "a", bytes(snapshot("a", 0))),
                           put(db::snapshots, "b", bytes(snapshot("b", 3))),
                           put(db::journal, path_key("a", 1),
                               bytes(journal_entry(1))),
                           put(db::journal, path_key("a", 2),
                               bytes(journal_entry(2))),
                           put(db::journal, path_key("b", 4),
                               bytes(journal_entry(4)))})
                  .ok());
  }
  auto newer = journal_entry(5);
  newer.set_format(3);
  {
    raw_env raw{dir_};
    ASSERT_EQ(raw.rc(), 0);
    ASSERT_EQ(raw.put("snapshots", "c", garbage), 0);
    ASSERT_EQ(raw.put("journal", path_key("a", 3), garbage), 0);
    ASSERT_EQ(raw.put("journal", path_key("b", 5), bytes(newer)), 0);
    ASSERT_EQ(raw.put("outbox", "bad-key", "x"), 0);
  }
  auto s = open();
  ASSERT_NE(s, nullptr);
  std::map<std::string, recovered_agent> out;
  std::vector<quarantined> bad;
  ASSERT_TRUE(s->recover(out, bad).ok());
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out.at("a").snapshot.applied_seq(), 0u);
  EXPECT_EQ(seqs(out.at("a").journal), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(out.at("b").snapshot.applied_seq(), 3u);
  EXPECT_EQ(seqs(out.at("b").journal), std::vector<uint64_t>{4});
  struct expected {
    db where;
    std::string key;
    std::string path;
    std::string raw;
    std::string reason;
  };
  std::vector<expected> want{
    {db::snapshots, "c", "c", garbage,
     "corrupt record in snapshots: no record frame (first byte 0xff, "
     "expected 0x02): bare bytes, as format 1 wrote them, or damage"},
    {db::journal, path_key("a", 3), "a", garbage,
     "corrupt record in journal: no record frame (first byte 0xff, "
     "expected 0x02): bare bytes, as format 1 wrote them, or damage"},
    {db::journal, path_key("b", 5), "b", bytes(newer),
     "record in journal has format 3; this vigil reads format <= 2"},
    {db::outbox, "bad-key", "", "x",
     "corrupt record in outbox: malformed key (expected <path>\\0<8-byte "
     "seq>)"},
  };
  ASSERT_EQ(bad.size(), want.size());
  std::vector<records::DeadLetter> dls;
  ASSERT_TRUE(s->dead_letters(dls).ok());
  ASSERT_EQ(dls.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(bad[i].where, want[i].where) << i;
    EXPECT_EQ(bad[i].key, want[i].key) << i;
    EXPECT_EQ(bad[i].reason, want[i].reason) << i;
    EXPECT_EQ(dls[i].seq(), i + 1);
    EXPECT_EQ(dls[i].format(), store::format);
    EXPECT_EQ(dls[i].db(), to_string(want[i].where)) << i;
    EXPECT_EQ(dls[i].key(), want[i].key) << i;
    EXPECT_EQ(dls[i].path(), want[i].path) << i;
    EXPECT_EQ(dls[i].raw(), want[i].raw) << i;
    EXPECT_EQ(dls[i].reason(), want[i].reason) << i;
    EXPECT_GT(dls[i].unix_ms(), 0);
  }
  EXPECT_EQ(count(*s, db::snapshots), 2u);
  EXPECT_EQ(count(*s, db::journal), 3u);
  EXPECT_EQ(count(*s, db::outbox), 0u);
  // Reported once: the second recovery finds the same agents, nothing bad.
  std::map<std::string, recovered_agent> again;
  ASSERT_TRUE(s->recover(again, bad).ok());
  EXPECT_TRUE(bad.empty());
  EXPECT_EQ(again.size(), 2u);
  EXPECT_EQ(count(*s, db::dead_letters), 4u);
}

TEST_F(store_test, snapshots_skips_and_names_bad_records) {
  {
    auto s = open();
    ASSERT_NE(s, nullptr);
    ASSERT_TRUE(apply(*s, {put(db::snapshots, "a", bytes(snapshot("a", 1))),
                           put(db::snapshots, "c", bytes(snapshot("c", 2)))})
                  .ok());
  }
  {
    raw_env raw{dir_};
    ASSERT_EQ(raw.put("snapshots", "b", garbage), 0);
  }
  auto s = open();
  ASSERT_NE(s, nullptr);
  std::vector<records::Snapshot> snaps;
  std::vector<quarantined> bad;
  ASSERT_TRUE(s->snapshots(snaps, &bad).ok());
  ASSERT_EQ(snaps.size(), 2u);
  EXPECT_EQ(snaps[0].path(), "a");
  EXPECT_EQ(snaps[1].path(), "c");
  ASSERT_EQ(bad.size(), 1u);
  EXPECT_EQ(bad[0].where, db::snapshots);
  EXPECT_EQ(bad[0].key, "b");
  EXPECT_EQ(count(*s, db::snapshots), 3u); // named, not moved
}

TEST_F(store_test, recover_groups_by_path_in_seq_order) {
  auto s = open();
  ASSERT_NE(s, nullptr);
  auto entry = [](const std::string& path, uint64_t seq) {
    return put(db::journal, path_key(path, seq), bytes(journal_entry(seq)));
  };
  auto outbox = [](const std::string& path, uint64_t seq) {
    records::OutboxEntry x;
    x.set_format(store::format);
    x.set_seq(seq);
    x.set_to("elsewhere");
    return put(db::outbox, path_key(path, seq), bytes(x));
  };
  // Out of order, across batches, with seqs whose bytes sort only if big
  // endian (256 > 3), and paths that prefix each other.
  ASSERT_TRUE(apply(*s, {entry("a", 256), entry("ab", 1), entry("a", 3)}).ok());
  ASSERT_TRUE(apply(*s, {entry("a", 1), outbox("a/b", 9), outbox("a/b", 2),
                         entry("a/b", 7)})
                .ok());
  std::map<std::string, recovered_agent> out;
  std::vector<quarantined> bad;
  ASSERT_TRUE(s->recover(out, bad).ok());
  EXPECT_TRUE(bad.empty());
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(seqs(out.at("a").journal), (std::vector<uint64_t>{1, 3, 256}));
  EXPECT_FALSE(out.at("a").has_snapshot);
  EXPECT_EQ(seqs(out.at("ab").journal), std::vector<uint64_t>{1});
  EXPECT_EQ(seqs(out.at("a/b").journal), std::vector<uint64_t>{7});
  ASSERT_EQ(out.at("a/b").outbox.size(), 2u);
  EXPECT_EQ(out.at("a/b").outbox[0].seq(), 2u);
  EXPECT_EQ(out.at("a/b").outbox[1].seq(), 9u);
  std::vector<records::JournalEntry> mb;
  ASSERT_TRUE(s->mailbox("a", mb).ok());
  EXPECT_EQ(seqs(mb), (std::vector<uint64_t>{1, 3, 256}));
  ASSERT_TRUE(s->mailbox("nobody", mb).ok());
  EXPECT_TRUE(mb.empty());
}

// -- keys and modes -----------------------------------------------------------

TEST(store_keys, path_key_round_trips_and_rejects_malformed_keys) {
  auto key = path_key("inv/a", 0x0102030405060708);
  EXPECT_EQ(key, std::string("inv/a\0\x01\x02\x03\x04\x05\x06\x07\x08", 14));
  std::string_view path;
  uint64_t n = 0;
  ASSERT_TRUE(split_path_key(key, path, n));
  EXPECT_EQ(path, "inv/a");
  EXPECT_EQ(n, 0x0102030405060708u);
  ASSERT_TRUE(split_path_key(path_key("", 5), path, n));
  EXPECT_EQ(path, "");
  EXPECT_EQ(n, 5u);
  EXPECT_FALSE(split_path_key("inv/a", path, n));
  EXPECT_FALSE(split_path_key(std::string(8, '\0'), path, n));
  EXPECT_FALSE(split_path_key("inv/a-12345678", path, n));
}

TEST(store_keys, guard_key_round_trips_and_rejects_malformed_keys) {
  auto key = guard_key("inv/a", 0x1112131415161718, 0x0102030405060708);
  EXPECT_EQ(key, std::string("inv/a\0\x11\x12\x13\x14\x15\x16\x17\x18"
                             "\x01\x02\x03\x04\x05\x06\x07\x08",
                             22));
  std::string_view path;
  uint64_t origin = 0;
  uint64_t id = 0;
  ASSERT_TRUE(split_guard_key(key, path, origin, id));
  EXPECT_EQ(path, "inv/a");
  EXPECT_EQ(origin, 0x1112131415161718u);
  EXPECT_EQ(id, 0x0102030405060708u);
  // Same id, other origin: another key.
  EXPECT_NE(guard_key("inv/a", 1, 5), guard_key("inv/a", 2, 5));
  // A format 1 key (path\0id) is not a guard key.
  EXPECT_FALSE(split_guard_key(path_key("inv/a", 5), path, origin, id));
  EXPECT_FALSE(split_guard_key(std::string(16, '\0'), path, origin, id));
}

TEST(store_keys, names_round_trip) {
  for (auto m : {sync_mode::full, sync_mode::nometasync, sync_mode::nosync}) {
    sync_mode parsed = sync_mode::full;
    ASSERT_TRUE(from_string(to_string(m), parsed));
    EXPECT_EQ(parsed, m);
  }
  sync_mode parsed = sync_mode::nosync;
  EXPECT_FALSE(from_string("fsync", parsed));
  EXPECT_EQ(parsed, sync_mode::nosync);
  EXPECT_STREQ(to_string(db::dead_letters), "dead_letters");
  EXPECT_STREQ(to_string(db::idempotency), "idempotency");
  EXPECT_STREQ(to_string(store_errc::newer_format), "newer_format");
  EXPECT_STREQ(to_string(store_errc::map_full), "map_full");
}

TEST_F(store_test, every_sync_mode_opens_and_commits) {
  for (auto m : {sync_mode::full, sync_mode::nometasync, sync_mode::nosync}) {
    auto opts = options();
    opts.dir = root_ + "/" + to_string(m);
    opts.sync = m;
    for (uint64_t boot = 1; boot <= 2; ++boot) {
      auto s = open(opts);
      ASSERT_NE(s, nullptr) << to_string(m);
      EXPECT_EQ(s->boots(), boot);
      EXPECT_EQ(s->options().sync, m);
      ASSERT_TRUE(apply(*s, {put(db::journal, path_key("a", boot),
                                 bytes(journal_entry(boot)))})
                    .ok());
      EXPECT_EQ(count(*s, db::journal), boot) << to_string(m);
    }
  }
}

} // namespace
