// Approvals on a real node with a real data dir: a call asks through the
// desk as a cell does, and a person decides with the real `vigil
// approvals` binary as a child process while the node runs; decision files
// that are corrupt, late or dropped while no node ran; approvals found
// again after a restart.

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include "proto/test.pb.h"
#include "support/approval_records.hpp"
#include "support/eventually.hpp"
#include "support/gate.hpp"
#include "support/process.hpp"
#include "support/temp_dir.hpp"
#include "vigil/actors/approvals.hpp"
#include "vigil/actors/error.hpp"
#include "vigil/node/node.hpp"

using namespace std::chrono_literals;
using namespace vigil;
using namespace vigil::test;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

bool writes_approvals(write_item* const* items, size_t n) {
  for (size_t i = 0; i < n; ++i)
    for (auto& m : items[i]->muts)
      if (m.where == db::approvals)
        return true;
  return false;
}

class approvals_node_test : public ::testing::Test {
protected:
  std::unique_ptr<node> start_node() {
    node_config nc;
    nc.data_dir = dir_;
    nc.sync = sync_mode::nosync;
    nc.approvals_poll = 20ms;
    auto nd = std::make_unique<node>(registry{}, nc);
    auto err = nd->start("root", supervisor_spec{});
    EXPECT_FALSE(err) << describe(err);
    return nd;
  }

  static approval_desk& desk(node& nd) {
    return nd.rt()->approvals();
  }

  /// A call of `pay` by root/payer that needs approval, asked for as a cell
  /// does, and committed.
  std::string ask(node& nd, uint64_t msg, uint64_t expires_ms = 0) {
    auto key = tool_result_key("root/payer", nd.rt()->node_id(), msg, 0);
    vigil::test::Order order;
    order.set_id("inv-" + std::to_string(msg));
    order.set_amount(120);
    auto st = desk(nd).request(
      key, make_approval_record("root/payer", "pay", order, expires_ms));
    EXPECT_TRUE(st) << describe(st.error());
    if (st)
      EXPECT_TRUE(st->pending());
    EXPECT_TRUE(eventually([&] { return stored(nd, key).has_value(); }));
    return key;
  }

  static std::optional<records::ApprovalRecord> stored(node& nd,
                                                       const std::string& k) {
    approval_entry e;
    bool found = false;
    if (get_approval(*nd.rt()->storage(), k, e, found) || !found)
      return std::nullopt;
    return e.rec;
  }

  process_result vigil_cmd(std::vector<std::string> args) {
    args.insert(args.begin(), VIGIL_BIN);
    args.push_back("--data-dir");
    args.push_back(dir_);
    return run_process(args, 30s);
  }

  std::vector<std::string> files_left() {
    std::vector<std::string> out;
    std::error_code ec;
    for (auto& e : fs::directory_iterator{decision_dir(dir_), ec})
      out.push_back(e.path().filename().string());
    return out;
  }

  /// The next approval message `self` receives, within 10 s.
  static std::optional<approval_outcome> next_outcome(caf::scoped_actor& self) {
    std::optional<approval_outcome> out;
    self->receive(
      [&](approval_atom, const approval_outcome& o) { out = o; },
      caf::after(std::chrono::seconds{10}) >> [] {});
    return out;
  }

  temp_dir tmp_;
  std::string dir_ = tmp_.path() + "/data";
};

