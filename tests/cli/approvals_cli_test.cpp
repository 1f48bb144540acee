// `vigil approvals` as a real child process on real data dirs with no node
// running: listing (text and JSON), showing, ids that are bad, unknown or
// ambiguous, arguments that are missing, and decisions that the command
// takes in itself.

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/approval_records.hpp"
#include "support/cli_run.hpp"
#include "support/process.hpp"
#include "support/temp_dir.hpp"

using namespace std::chrono_literals;
using namespace vigil;
using namespace vigil::test;
using nlohmann::json;

namespace {

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

class approvals_cli_test : public ::testing::Test {
protected:
  void SetUp() override {
    dir_ = tmp_.path() + "/data";
    pay_ = tool_result_key("inv/payer", 7, 100, 0);
    mail_ = tool_result_key("inv/mailer", 7, 101, approval_envelope_index);
    done_ = tool_result_key("inv/payer", 7, 99, 0);
    auto mail = pending_approval("inv/mailer", "vigil.test.Mail");
    mail.set_kind(static_cast<uint32_t>(approval_kind::envelope));
    mail.set_expires_unix_ms(wall_ms() + 3600 * 1000);
    auto done = pending_approval("inv/payer", "pay");
    done.set_state(static_cast<uint32_t>(approval_state::approved));
    done.set_decided_by("carol");
    done.set_decided_unix_ms(wall_ms());
    ASSERT_TRUE(put_approvals(dir_, {{pay_, pending_approval("inv/payer",
                                                             "pay")},
                                     {mail_, mail},
                                     {done_, done}})
                  .ok());
  }

