// A handler refuses an envelope by returning an error (caf::expected<Reply>,
// caf::expected<void> or caf::error) instead of throwing: the requester
// gets the error, an async envelope becomes a dead letter, and the child is
// neither restarted nor charged restart intensity. On real threads and,
// for the journal agent, real LMDB files.
#include <gtest/gtest.h>

#include <chrono>

#include "support/eventually.hpp"
#include "support/temp_dir.hpp"
#include "vigil/node/node.hpp"
#include "proto/test.pb.h"

using namespace vigil;
using namespace vigil::test;
using namespace std::chrono_literals;

namespace {

caf::error negative(int64_t n) {
  return caf::make_error(caf::sec::invalid_argument,
                         "n must be >= 0, got " + std::to_string(n));
}

/// Add: refuses a negative n (expected<Tally>). Ping: refuses a negative n
/// (caf::error). Pong: refuses n == 0 (expected<void>). Get: the state.
class strict : public agent<Tally> {
public:
  static void define(handlers<strict>& h) {
    h.on<Add>([](strict& self, context&, const Add& a) -> caf::expected<Tally> {
      if (a.n() < 0)
        return negative(a.n());
      self.state().set_count(self.state().count() + 1);
      self.state().set_sum(self.state().sum() + a.n());
      return self.state();
    });
    h.on<Ping>([](strict& self, context&, const Ping& p) -> caf::error {
      if (p.n() < 0)
        return negative(p.n());
      self.state().set_count(self.state().count() + 1);
      return {};
    });
    h.on<Pong>([](strict&, context&, const Pong& p) -> caf::expected<void> {
      if (p.n() == 0)
        return negative(0);
      return caf::unit;
    });
    h.on<Get>([](strict& self, context&, const Get&) { return self.state(); });
  }
};

registry strict_registry() {
  registry r;
  r.add<strict>("strict");
  return r;
}

supervisor_spec tree(child_spec c) {
  supervisor_spec spec;
  spec.flags.intensity = 1; // a single restart would be noticed
  spec.children.push_back(std::move(c));
  return spec;
}

Add add(int64_t n) {
  Add a;
  a.set_n(n);
  return a;
}

Tally get(node& nd) {
  auto r = nd.call<Tally>("root/s", Get{}, 5s);
  EXPECT_TRUE(r) << describe(r.error());
  return r ? r->value : Tally{};
}

} // namespace

TEST(refusal_test, a_refused_request_gets_the_error_and_nothing_restarts) {
  node nd{strict_registry()};
  ASSERT_FALSE(nd.start("root", tree(worker("s", "strict"))));
  ASSERT_TRUE(nd.call<Tally>("root/s", add(5), 5s));
  auto r = nd.call<Tally>("root/s", add(-1), 5s);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error(), caf::sec::invalid_argument) << describe(r.error());
  EXPECT_NE(describe(r.error()).find("got -1"), std::string::npos)
    << describe(r.error());
  Ping p;
  p.set_n(-2);
  auto r2 = nd.call<Pong>("root/s", p, 5s);
  ASSERT_FALSE(r2);
  EXPECT_EQ(r2.error(), caf::sec::invalid_argument);
  Pong zero;
  auto r3 = nd.call<Pong>("root/s", zero, 5s);
  ASSERT_FALSE(r3);
  EXPECT_EQ(r3.error(), caf::sec::invalid_argument);
  // The instance lives on: its memory state is intact (a restart of this
  // non-durable agent would have reset it) and no restart was counted.
  EXPECT_EQ(get(nd).count(), 1);
  EXPECT_EQ(nd.rt()->restarts(), 0u);
  ASSERT_FALSE(nd.stop());
}

TEST(refusal_test, a_refused_async_envelope_is_a_dead_letter) {
  node nd{strict_registry()};
  ASSERT_FALSE(nd.start("root", tree(worker("s", "strict"))));
  // More refusals than the restart intensity allows: none is a failure.
  for (int i = 1; i <= 5; ++i)
    ASSERT_FALSE(nd.send("root/s", add(-i)));
  ASSERT_FALSE(nd.send("root/s", add(7)));
  eventually([&] { return nd.dead_letters().size() == 5; }, 5s);
  auto dls = nd.dead_letters();
  ASSERT_EQ(dls.size(), 5u);
  for (auto& dl : dls) {
    EXPECT_EQ(dl.path, "root/s");
    EXPECT_NE(dl.reason.find("n must be >= 0"), std::string::npos)
      << dl.reason;
  }
  auto t = get(nd);
  EXPECT_EQ(t.count(), 1);
  EXPECT_EQ(t.sum(), 7);
  EXPECT_EQ(nd.rt()->restarts(), 0u);
  ASSERT_FALSE(nd.stop());
}

TEST(refusal_test, a_journal_agent_commits_a_refusal_with_its_dead_letter) {
  temp_dir dir;
  node_config nc;
  nc.data_dir = dir.path();
  nc.sync = sync_mode::nosync;
  auto c = worker("s", "strict").with_durability(durability_mode::journal);
  {
    node nd{strict_registry(), nc};
    ASSERT_FALSE(nd.start("root", tree(c)));
    ASSERT_TRUE(nd.call<Tally>("root/s", add(3), 5s));
    call_options once;
    once.message_id = 4242;
    ASSERT_FALSE(nd.send("root/s", add(-4), once));
    auto r = nd.call<Tally>("root/s", add(-5), 5s);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error(), caf::sec::invalid_argument);
    eventually([&] { return !nd.dead_letters().empty(); }, 5s);
    EXPECT_EQ(nd.rt()->restarts(), 0u);
    ASSERT_FALSE(nd.stop());
  }
  std::unique_ptr<store> st;
  store_options so;
  so.dir = dir.path();
  ASSERT_FALSE(store::open(so, st));
  std::vector<records::DeadLetter> dls;
  ASSERT_FALSE(st->dead_letters(dls));
  // Each refusal is a dead letter that names the journal entry that
  // consumed it, so a replay takes it back only once. The refused request
  // is one too, though its requester was told: as for every envelope a
  // journal agent accepted and could not apply, since the requester may be
  // an outbox that now counts it as delivered.
  ASSERT_EQ(dls.size(), 2u);
  EXPECT_EQ(dls[0].env().id(), 4242u);
  for (auto& dl : dls) {
    EXPECT_NE(dl.consumed_seq(), 0u);
    EXPECT_TRUE(dl.journal());
    EXPECT_NE(dl.reason().find("n must be >= 0"), std::string::npos);
  }
  size_t pending = 1;
  ASSERT_FALSE(st->count(db::journal, pending));
  EXPECT_EQ(pending, 0u) << "every refused envelope is consumed";
  st.reset();
  node nd{strict_registry(), nc};
  ASSERT_FALSE(nd.start("root", tree(c)));
  auto t = get(nd);
  EXPECT_EQ(t.count(), 1);
  EXPECT_EQ(t.sum(), 3);
  ASSERT_FALSE(nd.stop());
}
