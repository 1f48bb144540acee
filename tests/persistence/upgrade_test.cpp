// Opening a data dir of format 1 (checked in: tests/fixtures/format1, written
// by vigil at commit edaf770) upgrades it to format 2 in one transaction, or
// refuses with a clear error and leaves it as it was.

#include <gtest/gtest.h>

#include <lmdb.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <google/protobuf/text_format.h>

#include "persistence/store_support.hpp"
#include "vigil/persistence/store.hpp"

using namespace vigil;
namespace fs = std::filesystem;

namespace {

const fs::path fixture = fs::path{VIGIL_FIXTURES} / "format1";

const char* const db_names[] = {"meta",        "snapshots", "journal",
                                "outbox",      "idempotency",
                                "dead_letters"};

std::string hex(const MDB_val& v) {
  static const char* h = "0123456789abcdef";
  std::string o;
  auto p = static_cast<const unsigned char*>(v.mv_data);
  for (size_t i = 0; i < v.mv_size; ++i) {
    o += h[p[i] >> 4];
    o += h[p[i] & 15];
  }
  return o;
}

std::unique_ptr<google::protobuf::Message> record_of(int db) {
  switch (db) {
    case 0: return std::make_unique<records::Meta>();
    case 1: return std::make_unique<records::Snapshot>();
    case 2: return std::make_unique<records::JournalEntry>();
    case 3: return std::make_unique<records::OutboxEntry>();
    case 4: return std::make_unique<records::IdempotencyRecord>();
    default: return std::make_unique<records::DeadLetter>();
  }
}

/// Every record of the data dir in `dir` as manifest.tsv lists them. With
/// `framed` the values are read as format 2 (a value that fails its frame
/// check prints as "FAULT: <why>"), without as format 1 did.
std::vector<std::string> dump(const std::string& dir, bool framed) {
  std::vector<std::string> out;
  MDB_env* env = nullptr;
  EXPECT_EQ(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 8);
  auto rc = mdb_env_open(env, dir.c_str(), MDB_RDONLY, 0644);
  EXPECT_EQ(rc, 0) << dir;
  MDB_txn* t = nullptr;
  if (rc == 0)
    rc = mdb_txn_begin(env, nullptr, MDB_RDONLY, &t);
  for (int i = 0; i < 6 && rc == 0; ++i) {
    MDB_dbi d;
    EXPECT_EQ(mdb_dbi_open(t, db_names[i], 0, &d), 0) << db_names[i];
    MDB_cursor* c = nullptr;
    mdb_cursor_open(t, d, &c);
    MDB_val k, v;
    for (int r = mdb_cursor_get(c, &k, &v, MDB_FIRST); r == 0;
         r = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
      auto m = record_of(i);
      std::string_view bytes{static_cast<const char*>(v.mv_data), v.mv_size};
      std::string text;
      if (framed) {
        if (auto f = decode_record(bytes, *m); f != record_fault::none)
          text = "FAULT: " + describe(f, bytes, *m);
      } else if (!m->ParseFromArray(v.mv_data, static_cast<int>(v.mv_size))) {
        text = "UNPARSED";
      }
      if (text.empty()) {
        google::protobuf::TextFormat::Printer p;
        p.SetSingleLineMode(true);
        p.PrintToString(*m, &text);
      }
      if (i == 0 && text.rfind("FAULT", 0) != 0)
        text = "(meta)";
      out.push_back(std::string{db_names[i]} + "\t" + hex(k) + "\t" + text);
    }
    mdb_cursor_close(c);
  }
  if (t != nullptr)
    mdb_txn_abort(t);
  mdb_env_close(env);
  return out;
}

std::vector<std::string> manifest() {
  std::ifstream in{fixture / "manifest.tsv"};
  EXPECT_TRUE(in.good()) << fixture / "manifest.tsv";
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);)
    out.push_back(line);
  return out;
}

