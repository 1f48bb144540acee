// The built-in agents' params, checked as each agent type says: every bad
// one reported at once, at the position of `params`.

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "vigil/cli/app.hpp"
#include "vigil/cli/policy.hpp"

using namespace vigil;
using vigil::cli::load_policy_text;
using vigil::cli::loaded_policy;

// Params are checked as their agent type says, every one of them, at the
// position of `params`. vigil check used to accept these; vigil run then
// failed one at a time, after the children before the bad one had started.
TEST(policy_params_test, reports_every_bad_param_of_the_builtin_agents) {
  registry builtins;
  vigil::cli::add_builtin_agents(builtins);
  loaded_policy out;
  std::vector<std::string> got;
  for (auto& e : load_policy_text("tree:\n"
                                  "  children:\n"
                                  "    - name: c\n"
                                  "      agent: counter\n"
                                  "      params: {count: abc}\n"
                                  "    - name: f\n"
                                  "      agent: flaky\n"
                                  "      params: {crash_probability: 1.5, "
                                  "delay: soon}\n"
                                  "    - name: s\n"
                                  "      agent: source\n"
                                  "      params: {rate: -1}\n",
                                  "policy.yaml", builtins, out))
    got.push_back(e.to_string());
  std::vector<std::string> want{
    "policy.yaml:5:7: params: counter: unknown param 'count'; allowed: none "
    "(invalid_params)",
    "policy.yaml:8:7: params: flaky: param 'crash_probability' is '1.5'; "
    "allowed: a number in [0, 1] (invalid_params)",
    "policy.yaml:8:7: params: flaky: param 'delay' is 'soon'; allowed: write "
    "it like 250ms, 5s, 2m or 1h (at most 876000h) (invalid_params)",
    "policy.yaml:11:7: params: source: param 'to' is required: the path of "
    "the agent that gets the numbers, e.g. root/counter (invalid_params)",
    "policy.yaml:11:7: params: source: param 'rate' is '-1'; allowed: "
    "messages per second, a number >= 0 (0: as fast as possible) "
    "(invalid_params)"};
  EXPECT_EQ(got, want);
}
