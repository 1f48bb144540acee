// Tests cli/duration.*: the one duration parser, as a table.

#include <chrono>
#include <string>

#include <gtest/gtest.h>

#include "cli/src/duration.hpp"
#include "vigil/supervision/child_spec.hpp"

using namespace std::chrono;
using vigil::cli::parse_duration;

TEST(duration_test, accepts_a_whole_number_and_a_unit_or_0) {
  struct row {
    const char* text;
    milliseconds want;
  };
  for (auto& r : {row{"0", 0ms}, row{"0ms", 0ms}, row{"250ms", 250ms},
                  row{"5s", 5s}, row{"2m", 2min}, row{"1h", 1h},
                  row{"007s", 7s}, row{"876000h", vigil::max_duration},
                  row{"3153600000000ms", vigil::max_duration}}) {
    milliseconds got{-1};
    EXPECT_TRUE(parse_duration(r.text, got)) << r.text;
    EXPECT_EQ(got, r.want) << r.text;
  }
}

TEST(duration_test, rejects_everything_else) {
  for (auto* text :
       {"", "s", "ms", "1", "10", "-1s", "+1s", " 1s", "1s ", "1 s", "1.5s",
        "1e3ms", "1d", "1S", "1sec", "0x10s", "876001h", "2562048h",
        "3153600000001ms", "9223372036854775807ms", "99999999999999999999h"}) {
    milliseconds got{42};
    EXPECT_FALSE(parse_duration(text, got)) << '"' << text << '"';
    EXPECT_EQ(got, 42ms) << "a rejected text leaves the output alone";
  }
}