  temp_dir tmp_;
  std::string dir_;
  std::string pay_, mail_, done_;
};

TEST_F(approvals_cli_test, list_shows_the_pending_ones_as_text_and_json) {
  auto t = vigil_cmd({"approvals", "list", "--data-dir", dir_});
  ASSERT_EQ(t.exit_code, 0) << t.err;
  EXPECT_TRUE(has(t.out, approval_id(pay_))) << t.out;
  EXPECT_TRUE(has(t.out, approval_id(mail_))) << t.out;
  EXPECT_FALSE(has(t.out, approval_id(done_))) << t.out;
  EXPECT_TRUE(has(t.out, "inv/payer")) << t.out;
  EXPECT_TRUE(has(t.out, "never")) << t.out;
  EXPECT_TRUE(has(t.out, "2 pending approvals in " + dir_)) << t.out;

  auto j = vigil_cmd({"approvals", "list", "--data-dir", dir_, "--json"});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  auto arr = parse(j.out);
  ASSERT_TRUE(arr.is_array());
  ASSERT_EQ(arr.size(), 2u);
  std::map<std::string, json> by_id;
  for (auto& e : arr)
    by_id[e["id"]] = e;
  auto& p = by_id[approval_id(pay_)];
  EXPECT_EQ(p["path"], "inv/payer");
  EXPECT_EQ(p["tool"], "pay");
  EXPECT_EQ(p["kind"], "tool_call");
  EXPECT_EQ(p["state"], "pending");
  EXPECT_EQ(p["key"], hex_encode(pay_));
  EXPECT_EQ(p["request"]["amount"], 120);
  EXPECT_TRUE(p["expires_in_ms"].is_null());
  auto& m = by_id[approval_id(mail_)];
  EXPECT_EQ(m["kind"], "envelope");
  EXPECT_GT(m["expires_in_ms"].get<int64_t>(), 3000 * 1000);

  auto all = vigil_cmd({"approvals", "list", "--data-dir", dir_, "--all",
                        "--json"});
  ASSERT_EQ(all.exit_code, 0) << all.err;
  auto every = parse(all.out);
  ASSERT_EQ(every.size(), 3u);
  for (auto& e : every)
    if (e["id"] == approval_id(done_)) {
      EXPECT_EQ(e["state"], "approved");
      EXPECT_EQ(e["decided_by"], "carol");
    }
}

TEST_F(approvals_cli_test, show_renders_one_approval_by_a_prefix_of_its_id) {
  auto id = approval_id(pay_);
  auto t = vigil_cmd({"approvals", "show", id.substr(0, 6), "--data-dir",
                      dir_});
  ASSERT_EQ(t.exit_code, 0) << t.err;
  EXPECT_TRUE(has(t.out, id)) << t.out;
  EXPECT_TRUE(has(t.out, "inv/payer")) << t.out;
  EXPECT_TRUE(has(t.out, "\"amount\": 120")) << t.out;
  EXPECT_TRUE(has(t.out, "pending")) << t.out;
  auto j = vigil_cmd({"approvals", "show", id, "--data-dir", dir_, "--json"});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  auto o = parse(j.out);
  EXPECT_EQ(o["id"], id);
  EXPECT_EQ(o["request_type"], "vigil.test.Pay");
  EXPECT_EQ(o["request"]["to"], "acme");
}

TEST_F(approvals_cli_test, bad_and_unknown_ids_are_named_with_what_to_do) {
  auto bad = vigil_cmd({"approvals", "show", "xyz!", "--data-dir", dir_});
  EXPECT_EQ(bad.exit_code, 64) << bad.err;
  EXPECT_TRUE(has(bad.err, "\"xyz!\" is not an approval id")) << bad.err;
  EXPECT_TRUE(has(bad.err, "vigil approvals list --data-dir " + dir_))
    << bad.err;
  auto longer = vigil_cmd({"approvals", "approve", approval_id(pay_) + "0",
                           "--data-dir", dir_});
  EXPECT_EQ(longer.exit_code, 64) << longer.err;
  std::string unknown = "000000000000";
  while (unknown == approval_id(pay_).substr(0, 12)
         || unknown == approval_id(mail_) || unknown == approval_id(done_))
    unknown[11]++;
  auto nf = vigil_cmd({"approvals", "approve", unknown, "--data-dir", dir_});
  EXPECT_EQ(nf.exit_code, 1) << nf.err;
  EXPECT_TRUE(has(nf.err, "no approval with id " + unknown)) << nf.err;
  EXPECT_TRUE(has(nf.err, dir_)) << nf.err;
  EXPECT_TRUE(has(nf.err, "Run `vigil approvals list --data-dir " + dir_))
    << nf.err;
  // Nothing was dropped for a refused id.
  EXPECT_FALSE(std::filesystem::exists(decision_dir(dir_)));
}

TEST_F(approvals_cli_test, an_ambiguous_prefix_lists_the_ids_it_matches) {
  std::vector<std::pair<std::string, records::ApprovalRecord>> more;
  for (uint64_t i = 0; i < 40; ++i)
    more.emplace_back(tool_result_key("inv/bulk", 7, i, 0),
                      pending_approval("inv/bulk", "pay"));
  ASSERT_TRUE(put_approvals(dir_, more).ok());
  std::map<char, std::vector<std::string>> by_digit;
  for (auto& [key, rec] : more)
    by_digit[approval_id(key)[0]].push_back(approval_id(key));
  auto shared = std::find_if(by_digit.begin(), by_digit.end(),
                             [](auto& kv) { return kv.second.size() > 1; });
  ASSERT_NE(shared, by_digit.end());
  auto r = vigil_cmd({"approvals", "approve", std::string(1, shared->first),
                      "--data-dir", dir_});
  EXPECT_EQ(r.exit_code, 64) << r.err;
  EXPECT_TRUE(has(r.err, "ambiguous")) << r.err;
  EXPECT_TRUE(has(r.err, shared->second[0]) || has(r.err, shared->second[1]))
    << r.err;
  EXPECT_TRUE(has(r.err, "give more of its digits")) << r.err;
}

TEST_F(approvals_cli_test, reject_needs_a_reason_and_a_data_dir_must_exist) {
  auto id = approval_id(pay_);
  auto r = vigil_cmd({"approvals", "reject", id, "--data-dir", dir_});
  EXPECT_EQ(r.exit_code, 64) << r.err;
  EXPECT_TRUE(has(r.err + r.out, "--reason")) << r.err << r.out;
  auto none = tmp_.path() + "/nowhere";
  auto l = vigil_cmd({"approvals", "list", "--data-dir", none});
  EXPECT_EQ(l.exit_code, 1) << l.err;
  EXPECT_TRUE(has(l.err, "no vigil data dir at \"" + none + "\"")) << l.err;
  auto a = vigil_cmd({"approvals", "approve", id, "--data-dir", none});
  EXPECT_EQ(a.exit_code, 1) << a.err;
  EXPECT_TRUE(has(a.err, none)) << a.err;
  EXPECT_FALSE(std::filesystem::exists(none)); // not created
  auto m = vigil_cmd({"approvals", "list"});
  EXPECT_EQ(m.exit_code, 64) << m.err;
  EXPECT_TRUE(has(m.err + m.out, "--data-dir")) << m.err;
  auto w = vigil_cmd({"approvals", "approve", id, "--data-dir", dir_,
                      "--wait", "soon"});
  EXPECT_EQ(w.exit_code, 64) << w.err;
  EXPECT_TRUE(has(w.err, "--wait")) << w.err;
  auto big = vigil_cmd({"approvals", "reject", id, "--data-dir", dir_,
                        "--reason", std::string(5000, 'x')});
  EXPECT_EQ(big.exit_code, 64) << big.err;
  EXPECT_TRUE(has(big.err, "--reason has 5000 bytes")) << big.err;
  auto bare = vigil_cmd({"approvals"});
  EXPECT_EQ(bare.exit_code, 64) << bare.err;
}

// No node holds the data dir: the command takes its decision in itself,
// and a second decision is refused as final.
TEST_F(approvals_cli_test, without_a_node_a_decision_is_applied_at_once) {
  auto id = approval_id(pay_);
  auto a = vigil_cmd({"approvals", "approve", id.substr(0, 5), "--data-dir",
                      dir_, "--by", "alice", "--reason", "checked"});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_TRUE(has(a.out, "approved " + id + " (inv/payer, pay) by alice"))
    << a.out;
  auto j = vigil_cmd({"approvals", "show", id, "--data-dir", dir_, "--json"});
  auto o = parse(j.out);
  EXPECT_EQ(o["state"], "approved");
  EXPECT_EQ(o["decided_by"], "alice");
  EXPECT_EQ(o["reason"], "checked");
  std::vector<std::string> left;
  ASSERT_TRUE(list_decision_files(dir_, left).ok());
  EXPECT_TRUE(left.empty());
  auto again = vigil_cmd({"approvals", "reject", id, "--data-dir", dir_,
                          "--reason", "changed my mind"});
  EXPECT_EQ(again.exit_code, 1) << again.err;
  EXPECT_TRUE(has(again.err, "is approved by alice")) << again.err;
  EXPECT_TRUE(has(again.err, "a decision is final")) << again.err;

  auto r = vigil_cmd({"approvals", "reject", approval_id(mail_),
                      "--data-dir", dir_, "--by", "bob", "--reason",
                      "spam"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(has(r.out, "rejected " + approval_id(mail_))) << r.out;
  auto l = vigil_cmd({"approvals", "list", "--data-dir", dir_});
  EXPECT_TRUE(has(l.out, "0 pending approvals")) << l.out;
}

TEST_F(approvals_cli_test, an_overdue_approval_cannot_be_decided) {
  auto late = tool_result_key("inv/payer", 7, 200, 0);
  ASSERT_TRUE(put_approvals(dir_, {{late, pending_approval("inv/payer", "pay",
                                                           wall_ms() - 1000)}})
                .ok());
  auto l = vigil_cmd({"approvals", "list", "--data-dir", dir_});
  EXPECT_TRUE(has(l.out, "overdue")) << l.out;
  auto a = vigil_cmd({"approvals", "approve", approval_id(late),
                      "--data-dir", dir_});
  EXPECT_EQ(a.exit_code, 1) << a.err;
  EXPECT_TRUE(has(a.err, "expired at")) << a.err;
  EXPECT_FALSE(std::filesystem::exists(decision_dir(dir_)));
}

TEST_F(approvals_cli_test, a_damaged_record_is_named_and_the_rest_listed) {
  // A record that does not parse, and one in a state from a newer vigil:
  // both named, neither decided; the others still listed.
  auto broken = tool_result_key("inv/payer", 7, 301, 0);
  auto odd = tool_result_key("inv/payer", 7, 300, 0);
  auto rec = pending_approval("inv/payer", "pay");
  rec.set_state(7);
  ASSERT_TRUE(put_approvals(dir_, {{odd, rec}}).ok());
  ASSERT_TRUE(put_raw_approvals(dir_, {{broken, "\x02garbage"}}).ok());
  auto l = vigil_cmd({"approvals", "list", "--data-dir", dir_});
  EXPECT_EQ(l.exit_code, 1) << l.err;
  EXPECT_TRUE(has(l.err, "approval " + approval_id(broken) + " is damaged"))
    << l.err;
  EXPECT_TRUE(has(l.err, printable_key(broken))) << l.err;
  EXPECT_TRUE(has(l.out, approval_id(pay_))) << l.out;
  EXPECT_FALSE(has(l.out, approval_id(odd))) << l.out; // not pending
  auto all = vigil_cmd({"approvals", "list", "--all", "--json", "--data-dir",
                        dir_});
  EXPECT_EQ(all.exit_code, 1) << all.err;
  auto arr = parse(all.out);
  EXPECT_EQ(arr.size(), 5u);
  auto a = vigil_cmd({"approvals", "approve", approval_id(odd), "--data-dir",
                      dir_});
  EXPECT_EQ(a.exit_code, 1) << a.err;
  EXPECT_TRUE(has(a.err, "in state 7 (unknown to this vigil)")) << a.err;
  auto b = vigil_cmd({"approvals", "approve", approval_id(broken),
                      "--data-dir", dir_});
  EXPECT_EQ(b.exit_code, 1) << b.err;
  EXPECT_TRUE(has(b.err, "is damaged, so it cannot be decided")) << b.err;
  EXPECT_FALSE(std::filesystem::exists(decision_dir(dir_)));
}

} // namespace
