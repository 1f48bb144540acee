// The wire form of child specs and child info (vigil/supervision/wire.hpp):
// every field survives to_wire -> bytes -> from_wire, the supervisor's
// messages survive CAF's binary serializer, bad bytes give a clear error,
// and a spec that went through serialization starts and behaves exactly as
// the original.

#include <gtest/gtest.h>

#include <google/protobuf/util/message_differencer.h>

#include "support/fixture.hpp"
#include "vigil/supervision/wire.hpp"

namespace vigil::test {
namespace {

using namespace std::chrono_literals;
using google::protobuf::util::MessageDifferencer;

/// A spec in which every field differs from its default.
child_spec every_field() {
  supervisor_spec inner;
  inner.flags.strategy = strategy::rest_for_one;
  inner.flags.intensity = 7;
  inner.flags.period = 1234ms;
  inner.flags.auto_shutdown = auto_shutdown::any_significant;
  inner.flags.backoff = {5ms, 80ms, 0.25, 3s};
  inner.flags.seed = 99;
  inner.saga = {true, 4, 150ms, 9s};
  inner.saga.durable = true;
  inner.saga.retention = 36h;
  inner.saga.outcome_to = "done/sink";
  auto w = worker("w", "echo")
             .with_restart(restart_type::transient)
             .with_shutdown(shutdown_spec::after(750ms))
             .with_significant()
             .with_param("k", "v")
             .with_param("empty", "")
             .with_failure(on_failure::degrade)
             .with_durability(durability_mode::snapshot);
  Pong fb;
  fb.set_from("fallback");
  w.degrade.set_fallback(fb);
  w.degrade.fallback.flags = envelope::degraded_flag;
  w.degrade.probe_min = 11ms;
  w.degrade.probe_max = 22ms;
  w.buffer_cap = 17;
  w.max_deliveries = 3;
  w.tools["ocr"].timeout = 4s;
  w.tools["ocr"].max_attempts = 2;
  w.tools["llm"].attempt_timeout = 1500ms;
  w.tools["llm"].cost_per_agent = 250.5;
  w.approval.required = true;
  w.approval.timeout = 90min;
  w.approval.types = {"vigil.test.Ping", "vigil.test.Order"};
  w.durability.every_messages = 5;
  w.durability.every = 60ms;
  inner.children.push_back(w);
  inner.children.push_back(
    worker("b", "relay").with_shutdown(shutdown_spec::brutal_kill()));
  inner.children.push_back(
    worker("i", "echo").with_shutdown(shutdown_spec::infinity()));
  auto out = supervisor("team", std::move(inner));
  out.restart = restart_type::temporary;
  out.failure = on_failure::escalate;
  return out;
}

template <class Wire, class T>
T through_bytes(const T& x) {
  auto bytes = to_wire(x).SerializeAsString();
  Wire w;
  EXPECT_TRUE(w.ParseFromString(bytes));
  T out;
  auto err = from_wire(w, out);
  EXPECT_FALSE(err) << describe(err);
  return out;
}

TEST(wire_test, child_spec_round_trips_every_field) {
  auto in = every_field();
  auto out = through_bytes<wire::ChildSpec>(in);
  EXPECT_TRUE(MessageDifferencer::Equals(to_wire(in), to_wire(out)))
    << to_wire(in).ShortDebugString() << "\n"
    << to_wire(out).ShortDebugString();
  // And in C++ terms, field by field where to_wire could hide a slip.
  EXPECT_EQ(out.id, "team");
  EXPECT_EQ(out.kind, child_kind::supervisor);
  EXPECT_EQ(out.restart, restart_type::temporary);
  EXPECT_EQ(out.failure, on_failure::escalate);
  EXPECT_FALSE(out.has_shutdown);
  ASSERT_TRUE(out.sup);
  auto& s = *out.sup;
  EXPECT_EQ(s.flags.strategy, strategy::rest_for_one);
  EXPECT_EQ(s.flags.intensity, 7);
  EXPECT_EQ(s.flags.period, 1234ms);
  EXPECT_EQ(s.flags.auto_shutdown, auto_shutdown::any_significant);
  EXPECT_EQ(s.flags.backoff.min, 5ms);
  EXPECT_EQ(s.flags.backoff.max, 80ms);
  EXPECT_EQ(s.flags.backoff.jitter, 0.25);
  EXPECT_EQ(s.flags.backoff.reset_after, 3s);
  EXPECT_EQ(s.flags.seed, 99u);
  EXPECT_TRUE(s.saga.enabled);
  EXPECT_EQ(s.saga.compensation_retries, 4u);
  EXPECT_EQ(s.saga.retry_delay, 150ms);
  EXPECT_EQ(s.saga.step_timeout, 9s);
  EXPECT_TRUE(s.saga.durable);
  EXPECT_EQ(s.saga.retention, 36h);
  EXPECT_EQ(s.saga.outcome_to, "done/sink");
  ASSERT_EQ(s.children.size(), 3u);
  auto& w = s.children[0];
  EXPECT_EQ(w.id, "w");
  EXPECT_EQ(w.agent, "echo");
  EXPECT_TRUE(w.approval.required);
  EXPECT_EQ(w.approval.timeout, 90min);
  EXPECT_EQ(w.approval.types,
            (std::vector<std::string>{"vigil.test.Ping", "vigil.test.Order"}));
  EXPECT_EQ(w.restart, restart_type::transient);
  EXPECT_TRUE(w.has_shutdown);
  EXPECT_EQ(w.shutdown.how, shutdown_spec::kind::timeout);
  EXPECT_EQ(w.shutdown.timeout, 750ms);
  EXPECT_TRUE(w.significant);
  EXPECT_EQ(w.params, (params{{"k", "v"}, {"empty", ""}}));
  EXPECT_EQ(w.failure, on_failure::degrade);
  EXPECT_EQ(w.degrade.fallback.type, Pong::descriptor()->full_name());
  EXPECT_EQ(w.degrade.fallback.payload, every_field()
                                          .sup->children[0]
                                          .degrade.fallback.payload);
  EXPECT_EQ(w.degrade.fallback.flags, envelope::degraded_flag);
  EXPECT_EQ(w.degrade.probe_min, 11ms);
  EXPECT_EQ(w.degrade.probe_max, 22ms);
  EXPECT_EQ(w.buffer_cap, 17u);
  EXPECT_EQ(w.max_deliveries, 3u);
  EXPECT_EQ(w.durability.mode, durability_mode::snapshot);
  EXPECT_EQ(w.durability.every_messages, 5u);
  EXPECT_EQ(w.durability.every, 60ms);
  ASSERT_EQ(w.tools.size(), 2u);
  EXPECT_EQ(w.tools.at("ocr").timeout, std::optional<vigil::duration>{4s});
  EXPECT_EQ(w.tools.at("ocr").max_attempts, std::optional<uint32_t>{2});
  EXPECT_FALSE(w.tools.at("ocr").attempt_timeout);
  EXPECT_FALSE(w.tools.at("ocr").cost_per_agent);
  EXPECT_EQ(w.tools.at("llm").attempt_timeout,
            std::optional<vigil::duration>{1500ms});
  EXPECT_EQ(w.tools.at("llm").cost_per_agent, std::optional<double>{250.5});
  EXPECT_FALSE(w.tools.at("llm").timeout);
  EXPECT_EQ(s.children[1].shutdown.how, shutdown_spec::kind::brutal_kill);
  EXPECT_EQ(s.children[2].shutdown.how, shutdown_spec::kind::infinity);
  EXPECT_EQ(s.children[2].effective_shutdown().how,
            shutdown_spec::kind::infinity);
}

TEST(wire_test, default_spec_round_trips_with_otp_defaults) {
  auto out = through_bytes<wire::ChildSpec>(worker("w", "echo"));
  EXPECT_FALSE(out.has_shutdown);
  EXPECT_EQ(out.effective_shutdown().timeout, 5000ms);
  EXPECT_EQ(out.buffer_cap, 10000u);
  EXPECT_EQ(out.max_deliveries, 1u);
  EXPECT_EQ(out.degrade.probe_min, 1000ms);
  EXPECT_EQ(out.durability.mode, durability_mode::none);
  EXPECT_FALSE(out.sup);
  // A supervisor spec with its flags left out keeps OTP's.
  supervisor_spec s;
  ASSERT_FALSE(from_wire(wire::SupervisorSpec{}, s));
  EXPECT_EQ(s.flags.intensity, 1);
  EXPECT_EQ(s.flags.period, 5000ms);
  EXPECT_EQ(s.saga.compensation_retries, 3u);
}

TEST(wire_test, child_info_and_counts_round_trip_without_the_handle) {
  child_info ci;
  ci.id = "w";
  ci.path = "root/w";
  ci.kind = child_kind::supervisor;
  ci.status = "degraded";
  ci.restarts = 12;
  auto out = through_bytes<wire::ChildInfo>(ci);
  EXPECT_EQ(out.id, "w");
  EXPECT_EQ(out.path, "root/w");
  EXPECT_EQ(out.kind, child_kind::supervisor);
  EXPECT_EQ(out.status, "degraded");
  EXPECT_EQ(out.restarts, 12u);
  EXPECT_FALSE(out.handle);
  child_counts n{4, 3, 2, 1};
  EXPECT_EQ(through_bytes<wire::ChildCounts>(n), n);
}

TEST(wire_test, unknown_enum_value_is_a_clear_error) {
  auto w = to_wire(worker("w", "echo"));
  w.set_restart(static_cast<policy::Restart>(258));
  child_spec out;
  auto err = from_wire(w, out);
  ASSERT_TRUE(err);
  EXPECT_TRUE(is(err, errc::bad_payload));
  EXPECT_EQ(describe(err),
            "bad_payload: child_spec w: restart: unknown value 258");
  // Also when it is deep inside a nested supervisor.
  auto s = to_wire(every_field());
  s.mutable_supervisor()->mutable_children(1)->mutable_durability()->set_mode(
    static_cast<policy::Mode>(9));
  err = from_wire(s, out);
  EXPECT_EQ(describe(err),
            "bad_payload: child_spec b: durability.mode: unknown value 9");
}

// -- through CAF's serializer -------------------------------------------------

class wire_caf_test : public runtime_fixture {
public:
  std::vector<char> save(const caf::message& m) {
    std::vector<char> buf;
    caf::binary_serializer sink{sys, buf};
    auto err = sink(const_cast<caf::message&>(m));
    EXPECT_FALSE(err) << sys.render(err);
    return buf;
  }