/// The manifest as format 2 keys it: idempotency keys <path>\0<id> become
/// <path>\0<origin 0><id>, re-sorted as LMDB sorts them.
std::vector<std::string> manifest_as_format2() {
  std::vector<std::string> out, idem;
  for (auto& line : manifest()) {
    if (line.rfind("idempotency\t", 0) != 0) {
      out.push_back(line);
      continue;
    }
    auto tab = line.find('\t', 12);
    auto key = line.substr(12, tab - 12);
    key.insert(key.size() - 16, std::string(16, '0'));
    idem.push_back("idempotency\t" + key + line.substr(tab));
  }
  std::sort(idem.begin(), idem.end()); // hex sorts like the bytes
  auto at = std::find_if(out.begin(), out.end(), [](auto& l) {
    return l.rfind("dead_letters\t", 0) == 0;
  });
  out.insert(at, idem.begin(), idem.end());
  return out;
}

class upgrade : public ::testing::Test {
protected:
  void SetUp() override {
    char tmpl[] = "/tmp/vigil-upgrade-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir = tmpl;
    fs::copy_file(fixture / "data.mdb", fs::path{dir} / "data.mdb");
  }
  void TearDown() override {
    fs::remove_all(dir);
  }
  std::string dir;
};

size_t records_in_manifest() {
  auto m = manifest();
  return m.size() - 1; // but meta
}

} // namespace

TEST_F(upgrade, the_fixture_is_format1_as_its_manifest_says) {
  // Guards the test itself: the checked-in file and its manifest agree when
  // read as format 1 did.
  EXPECT_EQ(dump(dir, false), manifest());
  EXPECT_EQ(records_in_manifest(), 791u);
}

TEST_F(upgrade, open_upgrades_every_record_and_keeps_its_content) {
  uint64_t node = 0;
  {
    std::unique_ptr<store> st;
    store_options so;
    so.dir = dir;
    auto s = store::open(so, st);
    ASSERT_FALSE(s) << s.message();
    EXPECT_EQ(st->upgraded_from(), 1u);
    EXPECT_EQ(st->upgraded_records(), records_in_manifest());
    EXPECT_EQ(st->boots(), 3u); // two runs wrote the fixture
    node = st->node_id();
    EXPECT_NE(node, 0u);
  }
  // Every value is framed, and reads as format 1 read it.
  auto after = dump(dir, true);
  EXPECT_EQ(after, manifest_as_format2());
  // Meta is framed too, and says format 2.
  test::raw_env raw{dir};
  ASSERT_EQ(raw.rc(), 0);
  auto mv = raw.get("meta", "format");
  ASSERT_TRUE(mv);
  records::Meta meta;
  ASSERT_EQ(decode_record(*mv, meta), record_fault::none);
  EXPECT_EQ(meta.format(), 2u);
  EXPECT_EQ(meta.node_id(), node);
}

TEST_F(upgrade, an_upgraded_dir_recovers_and_keeps_its_guards) {
  store_options so;
  so.dir = dir;
  {
    std::unique_ptr<store> st;
    ASSERT_FALSE(store::open(so, st));
  }
  std::unique_ptr<store> st;
  auto s = store::open(so, st);
  ASSERT_FALSE(s) << s.message();
  EXPECT_EQ(st->upgraded_from(), 0u); // once only
  std::map<std::string, recovered_agent> found;
  std::vector<quarantined> bad;
  ASSERT_FALSE(st->recover(found, bad));
  EXPECT_TRUE(bad.empty()) << bad.size() << " quarantined, first: "
                           << (bad.empty() ? "" : bad[0].reason);
  ASSERT_EQ(found.count("chaos/counter"), 1u);
  auto& counter = found["chaos/counter"];
  EXPECT_TRUE(counter.has_snapshot);
  EXPECT_EQ(counter.snapshot.applied_seq(), 693u);
  EXPECT_EQ(counter.journal.size(), 27u);
  EXPECT_EQ(found["fx/source"].outbox.size(), 5u);
  // A message id that format 1 accepted is still a duplicate: under origin
  // 0, where a caller's retry of it looks.
  auto& first = counter.journal.front();
  std::vector<write_item> items(1);
  items[0].guard = guard_key("chaos/counter", 0, first.env().id());
  items[0].guard_value = idempotency_value(1);
  std::vector<write_result> res;
  ASSERT_FALSE(test::apply(*st, items, &res));
  EXPECT_EQ(res[0], write_result::duplicate);
  // The same id minted by another node is a different message.
  items[0].guard = guard_key("chaos/counter", st->node_id(), first.env().id());
  ASSERT_FALSE(test::apply(*st, items, &res));
  EXPECT_EQ(res[0], write_result::applied);
  std::vector<records::DeadLetter> dls;
  ASSERT_FALSE(st->dead_letters(dls));
  EXPECT_EQ(dls.size(), 11u);
  for (auto& x : dls)
    EXPECT_EQ(x.reason().find("cannot be read"), std::string::npos)
      << x.reason();
}

