// Tests of the policy-file loader (cli/src/policy.cpp, cli/src/yaml_map.cpp):
// one row per kind of error with its exact message and position, several
// errors in one file, and a complete policy loaded field by field.

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "proto/test.pb.h"
#include "vigil/actors/saga_step.hpp"
#include "vigil/builtin.pb.h"
#include "vigil/cli/app.hpp"
#include "vigil/cli/policy.hpp"
#include "vigil/supervision/check.hpp"

using namespace std::chrono_literals;
using namespace vigil;
using vigil::cli::load_policy_file;
using vigil::cli::load_policy_text;
using vigil::cli::loaded_policy;

namespace {

class dummy : public vigil::agent<> {
public:
  static void define(vigil::handlers<dummy>&) {
  }
};

/// A saga step (the policy's sagas need one).
using test::Order;
using test::Receipt;
class dummy_step : public vigil::saga_step<dummy_step, Order, Receipt> {
public:
  Receipt execute(vigil::context&, const Order&) { return {}; }
  void compensate(vigil::context&, const Order&, const Receipt&) {}
};

const registry& types() {
  static const registry r = [] {
    registry t;
    for (auto name : {"source", "counter", "sink", "flaky", "ocr"})
      t.add<dummy>(name);
    t.add<dummy_step>("step");
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

// -- one row per kind of error ------------------------------------------------

struct error_case {
  const char* name;
  std::string yaml;
  std::vector<std::string> expected;
};

std::ostream& operator<<(std::ostream& out, const error_case& x) {
  return out << x.name;
}

const std::string registered = "counter, flaky, ocr, sink, source, step";
const std::string child_keys =
  "name, agent, supervisor, restart, shutdown, significant, on_failure, "
  "degrade, durability, params, buffer_cap, max_deliveries, tools, "
  "approval, queue_cap, overflow";

const error_case error_cases[] = {
  {"unknown_key_top",
   "tree:\n"
   "  children: []\n"
   "tre: 1\n",
   {"policy.yaml:3:1: unknown key \"tre\" in policy; allowed: node, tree"}},
  {"unknown_key_nested",
   "tree:\n"
   "  stratgy: one_for_all\n"
   "  children:\n"
   "    - name: a\n"
   "      agent: counter\n"
   "      restar: temporary\n",
   {"policy.yaml:2:3: unknown key \"stratgy\" in supervisor; allowed: "
    "strategy, intensity, period, backoff, auto_shutdown, children, saga",
    "policy.yaml:6:7: unknown key \"restar\" in child; allowed: "
      + child_keys}},
  {"unknown_key_in_node",
   "node: {nam: x}\n"
   "tree: {}\n",
   {"policy.yaml:1:8: unknown key \"nam\" in node; allowed: name, data_dir, "
    "listen, sync, threads, idempotency_retention, tools, "
    "tool_result_retention, metrics, log"}},
  {"wrong_int",
   "tree:\n"
   "  intensity: lots\n",
   {"policy.yaml:2:3: intensity: expected an integer, got \"lots\""}},
  {"negative_unsigned",
   "tree:\n"
   "  children:\n"
   "    - {name: a, agent: ocr, buffer_cap: -1}\n",
   {"policy.yaml:3:29: buffer_cap: expected an integer from 0 to "
    "4294967295, got \"-1\""}},
  {"wrong_bool",
   "tree:\n"
   "  auto_shutdown: any_significant\n"
   "  children:\n"
   "    - name: a\n"
   "      agent: counter\n"
   "      restart: transient\n"
   "      significant: yes\n",
   {"policy.yaml:7:7: significant: expected true or false, got \"yes\""}},
  {"bad_enum",
   "tree:\n"
   "  strategy: one_for_none\n",
   {"policy.yaml:2:3: strategy: \"one_for_none\" is not allowed; allowed: "
    "one_for_one, one_for_all, rest_for_one, simple_one_for_one"}},
  {"bad_enum_shorthand",
   "tree:\n"
   "  children:\n"
   "    - name: a\n"
   "      agent: ocr\n"
   "      durability: jurnal\n",
   {"policy.yaml:5:7: durability: \"jurnal\" is not allowed; allowed: none, "
    "snapshot, journal"}},
  {"bad_duration",
   "tree:\n"
   "  period: 5 seconds\n",
   {"policy.yaml:2:3: period: \"5 seconds\" is not a duration; write it like "
    "250ms, 5s, 2m or 1h (at most 876000h)"}},
  {"bad_duration_nested",
   "tree:\n"
   "  backoff:\n"
   "    min: 10x\n",
   {"policy.yaml:3:5: backoff.min: \"10x\" is not a duration; write it like "
    "250ms, 5s, 2m or 1h (at most 876000h)"}},
  {"unknown_agent_type",
   "tree:\n"
   "  children:\n"
   "    - name: a\n"
   "      agent: ocrx\n",
   {"policy.yaml:4:7: agent: unknown agent type \"ocrx\"; registered: "
      + registered}},
  {"duplicate_name",
   "tree:\n"
   "  children:\n"
   "    - name: ocr\n"
   "      agent: ocr\n"
   "    - name: ocr\n"
   "      agent: counter\n",
   {"policy.yaml:5:7: duplicate child name \"ocr\" (first at "
    "policy.yaml:3:7)"}},
  {"missing_name",
   "tree:\n"
   "  children:\n"
   "    - agent: ocr\n",
   {"policy.yaml:3:7: child: missing \"name\""}},
  {"agent_and_supervisor",
   "tree:\n"
   "  children:\n"
   "    - name: x\n"
   "      agent: ocr\n"
   "      supervisor:\n"
   "        children: []\n",
   {"policy.yaml:3:7: child \"x\": set either \"agent\" or \"supervisor\""}},
  {"neither_agent_nor_supervisor",
   "tree:\n"
   "  children:\n"
   "    - name: x\n"
   "      restart: transient\n",
   {"policy.yaml:3:7: child \"x\": needs \"agent\" (a registered agent "
    "type) or \"supervisor\""}},
  {"significant_with_auto_shutdown_never",
   "tree:\n"
   "  children:\n"
   "    - name: x\n"
   "      agent: ocr\n"
   "      restart: transient\n"
   "      significant: true\n",
   {"policy.yaml:6:7: significant: true needs the supervisor's "
    "auto_shutdown to be any_significant or all_significant"}},
  {"temporary_degrade",
   "tree:\n"
   "  children:\n"
   "    - name: x\n"
   "      agent: ocr\n"
   "      restart: temporary\n"
   "      on_failure: degrade\n"
   "      degrade:\n"
   "        default: {type: vigil.builtin.Count, value: {count: 1}}\n",
   {"policy.yaml:6:7: on_failure: degrade needs a child that is restarted; "
    "a temporary child is not"}},
  {"degrade_without_default",
   "tree:\n"
   "  children:\n"
   "    - name: x\n"
   "      agent: ocr\n"
   "      on_failure: degrade\n",
   {"policy.yaml:5:7: on_failure: degrade needs degrade.default (the "
    "stand-in reply)"}},
  {"unknown_reply_type",
   "tree:\n"
   "  children:\n"
   "    - name: x\n"
   "      agent: ocr\n"
   "      on_failure: degrade\n"
   "      degrade:\n"
   "        default:\n"
   "          type: x.Y\n",
   {"policy.yaml:8:11: degrade.default: unknown message type \"x.Y\""}},
  {"bad_reply_value",
   "tree:\n"
   "  children:\n"
   "    - name: x\n"
   "      agent: ocr\n"
   "      on_failure: degrade\n"
   "      degrade:\n"
   "        default: {type: vigil.builtin.Count, value: {count: many}}\n",
   {"policy.yaml:7:54: degrade.default.value.count: expected an integer, "
    "got \"many\""}},
  {"bad_shutdown_word",
   "tree:\n"
   "  children:\n"
   "    - name: x\n"
   "      agent: ocr\n"
   "      shutdown: soon\n",
   {"policy.yaml:5:7: shutdown: \"soon\" is not allowed; write brutal_kill, "
    "infinity or a duration like 5s"}},
  {"snapshot_never_saves",
   "tree:\n"
   "  children:\n"
   "    - name: x\n"
   "      agent: ocr\n"
   "      durability: {mode: snapshot, every_messages: 0, every: 0s}\n",
   {"policy.yaml:5:7: durability: a snapshot child needs every_messages >= 1 "
    "or every > 0 (invalid_durability)"}},
  {"durable_supervisor",
   "tree:\n"
   "  children:\n"
   "    - name: s\n"
   "      durability: journal\n"
   "      supervisor: {}\n",
   {"policy.yaml:4:7: durability: only agents and sagas are durable"}},
  {"negative_intensity",
   "tree:\n"
   "  intensity: -1\n",
   {"policy.yaml:2:3: intensity: got -1; allowed: a whole number >= 0 "
    "(invalid_intensity)"}},
  {"jitter_out_of_range",
   "tree:\n"
   "  backoff: {jitter: 2}\n",
   {"policy.yaml:2:13: backoff.jitter: allowed: a fraction from 0 to 1 "
    "(invalid_backoff)"}},
  {"significant_permanent",
   "tree:\n"
   "  auto_shutdown: all_significant\n"
   "  children:\n"
   "    - {name: x, agent: ocr, significant: true}\n",
   {"policy.yaml:4:29: significant: bad_combination "
    "[{restart,permanent},{significant,true}]: only transient or temporary "
    "children can be significant (invalid_significant)"}},
  {"slash_in_name",
   "tree:\n"
   "  children:\n"
   "    - {name: a/b, agent: ocr}\n",
   {"policy.yaml:3:8: name: an id may not contain '/' (invalid_id)"}},
  {"simple_one_for_one_two_templates",
   "tree:\n"
   "  strategy: simple_one_for_one\n"
   "  children:\n"
   "    - {name: a, agent: ocr}\n"
   "    - {name: b, agent: ocr}\n",
   {"policy.yaml:3:3: children: simple_one_for_one needs exactly one child "
    "spec (the template), got 2 (bad_start_spec)"}},
  {"yaml_syntax",
   "tree:\n"
   "  children: [a, b\n",
   {"policy.yaml:3:1: YAML syntax: end of sequence flow not found"}},
  {"list_for_mapping",
   "tree:\n"
   "  backoff: [1s, 2s]\n",
   {"policy.yaml:2:3: backoff: expected a mapping"}},
  {"mapping_for_list",
   "tree:\n"
   "  children: {a: 1}\n",
   {"policy.yaml:2:3: children: expected a list"}},
  {"period_beyond_100_years",
   // 2562048h and more overflowed the restart window and switched the
   // restart limit off; the runtime cannot represent such durations.
   "tree:\n"
   "  period: 2562048h\n",
   {"policy.yaml:2:3: period: \"2562048h\" is not a duration; write it "
    "like 250ms, 5s, 2m or 1h (at most 876000h)"}},
  {"shutdown_beyond_100_years",
   "tree:\n"
   "  children:\n"
   "    - {name: x, agent: ocr, shutdown: 876001h}\n",
   {"policy.yaml:3:29: shutdown: \"876001h\" is not allowed; write "
    "brutal_kill, infinity or a duration like 5s"}},
  {"mapping_for_scalar",
   "tree:\n"
   "  children:\n"
   "    - name: {first: a}\n"
   "      agent: ocr\n",
   {"policy.yaml:3:7: name: expected a scalar"}},
  {"scalar_for_mapping",
   "tree: 5\n",
   {"policy.yaml:1:1: tree: expected a mapping"}},
  {"param_not_scalar",
   "tree:\n"
   "  children:\n"
   "    - name: a\n"
   "      agent: ocr\n"
   "      params: {depth: [1, 2]}\n",
   {"policy.yaml:5:16: params.depth: expected a scalar"}},
  {"saga_times_must_be_positive",
   "tree:\n"
   "  saga: {step_timeout: 0s, retry_delay: 0ms}\n"
   "  children:\n"
   "    - {name: a, agent: step}\n",
   {"policy.yaml:2:10: saga.step_timeout: got 0ms; allowed: a duration > 0 "
    "(0 would expire every step before it starts) (invalid_saga)",
    "policy.yaml:2:28: saga.retry_delay: got 0ms; allowed: a duration > 0 "
    "(0 would retry a failing compensation without pause) (invalid_saga)"}},
  {"saga_step_must_be_a_saga_step",
   "tree:\n"
   "  saga: {}\n"
   "  children:\n"
   "    - {name: a, agent: counter}\n",
   {"policy.yaml:4:17: agent: agent type 'counter' is not a saga step (it "
    "has no handler for vigil.SagaExecute); derive it from vigil::saga_step "
    "(invalid_saga)"}},
  {"saga_step_may_not_degrade",
   "tree:\n"
   "  saga: {}\n"
   "  children:\n"
   "    - name: a\n"
   "      agent: step\n"
   "      on_failure: degrade\n",
   {"policy.yaml:6:7: on_failure: degrade needs degrade.default (the "
    "stand-in reply)",
    "policy.yaml:6:7: on_failure: degrade is refused in a saga: a stand-in "
    "can neither execute a step nor undo one, so its answer would only fail "
    "the step; a failing step fails the saga, which compensates (allowed: "
    "restart, escalate) (invalid_saga)"}},
  {"missing_tree",
   "node: {name: shop}\n",
   {"policy.yaml:1:1: missing \"tree\": the root supervisor"}},
  {"empty_file",
   "",
   {"policy.yaml:1:1: missing \"tree\": the root supervisor"}},
};

class policy_errors : public testing::TestWithParam<error_case> {};

TEST_P(policy_errors, reports_exact_message_and_position) {
  auto& row = GetParam();
  EXPECT_EQ(errors_of(row.yaml), row.expected) << row.yaml;
}

INSTANTIATE_TEST_SUITE_P(rows, policy_errors, testing::ValuesIn(error_cases),
                         [](const testing::TestParamInfo<error_case>& x) {
                           return std::string{x.param.name};
                         });

// -- several errors at once ---------------------------------------------------

TEST(policy_test, reports_every_error_in_file_order) {
  auto yaml = "node:\n"                       // 1
              "  threads: two\n"              // 2
              "tree:\n"                       // 3
              "  strategy: one_for_none\n"    // 4
              "  period: 5 seconds\n"         // 5
              "  children:\n"                 // 6
              "    - name: a\n"               // 7
              "      agent: ocrx\n"           // 8
              "      shutdown: soon\n"        // 9
              "    - agent: ocr\n"            // 10
              "    - name: a\n"               // 11
              "      agent: ocr\n"            // 12
              "      on_failure: degrade\n"   // 13
              "      colour: blue\n";         // 14
  std::vector<std::string> expected{
    "policy.yaml:2:3: node.threads: expected an integer, got \"two\"",
    "policy.yaml:4:3: strategy: \"one_for_none\" is not allowed; allowed: "
    "one_for_one, one_for_all, rest_for_one, simple_one_for_one",
    "policy.yaml:5:3: period: \"5 seconds\" is not a duration; write it like "
    "250ms, 5s, 2m or 1h (at most 876000h)",
    "policy.yaml:8:7: agent: unknown agent type \"ocrx\"; registered: "
      + registered,
    "policy.yaml:9:7: shutdown: \"soon\" is not allowed; write brutal_kill, "
    "infinity or a duration like 5s",
    "policy.yaml:10:7: child: missing \"name\"",
    "policy.yaml:11:7: duplicate child name \"a\" (first at policy.yaml:7:7)",
    "policy.yaml:13:7: on_failure: degrade needs degrade.default (the "
    "stand-in reply)",
    "policy.yaml:14:7: unknown key \"colour\" in child; allowed: "
      + child_keys,
  };
  EXPECT_EQ(errors_of(yaml), expected);
}

// -- a complete policy --------------------------------------------------------

const char* full_policy = R"(node:
  name: shop
  data_dir: /tmp/vigil-shop
  sync: nosync
  threads: 4
  listen: 127.0.0.1:7000
  idempotency_retention: 24h
  tool_result_retention: 2h
tree:
  strategy: rest_for_one
  intensity: 3
  period: 10s
  auto_shutdown: any_significant
  backoff: {min: 100ms, max: 2s, jitter: 0.25, reset_after: 1m}
  children:
    - name: source
      agent: source
      params: {count: "5", every: 10ms}
      shutdown: brutal_kill
      durability: journal
    - name: ocr
      agent: ocr
      restart: transient
      significant: true
      on_failure: degrade
      degrade:
        default: {type: vigil.builtin.Count, value: {count: 3}}
        probe_min: 250ms
      shutdown: 2s
      buffer_cap: 50
      max_deliveries: 3
    - name: counter
      agent: counter
      durability: {mode: snapshot, every_messages: 10, every: 500ms}
      shutdown: infinity
    - name: booking
      restart: temporary
      supervisor:
        saga: {compensation_retries: 5, step_timeout: 1h}
        children:
          - {name: step1, agent: step}
          - {name: step2, agent: step, on_failure: escalate}
    - name: inner
      supervisor:
        strategy: one_for_all
        saga:
        children:
          - name: sink
            agent: step
)";

TEST(policy_test, loads_a_complete_policy) {
  loaded_policy p;
  auto errors = load_policy_text(full_policy, "policy.yaml", types(), p);
  for (auto& e : errors)
    ADD_FAILURE() << e.to_string();
  ASSERT_TRUE(errors.empty());
  // node
  EXPECT_EQ(p.name, "shop");
  EXPECT_EQ(p.node.data_dir, "/tmp/vigil-shop");
  EXPECT_EQ(p.node.sync, sync_mode::nosync);
  EXPECT_EQ(p.node.threads, 4u);
  EXPECT_EQ(p.pb.node().listen(), "127.0.0.1:7000");
  EXPECT_EQ(p.node.writer.idempotency_retention, std::chrono::hours{24});
  EXPECT_EQ(p.node.writer.tool_result_retention, std::chrono::hours{2});
  // root supervisor
  auto& t = p.tree;
  EXPECT_EQ(t.flags.strategy, strategy::rest_for_one);
  EXPECT_EQ(t.flags.intensity, 3);
  EXPECT_EQ(t.flags.period, 10s);
  EXPECT_EQ(t.flags.auto_shutdown, auto_shutdown::any_significant);
  EXPECT_EQ(t.flags.backoff.min, 100ms);
  EXPECT_EQ(t.flags.backoff.max, 2s);
  EXPECT_DOUBLE_EQ(t.flags.backoff.jitter, 0.25);
  EXPECT_EQ(t.flags.backoff.reset_after, 1min);
  EXPECT_FALSE(t.saga.enabled);
  ASSERT_EQ(t.children.size(), 5u);
  // source: params, brutal_kill, journal shorthand, defaults elsewhere
  auto& source = t.children[0];
  EXPECT_EQ(source.id, "source");
  EXPECT_EQ(source.kind, child_kind::worker);
  EXPECT_EQ(source.agent, "source");
  EXPECT_EQ(source.params, (vigil::params{{"count", "5"}, {"every", "10ms"}}));
  EXPECT_EQ(source.restart, restart_type::permanent);
  EXPECT_TRUE(source.has_shutdown);
  EXPECT_EQ(source.shutdown.how, shutdown_spec::kind::brutal_kill);
  EXPECT_FALSE(source.significant);
  EXPECT_EQ(source.failure, on_failure::restart);
  EXPECT_TRUE(source.degrade.fallback.type.empty());
  EXPECT_EQ(source.durability.mode, durability_mode::journal);
  EXPECT_EQ(source.durability.every_messages, 100u);
  EXPECT_EQ(source.durability.every, 1s);
  EXPECT_EQ(source.buffer_cap, 10000u);
  EXPECT_EQ(source.max_deliveries, 1u);
  EXPECT_EQ(source.sup, nullptr);
  // ocr: transient, significant, degrade with a Count default, timeout
  auto& ocr = t.children[1];
  EXPECT_EQ(ocr.id, "ocr");
  EXPECT_EQ(ocr.agent, "ocr");
  EXPECT_EQ(ocr.restart, restart_type::transient);
  EXPECT_TRUE(ocr.significant);
  EXPECT_EQ(ocr.failure, on_failure::degrade);
  EXPECT_EQ(ocr.degrade.fallback.type, "vigil.builtin.Count");
  vigil::builtin::Count fallback;
  ASSERT_TRUE(fallback.ParseFromString(ocr.degrade.fallback.payload));
  EXPECT_EQ(fallback.count(), 3);
  EXPECT_EQ(fallback.sum(), 0);
  EXPECT_EQ(ocr.degrade.probe_min, 250ms);
  EXPECT_EQ(ocr.degrade.probe_max, 30s);
  EXPECT_TRUE(ocr.has_shutdown);
  EXPECT_EQ(ocr.shutdown.how, shutdown_spec::kind::timeout);
  EXPECT_EQ(ocr.shutdown.timeout, 2s);
  EXPECT_EQ(ocr.durability.mode, durability_mode::none);
  EXPECT_TRUE(ocr.params.empty());
  EXPECT_EQ(ocr.buffer_cap, 50u);
  EXPECT_EQ(ocr.max_deliveries, 3u);
  // counter: snapshot in the long form, infinity
  auto& counter = t.children[2];
  EXPECT_EQ(counter.agent, "counter");
  EXPECT_EQ(counter.durability.mode, durability_mode::snapshot);
  EXPECT_EQ(counter.durability.every_messages, 10u);
  EXPECT_EQ(counter.durability.every, 500ms);
  EXPECT_EQ(counter.shutdown.how, shutdown_spec::kind::infinity);
  EXPECT_TRUE(counter.has_shutdown);
  // booking: a temporary saga supervisor, shutdown left to OTP's default
  auto& booking = t.children[3];
  EXPECT_EQ(booking.id, "booking");
  EXPECT_EQ(booking.kind, child_kind::supervisor);
  EXPECT_TRUE(booking.agent.empty());
  EXPECT_EQ(booking.restart, restart_type::temporary);
  EXPECT_FALSE(booking.has_shutdown);
  EXPECT_EQ(booking.effective_shutdown().how, shutdown_spec::kind::infinity);
  ASSERT_NE(booking.sup, nullptr);
  auto& saga = *booking.sup;
  EXPECT_EQ(saga.flags.strategy, strategy::one_for_one);
  EXPECT_EQ(saga.flags.intensity, 1);
  EXPECT_EQ(saga.flags.period, 5s);
  EXPECT_EQ(saga.flags.auto_shutdown, auto_shutdown::never);
  EXPECT_EQ(saga.flags.backoff.min, 0ms);
  EXPECT_TRUE(saga.saga.enabled);
  EXPECT_EQ(saga.saga.compensation_retries, 5u);
  EXPECT_EQ(saga.saga.retry_delay, 100ms);
  EXPECT_EQ(saga.saga.step_timeout, 1h);
  ASSERT_EQ(saga.children.size(), 2u);
  EXPECT_EQ(saga.children[0].id, "step1");
  EXPECT_EQ(saga.children[0].agent, "step");
  EXPECT_FALSE(saga.children[0].has_shutdown);
  EXPECT_EQ(saga.children[0].effective_shutdown().timeout, 5000ms);
  EXPECT_EQ(saga.children[1].id, "step2");
  EXPECT_EQ(saga.children[1].agent, "step");
  EXPECT_EQ(saga.children[1].failure, on_failure::escalate);
  // inner: an empty `saga:` makes a saga with every default
  auto& inner = t.children[4];
  EXPECT_EQ(inner.kind, child_kind::supervisor);
  ASSERT_NE(inner.sup, nullptr);
  EXPECT_EQ(inner.sup->flags.strategy, strategy::one_for_all);
  EXPECT_TRUE(inner.sup->saga.enabled);
  EXPECT_EQ(inner.sup->saga.compensation_retries, 3u);
  EXPECT_EQ(inner.sup->saga.retry_delay, 100ms);
  EXPECT_EQ(inner.sup->saga.step_timeout, 30s);
  ASSERT_EQ(inner.sup->children.size(), 1u);
  EXPECT_EQ(inner.sup->children[0].id, "sink");
  EXPECT_EQ(inner.sup->children[0].agent, "step");
}

TEST(policy_test, applies_defaults) {
  loaded_policy p;
  auto errors = load_policy_text("tree:\n"
                                 "  children:\n"
                                 "    - {name: a, agent: ocr}\n",
                                 "policy.yaml", types(), p);
  ASSERT_TRUE(errors.empty());
  EXPECT_EQ(p.name, "root");
  EXPECT_EQ(p.node.threads, 2u);
  EXPECT_EQ(p.node.sync, sync_mode::full);
  EXPECT_TRUE(p.node.data_dir.empty());
  EXPECT_EQ(p.node.writer.idempotency_retention, std::chrono::hours{24 * 7});
  EXPECT_EQ(p.node.writer.tool_result_retention, std::chrono::hours{24});
  EXPECT_EQ(p.tree.flags.strategy, strategy::one_for_one);
  EXPECT_EQ(p.tree.flags.intensity, 1);
  EXPECT_EQ(p.tree.flags.period, 5s);
  EXPECT_FALSE(p.tree.saga.enabled);
  ASSERT_EQ(p.tree.children.size(), 1u);
  auto& a = p.tree.children[0];
  EXPECT_EQ(a.restart, restart_type::permanent);
  EXPECT_FALSE(a.has_shutdown);
  EXPECT_EQ(a.effective_shutdown().timeout, 5000ms);
  EXPECT_EQ(a.durability.mode, durability_mode::none);
  EXPECT_EQ(a.buffer_cap, 10000u);
  EXPECT_EQ(a.max_deliveries, 1u);
  EXPECT_EQ(a.degrade.probe_min, 1s);
  EXPECT_EQ(a.degrade.probe_max, 30s);
}

TEST(policy_test, reads_a_file) {
  auto path = testing::TempDir() + "vigil_policy_test.yaml";
  {
    std::ofstream f{path};
    f << "tree:\n  children:\n    - {name: a, agent: sink}\n";
  }
  loaded_policy p;
  auto errors = load_policy_file(path, types(), p);
  std::remove(path.c_str());
  EXPECT_TRUE(errors.empty());
  ASSERT_EQ(p.tree.children.size(), 1u);
  EXPECT_EQ(p.tree.children[0].agent, "sink");
}

// An error about the file as a whole has no position: it used to read
// "FILE:0:0: ...", a position no editor can go to.
TEST(policy_test, reports_an_unreadable_file_without_a_position) {
  loaded_policy p;
  auto errors = load_policy_file("/nonexistent/policy.yaml", types(), p);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].to_string(),
            "/nonexistent/policy.yaml: cannot read the file: No such "
            "file or directory");
  auto dir = load_policy_file("/tmp", types(), p);
  ASSERT_EQ(dir.size(), 1u);
  EXPECT_EQ(dir[0].to_string(),
            "/tmp: is a directory; give a policy file (YAML)");
}