  caf::expected<caf::message> load(const std::vector<char>& buf) {
    caf::message out;
    caf::binary_deserializer source{sys, buf};
    if (auto err = source(out))
      return err;
    return out;
  }

  /// Observations of the tree at `root` whose child "team" runs "w": the
  /// replies, statuses, restart counts and instance starts, with the root's
  /// name taken out so that two trees can be compared.
  std::vector<std::string> drive(const std::string& root,
                                 const caf::actor& sup) {
    std::vector<std::string> seen;
    auto path = root + "/team/w";
    auto strip = [&](std::string s) {
      for (size_t i; (i = s.find(root + "/")) != std::string::npos;)
        s.erase(i, root.size() + 1);
      return s;
    };
    auto note = [&](const std::string& what) {
      auto team = rt->lookup(root + "/team");
      std::string line = what;
      if (team)
        for (auto& ci : which(team))
          line += " | " + ci.id + " " + ci.status + " "
                  + std::to_string(ci.restarts);
      line += " | starts " + std::to_string(switches::get().start_count(path));
      seen.push_back(strip(line));
    };
    auto reply = [&](int64_t n) {
      auto r = call(path, ping(n));
      if (!r)
        return "error " + describe(r.error());
      auto p = pong_of(*r);
      return std::string{r->degraded() ? "degraded " : ""} + p.from() + " "
             + std::to_string(p.n()) + " seen " + std::to_string(p.seen());
    };
    note("start " + reply(1));
    crash(path);
    note("crashed once");
    advance(5ms); // the backoff's first delay
    note("after backoff " + reply(2));
    crash(path); // the team's budget (intensity 1 per 1s) is spent
    advance(10ms); // the backoff's second delay: the restart degrades it
    note("crashed twice " + reply(3));
    advance(11ms); // the stand-in's first probe
    note("probed " + reply(4));
    EXPECT_FALSE(ask_void(sup, terminate_child_atom::value,
                           std::string{"team"}));
    note("terminated");
    return seen;
  }
};

supervisor_spec team_tree() {
  supervisor_spec team;
  team.flags.intensity = 1;
  team.flags.period = 1s;
  team.flags.backoff = {5ms, 80ms, 0.0, 0ms};
  auto w = worker("w", "echo")
             .with_restart(restart_type::transient)
             .with_param("greeting", "hi")
             .with_failure(on_failure::degrade);
  Pong fb;
  fb.set_from("fallback");
  w.degrade.set_fallback(fb);
  w.degrade.probe_min = 11ms;
  w.degrade.probe_max = 22ms;
  team.children.push_back(w);
  team.children.push_back(worker("x", "echo"));
  return team;
}

TEST_F(wire_caf_test, start_child_message_survives_caf_serialization) {
  auto spec = every_field();
  auto buf = save(caf::make_message(start_child_atom::value, spec));
  auto m = load(buf);
  ASSERT_TRUE(m) << sys.render(m.error());
  ASSERT_TRUE((m->match_elements<start_child_atom, child_spec>()))
    << caf::to_string(*m);
  EXPECT_TRUE(MessageDifferencer::Equals(
    to_wire(spec), to_wire(m->get_as<child_spec>(1))));
  // The replies too.
  child_info ci;
  ci.id = "w";
  ci.status = "running";
  ci.restarts = 2;
  auto r = load(save(caf::make_message(std::vector<child_info>{ci, ci},
                                       child_counts{1, 2, 3, 4},
                                       params{{"a", "b"}})));
  ASSERT_TRUE(r) << sys.render(r.error());
  ASSERT_TRUE(
    (r->match_elements<std::vector<child_info>, child_counts, params>()));
  EXPECT_EQ(r->get_as<std::vector<child_info>>(0).size(), 2u);
  EXPECT_EQ(r->get_as<std::vector<child_info>>(0)[1].restarts, 2u);
  EXPECT_EQ(r->get_as<child_counts>(1), (child_counts{1, 2, 3, 4}));
  EXPECT_EQ(r->get_as<params>(2).at("a"), "b");
}

TEST_F(wire_caf_test, corrupt_spec_bytes_fail_to_load_with_a_clear_error) {
  auto spec = worker("w", "echo");
  auto bytes = to_wire(spec).SerializeAsString();
  bytes[0] = '\xff'; // a tag of wire type 7, which does not exist
  std::vector<char> buf;
  caf::binary_serializer sink{sys, buf};
  ASSERT_FALSE(sink(bytes));
  child_spec out;
  caf::binary_deserializer source{sys, buf};
  auto err = source(out);
  EXPECT_EQ(describe(err),
            "bad_payload: vigil.child_spec: bytes do not parse as "
            "vigil.wire.ChildSpec");
  // Inside a whole message, CAF 0.17 drops the message whose element fails
  // to load: what arrives matches no handler (and is refused as such).
  auto msg = save(caf::make_message(start_child_atom::value, spec));
  auto good = to_wire(spec).SerializeAsString();
  auto at = std::search(msg.begin(), msg.end(), good.begin(), good.end());
  ASSERT_NE(at, msg.end());
  *at = '\xff';
  auto m = load(msg);
  EXPECT_TRUE(!m || m->empty()) << caf::to_string(*m);
}

TEST_F(wire_caf_test, printed_spec_is_readable) {
  auto text = caf::to_string(
    caf::make_message(start_child_atom::value, worker("w", "echo")));
  EXPECT_NE(text.find(R"(vigil.child_spec("id: \"w\" agent: \"echo\")"),
            std::string::npos)
    << text;
}

TEST_F(wire_caf_test, spec_that_was_serialized_starts_and_behaves_the_same) {
  caf::actor a;
  caf::actor b;
  ASSERT_FALSE(start("a", flags(strategy::one_for_one, 10), &a));
  ASSERT_FALSE(start("b", flags(strategy::one_for_one, 10), &b));
  auto original = supervisor("team", team_tree());
  // b gets the spec as a remote node would: as bytes.
  auto m = load(save(caf::make_message(start_child_atom::value, original)));
  ASSERT_TRUE(m) << sys.render(m.error());
  auto ra = ask<child_info>(a, start_child_atom::value, original);
  auto rb = ask<child_info>(b, std::move(*m));
  ASSERT_TRUE(ra) << describe(ra.error());
  ASSERT_TRUE(rb) << describe(rb.error());
  EXPECT_EQ(ra->path, "a/team");
  EXPECT_EQ(rb->path, "b/team");
  auto seen_a = drive("a", a);
  auto seen_b = drive("b", b);
  EXPECT_EQ(seen_a, seen_b);
  // The story itself, so that two equally broken trees cannot pass.
  ASSERT_EQ(seen_a.size(), 6u);
  EXPECT_EQ(seen_a[0], "start team/w 1 seen 1 | w running 0 | x running 0 "
                       "| starts 1");
  EXPECT_EQ(seen_a[2], "after backoff team/w 2 seen 1 | w running 1 "
                       "| x running 0 | starts 2");
  EXPECT_EQ(seen_a[3], "crashed twice degraded fallback 0 seen 0 "
                       "| w degraded 2 | x running 0 | starts 2");
  EXPECT_EQ(seen_a[4].rfind("probed team/w 4 seen 1 | w running 2", 0), 0u)
    << seen_a[4];
  EXPECT_EQ(seen_a[5], "terminated | starts 3");
}

} // namespace
} // namespace vigil::test