TEST_F(upgrade, a_read_only_open_refuses_and_changes_nothing) {
  store_options so;
  so.dir = dir;
  std::unique_ptr<store> st;
  auto s = store::open_read_only(so, st);
  ASSERT_TRUE(s);
  EXPECT_EQ(s.code(), store_errc::older_format);
  EXPECT_NE(s.message().find(dir), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("format 1"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("vigil run"), std::string::npos) << s.message();
  EXPECT_EQ(dump(dir, false), manifest());
}

TEST_F(upgrade, a_failed_upgrade_commits_nothing) {
  // Fill the map (64 MiB, as the fixture's meta page says: LMDB never
  // shrinks it) to the last page, in a database of its own that the dumps
  // do not read. The upgrade, which copies every page it rewrites, then
  // hits MDB_MAP_FULL with no room to grow: the whole transaction is
  // aborted.
  size_t used = 0;
  {
    MDB_env* env = nullptr;
    ASSERT_EQ(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 8);
    ASSERT_EQ(mdb_env_open(env, dir.c_str(), MDB_NOSYNC, 0644), 0);
    MDB_envinfo info;
    mdb_env_info(env, &info);
    used = info.me_mapsize;
    int i = 0;
    // Large values first (overflow pages), then small ones, which take the
    // single free pages that an overflow value cannot.
    for (size_t size : {size_t{1} << 20, size_t{64} << 10, size_t{100}}) {
      std::string filler(size, 'f');
      int rc = 0;
      for (int n = 0; rc == 0 && n < 10000; ++n, ++i) {
        MDB_txn* t = nullptr;
        ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &t), 0);
        MDB_dbi d;
        ASSERT_EQ(mdb_dbi_open(t, "filler", MDB_CREATE, &d), 0);
        char key[16];
        std::snprintf(key, sizeof(key), "%08d", i);
        MDB_val k{8, key};
        MDB_val v{filler.size(), filler.data()};
        rc = mdb_put(t, d, &k, &v, 0);
        if (rc == 0)
          rc = mdb_txn_commit(t);
        else
          mdb_txn_abort(t);
      }
      ASSERT_EQ(rc, MDB_MAP_FULL) << size;
    }
    mdb_env_sync(env, 1);
    mdb_env_close(env);
  }
  EXPECT_EQ(dump(dir, false), manifest());
  store_options so;
  so.dir = dir;
  so.map_size = used;
  so.max_map_size = used;
  std::unique_ptr<store> st;
  auto s = store::open(so, st);
  ASSERT_TRUE(s) << "the upgrade fit in " << used << " bytes; map "
                 << st->map_size() << " upgraded from " << st->upgraded_from()
                 << " records " << st->upgraded_records();
  EXPECT_EQ(s.code(), store_errc::map_full) << s.message();
  EXPECT_NE(s.message().find(dir), std::string::npos) << s.message();
  st.reset();
  // Not a record changed, Meta included (still format 1, bare).
  EXPECT_EQ(dump(dir, false), manifest());
  test::raw_env raw{dir};
  auto mv = raw.get("meta", "format");
  ASSERT_TRUE(mv);
  records::Meta meta;
  EXPECT_EQ(decode_record(*mv, meta), record_fault::unframed);
  ASSERT_TRUE(meta.ParseFromString(*mv));
  EXPECT_EQ(meta.format(), 1u);
}

TEST_F(upgrade, a_damaged_meta_is_refused_by_name) {
  {
    test::raw_env raw{dir};
    ASSERT_EQ(raw.rc(), 0);
    ASSERT_EQ(raw.put("meta", "format",
                      std::string{"\x02\x00\x00\x00\x00garbage", 12}),
              0);
  }
  store_options so;
  so.dir = dir;
  std::unique_ptr<store> st;
  auto s = store::open(so, st);
  ASSERT_TRUE(s);
  EXPECT_EQ(s.code(), store_errc::corrupt);
  EXPECT_NE(s.message().find("[meta] \"format\": checksum mismatch"),
            std::string::npos)
    << s.message();
}
