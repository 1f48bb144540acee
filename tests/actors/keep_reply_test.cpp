// envelope::keep_reply_flag at a journal agent (issue 15): the agent keeps
// its answer with the message id when it consumes the envelope, and a
// resend of the id gets that answer instead of `duplicate`; while the
// envelope still waits in the agent's journal, the resend is answered when
// it is handled. Without the flag a resend is `duplicate`, as before.

#include <gtest/gtest.h>

#include "support/durable_saga_fixture.hpp"
#include "support/temp_dir.hpp"

using namespace std::chrono_literals;
using namespace vigil;
using namespace vigil::test;

namespace {

/// A SagaExecute of order `id` with message id `msg`, asking for its
/// answer to be kept if `keep`.
envelope execute(const std::string& id, uint64_t msg, bool keep) {
  auto in = order_input(id, 3, 1);
  SagaExecute x;
  x.set_input_type(in.type.str());
  x.set_input(in.payload);
  envelope e;
  e.type = type_symbol(x);
  x.SerializeToString(&e.payload);
  e.id = msg;
  if (keep)
    e.flags |= envelope::keep_reply_flag;
  return e;
}

/// Sends `e` to `path` and runs until answered.
const det_node::outcome& call(det_node& n, const std::string& path,
                              const envelope& e) {
  auto t = n.call(det_node::answer::env, n.cell(path), e);
  for (int i = 0; i < 100 && !n.result(t).done; ++i)
    n.advance(10ms);
  return n.result(t);
}

std::string order_of(const envelope& rep) {
  SagaStepOutput out;
  Receipt r;
  if (!out.ParseFromString(rep.payload) || !r.ParseFromString(out.output()))
    return "?";
  return r.order();
}

class keep_reply : public ::testing::Test {
protected:
  void SetUp() override {
    saga_script::get() = saga_script{};
    ASSERT_FALSE(n.start(make_tree({})));
  }
  void TearDown() override {
    if (n.running())
      n.stop();
  }
  temp_dir dir;
  det_node n{dir.path(), durable_types()};
  std::string reserve = step_at("reserve");
};

TEST_F(keep_reply, a_resend_of_a_consumed_envelope_gets_the_kept_reply) {
  auto& first = call(n, reserve, execute("k1", 501, true));
  ASSERT_TRUE(first.done && !first.err) << describe(first.err);
  EXPECT_EQ(order_of(first.reply), "k1");
  auto& again = call(n, reserve, execute("k1", 501, true));
  ASSERT_TRUE(again.done);
  ASSERT_FALSE(again.err) << describe(again.err);
  EXPECT_EQ(order_of(again.reply), "k1");
  EXPECT_EQ(effects_of(n, "reserve").executed, 1); // not run again
  // Also after a crash of the node: the answer is on disk.
  n.crash();
  ASSERT_FALSE(n.start(make_tree({})));
  auto& after = call(n, reserve, execute("k1", 501, true));
  ASSERT_FALSE(after.err) << describe(after.err);
  EXPECT_EQ(order_of(after.reply), "k1");
  EXPECT_EQ(effects_of(n, "reserve").executed, 1);
}

TEST_F(keep_reply, without_the_flag_a_resend_is_a_duplicate) {
  ASSERT_FALSE(call(n, reserve, execute("k2", 502, false)).err);
  auto& again = call(n, reserve, execute("k2", 502, false));
  EXPECT_TRUE(is(again.err, errc::duplicate)) << describe(again.err);
  EXPECT_EQ(effects_of(n, "reserve").executed, 1);
}

TEST_F(keep_reply, a_kept_refusal_is_the_answer_to_a_resend) {
  saga_script::get().execs[{"k3", reserve}] = saga_script::exec::refuse;
  auto& first = call(n, reserve, execute("k3", 503, true));
  EXPECT_TRUE(is(first.err, errc::refused)) << describe(first.err);
  auto& again = call(n, reserve, execute("k3", 503, true));
  EXPECT_TRUE(is(again.err, errc::refused)) << describe(again.err);
  EXPECT_EQ(describe(again.err), describe(first.err));
}

TEST_F(keep_reply, a_resend_while_it_waits_in_the_journal_is_answered_later) {
  // reserve restarts after 1 s once it crashes, keeping what it accepts
  // meanwhile in its journal.
  n.stop();
  auto tree = make_tree({});
  auto& flags =
    const_cast<supervisor_spec&>(*tree.children.back().sup).flags.backoff;
  flags.min = flags.max = 1000ms;
  ASSERT_FALSE(n.start(tree));
  saga_script::get().execs[{"boom", reserve}] = saga_script::exec::crash;
  auto& crashed = call(n, reserve, execute("boom", 600, true));
  EXPECT_TRUE(is(crashed.err, errc::handler_failed)) << describe(crashed.err);
  // Sent with nobody waiting (as a crashed requester's call looks after a
  // restart): accepted, it waits for the next instance.
  ASSERT_TRUE(n.send(reserve, execute("k4", 504, true)));
  n.run();
  auto t = n.call(det_node::answer::env, n.cell(reserve),
                  execute("k4", 504, true));
  n.advance(100ms);
  EXPECT_FALSE(n.result(t).done) << describe(n.result(t).err);
  EXPECT_EQ(effects_of(n, "reserve").executed, 0);
  for (int i = 0; i < 100 && !n.result(t).done; ++i)
    n.advance(50ms);
  ASSERT_TRUE(n.result(t).done);
  ASSERT_FALSE(n.result(t).err) << describe(n.result(t).err);
  EXPECT_EQ(order_of(n.result(t).reply), "k4");
  EXPECT_EQ(effects_of(n, "reserve").executed, 1);
}

} // namespace