TEST_F(approvals_node_test, a_person_approves_while_the_node_runs) {
  auto nd = start_node();
  auto key = ask(*nd, 1);
  auto id = approval_id(key);
  auto list = vigil_cmd({"approvals", "list", "--json"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  auto arr = json::parse(list.out, nullptr, false);
  ASSERT_TRUE(arr.is_array()) << list.out;
  ASSERT_EQ(arr.size(), 1u);
  EXPECT_EQ(arr[0]["id"], id);
  EXPECT_EQ(arr[0]["path"], "root/payer");
  EXPECT_EQ(arr[0]["tool"], "pay");
  EXPECT_EQ(arr[0]["request_type"], "vigil.test.Order");
  EXPECT_EQ(arr[0]["request"]["id"], "inv-1");
  auto show = vigil_cmd({"approvals", "show", id.substr(0, 6)});
  ASSERT_EQ(show.exit_code, 0) << show.err;
  EXPECT_TRUE(has(show.out, "\"amount\": \"120\"")) << show.out;

  caf::scoped_actor self{nd->system()};
  ASSERT_FALSE(desk(*nd).wait(key, self->address()));
  auto ok = vigil_cmd({"approvals", "approve", id.substr(0, 8), "--by",
                       "alice", "--reason", "invoice checked"});
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_TRUE(has(ok.out, "approved " + id + " (root/payer, pay) by alice"))
    << ok.out;
  auto got = next_outcome(self);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->key, key);
  EXPECT_TRUE(got->approved());
  EXPECT_EQ(got->by, "alice");
  EXPECT_EQ(got->reason, "invoice checked");
  auto rec = stored(*nd, key);
  ASSERT_TRUE(rec);
  EXPECT_EQ(state_of(*rec), approval_state::approved);
  EXPECT_EQ(rec->decided_by(), "alice");
  EXPECT_EQ(rec->reason(), "invoice checked");
  EXPECT_EQ(got->decided_unix_ms, rec->decided_unix_ms());
  EXPECT_TRUE(files_left().empty());
  // A wait after the decision is answered at once; the call asking again
  // (a retry) finds the decision.
  ASSERT_FALSE(desk(*nd).wait(key, self->address()));
  auto again = next_outcome(self);
  ASSERT_TRUE(again);
  EXPECT_TRUE(again->approved());
  auto st = desk(*nd).request(key, records::ApprovalRecord{});
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->approved());
  EXPECT_EQ(st->decided_by, "alice");
  EXPECT_EQ(st->id, id);
}

TEST_F(approvals_node_test, a_person_rejects_while_the_node_runs) {
  auto nd = start_node();
  auto key = ask(*nd, 2);
  caf::scoped_actor self{nd->system()};
  ASSERT_FALSE(desk(*nd).wait(key, self->address()));
  auto no = vigil_cmd({"approvals", "reject", approval_id(key), "--by", "bob",
                       "--reason", "paid twice"});
  ASSERT_EQ(no.exit_code, 0) << no.err;
  EXPECT_TRUE(has(no.out, "rejected " + approval_id(key))) << no.out;
  auto got = next_outcome(self);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->state, approval_state::rejected);
  EXPECT_EQ(got->by, "bob");
  EXPECT_EQ(got->reason, "paid twice");
  auto st = desk(*nd).state(key);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->state, approval_state::rejected);
  // Approving it now is refused: a decision is final.
  auto late = vigil_cmd({"approvals", "approve", approval_id(key)});
  EXPECT_EQ(late.exit_code, 1) << late.err;
  EXPECT_TRUE(has(late.err, "is rejected by bob")) << late.err;
  EXPECT_EQ(stored(*nd, key)->decided_by(), "bob");
}

// The call's own timeout expires its approval: the waiter hears it, the
// CLI refuses a late approval, and a decision file that arrives anyway is
// dropped without changing the record. A decision made after the record's
// expiry (the call had not timed out yet) expires it instead.
TEST_F(approvals_node_test, an_expired_approval_refuses_a_late_decision) {
  auto nd = start_node();
  auto key = ask(*nd, 3);
  caf::scoped_actor self{nd->system()};
  ASSERT_FALSE(desk(*nd).wait(key, self->address()));
  auto st = desk(*nd).expire(key, "approval timeout (5m) passed");
  ASSERT_TRUE(st);
  EXPECT_EQ(st->state, approval_state::expired);
  auto got = next_outcome(self);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->state, approval_state::expired);
  EXPECT_EQ(got->by, "");
  EXPECT_EQ(got->reason, "approval timeout (5m) passed");
  ASSERT_EQ(state_of(*stored(*nd, key)), approval_state::expired);
  auto late = vigil_cmd({"approvals", "approve", approval_id(key)});
  EXPECT_EQ(late.exit_code, 1) << late.err;
  EXPECT_TRUE(has(late.err, "is expired")) << late.err;
  EXPECT_TRUE(files_left().empty());
  approval_decision d;
  d.id = approval_id(key);
  d.key = key;
  d.by = "mallory";
  d.unix_ms = wall_ms();
  std::string file;
  ASSERT_TRUE(write_decision_file(dir_, d, file).ok());
  EXPECT_TRUE(eventually([&] { return !fs::exists(file); }));
  EXPECT_FALSE(fs::exists(file + ".bad"));
  auto rec = stored(*nd, key);
  EXPECT_EQ(state_of(*rec), approval_state::expired);
  EXPECT_EQ(rec->decided_by(), "");
  // expire after a decision changes nothing and says what won.
  auto again = desk(*nd).expire(key);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->state, approval_state::expired);
  EXPECT_EQ(again->reason, "approval timeout (5m) passed");

  auto key2 = ask(*nd, 4, wall_ms() - 1);
  ASSERT_FALSE(desk(*nd).wait(key2, self->address()));
  d.id = approval_id(key2);
  d.key = key2;
  d.unix_ms = wall_ms();
  ASSERT_TRUE(write_decision_file(dir_, d, file).ok());
  auto got2 = next_outcome(self);
  ASSERT_TRUE(got2);
  EXPECT_EQ(got2->state, approval_state::expired);
  EXPECT_TRUE(has(got2->reason, "before the approval by mallory"))
    << got2->reason;
  EXPECT_TRUE(eventually([&] { return !fs::exists(file); }));
}

