// Adversarial review of the wire form of child_spec::tools
// (supervision/src/wire.cpp): wire.hpp promises a lossless round trip and
// that every value read back is judged by check_child_specs as a spec
// written in C++ is.

#include <iostream>

#include <gtest/gtest.h>

#include "vigil/supervision/check.hpp"
#include "vigil/supervision/wire.hpp"

namespace vigil::test {
namespace {

using namespace std::chrono_literals;

supervisor_spec one_child(child_spec c) {
  supervisor_spec s;
  s.children.push_back(std::move(c));
  return s;
}

} // namespace

// A valid override with a sub-millisecond part survives the round trip as
// the next whole millisecond (the wire has millisecond resolution): 1500us
// comes back as 2ms and 500us as 1ms, never as 0, which check_child_specs
// would refuse.
TEST(tool_wire_review_test, sub_millisecond_overrides_round_trip) {
  child_spec c;
  c.id = "c";
  c.agent = "x";
  c.tools["ocr"].timeout = 1500us;
  c.tools["ocr"].attempt_timeout = 500us;
  ASSERT_TRUE(check_tool_override(c.tools["ocr"]).empty());
  ASSERT_TRUE(check_child_specs(one_child(c), nullptr).empty());
  child_spec back;
  ASSERT_FALSE(from_wire(to_wire(c), back));
  ASSERT_EQ(back.tools.count("ocr"), 1u);
  EXPECT_EQ(back.tools["ocr"].timeout, std::optional<vigil::duration>{2ms});
  EXPECT_EQ(back.tools["ocr"].attempt_timeout,
            std::optional<vigil::duration>{1ms});
  auto problems = check_child_specs(one_child(back), nullptr);
  EXPECT_TRUE(problems.empty())
    << "a valid spec is refused after the round trip: "
    << (problems.empty() ? "" : problems.front().to_string());
}

// An absurd timeout on the wire (584 years in ms) is converted to
// nanoseconds in from_wire before any check: the multiplication overflows
// and wraps to 448us, which check_tool_override accepts. A value that
// check_child_specs must refuse is silently read as a different, valid one.
TEST(tool_wire_review_test, an_overflowing_timeout_is_refused_not_wrapped) {
  child_spec valid;
  valid.id = "c";
  valid.agent = "x";
  ASSERT_TRUE(check_child_specs(one_child(valid), nullptr).empty());
  auto w = to_wire(valid);
  auto& t = (*w.mutable_tools())["ocr"];
  // ceil(2^64 / 1e6): times 1e6 it is 2^64 + 448384, i.e. 448384 ns.
  t.set_timeout_ms(18446744073710LL);
  child_spec c;
  auto err = from_wire(w, c);
  if (err)
    SUCCEED() << "refused by from_wire";
  else {
    ASSERT_TRUE(c.tools["ocr"].timeout.has_value());
    auto problems = check_child_specs(one_child(c), nullptr);
    for (auto& p : problems)
      std::cout << p.to_string() << "\n";
    EXPECT_FALSE(problems.empty())
      << "timeout_ms 18446744073710 (584 years) was read as "
      << c.tools["ocr"].timeout->count() << " ns and accepted";
  }
}

} // namespace vigil::test