std::string nested_supervisors(int levels) {
  std::string y = "tree:\n", ind = "  ";
  for (int i = 0; i < levels; ++i) {
    y += ind + "children:\n" + ind + "  - name: s" + std::to_string(i) + "\n"
         + ind + "    supervisor:\n";
    ind += "      ";
  }
  return y + ind + "children:\n" + ind + "  - {name: leaf, agent: ocr}\n";
}

// Deep trees load; past the YAML reader's limit (a key that starts past
// column 1024, about 170 levels in block style) the error says what to do
// instead of only "bad file".
TEST(policy_test, deep_trees_load_and_too_deep_says_why) {
  loaded_policy out;
  EXPECT_TRUE(load_policy_text(nested_supervisors(vigil::max_tree_depth - 1),
                               "policy.yaml", types(), out)
                .empty());
  // Deeper than a spec's wire form can carry: refused, with the depth.
  auto deep = errors_of(nested_supervisors(150));
  ASSERT_FALSE(deep.empty());
  EXPECT_NE(deep[0].find("nested 15"), std::string::npos) << deep[0];
  EXPECT_NE(deep[0].find("allowed: at most 40"), std::string::npos)
    << deep[0];
  auto errs = errors_of(nested_supervisors(200));
  ASSERT_EQ(errs.size(), 1u);
  EXPECT_NE(errs[0].find("the YAML reader takes no key this far right; nest "
                         "less deeply"),
            std::string::npos)
    << errs[0];
}

} // namespace
