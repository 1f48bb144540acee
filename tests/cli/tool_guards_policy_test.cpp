// A policy file's fallbacks, dry runs and approvals (Tool.fallback,
// dry_run, approval): loaded onto tool_decl, and each mistake reported
// with its file, line, column and what to write instead.

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
    cli::add_builtin_agents(t); // tool_caller, flaky_tool, ...
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

// Tools `t` (declared by `rest`, lines indented by 6) and `u`, and a tree
// that calls `t`.
std::string with_tool(const std::string& rest) {
  return "node:\n"                                       // 1
         "  tools:\n"                                    // 2
         "    u: {type: flaky_tool, class: read_only}\n" // 3
         "    t:\n"                                      // 4
         "      type: flaky_tool\n"                      // 5
         "      class: irreversible\n"                   // 6
         + rest                                          // 7...
         + "tree:\n"
           "  children:\n"
           "    - {name: a, agent: tool_caller, params: {tool: t}}\n";
}

} // namespace

TEST(tool_guards_policy_test, loads_a_fallback_a_dry_run_and_an_approval) {
  loaded_policy lp;
  auto errs = load_policy_text(
    with_tool("      fallback:\n"
              "        tools: [u]\n"
              "        default: {type: vigil.builtin.ToolReply, value: {n: -1}}\n"
              "      dry_run: {tool: u}\n"
              "      approval: {timeout: 2h}\n"),
    "policy.yaml", types(), lp);
  ASSERT_TRUE(errs.empty()) << errs.front().to_string();
  ASSERT_EQ(lp.node.tools.size(), 2u);
  auto& t = lp.node.tools[1];
  ASSERT_EQ(t.name, "t");
  EXPECT_EQ(t.fallback.tools, std::vector<std::string>{"u"});
  EXPECT_EQ(t.fallback.default_type, "vigil.builtin.ToolReply");
  builtin::ToolReply def;
  ASSERT_TRUE(def.ParseFromString(t.fallback.default_payload));
  EXPECT_EQ(def.n(), -1);
  EXPECT_EQ(t.dry_run.tool, "u");
  EXPECT_TRUE(t.dry_run.required); // written: required unless it says not
  EXPECT_TRUE(t.approval.required);
  EXPECT_EQ(t.approval.timeout, std::chrono::hours{2});
  // Unwritten: none of them.
  auto& u = lp.node.tools[0];
  EXPECT_TRUE(u.fallback.empty());
  EXPECT_FALSE(u.dry_run.required);
  EXPECT_FALSE(u.approval.required);
}

TEST(tool_guards_policy_test, a_dry_run_or_an_approval_may_be_written_off) {
  loaded_policy lp;
  auto errs = load_policy_text(
    with_tool("      dry_run: {tool: u, required: false}\n"
              "      approval: {required: false}\n"),
    "policy.yaml", types(), lp);
  ASSERT_TRUE(errs.empty()) << errs.front().to_string();
  auto& t = lp.node.tools[1];
  EXPECT_EQ(t.dry_run.tool, "u");
  EXPECT_FALSE(t.dry_run.required);
  EXPECT_FALSE(t.approval.required);
}

TEST(tool_guards_policy_test, names_a_fallback_that_is_not_declared) {
  EXPECT_EQ(errors_of(with_tool("      fallback: {tools: [u, backup]}\n")),
            std::vector<std::string>{
              "policy.yaml:7:18: node.tools.t.fallback.tools: \"backup\" is "
              "not a tool of node.tools; declare it there"});
}

TEST(tool_guards_policy_test, refuses_a_tool_that_falls_back_on_itself) {
  EXPECT_EQ(errors_of(with_tool("      fallback: {tools: [t]}\n")),
            std::vector<std::string>{
              "policy.yaml:7:18: node.tools.t.fallback.tools: \"t\" is the "
              "tool itself; name other tools of the node"});
}

TEST(tool_guards_policy_test, a_required_dry_run_needs_its_tool) {
  EXPECT_EQ(errors_of(with_tool("      dry_run: {required: true}\n")),
            std::vector<std::string>{
              "policy.yaml:7:7: node.tools.t.dry_run.tool: dry_run.required "
              "needs the dry-run form: the name of another tool of the node "
              "that takes the same request"});
}

TEST(tool_guards_policy_test, names_a_dry_run_that_is_not_declared) {
  EXPECT_EQ(errors_of(with_tool("      dry_run: {tool: sandbox}\n")),
            std::vector<std::string>{
              "policy.yaml:7:17: node.tools.t.dry_run.tool: \"sandbox\" is "
              "not a tool of node.tools; declare it there"});
}

TEST(tool_guards_policy_test, bounds_the_approval_timeout) {
  EXPECT_EQ(errors_of(with_tool("      approval: {timeout: 1000h}\n")),
            std::vector<std::string>{
              "policy.yaml:7:18: node.tools.t.approval.timeout: must be more "
              "than 0 and at most 720h (30 days)"});
}

TEST(tool_guards_policy_test, a_default_names_a_reply_type) {
  auto errs = errors_of(
    with_tool("      fallback: {default: {type: no.Such, value: {}}}\n"));
  ASSERT_EQ(errs.size(), 1u);
  EXPECT_NE(errs[0].find("policy.yaml:7:"), std::string::npos) << errs[0];
  EXPECT_NE(errs[0].find("unknown message type \"no.Such\""),
            std::string::npos)
    << errs[0];
}

TEST(tool_guards_policy_test, loads_a_childs_envelope_approval) {
  loaded_policy lp;
  auto errs = load_policy_text(
    "tree:\n"
    "  children:\n"
    "    - name: a\n"
    "      agent: counter\n"
    "      durability: {mode: journal}\n"
    "      approval: {timeout: 4h, types: [vigil.builtin.Number]}\n",
    "policy.yaml", types(), lp);
  ASSERT_TRUE(errs.empty()) << errs.front().to_string();
  ASSERT_EQ(lp.tree.children.size(), 1u);
  auto& a = lp.tree.children[0].approval;
  EXPECT_TRUE(a.required);
  EXPECT_EQ(a.timeout, std::chrono::hours{4});
  EXPECT_EQ(a.types, std::vector<std::string>{"vigil.builtin.Number"});
  EXPECT_TRUE(a.covers("vigil.builtin.Number"));
  EXPECT_FALSE(a.covers("vigil.builtin.Get"));
}

TEST(tool_guards_policy_test, bounds_a_childs_approval_timeout) {
  auto errs = errors_of("tree:\n"
                        "  children:\n"
                        "    - name: a\n"
                        "      agent: counter\n"
                        "      approval: {timeout: 0s}\n");
  ASSERT_EQ(errs.size(), 1u);
  EXPECT_NE(errs[0].find("policy.yaml:5:"), std::string::npos) << errs[0];
  EXPECT_NE(errs[0].find("approval.timeout: must be more than 0 and at most "
                         "720h (30 days)"),
            std::string::npos)
    << errs[0];
}