TEST_F(approvals_node_test, a_corrupt_decision_file_is_set_aside) {
  auto nd = start_node();
  fs::create_directories(decision_dir(dir_));
  auto junk = decision_dir(dir_) + "/0000000000001-junk.json";
  std::ofstream{junk} << "{\"id\": \"not one\"";
  approval_decision d;
  d.key = tool_result_key("root/nobody", 1, 1, 0);
  d.id = approval_id(d.key);
  d.by = "eve";
  d.unix_ms = wall_ms();
  std::string unknown;
  ASSERT_TRUE(write_decision_file(dir_, d, unknown).ok());
  EXPECT_TRUE(eventually([&] {
    return fs::exists(junk + ".bad") && fs::exists(unknown + ".bad");
  }));
  EXPECT_FALSE(fs::exists(junk));
  EXPECT_FALSE(fs::exists(unknown));
  // The node goes on: an approval still works.
  auto key = ask(*nd, 5);
  auto ok = vigil_cmd({"approvals", "approve", approval_id(key), "--by",
                       "alice"});
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_EQ(state_of(*stored(*nd, key)), approval_state::approved);
  // The .bad files stay for a person to look at.
  EXPECT_EQ(files_left().size(), 2u);
}

// While no node runs, a decision file (a CLI's whose node stopped before
// taking it in) waits; the next start takes it in before any agent runs.
// A CLI decision with no node is applied by the CLI itself.
TEST_F(approvals_node_test, a_decision_made_while_down_counts_at_start) {
  std::string k1, k2, k3;
  {
    auto nd = start_node();
    k1 = ask(*nd, 6);
    k2 = ask(*nd, 7);
    k3 = ask(*nd, 8);
  }
  auto r = vigil_cmd({"approvals", "reject", approval_id(k2), "--by", "carol",
                      "--reason", "no budget"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(has(r.out, "rejected " + approval_id(k2) + " (root/payer, pay) "
                         "by carol"))
    << r.out;
  approval_decision d;
  d.id = approval_id(k1);
  d.key = k1;
  d.by = "bob";
  d.reason = "ok";
  d.unix_ms = wall_ms();
  std::string file;
  ASSERT_TRUE(write_decision_file(dir_, d, file).ok());
  auto nd = start_node();
  // Taken in at the start, before any agent ran: no wait needed.
  auto s1 = desk(*nd).state(k1);
  ASSERT_TRUE(s1);
  EXPECT_TRUE(s1->approved());
  EXPECT_EQ(s1->decided_by, "bob");
  auto s2 = desk(*nd).request(k2, records::ApprovalRecord{});
  ASSERT_TRUE(s2);
  EXPECT_EQ(s2->state, approval_state::rejected);
  EXPECT_EQ(s2->reason, "no budget");
  EXPECT_TRUE(files_left().empty());
  // The one still pending is decided on the new node.
  caf::scoped_actor self{nd->system()};
  ASSERT_FALSE(desk(*nd).wait(k3, self->address()));
  auto ok = vigil_cmd({"approvals", "approve", approval_id(k3), "--by",
                       "dave"});
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  auto got = next_outcome(self);
  ASSERT_TRUE(got);
  EXPECT_TRUE(got->approved());
  EXPECT_EQ(got->by, "dave");
}

TEST_F(approvals_node_test, an_approval_is_found_again_after_a_restart) {
  std::string key;
  records::ApprovalRecord asked;
  {
    auto nd = start_node();
    key = ask(*nd, 9);
    auto ok = vigil_cmd({"approvals", "approve", approval_id(key), "--by",
                         "alice", "--reason", "fine"});
    ASSERT_EQ(ok.exit_code, 0) << ok.err;
  }
  auto nd = start_node();
  vigil::test::Order order;
  order.set_id("inv-9");
  order.set_amount(120);
  // The replayed call asks again with the same key and finds the decision.
  auto st = desk(*nd).request(key, make_approval_record("root/payer", "pay",
                                                        order, 0));
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->approved());
  EXPECT_EQ(st->decided_by, "alice");
  EXPECT_EQ(st->reason, "fine");
  auto rec = stored(*nd, key);
  EXPECT_EQ(rec->request_json(), R"({"id":"inv-9","amount":"120"})");
}

// No decision matches a request before the request is committed: a
// decision file for a record still in the writer waits (it is not set
// aside) and is taken in after the commit.
TEST_F(approvals_node_test, a_decision_waits_for_its_request_to_commit) {
  auto nd = start_node();
  gate held;
  nd->rt()->storage()->set_apply_hook([&](write_item* const* items, size_t n) {
    if (writes_approvals(items, n))
      held.pass();
    return false;
  });
  auto key = tool_result_key("root/payer", nd->rt()->node_id(), 10, 0);
  vigil::test::Order order;
  auto st = desk(*nd).request(
    key, make_approval_record("root/payer", "pay", order, 0));
  ASSERT_TRUE(st);
  ASSERT_TRUE(held.arrived()); // the writer holds the request's commit
  caf::scoped_actor self{nd->system()};
  ASSERT_FALSE(desk(*nd).wait(key, self->address()));
  approval_decision d;
  d.id = approval_id(key);
  d.key = key;
  d.by = "alice";
  d.unix_ms = wall_ms();
  std::string file;
  ASSERT_TRUE(write_decision_file(dir_, d, file).ok());
  desk(*nd).intake(); // as the timer does
  EXPECT_TRUE(fs::exists(file));
  EXPECT_FALSE(fs::exists(file + ".bad"));
  held.open();
  auto got = next_outcome(self);
  ASSERT_TRUE(got);
  EXPECT_TRUE(got->approved());
  EXPECT_EQ(got->by, "alice");
  EXPECT_TRUE(eventually([&] { return !fs::exists(file); }));
  nd->rt()->storage()->set_apply_hook({});
}

// A failed commit of an approval is written again (the writer does not
// retry writes that have a sender to tell).
TEST_F(approvals_node_test, a_failed_commit_is_written_again) {
  auto nd = start_node();
  std::atomic<int> fail{3};
  nd->rt()->storage()->set_apply_hook([&](write_item* const* items, size_t n) {
    return writes_approvals(items, n) && fail.fetch_sub(1) > 0;
  });
  auto key = ask(*nd, 11);
  EXPECT_LE(fail.load(), 0);
  caf::scoped_actor self{nd->system()};
  ASSERT_FALSE(desk(*nd).wait(key, self->address()));
  fail = 2;
  auto ok = vigil_cmd({"approvals", "approve", approval_id(key), "--by",
                       "alice"});
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  auto got = next_outcome(self);
  ASSERT_TRUE(got);
  EXPECT_TRUE(got->approved());
  nd->rt()->storage()->set_apply_hook({});
}

TEST_F(approvals_node_test, a_node_without_a_data_dir_has_no_approvals) {
  node nd{registry{}, node_config{}};
  ASSERT_FALSE(nd.start("root", supervisor_spec{}));
  auto& d = nd.rt()->approvals();
  EXPECT_FALSE(d.attached());
  auto key = tool_result_key("root/payer", 1, 1, 0);
  auto st = d.request(key, records::ApprovalRecord{});
  ASSERT_FALSE(st);
  EXPECT_TRUE(is(st.error(), errc::approval_unavailable));
  EXPECT_TRUE(has(describe(st.error()), "no data dir"))
    << describe(st.error());
  caf::scoped_actor self{nd.system()};
  EXPECT_TRUE(is(d.wait(key, self->address()), errc::approval_unavailable));
  EXPECT_TRUE(is(d.expire(key).error(), errc::approval_unavailable));
}

} // namespace
