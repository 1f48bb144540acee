// A policy's tree (proto/vigil/policy.proto) converted into specs by the
// supervision layer (vigil/supervision/policy.hpp), without YAML: any
// reader of a policy, here one that knows only the Protobuf messages,
// gets the same specs and the same problems, each at its message and
// field. The YAML reader's positions are tested in tests/cli/policy_test.

#include <gtest/gtest.h>

#include "support/test_agents.hpp"
#include "vigil/supervision/policy.hpp"

namespace vigil::test {
namespace {

using namespace std::chrono_literals;
using google::protobuf::Message;
namespace pol = vigil::policy;

/// A reader that knows only the messages: a field is written when it is
/// set; nothing was rejected; a place is "Type.field".
class proto_source : public policy_source {
public:
  bool written(const Message& m, int field) const override {
    if (field < 0)
      return true;
    auto* f = m.GetDescriptor()->FindFieldByNumber(field);
    auto* r = m.GetReflection();
    return f->is_repeated() ? r->FieldSize(m, f) > 0 : r->HasField(m, f);
  }

  bool rejected(const Message&, int) const override {
    return false;
  }

  std::string where(const Message& m, int field) const override {
    return m.GetDescriptor()->name() + "."
           + m.GetDescriptor()->FindFieldByNumber(field)->name();
  }
};

pol::Child* add(pol::Supervisor& s, const std::string& name,
                const std::string& agent) {
  auto* c = s.add_children();
  c->set_name(name);
  if (!agent.empty())
    c->set_agent(agent);
  return c;
}

TEST(policy_spec_test, converts_a_tree_with_its_defaults) {
  pol::Supervisor root;
  root.set_strategy(pol::STRATEGY_REST_FOR_ONE);
  root.set_intensity(4);
  root.mutable_period()->set_seconds(2);
  auto* w = add(root, "w", "echo");
  w->set_shutdown("250ms");
  w->set_restart(pol::RESTART_TRANSIENT);
  w->set_on_failure(pol::ON_FAILURE_DEGRADE);
  w->mutable_degrade()->mutable_default_()->set_type("vigil.test.Pong");
  w->mutable_degrade()->mutable_probe_min()->set_nanos(5000000);
  (*w->mutable_params())["k"] = "v";
  w->mutable_durability()->set_mode(pol::MODE_SNAPSHOT);
  auto* team = root.add_children();
  team->set_name("team");
  add(*team->mutable_supervisor(), "b", "relay")->set_shutdown("brutal_kill");
  proto_source src;
  supervisor_spec out;
  auto problems = spec_from_policy(root, test_registry(), src, out);
  for (auto& p : problems)
    ADD_FAILURE() << p.text;
  EXPECT_EQ(out.flags.strategy, strategy::rest_for_one);
  EXPECT_EQ(out.flags.intensity, 4);
  EXPECT_EQ(out.flags.period, 2s);
  ASSERT_EQ(out.children.size(), 2u);
  auto& cw = out.children[0];
  EXPECT_EQ(cw.id, "w");
  EXPECT_EQ(cw.agent, "echo");
  EXPECT_EQ(cw.restart, restart_type::transient);
  EXPECT_TRUE(cw.has_shutdown);
  EXPECT_EQ(cw.shutdown.timeout, 250ms);
  EXPECT_EQ(cw.failure, on_failure::degrade);
  EXPECT_EQ(cw.degrade.fallback.type, "vigil.test.Pong");
  EXPECT_EQ(cw.degrade.probe_min, 5ms);
  EXPECT_EQ(cw.degrade.probe_max, 30000ms); // its default
  EXPECT_EQ(cw.params.at("k"), "v");
  EXPECT_EQ(cw.durability.mode, durability_mode::snapshot);
  auto& ct = out.children[1];
  EXPECT_EQ(ct.kind, child_kind::supervisor);
  ASSERT_TRUE(ct.sup);
  EXPECT_EQ(ct.sup->flags.intensity, 1); // OTP's default
  EXPECT_EQ(ct.sup->flags.period, 5000ms);
  EXPECT_EQ(ct.sup->children.at(0).effective_shutdown().how,
            shutdown_spec::kind::brutal_kill);
}

TEST(policy_spec_test, problems_name_their_message_and_field) {
  pol::Supervisor root;
  root.set_intensity(-1); // check_child_specs: invalid_intensity
  auto* a = add(root, "a", "nope");
  auto* b = add(root, "a", "echo");
  b->set_shutdown("soon");
  auto* c = add(root, "c", "");
  proto_source src;
  supervisor_spec out;
  auto problems = spec_from_policy(root, test_registry(), src, out);
  ASSERT_EQ(problems.size(), 5u);
  auto expect = [&](size_t i, const Message* msg, int field,
                    const std::string& text) {
    EXPECT_EQ(problems[i].msg, msg) << i;
    EXPECT_EQ(problems[i].field, field) << i;
    EXPECT_EQ(problems[i].text, text) << i;
  };
  expect(0, a, pol::Child::kAgentFieldNumber,
         "agent: unknown agent type \"nope\"; registered: "
           + [] {
               std::string known;
               for (auto& n : test_registry().names())
                 known += (known.empty() ? "" : ", ") + n;
               return known;
             }());
  expect(1, b, pol::Child::kNameFieldNumber,
         "duplicate child name \"a\" (first at Child.name)");
  expect(2, b, pol::Child::kShutdownFieldNumber,
         "shutdown: \"soon\" is not allowed; write brutal_kill, infinity or "
         "a duration like 5s");
  expect(3, c, -1,
         "child \"c\": needs \"agent\" (a registered agent type) or "
         "\"supervisor\"");
  EXPECT_EQ(problems[4].msg, &root);
  EXPECT_EQ(problems[4].field, pol::Supervisor::kIntensityFieldNumber);
  EXPECT_EQ(problems[4].text.rfind("intensity: ", 0), 0u) << problems[4].text;
  EXPECT_NE(problems[4].text.find("(invalid_intensity)"), std::string::npos)
    << problems[4].text;
}

} // namespace
} // namespace vigil::test
