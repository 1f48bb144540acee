// Review: the envelope's new fields (origin, trace context, attempt budget)
// survive every representation, and runtime::stamp gives children the
// parent's trace.

#include <gtest/gtest.h>

#include <caf/all.hpp>

#include "actors/src/durable.hpp"
#include "vigil/actors/envelope.hpp"
#include "vigil/actors/runtime.hpp"

namespace {

struct config : caf::actor_system_config {
  config() {
    set("scheduler.max-threads", 1);
    add_message_type<vigil::envelope>("vigil.envelope");
  }
};

vigil::envelope full() {
  vigil::envelope in;
  in.type = "vigil.test.Ping";
  in.payload = std::string("\x08\x2a\x00\xff", 4);
  in.id = 42;
  in.origin = 0xfeedfacecafebeefull;
  in.idempotency_key = "k";
  in.deadline = 123456789;
  in.trace_id = 7;
  in.trace_id_high = 0x1122334455667788ull;
  in.span_id = 0x99aabbccddeeff00ull;
  in.sender = "a/b";
  in.attempt = 3;
  in.attempt_budget = 5;
  in.flags = vigil::envelope::degraded_flag;
  in.trace_flags = vigil::envelope::sampled_flag;
  return in;
}

void expect_same(const vigil::envelope& a, const vigil::envelope& b) {
  EXPECT_EQ(a.type.str(), b.type.str());
  EXPECT_EQ(a.payload, b.payload);
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.origin, b.origin);
  EXPECT_EQ(a.idempotency_key, b.idempotency_key);
  EXPECT_EQ(a.deadline, b.deadline);
  EXPECT_EQ(a.trace_id, b.trace_id);
  EXPECT_EQ(a.trace_id_high, b.trace_id_high);
  EXPECT_EQ(a.span_id, b.span_id);
  EXPECT_EQ(a.sender, b.sender);
  EXPECT_EQ(a.attempt, b.attempt);
  EXPECT_EQ(a.attempt_budget, b.attempt_budget);
  EXPECT_EQ(a.flags, b.flags);
  EXPECT_EQ(a.trace_flags, b.trace_flags);
}

} // namespace

TEST(envelope_review, caf_serialization_keeps_the_new_fields) {
  config cfg;
  caf::actor_system sys{cfg};
  auto in = full();
  std::vector<char> buf;
  caf::binary_serializer sink{sys, buf};
  ASSERT_FALSE(sink(in));
  vigil::envelope out;
  caf::binary_deserializer source{sys, buf};
  ASSERT_FALSE(source(out));
  expect_same(in, out);
}

TEST(envelope_review, record_round_trip_keeps_the_new_fields) {
  auto in = full();
  auto r = vigil::detail::to_record(in);
  std::string bytes;
  ASSERT_TRUE(r.SerializeToString(&bytes));
  vigil::records::Envelope back;
  ASSERT_TRUE(back.ParseFromString(bytes));
  expect_same(in, vigil::detail::from_record(back));
}

TEST(envelope_review, stamp_joins_the_parent_trace) {
  vigil::runtime rt{vigil::registry{}};
  vigil::runtime other{vigil::registry{}};
  EXPECT_NE(rt.node_id(), 0u);
  EXPECT_NE(rt.node_id(), other.node_id());
  vigil::envelope root;
  rt.stamp(root, 0, 0, nullptr);
  EXPECT_EQ(root.origin, rt.node_id());
  EXPECT_EQ(root.span_id, 0u);
  root.trace_flags = vigil::envelope::sampled_flag;
  root.attempt_budget = 4;
  vigil::envelope child;
  rt.stamp(child, 0, 0, &root);
  EXPECT_NE(child.id, root.id);
  EXPECT_EQ(child.trace_id, root.trace_id);
  EXPECT_EQ(child.trace_id_high, root.trace_id_high);
  EXPECT_EQ(child.span_id, root.handling_span());
  EXPECT_EQ(child.trace_flags, root.trace_flags);
  EXPECT_EQ(child.attempt_budget, 4u);
  // A resend under the parent's id (same_id_as) keeps its origin.
  vigil::envelope fwd;
  rt.stamp(fwd, root.id, root.origin, &root);
  EXPECT_EQ(fwd.id, root.id);
  EXPECT_EQ(fwd.origin, root.origin);
  // Ids minted by two runtimes differ as (origin, id).
  vigil::envelope o;
  other.stamp(o, 0, 0, nullptr);
  EXPECT_FALSE(o.origin == root.origin && o.id == root.id);
  // A retried delivery of the parent is a different span.
  auto again = root;
  again.attempt = 2;
  EXPECT_NE(again.handling_span(), root.handling_span());
}
