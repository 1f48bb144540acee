// The fingerprint of a tool call's request (tool_record.hpp): the same
// call gives the same bytes whatever the order of its map entries; another
// tool, type or value gives others. A call's index path, inline or in a
// string, has the same bytes (keys recorded before stay valid).

#include <gtest/gtest.h>

#include <string>

#include "vigil/actors/detail/tool_record.hpp"
#include "vigil/supervision.pb.h"

namespace {

using vigil::detail::call_index;
using vigil::detail::push_index;
using vigil::detail::tool_fingerprint;

std::string hex(const std::string& s) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out += digits[c >> 4];
    out += digits[c & 0xf];
  }
  return out;
}

TEST(tool_record_test, the_fingerprint_is_sha256_of_tool_type_and_bytes) {
  // Computed apart (Python's hashlib) from the length-prefixed parts:
  // "t", "vigil.wire.ChildSpec" and no bytes.
  vigil::wire::ChildSpec empty;
  EXPECT_EQ(hex(tool_fingerprint("t", empty)),
            "b00986ed471ba85a1e79c25f80e05ca59f6eea1500da1470498006737b378c3a");
}

TEST(tool_record_test, map_order_does_not_change_it_and_any_difference_does) {
  vigil::wire::ChildSpec a;
  a.set_id("x");
  for (int i = 0; i < 50; ++i)
    (*a.mutable_params())["k" + std::to_string(i)] = std::to_string(i);
  vigil::wire::ChildSpec b;
  b.set_id("x");
  for (int i = 49; i >= 0; --i)
    (*b.mutable_params())["k" + std::to_string(i)] = std::to_string(i);
  auto fa = tool_fingerprint("pay", a);
  EXPECT_EQ(fa.size(), 32u);
  EXPECT_EQ(fa, tool_fingerprint("pay", b));
  EXPECT_NE(fa, tool_fingerprint("pay2", a));
  (*b.mutable_params())["k7"] = "8";
  EXPECT_NE(fa, tool_fingerprint("pay", b));
  // The parts do not run into each other: tool "ab" with id "c" is not
  // tool "a" with id "bc" (the id's bytes follow the type name).
  vigil::wire::ChildSpec c1, c2;
  c1.set_id("c");
  c2.set_id("bc");
  EXPECT_NE(tool_fingerprint("ab", c1), tool_fingerprint("a", c2));
}

TEST(tool_record_test, an_index_path_is_the_same_inline_and_in_a_string) {
  // Three levels of 4 bytes, then 0xffffffff and a hash (pinned: these
  // bytes are part of recorded keys).
  const char* expected[] = {
    "00000001", "0000000100000002", "000000010000000200000003",
    "fffffffff8a21781ac8b891b", "ffffffff7309d7c1e945e1a9"};
  std::string s;
  call_index ix;
  for (uint32_t i = 1; i <= 5; ++i) {
    push_index(s, i);
    ix.push(i);
    EXPECT_EQ(hex(s), expected[i - 1]);
    EXPECT_EQ(std::string{ix.encode().view()}, s);
  }
  for (uint32_t i = 0; i < 200; ++i) {
    push_index(s, i * 7919);
    ix.push(i * 7919);
    ASSERT_EQ(std::string{ix.encode().view()}, s) << i;
  }
  EXPECT_EQ(s.size(), call_index::capacity);
  // A first level of 0xffffffff (never a handler's call number) reads as
  // a hashed path once 3 levels are there, in both.
  std::string t;
  call_index iy;
  for (uint32_t i : {0xffffffffu, 1u, 2u, 3u, 4u}) {
    push_index(t, i);
    iy.push(i);
    EXPECT_EQ(std::string{iy.encode().view()}, t) << i;
  }
}

} // namespace
