// Approvals in the store (db::approvals) and their decision files, on real
// LMDB files and real folders: ids, lookups by id prefix, the state a
// decision or a timeout makes, decision files good and bad, and taking
// them in without a node.

#include <gtest/gtest.h>

#include <lmdb.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "persistence/store_support.hpp"
#include "support/approval_records.hpp"
#include "vigil/persistence/approvals.hpp"

namespace {

using namespace vigil;
using namespace vigil::test;
namespace fs = std::filesystem;

approval_decision decision_for(const std::string& key, approval_state to,
                               std::string by, std::string reason = {},
                               uint64_t at = wall_ms()) {
  approval_decision d;
  d.id = approval_id(key);
  d.key = key;
  d.to = to;
  d.by = std::move(by);
  d.reason = std::move(reason);
  d.unix_ms = at;
  return d;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream{path, std::ios::binary} << text;
}

std::vector<std::string> names_in(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto& e : fs::directory_iterator{dir, ec})
    out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

TEST(approval_id_test, is_twelve_hex_digits_of_the_keys_sha256) {
  auto k = tool_result_key("a/b", 1, 2, 0);
  auto id = approval_id(k);
  EXPECT_EQ(id.size(), approval_id_size);
  EXPECT_EQ(id.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_EQ(approval_id(k), id); // derived, so stable
  EXPECT_NE(approval_id(tool_result_key("a/b", 1, 2, 1)), id);
  // SHA-256("abc") starts with ba7816bf8f01.
  EXPECT_EQ(approval_id("abc"), "ba7816bf8f01");
  std::string back;
  ASSERT_TRUE(hex_decode(hex_encode(k), back));
  EXPECT_EQ(back, k);
  EXPECT_FALSE(hex_decode("abc", back)); // odd
  EXPECT_FALSE(hex_decode("zz", back));
  EXPECT_TRUE(hex_decode("AbCd", back));
  EXPECT_EQ(back, "\xab\xcd");
}

TEST(approval_id_test, a_request_text_is_bounded_on_a_utf8_boundary) {
  EXPECT_EQ(bound_request_text("{\"a\":1}"), "{\"a\":1}");
  std::string big(10000, 'x');
  auto cut = bound_request_text(big, 100);
  EXPECT_LE(cut.size(), 100u);
  EXPECT_NE(cut.find("bytes cut"), std::string::npos) << cut;
  EXPECT_NE(cut.find("of 10000"), std::string::npos) << cut;
  // A 2-byte character across the cut is not split.
  std::string umlauts;
  for (int i = 0; i < 100; ++i)
    umlauts += "\xc3\xa4";
  auto u = bound_request_text(umlauts, 60);
  auto body = u.substr(0, u.find(" ..."));
  EXPECT_EQ(body.size() % 2, 0u) << u;
  EXPECT_LE(u.size(), 60u);
}

TEST(approval_decide_test, a_pending_record_is_decided_once) {
  auto rec = pending_approval("p", "pay");
  std::string note;
  auto key = tool_result_key("p", 1, 1, 0);
  auto d = decision_for(key, approval_state::approved, "alice", "ok", 1000);
  EXPECT_EQ(decide(rec, d, note), decision_effect::applied);
  EXPECT_EQ(state_of(rec), approval_state::approved);
  EXPECT_EQ(rec.decided_by(), "alice");
  EXPECT_EQ(rec.reason(), "ok");
  EXPECT_EQ(rec.decided_unix_ms(), 1000u);
  // A second decision, even the opposite one, changes nothing.
  auto r = decision_for(key, approval_state::rejected, "bob", "no", 2000);
  EXPECT_EQ(decide(rec, r, note), decision_effect::ignored);
  EXPECT_NE(note.find("approved by alice"), std::string::npos) << note;
  EXPECT_EQ(rec.decided_by(), "alice");
  EXPECT_FALSE(expire_record(rec, 3000, "timeout"));
  EXPECT_EQ(state_of(rec), approval_state::approved);
}

TEST(approval_decide_test, a_decision_after_the_expiry_expires_it) {
  auto key = tool_result_key("p", 1, 1, 0);
  auto rec = pending_approval("p", "pay", 5000);
  std::string note;
  auto d = decision_for(key, approval_state::approved, "alice", "", 5000);
  EXPECT_EQ(decide(rec, d, note), decision_effect::late);
  EXPECT_EQ(state_of(rec), approval_state::expired);
  EXPECT_EQ(rec.decided_by(), "");
  EXPECT_EQ(rec.decided_unix_ms(), 5000u);
  EXPECT_NE(rec.reason().find("alice"), std::string::npos) << rec.reason();
  // expire_record on a pending one, and a state from a newer vigil.
  auto other = pending_approval("p", "pay");
  EXPECT_TRUE(expire_record(other, 42, "approval timeout (10s) passed"));
  EXPECT_EQ(state_of(other), approval_state::expired);
  EXPECT_EQ(other.decided_unix_ms(), 42u);
  auto future = pending_approval("p", "pay");
  future.set_state(9);
  bool known = true;
  state_of(future, &known);
  EXPECT_FALSE(known);
  EXPECT_EQ(decide(future, d, note), decision_effect::ignored);
  EXPECT_FALSE(expire_record(future, 1, "x"));
  EXPECT_EQ(future.state(), 9u);
}

TEST_F(store_test, approvals_are_listed_found_by_id_prefix_and_named) {
  std::vector<std::pair<std::string, records::ApprovalRecord>> recs;
  // 40 keys: some share their ids' first digit, so a 1-digit prefix is
  // ambiguous for one of them at least.
  for (uint64_t i = 0; i < 40; ++i)
    recs.emplace_back(tool_result_key("inv/pay", 7, i, 0),
                      pending_approval("inv/pay", "pay"));
  ASSERT_TRUE(put_approvals(dir_, recs).ok());
  auto s = open();
  ASSERT_NE(s, nullptr);
  std::vector<approval_entry> all;
  ASSERT_TRUE(list_approvals(*s, all).ok());
  ASSERT_EQ(all.size(), 40u);
  std::map<char, int> first;
  for (auto& e : all) {
    EXPECT_EQ(e.id, approval_id(e.key));
    EXPECT_TRUE(e.fault.empty()) << e.fault;
    EXPECT_EQ(e.rec.path(), "inv/pay");
    ++first[e.id[0]];
  }
  auto& target = all[17];
  approval_entry got;
  ASSERT_TRUE(find_approval(*s, target.id, got).ok());
  EXPECT_EQ(got.key, target.key);
  std::string upper = target.id.substr(0, 8);
  for (auto& c : upper)
    c = static_cast<char>(std::toupper(c));
  ASSERT_TRUE(find_approval(*s, upper, got).ok()) << upper;
  EXPECT_EQ(got.key, target.key);
  // Ambiguous: the message names the data dir and the matching ids.
  auto shared = std::find_if(first.begin(), first.end(),
                             [](auto& kv) { return kv.second > 1; });
  ASSERT_NE(shared, first.end());
  auto amb = find_approval(*s, std::string(1, shared->first), got);
  EXPECT_EQ(amb.code(), store_errc::invalid);
  EXPECT_NE(amb.message().find("ambiguous"), std::string::npos);
  EXPECT_NE(amb.message().find(dir_), std::string::npos) << amb.message();
  // Unknown, not hex, too long.
  std::set<std::string> ids;
  for (auto& e : all)
    ids.insert(e.id);
  std::string unknown = "000000000000";
  while (ids.count(unknown) != 0)
    unknown[11]++;
  auto nf = find_approval(*s, unknown, got);
  EXPECT_EQ(nf.code(), store_errc::not_found);
  EXPECT_NE(nf.message().find(unknown), std::string::npos);
  EXPECT_EQ(find_approval(*s, "xyz", got).code(), store_errc::invalid);
  EXPECT_EQ(find_approval(*s, "", got).code(), store_errc::invalid);
  EXPECT_EQ(find_approval(*s, target.id + "0", got).code(),
            store_errc::invalid);
  // The whole key's hex names one even if ids collide.
  ASSERT_TRUE(find_approval(*s, hex_encode(target.key), got).ok());
  EXPECT_EQ(got.key, target.key);
  EXPECT_EQ(find_approval(*s, hex_encode(tool_result_key("zz", 1, 1, 1)), got)
              .code(),
            store_errc::not_found);
  bool found = false;
  ASSERT_TRUE(get_approval(*s, target.key, got, found).ok());
  EXPECT_TRUE(found);
  ASSERT_TRUE(get_approval(*s, tool_result_key("x", 1, 1, 1), got, found)
                .ok());
  EXPECT_FALSE(found);
}

TEST_F(store_test, a_damaged_approval_is_listed_with_its_fault) {
  auto good = tool_result_key("a", 1, 1, 0);
  auto bad = tool_result_key("a", 1, 2, approval_envelope_index);
  ASSERT_TRUE(put_approvals(dir_, {{good, pending_approval("a", "pay")}}).ok());
  ASSERT_EQ(raw_env{dir_}.put("approvals", bad, garbage), 0);
  std::unique_ptr<store> ro;
  ASSERT_TRUE(store::open_read_only(options(), ro).ok());
  std::vector<approval_entry> all;
  ASSERT_TRUE(list_approvals(*ro, all).ok());
  ASSERT_EQ(all.size(), 2u);
  auto& b = all[0].key == bad ? all[0] : all[1];
  EXPECT_NE(b.fault.find("approvals key"), std::string::npos) << b.fault;
  EXPECT_NE(b.fault.find(printable_key(bad)), std::string::npos) << b.fault;
  auto& g = all[0].key == good ? all[0] : all[1];
  EXPECT_TRUE(g.fault.empty());
}

TEST_F(store_test, a_data_dir_without_approvals_reads_as_empty) {
  {
    auto s = open();
    ASSERT_NE(s, nullptr);
  }
  {
    MDB_env* env = nullptr;
    ASSERT_EQ(mdb_env_create(&env), 0);
    ASSERT_EQ(mdb_env_set_maxdbs(env, 16), 0);
    ASSERT_EQ(mdb_env_open(env, dir_.c_str(), 0, 0644), 0);
    MDB_txn* txn = nullptr;
    ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &txn), 0);
    MDB_dbi dbi;
    ASSERT_EQ(mdb_dbi_open(txn, "approvals", 0, &dbi), 0);
    ASSERT_EQ(mdb_drop(txn, dbi, 1), 0);
    ASSERT_EQ(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
  }
  {
    std::unique_ptr<store> ro;
    auto st = store::open_read_only(options(), ro);
    ASSERT_TRUE(st.ok()) << st.message();
    std::vector<approval_entry> all;
    ASSERT_TRUE(list_approvals(*ro, all).ok());
    EXPECT_TRUE(all.empty());
    approval_entry e;
    EXPECT_EQ(find_approval(*ro, "abc", e).code(), store_errc::not_found);
  }
  auto key = tool_result_key("p", 0, 1, 0);
  ASSERT_TRUE(put_approvals(dir_, {{key, pending_approval("p", "pay")}}).ok());
  auto s = open();
  EXPECT_EQ(count(*s, db::approvals), 1u);
}

TEST_F(store_test, a_decision_file_round_trips_and_bad_ones_name_the_field) {
  auto key = tool_result_key("inv/pay", 3, 9, 0);
  auto d = decision_for(key, approval_state::rejected, "alice", "too much");
  std::string path;
  // No data dir: the error names the folder.
  auto none = write_decision_file(dir_, d, path);
  EXPECT_EQ(none.code(), store_errc::io);
  EXPECT_NE(none.message().find(decision_dir(dir_)), std::string::npos)
    << none.message();
  fs::create_directories(dir_);
  auto st = write_decision_file(dir_, d, path);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(fs::path{path}.parent_path().string(), decision_dir(dir_));
  std::vector<std::string> files;
  ASSERT_TRUE(list_decision_files(dir_, files).ok());
  ASSERT_EQ(files, std::vector<std::string>{path});
  approval_decision back;
  std::string why;
  ASSERT_TRUE(read_decision_file(path, back, why)) << why;
  EXPECT_EQ(back.key, key);
  EXPECT_EQ(back.id, d.id);
  EXPECT_EQ(back.to, approval_state::rejected);
  EXPECT_EQ(back.by, "alice");
  EXPECT_EQ(back.reason, "too much");
  EXPECT_EQ(back.unix_ms, d.unix_ms);
  // No temporary file is left, and such files are never listed.
  auto dir = decision_dir(dir_);
  EXPECT_EQ(names_in(dir).size(), 1u);
  write_text(dir + "/.x.json.tmp", "{");
  write_text(dir + "/y.json.bad", "{");
  write_text(dir + "/notes.txt", "hi");
  ASSERT_TRUE(list_decision_files(dir_, files).ok());
  EXPECT_EQ(files.size(), 1u);

  auto hex = hex_encode(key);
  auto id = approval_id(key);
  struct bad_case {
    std::string text;
    std::string says;
  };
  std::vector<bad_case> cases = {
    {"", "not a decision"},
    {"{not json", "not a decision"},
    {R"({"id":")" + id + R"(","key":")" + hex
       + R"(","decision":"approve","by":"a","unix_ms":1,"extra":1})",
     "not a decision"},
    {R"({"id":"zz","key":")" + hex
       + R"(","decision":"approve","by":"a","unix_ms":1})",
     "field \"id\""},
    {R"({"id":"000000000000","key":")" + hex
       + R"(","decision":"approve","by":"a","unix_ms":1})",
     "is not the id of its key"},
    {R"({"id":")" + id + R"(","key":"abc","decision":"approve","by":"a","unix_ms":1})",
     "field \"key\""},
    {R"({"id":")" + id + R"(","key":")" + hex
       + R"(","decision":"maybe","by":"a","unix_ms":1})",
     "field \"decision\""},
    {R"({"id":")" + id + R"(","key":")" + hex
       + R"(","decision":"approve","unix_ms":1})",
     "field \"by\""},
    {R"({"id":")" + id + R"(","key":")" + hex
       + R"(","decision":"reject","by":"a","unix_ms":1})",
     "field \"reason\""},
    {R"({"id":")" + id + R"(","key":")" + hex
       + R"(","decision":"approve","by":"a"})",
     "field \"unix_ms\""},
    {std::string(70000, ' '), "bytes"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    auto p = dir + "/bad" + std::to_string(i) + ".json";
    write_text(p, cases[i].text);
    EXPECT_FALSE(read_decision_file(p, back, why)) << i;
    EXPECT_NE(why.find(p), std::string::npos) << i << ": " << why;
    EXPECT_NE(why.find(cases[i].says), std::string::npos)
      << i << ": " << why;
  }
}

