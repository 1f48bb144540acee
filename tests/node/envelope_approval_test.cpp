// A child whose envelopes wait for a person (child_spec::approval) on a real
// node with a data dir, decided with the real `vigil approvals` binary: the
// envelope runs once approved and the ones behind it wait; a rejection or
// no decision in time answers its requester and it never runs; a journal
// child's wait survives a restart; only the listed types wait.

#include <atomic>
#include <chrono>
#include <future>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/eventually.hpp"
#include "support/approval_cli.hpp"
#include "support/temp_dir.hpp"
#include "support/fixture.hpp"
#include "vigil/node/node.hpp"

using namespace vigil;
using namespace vigil::test;
using namespace std::chrono_literals;

namespace {

std::atomic<int> handled{0};

/// Counts the Pings it handles, answers Pong{n} (and Orders, uncounted).
class gatekeeper : public agent<> {
public:
  explicit gatekeeper(const params&) {
  }
  static void define(handlers<gatekeeper>& h) {
    h.on<Ping>([](gatekeeper&, context&, const Ping& m) -> Pong {
      ++handled;
      Pong p;
      p.set_n(m.n());
      return p;
    });
    // (A type it handles, for approval.types: the node refuses others.)
    h.on<Order>([](gatekeeper&, context&, const Order& o) -> Receipt {
      Receipt r;
      r.set_order(o.id());
      return r;
    });
  }
};

registry gate_types() {
  registry r;
  r.add<gatekeeper>("gatekeeper");
  return r;
}

node_config gate_config(const std::string& dir) {
  node_config cfg;
  cfg.data_dir = dir;
  cfg.sync = sync_mode::nosync;
  cfg.approvals_poll = 20ms;
  return cfg;
}

supervisor_spec gate_tree(durability_mode mode = durability_mode::none,
                          std::chrono::milliseconds timeout = 60s,
                          std::vector<std::string> types = {}) {
  child_spec c;
  c.id = "g";
  c.agent = "gatekeeper";
  c.durability.mode = mode;
  c.approval.required = true;
  c.approval.timeout = timeout;
  c.approval.types = std::move(types);
  supervisor_spec spec;
  spec.children.push_back(c);
  return spec;
}

/// Waits (up to 10 s) until exactly one approval is pending: it is `p[0]`.
bool one_pending(const std::string& dir, std::vector<nlohmann::json>& p) {
  return eventually([&] { return (p = pending_approvals(dir)).size() == 1; },
                    std::chrono::seconds{10});
}

std::string code_of(const caf::error& e) {
  return e.category() == caf::atom("vigil")
           ? to_string(static_cast<errc>(e.code()))
           : describe(e);
}

class envelope_approval_test : public ::testing::Test {
protected:
  void SetUp() override {
    handled = 0;
  }
  temp_dir tmp_;
  std::string dir_ = tmp_.path() + "/data";
};

} // namespace

TEST_F(envelope_approval_test, an_envelope_runs_once_approved_and_the_next_waits) {
  node n{gate_types(), gate_config(dir_)};
  ASSERT_FALSE(n.start("root", gate_tree()));
  auto first = std::async(std::launch::async,
                          [&] { return n.call<Pong>("root/g", ping(1), 30s); });
  std::vector<nlohmann::json> p;
  ASSERT_TRUE(one_pending(dir_, p));
  EXPECT_EQ(p[0].value("path", ""), "root/g");
  EXPECT_EQ(p[0].value("kind", ""), "envelope");
  EXPECT_EQ(p[0]["request"].value("n", ""), "1") << p[0].dump();
  // The second waits behind the first (in order), not for its own approval.
  auto second = std::async(std::launch::async,
                           [&] { return n.call<Pong>("root/g", ping(2), 30s); });
  EXPECT_EQ(pending_approvals(dir_).size(), 1u);
  EXPECT_EQ(handled.load(), 0);
  auto id = p[0].value("id", "");
  auto ok = vigil_cmd(dir_, {"approvals", "approve", id, "--by", "erin"});
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  auto r1 = first.get();
  ASSERT_TRUE(r1) << describe(r1.error());
  EXPECT_EQ(r1->value.n(), 1);
  // Now the second asks, and waits for its own decision.
  ASSERT_TRUE(one_pending(dir_, p));
  EXPECT_EQ(p[0]["request"].value("n", ""), "2");
  ok = vigil_cmd(dir_, {"approvals", "approve", p[0].value("id", ""), "--by",
                        "erin"});
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  auto r2 = second.get();
  ASSERT_TRUE(r2) << describe(r2.error());
  EXPECT_EQ(handled.load(), 2);
}

