// The http tool's quick JSON path against protobuf's own parser, the
// reference: on random documents (seeded), wherever the quick path maps a
// document, protobuf must map it too, to the same message; and where
// protobuf refuses one, the quick path must not take it.
//
//   VIGIL_JSON_CASES=N   documents per run (default 20000)
//   VIGIL_JSON_SEED=S    the seed (default fixed; printed on a failure)

#include <cstdlib>
#include <iostream>
#include <random>
#include <string>

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "proto/test.pb.h"
#include "vigil/tools/detail/json_reply.hpp"

using vigil::detail::quick_json_onto;
using vigil::detail::quick_json_type;
namespace pb = google::protobuf;
using nlohmann::json;

namespace {

/// protobuf's verdict on `text` for a JsonAll (ignore_unknown_fields, as
/// the http tool asks).
bool by_protobuf(const std::string& text, vigil::test::JsonAll& out) {
  pb::util::JsonParseOptions o;
  o.ignore_unknown_fields = true;
  return pb::util::JsonStringToMessage(text, &out, o).ok();
}

bool by_quick(const std::string& text, vigil::test::JsonAll& out) {
  bool quick = false;
  auto doc = vigil::detail::parse_json(text, quick);
  return !doc.is_discarded() && quick && quick_json_onto(doc, out);
}

/// Random JSON text for a JsonAll: its fields by either name, unknown
/// keys, and values of every kind, mostly fitting, sometimes not.
class gen {
public:
  explicit gen(uint64_t seed) : rng_(seed) {}

  std::string doc(int depth = 0) {
    std::string out = "{";
    int n = pick(0, 6);
    for (int i = 0; i < n; ++i) {
      if (i > 0)
        out += ",";
      auto [key, kind] = field();
      out += "\"" + key + "\":" + value(kind, depth);
    }
    return out + "}";
  }

private:
  int pick(int lo, int hi) {
    return std::uniform_int_distribution<int>{lo, hi}(rng_);
  }
  bool chance(int pct) {
    return pick(1, 100) <= pct;
  }

  std::pair<std::string, std::string> field() {
    static const std::vector<std::pair<std::string, std::string>> fs = {
      {"i32", "int"},   {"i64", "int"},   {"u32", "uint"},  {"u64", "uint"},
      {"s32", "int"},   {"s64", "int"},   {"f32", "uint"},  {"f64", "uint"},
      {"sf32", "int"},  {"sf64", "int"},  {"fl", "float"},  {"db", "float"},
      {"b", "bool"},    {"s", "string"},  {"child", "msg"}, {"ri", "ints"},
      {"rs", "strings"}, {"rc", "msgs"},  {"oi", "int"},
      {"snakeCaseName", "string"},        {"snake_case_name", "string"},
      {"rd", "floats"}, {"unknown", "any"}, {"I32", "int"}};
    auto& f = fs[static_cast<size_t>(pick(0, int(fs.size()) - 1))];
    return f;
  }

  std::string integer() {
    switch (pick(0, 9)) {
      case 0: return "0";
      case 1: return "-0";
      case 2: return std::to_string(pick(-100, 100));
      case 3: return "2147483647";
      case 4: return "2147483648";
      case 5: return "-2147483649";
      case 6: return "4294967296";
      case 7: return "9223372036854775807";
      case 8: return "18446744073709551615";
      default: return "18446744073709551616";
    }
  }

  std::string number() {
    switch (pick(0, 7)) {
      case 0: return integer();
      case 1: return "1.5";
      case 2: return "1e2";
      case 3: return "-0.0";
      case 4: return "3.4028235e38";
      case 5: return "3.5e38";
      case 6: return "1e400";
      default: return std::to_string(pick(-1000, 1000)) + ".25";
    }
  }

  std::string value(const std::string& kind, int depth) {
    int roll = pick(1, 100);
    if (roll <= 4)
      return "null";
    if (roll <= 10)
      return any(depth);
    if (kind == "int" || kind == "uint") {
      if (chance(30))
        return "\"" + (chance(80) ? integer() : std::string{"0x10"}) + "\"";
      return chance(85) ? integer() : number();
    }
    if (kind == "float")
      return chance(15) ? (chance(50) ? "\"NaN\"" : "\"1.5\"") : number();
    if (kind == "bool")
      return chance(90) ? (chance(50) ? "true" : "false") : "\"true\"";
    if (kind == "string")
      return chance(90) ? "\"t" + std::to_string(pick(0, 99)) + "\"" : "7";
    if (kind == "msg")
      return depth < 3 ? doc(depth + 1) : "{}";
    if (kind == "ints" || kind == "strings" || kind == "msgs"
        || kind == "floats") {
      std::string out = "[";
      int n = pick(0, 4);
      for (int i = 0; i < n; ++i) {
        if (i > 0)
          out += ",";
        out += kind == "ints"      ? value("int", depth)
               : kind == "strings" ? value("string", depth)
               : kind == "floats"  ? value("float", depth)
                                   : (depth < 3 ? doc(depth + 1) : "{}");
      }
      return out + "]";
    }
    return any(depth);
  }

