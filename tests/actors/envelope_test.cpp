// The envelope is a CAF message type: it survives CAF's binary serializer
// unchanged, as it must to be persisted or sent to another node.

#include <gtest/gtest.h>

#include <caf/all.hpp>

#include "vigil/actors/envelope.hpp"
#include "vigil/actors/error.hpp"

namespace {

struct config : caf::actor_system_config {
  config() {
    set("scheduler.max-threads", 1);
    add_message_type<vigil::envelope>("vigil.envelope");
  }
};

TEST(envelope_test, round_trips_through_caf_serialization) {
  config cfg;
  caf::actor_system sys{cfg};
  vigil::envelope in;
  in.type = "vigil.test.Ping";
  in.payload = std::string("\x08\x2a\x00\xff", 4);
  in.id = 42;
  in.idempotency_key = "charge-o-1";
  in.deadline = 123456789;
  in.attempt = 3;
  in.trace_id = 7;
  in.sender = "invoices/intake";
  in.flags = vigil::envelope::degraded_flag;
  auto msg = caf::make_message(in);
  std::vector<char> buf;
  caf::binary_serializer sink{sys, buf};
  ASSERT_FALSE(sink(msg));
  caf::message copy;
  caf::binary_deserializer source{sys, buf};
  ASSERT_FALSE(source(copy));
  ASSERT_TRUE(copy.match_elements<vigil::envelope>());
  auto& out = copy.get_as<vigil::envelope>(0);
  EXPECT_EQ(out.type, in.type);
  EXPECT_EQ(out.payload, in.payload);
  EXPECT_EQ(out.id, in.id);
  EXPECT_EQ(out.idempotency_key, in.idempotency_key);
  EXPECT_EQ(out.deadline, in.deadline);
  EXPECT_EQ(out.attempt, in.attempt);
  EXPECT_EQ(out.trace_id, in.trace_id);
  EXPECT_EQ(out.sender, in.sender);
  EXPECT_TRUE(out.degraded());
  // Loading interns the name: the same symbol, not only the same characters.
  EXPECT_EQ(out.type.id(), vigil::symbol{"vigil.test.Ping"}.id());
  // CAF's string inspector sees the characters too.
  EXPECT_NE(caf::to_string(msg).find("vigil.test.Ping"), std::string::npos);
}

TEST(symbol_test, interns_by_content_and_compares_by_identity) {
  std::string name = "vigil.test.";
  name += "Pong";
  vigil::symbol a{name};
  vigil::symbol b{"vigil.test.Pong"};
  vigil::symbol c{"vigil.test.Ping"};
  EXPECT_EQ(a.id(), b.id());
  EXPECT_TRUE(a == b);
  EXPECT_FALSE(a == c);
  EXPECT_TRUE(a == "vigil.test.Pong");
  EXPECT_TRUE(a != "vigil.test.Ping");
  EXPECT_EQ(a.str(), "vigil.test.Pong");
  EXPECT_EQ("type " + a, "type vigil.test.Pong");
  EXPECT_EQ(std::string{"x:"} + a, "x:vigil.test.Pong");
  vigil::symbol empty;
  EXPECT_TRUE(empty.empty());
  EXPECT_EQ(empty, vigil::symbol{""});
  EXPECT_EQ(vigil::symbol_hash{}(a), vigil::symbol_hash{}(b));
}

TEST(envelope_test, errors_render_with_their_context) {
  auto err = vigil::make_error(vigil::errc::deadline_exceeded, "ocr took 2s");
  EXPECT_TRUE(vigil::is(err, vigil::errc::deadline_exceeded));
  EXPECT_FALSE(vigil::is(err, vigil::errc::not_found));
  EXPECT_EQ(vigil::describe(err), "deadline_exceeded: ocr took 2s");
  EXPECT_EQ(vigil::describe(caf::error{}), "normal");
}

} // namespace

#include "vigil/actors/runtime.hpp"

namespace {

TEST(runtime_test, dead_letters_keep_the_newest_up_to_the_cap) {
  vigil::runtime rt{vigil::registry{}, 3};
  for (int i = 1; i <= 5; ++i) {
    vigil::envelope e;
    e.id = static_cast<uint64_t>(i);
    rt.add_dead_letter("a/b", e, "reason " + std::to_string(i));
  }
  auto dl = rt.dead_letters();
  ASSERT_EQ(dl.size(), 3u);
  EXPECT_EQ(dl.front().env.id, 3u);
  EXPECT_EQ(dl.front().seq, 3u);
  EXPECT_EQ(dl.back().reason, "reason 5");
  EXPECT_EQ(rt.dead_letters_dropped(), 2u);
}

TEST(runtime_test, lookup_finds_bound_paths_only) {
  vigil::runtime rt{vigil::registry{}};
  EXPECT_FALSE(rt.lookup("a/b"));
  EXPECT_TRUE(rt.paths().empty());
}

} // namespace
