// Review 2: what `vigil check` tells a user about policies the error table
// (tests/cli/policy_test.cpp) does not cover. Each test fails at 25c449a.

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "vigil/cli/policy.hpp"

using namespace vigil;
using vigil::cli::load_policy_text;
using vigil::cli::loaded_policy;

namespace {

class dummy : public vigil::agent<> {
public:
  static void define(vigil::handlers<dummy>&) {
  }
};

class strict : public vigil::agent<> {
public:
  static void define(vigil::handlers<strict>&) {
  }
  static std::vector<std::string> check_params(const params& ps) {
    std::vector<std::string> out;
    for (auto& kv : ps)
      out.push_back("strict: unknown param '" + kv.first + "'");
    return out;
  }
};

const registry& types() {
  static const registry r = [] {
    registry t;
    t.add<dummy>("ocr");
    t.add<strict>("strict");
    return t;
  }();
  return r;
}

std::vector<std::string> errors_of(const std::string& yaml) {
  loaded_policy out;
  std::vector<std::string> result;
  for (auto& e : load_policy_text(yaml, "policy.yaml", types(), out))
    result.push_back(e.to_string());
  return result;
}

// A sibling named "x/y" and the child "y" of a sibling supervisor "x" have
// the same path; policy.cpp keys each child's origin by that path
// (origins_[where]), so the nested child's problem is reported on the
// sibling's line, which has no buffer_cap at all.
TEST(review2_policy_test, DISABLED_problem_of_a_nested_child_is_at_its_own_line) {
  auto errs = errors_of("tree:\n"
                        "  children:\n"
                        "    - name: x\n"
                        "      supervisor:\n"
                        "        children:\n"
                        "          - {name: y, agent: ocr, buffer_cap: 0}\n"
                        "    - {name: x/y, agent: ocr}\n");
  // (Named "xy" instead, the same child's problem is at 6:35.)
  auto control = errors_of("tree:\n"
                           "  children:\n"
                           "    - name: x\n"
                           "      supervisor:\n"
                           "        children:\n"
                           "          - {name: y, agent: ocr, buffer_cap: 0}\n"
                           "    - {name: xy, agent: ocr}\n");
  ASSERT_EQ(control, std::vector<std::string>{
                       "policy.yaml:6:35: buffer_cap: allowed: >= 1 "
                       "(invalid_buffer_cap)"});
  std::vector<std::string> expected{
    "policy.yaml:6:35: buffer_cap: allowed: >= 1 (invalid_buffer_cap)",
    "policy.yaml:7:8: name: an id may not contain '/' (invalid_id)"};
  EXPECT_EQ(errs, expected);
}

// params (and buffer_cap, max_deliveries) on a supervisor child mean
// nothing; the policy is accepted and they are dropped without a word,
// where durability on a supervisor is an error ("only agents are
// durable").
TEST(review2_policy_test, params_on_a_supervisor_are_reported) {
  auto errs = errors_of("tree:\n"
                        "  children:\n"
                        "    - name: team\n"
                        "      params: {depth: \"3\"}\n"
                        "      supervisor:\n"
                        "        children:\n"
                        "          - {name: c, agent: ocr}\n");
  EXPECT_FALSE(errs.empty())
    << "params on a supervisor child are accepted and ignored";
}

// The template of a simple_one_for_one supervisor is never checked against
// its agent type's check_params (check.cpp says each start_child checks
// it; it does not), so a param the type refuses passes `vigil check` here
// and every dynamic child then starts with it. (Open: a template may leave
// required params to each start_child, which the type check cannot tell
// from a wrong one; each dynamic start is checked now.)
TEST(review2_policy_test, DISABLED_template_params_are_checked) {
  auto one_for_one = errors_of("tree:\n"
                               "  children:\n"
                               "    - {name: a, agent: strict, "
                               "params: {bogus: \"1\"}}\n");
  ASSERT_EQ(one_for_one.size(), 1u);
  auto simple = errors_of("tree:\n"
                          "  strategy: simple_one_for_one\n"
                          "  children:\n"
                          "    - {name: a, agent: strict, "
                          "params: {bogus: \"1\"}}\n");
  EXPECT_FALSE(simple.empty())
    << "one_for_one reports: " << one_for_one[0];
}

} // namespace