  std::string any(int depth) {
    switch (pick(0, 5)) {
      case 0: return "\"x\"";
      case 1: return number();
      case 2: return "true";
      case 3: return "[1,\"a\"]";
      case 4: return depth < 3 ? doc(depth + 1) : "{}";
      default: return "null";
    }
  }

  std::mt19937_64 rng_;
};

} // namespace

TEST(json_reply_test, types_it_takes_and_those_it_leaves_to_protobuf) {
  EXPECT_TRUE(quick_json_type(vigil::test::JsonAll::descriptor()));
  EXPECT_TRUE(quick_json_type(vigil::test::Pong::descriptor()));
  EXPECT_FALSE(quick_json_type(vigil::test::JsonEnum::descriptor()));
  EXPECT_FALSE(quick_json_type(vigil::test::JsonBytes::descriptor()));
  EXPECT_FALSE(quick_json_type(vigil::test::JsonMap::descriptor()));
  EXPECT_FALSE(quick_json_type(vigil::test::JsonOneof::descriptor()));
  EXPECT_FALSE(quick_json_type(vigil::test::JsonDeep::descriptor()));
  EXPECT_FALSE(quick_json_type(vigil::test::JsonTime::descriptor()));
  EXPECT_FALSE(quick_json_type(nullptr));
}

TEST(json_reply_test, plain_replies_map_as_protobuf_maps_them) {
  for (std::string text :
       {R"({"n":"5","from":"svc","attempt":2})", R"({"n":5})",
        R"({"i64":"-9223372036854775808","u64":"18446744073709551615"})",
        R"({"snakeCaseName":"a","child":{"rc":[{"i32":1},{}]},"rd":[1,2.5]})",
        R"({"unknown":{"deep":[1,2,{"x":null}]},"b":true})", R"({})"}) {
    vigil::test::JsonAll p, q;
    ASSERT_TRUE(by_protobuf(text, p)) << text;
    ASSERT_TRUE(by_quick(text, q)) << text;
    EXPECT_TRUE(pb::util::MessageDifferencer::Equals(p, q))
      << text << "\nprotobuf: " << p.ShortDebugString()
      << "\nquick: " << q.ShortDebugString();
  }
  // Left to protobuf: a fraction, a field named twice, null, text that
  // is not plain digits, out of range.
  for (std::string text :
       {R"({"i32":1.0})", R"({"snakeCaseName":"a","snake_case_name":"b"})",
        R"({"u64":-1,"u64":2})", R"({"child":{"s":"a","s":"b"}})",
        R"({"i64":null})", R"({"i64":"1e3"})", R"({"i32":2147483648})",
        R"({"u32":-1})", R"({"fl":3.5e38})", R"({"s":7})", R"([1])"}) {
    vigil::test::JsonAll q;
    EXPECT_FALSE(by_quick(text, q)) << text;
  }
}

TEST(json_reply_test, random_documents_agree_with_protobuf) {
  auto* cases_env = std::getenv("VIGIL_JSON_CASES");
  auto* seed_env = std::getenv("VIGIL_JSON_SEED");
  int cases = cases_env ? std::atoi(cases_env) : 20000;
  uint64_t seed = seed_env ? std::strtoull(seed_env, nullptr, 10) : 20261206;
  gen g{seed};
  int quick = 0;
  int refused_by_both = 0;
  for (int i = 0; i < cases; ++i) {
    auto text = g.doc();
    vigil::test::JsonAll p, q;
    bool pok = by_protobuf(text, p);
    bool qok = by_quick(text, q);
    if (qok) {
      ++quick;
      ASSERT_TRUE(pok) << "the quick path took what protobuf refuses: "
                       << text << " (VIGIL_JSON_SEED=" << seed << ", case "
                       << i << ")";
      ASSERT_TRUE(pb::util::MessageDifferencer::Equals(p, q))
        << text << "\nprotobuf: " << p.ShortDebugString()
        << "\nquick: " << q.ShortDebugString() << "\n(VIGIL_JSON_SEED="
        << seed << ", case " << i << ")";
    } else if (!pok) {
      ++refused_by_both;
    }
  }
  // Not vacuous: the quick path took a good share, and some documents
  // were refused by both.
  EXPECT_GT(quick, cases / 5) << quick << " of " << cases;
  EXPECT_GT(refused_by_both, cases / 50) << refused_by_both << " of " << cases;
  std::cout << "quick path took " << quick << " of " << cases
            << " documents; both refused " << refused_by_both << "\n";
}