TEST_F(envelope_approval_test, a_rejected_envelope_answers_and_never_runs) {
  node n{gate_types(), gate_config(dir_)};
  ASSERT_FALSE(n.start("root", gate_tree()));
  auto reply = std::async(std::launch::async,
                          [&] { return n.call<Pong>("root/g", ping(1), 30s); });
  std::vector<nlohmann::json> p;
  ASSERT_TRUE(one_pending(dir_, p));
  auto no = vigil_cmd(dir_, {"approvals", "reject", p[0].value("id", ""),
                             "--by", "frank", "--reason", "duplicate invoice"});
  ASSERT_EQ(no.exit_code, 0) << no.err;
  auto r = reply.get();
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), "approval_rejected");
  EXPECT_NE(describe(r.error()).find("rejected by frank: duplicate invoice"),
            std::string::npos)
    << describe(r.error());
  EXPECT_EQ(handled.load(), 0);
  // The child goes on with the next one.
  auto next = std::async(std::launch::async,
                         [&] { return n.call<Pong>("root/g", ping(2), 30s); });
  ASSERT_TRUE(one_pending(dir_, p));
  ASSERT_EQ(vigil_cmd(dir_, {"approvals", "approve", p[0].value("id", "")})
              .exit_code,
            0);
  ASSERT_TRUE(next.get());
  EXPECT_EQ(handled.load(), 1);
}

TEST_F(envelope_approval_test, a_sent_envelope_not_decided_in_time_is_a_dead_letter) {
  node n{gate_types(), gate_config(dir_)};
  ASSERT_FALSE(n.start("root", gate_tree(durability_mode::none, 200ms)));
  ASSERT_FALSE(n.send("root/g", ping(1)));
  ASSERT_TRUE(eventually([&] { return n.rt()->dead_letter_count() == 1; },
                         10s));
  auto letters = n.rt()->dead_letters();
  ASSERT_EQ(letters.size(), 1u);
  EXPECT_NE(letters[0].reason.find("approval_expired"), std::string::npos)
    << letters[0].reason;
  EXPECT_EQ(handled.load(), 0);
}

TEST_F(envelope_approval_test, a_journal_childs_wait_survives_a_restart) {
  {
    node n{gate_types(), gate_config(dir_)};
    ASSERT_FALSE(n.start("root", gate_tree(durability_mode::journal)));
    ASSERT_FALSE(n.send("root/g", ping(7)));
    std::vector<nlohmann::json> p;
    ASSERT_TRUE(one_pending(dir_, p));
    n.stop();
  }
  auto p = pending_approvals(dir_);
  ASSERT_EQ(p.size(), 1u);
  ASSERT_EQ(vigil_cmd(dir_, {"approvals", "approve", p[0].value("id", ""),
                             "--by", "gil"})
              .exit_code,
            0);
  node n{gate_types(), gate_config(dir_)};
  ASSERT_FALSE(n.start("root", gate_tree(durability_mode::journal)));
  ASSERT_TRUE(eventually([&] { return handled.load() == 1; }, 10s));
  size_t left = 1;
  ASSERT_TRUE(eventually([&] {
    return !n.rt()->storage()->count(db::journal, left) && left == 0;
  }, 10s));
  EXPECT_EQ(handled.load(), 1);
}

TEST_F(envelope_approval_test, only_the_listed_types_wait) {
  node n{gate_types(), gate_config(dir_)};
  ASSERT_FALSE(n.start("root", gate_tree(durability_mode::none, 60s,
                                         {"vigil.test.Order"})));
  auto r = n.call<Pong>("root/g", ping(3), 5s);
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_EQ(handled.load(), 1);
  EXPECT_TRUE(pending_approvals(dir_).empty());
}
