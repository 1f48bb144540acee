// Tests of a policy file's tools (supervision/src/policy_tools.cpp through
// the loader in cli/src/policy.cpp): one row per kind of error with its
// exact message and position, and a complete declaration loaded field by
// field onto tool_decl and tool_override.

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "vigil/builtin.pb.h"
#include "vigil/cli/app.hpp"
#include "vigil/cli/policy.hpp"

using namespace std::chrono_literals;
using namespace vigil;
using vigil::cli::load_policy_text;
using vigil::cli::loaded_policy;

namespace {

const registry& types() {
  static const registry r = [] {
    registry t;
    cli::add_builtin_agents(t); // counter, tool_caller, flaky_tool, ...
    t.add_tool<builtin::ToolRequest, builtin::ToolReply>(
      "llm", [](const builtin::ToolRequest&, tool_call&) {
        return tool_result<builtin::ToolReply>{builtin::ToolReply{}};
      });
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

// A node with one tool `t`, whose declaration continues with `rest` (lines
// indented by 6), and a tree that calls it.
std::string with_tool(const std::string& rest) {
  return "node:\n"                         // 1
         "  tools:\n"                      // 2
         "    t:\n"                        // 3
         "      type: flaky_tool\n"        // 4
         + rest                            // 5...
         + "tree:\n"
           "  children:\n"
           "    - {name: a, agent: tool_caller, params: {tool: t}}\n";
}

struct error_case {
  const char* name;
  std::string yaml;
  std::vector<std::string> expected;
};

std::ostream& operator<<(std::ostream& out, const error_case& x) {
  return out << x.name;
}

const std::string classes
  = "read_only, idempotent_write, non_idempotent_write, irreversible";
const std::string tool_keys = "type, class, timeout, attempt_timeout, retry, "
                              "budget, breaker, bulkhead, rate, cost, http, "
                              "record, fallback, dry_run, approval";

const error_case error_cases[] = {
  {"unknown_key",
   with_tool("      class: read_only\n"
             "      retires: 3\n"),
   {"policy.yaml:6:7: unknown key \"retires\" in tool; allowed: "
    + tool_keys}},
  {"unknown_nested_key",
   with_tool("      class: read_only\n"
             "      breaker: {open: 1s}\n"),
   {"policy.yaml:6:17: unknown key \"open\" in breaker; allowed: enabled, "
    "consecutive_failures, open_for, max_open_for, half_open_probes, "
    "failure_rate, slow_call_rate, slow_call_duration, window, "
    "minimum_calls"}},
  {"bad_class_word",
   with_tool("      class: read\n"),
   {"policy.yaml:5:7: node.tools.t.class: \"read\" is not allowed; allowed: "
    + classes}},
  {"missing_class",
   with_tool("      timeout: 1s\n"),
   {"policy.yaml:3:5: node.tools.t: missing \"class\": write read_only, "
    "idempotent_write, non_idempotent_write or irreversible (what a call "
    "may do to the world decides what is retried)"}},
  {"bad_duration",
   with_tool("      class: read_only\n"
             "      attempt_timeout: 2 seconds\n"),
   {"policy.yaml:6:7: node.tools.t.attempt_timeout: \"2 seconds\" is not a "
    "duration; write it like 250ms, 5s, 2m or 1h (at most 876000h)"}},
  {"wrong_type_checked_once",
   // The rejected value keeps its default: check_tool does not blame it.
   with_tool("      class: read_only\n"
             "      retry: {max_attempts: many}\n"),
   {"policy.yaml:6:15: node.tools.t.retry.max_attempts: expected an "
    "integer, got \"many\""}},
  {"max_attempts_out_of_range",
   with_tool("      class: read_only\n"
             "      retry:\n"
             "        max_attempts: 6\n"),
   {"policy.yaml:7:9: node.tools.t.retry.max_attempts: must be 1 to 5 (the "
    "first attempt included; gRPC's cap)"}},
  {"zero_timeout",
   with_tool("      class: read_only\n"
             "      timeout: 0s\n"),
   {"policy.yaml:6:7: node.tools.t.timeout: must be more than 0 and at "
    "most 168h (every call has a deadline)"}},
  {"retried_irreversible",
   with_tool("      class: irreversible\n"
             "      retry: {max_attempts: 2}\n"),
   {"policy.yaml:6:15: node.tools.t.retry.max_attempts: an irreversible "
    "tool is never retried: max_attempts must be 1"}},
  {"breaker_without_rule",
   with_tool("      class: read_only\n"
             "      breaker: {consecutive_failures: 0}\n"),
   {"policy.yaml:6:7: node.tools.t.breaker: an enabled breaker needs a "
    "rule: consecutive_failures, failure_rate or slow_call_rate"}},
  {"combination_blames_the_field_written",
   // minimum_calls is not written: the breaker it belongs to is blamed.
   with_tool("      class: read_only\n"
             "      breaker: {failure_rate: 0.5, window: 3}\n"),
   {"policy.yaml:6:7: node.tools.t.breaker.minimum_calls: must be 1 to "
    "breaker.window"}},
  {"rate_out_of_range",
   with_tool("      class: read_only\n"
             "      breaker: {failure_rate: 1.5}\n"),
   {"policy.yaml:6:17: node.tools.t.breaker.failure_rate: must be 0 (off) "
    "to 1"}},
  {"budget_savings",
   with_tool("      class: read_only\n"
             "      budget: {max_savings: 0}\n"),
   {"policy.yaml:6:16: node.tools.t.budget.max_savings: must be 1 to "
    "1000000"}},
  {"unknown_implementation",
   "node:\n"
   "  tools:\n"
   "    t:\n"
   "      type: nosuch\n"
   "      class: read_only\n"
   "tree: {}\n",
   {"policy.yaml:4:7: node.tools.t.type: no tool implementation is "
    "registered as \"nosuch\"; register it with registry::add_tool"}},
  {"name_is_no_implementation",
   "node:\n"
   "  tools:\n"
   "    search: {class: read_only}\n"
   "tree: {}\n",
   {"policy.yaml:3:5: node.tools.search.type: no tool implementation is "
    "registered as \"search\" (the tool's name; set \"type\"); register it "
    "with registry::add_tool"}},
  {"bad_tool_name",
   "node:\n"
   "  tools:\n"
   "    \"my llm\": {type: llm, class: read_only}\n"
   "tree: {}\n",
   {"policy.yaml:3:5: node.tools: \"my llm\": a tool's name is 1 to 64 "
    "characters without '/', NUL or spaces"}},
  {"tools_not_a_mapping",
   "node:\n"
   "  tools: [llm]\n"
   "tree: {}\n",
   {"policy.yaml:2:3: node.tools: expected a mapping"}},
  {"tool_not_a_mapping",
   // Said once: no missing class or implementation besides.
   "node:\n"
   "  tools:\n"
   "    llm: fast\n"
   "tree: {}\n",
   {"policy.yaml:3:5: node.tools.llm: expected a mapping"}},
  {"override_of_an_undeclared_tool",
   "node:\n"
   "  tools:\n"
   "    llm: {class: read_only}\n"
   "tree:\n"
   "  children:\n"
   "    - name: a\n"
   "      agent: counter\n"
   "      tools:\n"
   "        lml: {max_attempts: 1}\n",
   {"policy.yaml:9:9: tools.lml: the node declares no tool \"lml\"; "
    "declared: llm"}},
  {"override_without_tools",
   "tree:\n"
   "  children:\n"
   "    - name: a\n"
   "      agent: counter\n"
   "      tools: {llm: {timeout: 1s}}\n",
   {"policy.yaml:5:15: tools.llm: the node declares no tool \"llm\"; "
    "declared: none (declare tools in node.tools)"}},
  {"override_out_of_range",
   "node:\n"
   "  tools:\n"
   "    llm: {class: read_only}\n"
   "tree:\n"
   "  children:\n"
   "    - name: a\n"
   "      agent: counter\n"
   "      tools:\n"
   "        llm: {max_attempts: 0, timeout: 0s, cost_per_agent: -1}\n",
   {"policy.yaml:9:15: tools.llm.max_attempts: must be 1 to 5 "
    "(invalid_tool_override)",
    "policy.yaml:9:32: tools.llm.timeout: must be more than 0 and at most "
    "168h (invalid_tool_override)",
    "policy.yaml:9:45: tools.llm.cost_per_agent: must be 0 (off) to 1e15 "
    "(invalid_tool_override)"}},
  {"override_unknown_key",
   "node:\n"
   "  tools:\n"
   "    llm: {class: read_only}\n"
   "tree:\n"
   "  children:\n"
   "    - name: a\n"
   "      agent: counter\n"
   "      tools:\n"
   "        llm: {retries: 2}\n",
   {"policy.yaml:9:15: unknown key \"retries\" in tool_override; allowed: "
    "timeout, attempt_timeout, max_attempts, cost_per_agent"}},
  {"override_on_a_supervisor",
   "node:\n"
   "  tools:\n"
   "    llm: {class: read_only}\n"
   "tree:\n"
   "  children:\n"
   "    - name: s\n"
   "      supervisor: {}\n"
   "      tools: {llm: {}}\n",
   {"policy.yaml:8:7: tools: only agents call tools; set it on the "
    "supervisor's children"}},
};

class tool_policy_errors : public testing::TestWithParam<error_case> {};

TEST_P(tool_policy_errors, reports_exact_message_and_position) {
  auto& row = GetParam();
  EXPECT_EQ(errors_of(row.yaml), row.expected) << row.yaml;
}

INSTANTIATE_TEST_SUITE_P(rows, tool_policy_errors,
                         testing::ValuesIn(error_cases),
                         [](const testing::TestParamInfo<error_case>& x) {
                           return std::string{x.param.name};
                         });

// -- several errors at once ---------------------------------------------------

TEST(tools_policy_test, reports_every_problem_of_every_tool_in_file_order) {
  auto yaml = "node:\n"                                     // 1
              "  tools:\n"                                  // 2
              "    a: {type: llm, class: write}\n"          // 3
              "    b: {type: llm, class: read_only, rate: {per_second: -1}}\n"
              "    c: {class: read_only}\n"                 // 5
              "tree:\n"                                     // 6
              "  children:\n"                               // 7
              "    - name: x\n"                             // 8
              "      agent: counter\n"                      // 9
              "      tools: {a: {max_attempts: 9}, d: {}}\n"; // 10
  std::vector<std::string> expected{
    "policy.yaml:3:20: node.tools.a.class: \"write\" is not allowed; "
    "allowed: "
      + classes,
    "policy.yaml:4:45: node.tools.b.rate.per_second: must be 0 (off) to "
    "1e9",
    "policy.yaml:5:5: node.tools.c.type: no tool implementation is "
    "registered as \"c\" (the tool's name; set \"type\"); register it with "
    "registry::add_tool",
    "policy.yaml:10:19: tools.a.max_attempts: must be 1 to 5 "
    "(invalid_tool_override)",
    "policy.yaml:10:37: tools.d: the node declares no tool \"d\"; declared: "
    "a, b, c",
  };
  EXPECT_EQ(errors_of(yaml), expected);
}

// -- a complete declaration ---------------------------------------------------

const char* full_policy = R"(node:
  tools:
    search:
      type: flaky_tool
      class: idempotent_write
      timeout: 12s
      attempt_timeout: 3s
      retry: {max_attempts: 4, initial: 50ms, multiplier: 3, max: 2s,
              retry_invalid_output: false}
      budget: {ratio: 0.25, min_per_second: 0, max_savings: 20}
      breaker:
        enabled: true
        consecutive_failures: 0
        open_for: 2s
        max_open_for: 1m
        half_open_probes: 2
        failure_rate: 0.5
        slow_call_rate: 0.75
        slow_call_duration: 800ms
        window: 40
        minimum_calls: 10
      bulkhead: {max_concurrent: 2, queue: 0}
      rate: {per_second: 5.5, burst: 3}
      cost: {limit: 1000, per_agent: 100, per: 1m}
    llm: {class: read_only}
    pay: {type: llm, class: irreversible}
tree:
  children:
    - name: a
      agent: tool_caller
      params: {tool: search}
      tools:
        search: {timeout: 4s, attempt_timeout: 1s, max_attempts: 2,
                 cost_per_agent: 7.5}
        llm: {max_attempts: 1}
    - name: b
      agent: tool_caller
      params: {tool: llm}
)";

TEST(tools_policy_test, loads_every_field_of_a_tool_and_of_an_override) {
  loaded_policy lp;
  auto errs = load_policy_text(full_policy, "policy.yaml", types(), lp);
  ASSERT_TRUE(errs.empty()) << errs.front().to_string();
  auto& tools = lp.node.tools;
  ASSERT_EQ(tools.size(), 3u);
  // In the order written, named by their keys.
  EXPECT_EQ(tools[0].name, "search");
  EXPECT_EQ(tools[1].name, "llm");
  EXPECT_EQ(tools[2].name, "pay");
  auto& s = tools[0];
  EXPECT_EQ(s.type, "flaky_tool");
  EXPECT_EQ(s.effect, side_effect::idempotent_write);
  auto& p = s.policy;
  EXPECT_EQ(p.timeout, 12s);
  EXPECT_EQ(p.attempt_timeout, 3s);
  EXPECT_EQ(p.retry.max_attempts, 4u);
  EXPECT_EQ(p.retry.initial, 50ms);
  EXPECT_EQ(p.retry.multiplier, 3.0);
  EXPECT_EQ(p.retry.max, 2s);
  EXPECT_FALSE(p.retry.retry_invalid_output);
  EXPECT_EQ(p.budget.ratio, 0.25);
  EXPECT_EQ(p.budget.min_per_second, 0.0);
  EXPECT_EQ(p.budget.max_savings, 20.0);
  EXPECT_TRUE(p.breaker.enabled);
  EXPECT_EQ(p.breaker.consecutive_failures, 0u);
  EXPECT_EQ(p.breaker.open_for, 2s);
  EXPECT_EQ(p.breaker.max_open_for, 1min);
  EXPECT_EQ(p.breaker.half_open_probes, 2u);
  EXPECT_EQ(p.breaker.failure_rate, 0.5);
  EXPECT_EQ(p.breaker.slow_call_rate, 0.75);
  EXPECT_EQ(p.breaker.slow_call_duration, 800ms);
  EXPECT_EQ(p.breaker.window, 40u);
  EXPECT_EQ(p.breaker.minimum_calls, 10u);
  EXPECT_EQ(p.bulkhead.max_concurrent, 2u);
  EXPECT_EQ(p.bulkhead.queue, 0u);
  EXPECT_EQ(p.rate.per_second, 5.5);
  EXPECT_EQ(p.rate.burst, 3.0);
  EXPECT_EQ(p.cost.limit, 1000.0);
  EXPECT_EQ(p.cost.per_agent, 100.0);
  EXPECT_EQ(p.cost.per, 1min);
  // Fields left out keep tool_policy's defaults.
  auto& l = tools[1];
  EXPECT_EQ(l.type, "");
  EXPECT_EQ(l.effect, side_effect::read_only);
  tool_policy defaults;
  EXPECT_EQ(l.policy.timeout, defaults.timeout);
  EXPECT_EQ(l.policy.attempt_timeout, defaults.attempt_timeout);
  EXPECT_EQ(l.policy.retry.max_attempts, defaults.retry.max_attempts);
  EXPECT_EQ(l.policy.retry.initial, defaults.retry.initial);
  EXPECT_EQ(l.policy.budget.ratio, defaults.budget.ratio);
  EXPECT_EQ(l.policy.budget.min_per_second, defaults.budget.min_per_second);
  EXPECT_EQ(l.policy.breaker.enabled, defaults.breaker.enabled);
  EXPECT_EQ(l.policy.breaker.consecutive_failures,
            defaults.breaker.consecutive_failures);
  EXPECT_EQ(l.policy.breaker.open_for, defaults.breaker.open_for);
  EXPECT_EQ(l.policy.bulkhead.max_concurrent,
            defaults.bulkhead.max_concurrent);
  EXPECT_EQ(l.policy.bulkhead.queue, defaults.bulkhead.queue);
  EXPECT_EQ(l.policy.rate.per_second, defaults.rate.per_second);
  EXPECT_EQ(l.policy.cost.per, defaults.cost.per);
  // An irreversible tool without retry.max_attempts gets its only allowed
  // value.
  EXPECT_EQ(tools[2].effect, side_effect::irreversible);
  EXPECT_EQ(tools[2].policy.retry.max_attempts, 1u);
  // The child's overrides, by tool name; unset fields stay unset.
  ASSERT_EQ(lp.tree.children.size(), 2u);
  auto& ov = lp.tree.children[0].tools;
  ASSERT_EQ(ov.size(), 2u);
  auto& o = ov.at("search");
  EXPECT_EQ(o.timeout, std::optional<resilience::duration>{4s});
  EXPECT_EQ(o.attempt_timeout, std::optional<resilience::duration>{1s});
  EXPECT_EQ(o.max_attempts, std::optional<uint32_t>{2});
  EXPECT_EQ(o.cost_per_agent, std::optional<double>{7.5});
  auto& o2 = ov.at("llm");
  EXPECT_FALSE(o2.timeout);
  EXPECT_FALSE(o2.attempt_timeout);
  EXPECT_EQ(o2.max_attempts, std::optional<uint32_t>{1});
  EXPECT_FALSE(o2.cost_per_agent);
  EXPECT_TRUE(lp.tree.children[1].tools.empty());
}

TEST(tools_policy_test, a_policy_without_tools_declares_none) {
  loaded_policy lp;
  auto errs = load_policy_text("tree:\n  children:\n    - {name: a, agent: "
                               "counter}\n",
                               "policy.yaml", types(), lp);
  ASSERT_TRUE(errs.empty()) << errs.front().to_string();
  EXPECT_TRUE(lp.node.tools.empty());
  EXPECT_TRUE(lp.tree.children[0].tools.empty());
}

} // namespace