// Without a node, decisions are taken in directly: an approval, a second
// decision about the same approval (ignored), one for an unknown key and a
// corrupt file (both renamed .bad), a late one (expires the record). Taking
// in a file again after its commit (a crash before its delete) changes
// nothing.
TEST_F(store_test, decisions_are_taken_in_once_and_bad_files_kept_aside) {
  auto k1 = tool_result_key("inv/pay", 1, 1, 0);
  auto k2 = tool_result_key("inv/pay", 1, 2, 0);
  auto k3 = tool_result_key("inv/mail", 1, 3, approval_envelope_index);
  auto now = wall_ms();
  ASSERT_TRUE(put_approvals(dir_, {{k1, pending_approval("inv/pay", "pay")},
                                   {k2, pending_approval("inv/pay", "pay")},
                                   {k3, pending_approval("inv/mail", "Mail",
                                                         now - 10)}})
                .ok());
  std::string f1, f1b, f2, f3, f4;
  ASSERT_TRUE(write_decision_file(
                dir_, decision_for(k1, approval_state::approved, "alice",
                                   "looks right", now), f1)
                .ok());
  ASSERT_TRUE(write_decision_file(
                dir_, decision_for(k1, approval_state::rejected, "bob",
                                   "no", now + 1), f1b)
                .ok());
  ASSERT_TRUE(write_decision_file(
                dir_, decision_for(tool_result_key("nobody", 1, 1, 0),
                                   approval_state::approved, "carol"), f4)
                .ok());
  ASSERT_TRUE(write_decision_file(
                dir_, decision_for(k3, approval_state::approved, "dave", "",
                                   now), f3)
                .ok());
  f2 = decision_dir(dir_) + "/9999999999999-corrupt.json";
  write_text(f2, "{\"id\": 12");
  auto s = open();
  ASSERT_NE(s, nullptr);
  std::vector<std::string> log;
  ASSERT_TRUE(take_decisions(*s, log).ok());
  EXPECT_EQ(log.size(), 5u);
  auto logged = [&](const std::string& file, const std::string& says) {
    for (auto& l : log)
      if (l.find(file) != std::string::npos
          && l.find(says) != std::string::npos)
        return true;
    return false;
  };
  EXPECT_TRUE(logged(f1, "approved by alice"));
  EXPECT_TRUE(logged(f1b, "ignored the rejection by bob"));
  EXPECT_TRUE(logged(f4, "no approval has its key"));
  EXPECT_TRUE(logged(f2, "not a decision"));
  EXPECT_TRUE(logged(f3, "refused the approval by dave"));
  // Only the bad ones are left, renamed.
  std::vector<std::string> left;
  for (auto& n : names_in(decision_dir(dir_)))
    left.push_back(decision_dir(dir_) + "/" + n);
  EXPECT_EQ(left, (std::vector<std::string>{f4 + ".bad", f2 + ".bad"}));
  approval_entry e;
  bool found = false;
  ASSERT_TRUE(get_approval(*s, k1, e, found).ok());
  EXPECT_EQ(state_of(e.rec), approval_state::approved);
  EXPECT_EQ(e.rec.decided_by(), "alice");
  EXPECT_EQ(e.rec.reason(), "looks right");
  EXPECT_EQ(e.rec.decided_unix_ms(), now);
  ASSERT_TRUE(get_approval(*s, k2, e, found).ok());
  EXPECT_EQ(state_of(e.rec), approval_state::pending);
  ASSERT_TRUE(get_approval(*s, k3, e, found).ok());
  EXPECT_EQ(state_of(e.rec), approval_state::expired);
  // The same approval's file again, as after a crash between its commit
  // and its delete: ignored, the record unchanged.
  std::string again;
  ASSERT_TRUE(write_decision_file(
                dir_, decision_for(k1, approval_state::approved, "alice",
                                   "looks right", now + 5), again)
                .ok());
  log.clear();
  ASSERT_TRUE(take_decisions(*s, log).ok());
  ASSERT_EQ(log.size(), 1u);
  EXPECT_NE(log[0].find("ignored"), std::string::npos) << log[0];
  EXPECT_FALSE(fs::exists(again));
  ASSERT_TRUE(get_approval(*s, k1, e, found).ok());
  EXPECT_EQ(e.rec.decided_unix_ms(), now);
}

} // namespace
