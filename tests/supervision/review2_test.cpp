// Review 2 of the wire form and the supervisor protocol: defects found at
// 25c449a, each as a test that fails there.

#include <gtest/gtest.h>

#include <caf/send.hpp>

#include "support/fixture.hpp"
#include "vigil/supervision/policy.hpp"
#include "vigil/supervision/wire.hpp"

namespace vigil::test {
namespace {

using namespace std::chrono_literals;

// -- wire form ----------------------------------------------------------------

// params are std::map<std::string, std::string>: any bytes. The wire form
// puts them (and id, agent, the fallback's type) in proto3 `string` fields,
// which Protobuf refuses to parse unless they are valid UTF-8. A spec whose
// param holds e.g. Latin-1 text is written but cannot be read back.
TEST(review2_wire_test, param_that_is_not_utf8_round_trips) {
  auto in = worker("w", "echo").with_param("name", "Jos\xe9"); // Latin-1
  auto bytes = to_wire(in).SerializeAsString();
  wire::ChildSpec w;
  ASSERT_TRUE(w.ParseFromString(bytes))
    << "a spec vigil wrote does not parse back";
  child_spec out;
  ASSERT_FALSE(from_wire(w, out));
  EXPECT_EQ(out.params.at("name"), "Jos\xe9");
}

TEST(review2_wire_test, id_that_is_not_utf8_round_trips_or_is_refused) {
  // Either check_child_specs refuses the id, or it survives the wire.
  auto in = worker("w\xff", "echo");
  supervisor_spec s;
  s.children.push_back(in);
  auto problems = check_child_specs(s, nullptr, "root");
  if (!problems.empty())
    return;
  wire::ChildSpec w;
  EXPECT_TRUE(w.ParseFromString(to_wire(in).SerializeAsString()))
    << "check_child_specs accepts an id that the wire form cannot carry";
}

// Protobuf parses at most 100 nested messages; each supervisor level is two
// (ChildSpec, SupervisorSpec). A tree check_child_specs accepts must
// travel, or check_child_specs must refuse it.
TEST(review2_wire_test, deep_tree_that_checks_also_travels) {
  auto leaf = worker("w", "echo");
  child_spec c = leaf;
  for (int i = 0; i < 60; ++i) {
    supervisor_spec s;
    s.children.push_back(c);
    c = supervisor("s" + std::to_string(i), std::move(s));
  }
  supervisor_spec root;
  root.children.push_back(c);
  if (!check_child_specs(root, nullptr, "root").empty())
    return;
  wire::ChildSpec w;
  EXPECT_TRUE(w.ParseFromString(to_wire(c).SerializeAsString()))
    << "a 60-level tree passes check_child_specs but its wire form does "
       "not parse";
}

// -- check_child_specs on what arrives from the wire --------------------------

// max_duration's contract (child_spec.hpp:17-21): every duration in a spec
// becomes a caf::timespan, so check_child_specs refuses longer ones. The
// saga's durations are never checked: a wire spec can carry any int64.
TEST(review2_wire_test, saga_durations_beyond_max_duration_are_refused) {
  wire::SupervisorSpec w = to_wire(flags(strategy::one_for_one, 10));
  *w.add_children() = to_wire(worker("step", "echo"));
  w.mutable_saga()->set_enabled(true);
  w.mutable_saga()->set_step_timeout_ms(INT64_MAX / 2);
  supervisor_spec spec;
  ASSERT_FALSE(from_wire(w, spec));
  auto problems = check_child_specs(spec, nullptr, "root");
  EXPECT_FALSE(problems.empty())
    << "saga.step_timeout of " << spec.saga.step_timeout.count()
    << "ms (beyond max_duration) passes check_child_specs";
}

TEST(review2_wire_test, negative_saga_retry_delay_is_refused) {
  wire::SupervisorSpec w = to_wire(flags(strategy::one_for_one, 10));
  *w.add_children() = to_wire(worker("step", "echo"));
  w.mutable_saga()->set_enabled(true);
  w.mutable_saga()->set_retry_delay_ms(-5000);
  supervisor_spec spec;
  ASSERT_FALSE(from_wire(w, spec));
  EXPECT_FALSE(check_child_specs(spec, nullptr, "root").empty())
    << "saga.retry_delay of -5000ms passes check_child_specs";
}

TEST(review2_wire_test, negative_snapshot_interval_is_refused) {
  auto w = to_wire(worker("w", "echo"));
  w.mutable_durability()->set_mode(policy::Mode(1)); // snapshot
  w.mutable_durability()->set_every_messages(5);
  w.mutable_durability()->set_every_ms(-1000);
  child_spec cs;
  ASSERT_FALSE(from_wire(w, cs));
  ASSERT_EQ(cs.durability.mode, durability_mode::snapshot);
  supervisor_spec s;
  s.children.push_back(cs);
  EXPECT_FALSE(check_child_specs(s, nullptr, "root").empty())
    << "durability.every of -1000ms passes check_child_specs";
}

// -- a policy received as Protobuf (policy.hpp: "or a node that received
// one"): its durations bypass the YAML parser's bound ----------------------

class proto_source : public policy_source {
public:
  bool written(const google::protobuf::Message& m, int field) const override {
    if (field < 0)
      return true;
    auto* f = m.GetDescriptor()->FindFieldByNumber(field);
    auto* r = m.GetReflection();
    return f->is_repeated() ? r->FieldSize(m, f) > 0 : r->HasField(m, f);
  }
  bool rejected(const google::protobuf::Message&, int) const override {
    return false;
  }
  std::string where(const google::protobuf::Message& m,
                    int field) const override {
    return m.GetDescriptor()->name() + "."
           + m.GetDescriptor()->FindFieldByNumber(field)->name();
  }
};

// to_ms (supervision/src/policy.cpp:23) multiplies seconds by 1000 in
// int64 without a bound: 2^61 + 5 seconds wraps to 5000 ms, a period that
// passes every check.
TEST(review2_policy_test, huge_period_is_refused_not_wrapped) {
  policy::Supervisor root;
  root.mutable_period()->set_seconds((int64_t{1} << 61) + 5);
  root.add_children()->set_name("w");
  root.mutable_children(0)->set_agent("echo");
  proto_source src;
  supervisor_spec out;
  auto problems = spec_from_policy(root, test_registry(), src, out);
  EXPECT_FALSE(problems.empty())
    << "a period of 2^61+5 s became " << out.flags.period.count() << "ms";
}

TEST(review2_policy_test, saga_step_timeout_beyond_max_duration_is_refused) {
  policy::Supervisor root;
  root.mutable_saga()->mutable_step_timeout()->set_seconds(
    int64_t{1000000000000}); // 31,700 years
  root.add_children()->set_name("w");
  root.mutable_children(0)->set_agent("echo");
  proto_source src;
  supervisor_spec out;
  auto problems = spec_from_policy(root, test_registry(), src, out);
  EXPECT_FALSE(problems.empty())
    << "saga.step_timeout " << out.saga.step_timeout.count()
    << "ms passes";
}

// policy.cpp:31-35 casts the Protobuf enums into vigil's uint8_t enums and
// counts on check_child_specs to catch "any value out of range"; a value
// of 256 or more wraps into range first (256 + 1 is transient).
TEST(review2_policy_test, enum_value_out_of_range_is_refused_not_wrapped) {
  policy::Supervisor root;
  auto* c = root.add_children();
  c->set_name("w");
  c->set_agent("echo");
  c->set_restart(static_cast<policy::Restart>(257));
  proto_source src;
  supervisor_spec out;
  auto problems = spec_from_policy(root, test_registry(), src, out);
  EXPECT_FALSE(problems.empty())
    << "restart 257 became " << to_string(out.children.at(0).restart);
}

// -- the supervisor protocol --------------------------------------------------

class review2_test : public runtime_fixture {};

TEST_F(review2_test, wire_saga_with_overflowing_step_timeout_is_not_started) {
  caf::actor sup;
  ASSERT_FALSE(start("s", flags(strategy::one_for_one, 10), &sup));
  wire::ChildSpec w = to_wire(saga("sg", {worker("step", "echo")}));
  w.mutable_supervisor()->mutable_saga()->set_step_timeout_ms(INT64_MAX / 2);
  child_spec cs;
  ASSERT_FALSE(from_wire(w, cs));
  auto r = ask<child_info>(sup, start_child_atom::value, cs);
  EXPECT_FALSE(r) << "started " << r->path << " with saga.step_timeout "
                  << cs.sup->saga.step_timeout.count() << "ms";
}

// A dynamic child's name becomes its id and its path segment; an id may not
// contain '/' (check_child_spec), but start_child(params, name) never checks
// the name: "s/a/b" is bound as if "a" were a supervisor with a child "b".
TEST_F(review2_test, dynamic_child_name_with_slash_is_refused) {
  auto spec = flags(strategy::simple_one_for_one, 10);
  spec.children.push_back(worker("t", "echo"));
  caf::actor sup;
  ASSERT_FALSE(start("s", spec, &sup));
  auto r = ask<child_info>(sup, start_child_atom::value, params{},
                           std::string{"a/b"});
  ASSERT_FALSE(r) << "started a child with id 'a/b' at " << r->path;
  EXPECT_TRUE(is(r.error(), errc::invalid_child_spec)) << describe(r.error());
}

// A recover_report carries the generation of the instance that recovered.
// The supervisor takes any generation from the degraded child's cell and
// overwrites its own: a report from an earlier generation marks the child
// running while its cell still answers with the stand-in.
TEST_F(review2_test, stale_recover_report_is_ignored_by_generation) {
  auto spec = flags(strategy::one_for_one, 1, 1000);
  spec.flags.backoff = {5ms, 80ms, 0.0, 0ms};
  auto w = worker("w", "echo")
             .with_restart(restart_type::transient)
             .with_failure(on_failure::degrade);
  Pong fb;
  fb.set_from("fallback");
  w.degrade.set_fallback(fb);
  w.degrade.probe_min = 1000ms;
  w.degrade.probe_max = 2000ms;
  spec.children.push_back(w);
  caf::actor sup;
  ASSERT_FALSE(start("s", spec, &sup));
  crash("s/w");
  advance(5ms);
  ASSERT_EQ(status_of(sup, "w"), "running");
  crash("s/w"); // the budget (1 per 1 s) is spent: it degrades
  advance(10ms);
  ASSERT_EQ(status_of(sup, "w"), "degraded");
  auto r = call("s/w", ping(1));
  ASSERT_TRUE(r) << describe(r.error());
  ASSERT_TRUE(r->degraded());
  // A report from the first instance (generation 1; this cell has started
  // two since), arriving late from the cell.
  auto cell = handle("s/w");
  ASSERT_TRUE(cell);
  caf::send_as(cell, sup, recover_report{1, 1});
  run();
  EXPECT_EQ(status_of(sup, "w"), "degraded");
  r = call("s/w", ping(2));
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_TRUE(r->degraded()) << "the cell still answers with the stand-in";
}

// What the stale report costs: the supervisor now holds generation 1 and
// takes the child for running, so the real recovery's report (it is not
// degraded any more) and then the recovered instance's crash (generation
// mismatch) are both dropped as stale. Nobody restarts it.
TEST_F(review2_test, crash_after_a_stale_recover_report_is_still_restarted) {
  auto spec = flags(strategy::one_for_one, 1, 1000);
  spec.flags.backoff = {5ms, 80ms, 0.0, 0ms};
  auto w = worker("w", "echo")
             .with_restart(restart_type::transient)
             .with_failure(on_failure::degrade);
  Pong fb;
  fb.set_from("fallback");
  w.degrade.set_fallback(fb);
  w.degrade.probe_min = 20ms;
  w.degrade.probe_max = 40ms;
  spec.children.push_back(w);
  caf::actor sup;
  ASSERT_FALSE(start("s", spec, &sup));
  crash("s/w");
  advance(5ms);
  crash("s/w");
  advance(10ms);
  ASSERT_EQ(status_of(sup, "w"), "degraded");
  caf::send_as(handle("s/w"), sup, recover_report{1, 1});
  run();
  advance(2000ms); // past the budget's period and the first probe
  auto r = call("s/w", ping(1)); // the probe: the real instance answers
  ASSERT_TRUE(r) << describe(r.error());
  ASSERT_FALSE(r->degraded());
  auto starts = switches::get().start_count("s/w");
  crash("s/w");
  advance(100ms); // any backoff
  EXPECT_GT(switches::get().start_count("s/w"), starts)
    << "the crash of the recovered instance was dropped as stale";
  r = call("s/w", ping(2));
  EXPECT_TRUE(r) << describe(r.error());
}

// An agent type whose params are checked before anything starts.
class strict : public agent<> {
public:
  static void define(handlers<strict>&) {
  }
  static std::vector<std::string> check_params(const params& ps) {
    std::vector<std::string> out;
    for (auto& kv : ps)
      if (kv.first != "n")
        out.push_back("strict: unknown param '" + kv.first + "'");
    return out;
  }
};

// check.cpp:164-166: "A simple_one_for_one template's params are completed
// by each start_child, whose spec is checked then." The dynamic
// start_child (supervisor.cpp handle_start_dynamic_child) checks nothing:
// a child with params its agent type refuses starts.
TEST_F(review2_test, dynamic_child_params_are_checked) {
  registry types = test_registry();
  types.add<strict>("strict");
  rt = std::make_shared<runtime>(std::move(types));
  // A static child with that param is refused...
  caf::actor s1;
  ASSERT_FALSE(start("s1", flags(strategy::one_for_one, 10), &s1));
  auto bad = worker("x", "strict").with_param("bogus", "1");
  auto r1 = ask<child_info>(s1, start_child_atom::value, bad);
  ASSERT_FALSE(r1) << "a static child with a bad param started";
  ASSERT_TRUE(is(r1.error(), errc::invalid_child_spec))
    << describe(r1.error());
  // ...and so should a dynamic child with it be.
  auto spec = flags(strategy::simple_one_for_one, 10);
  spec.children.push_back(worker("t", "strict"));
  caf::actor s2;
  ASSERT_FALSE(start("s2", spec, &s2));
  auto r2 = ask<child_info>(s2, start_child_atom::value,
                            params{{"bogus", "1"}}, std::string{});
  EXPECT_FALSE(r2) << "started " << r2->path
                   << " with a param its agent type refuses";
}

// The cell takes its protocol (start_cmd, stop_cmd, degrade_cmd, ...) from
// any sender (cell.cpp control(), no check against parent_), and a cell's
// handle is what rt->lookup(path) gives every client. A stop_cmd from a
// client stops the agent; its supervisor is never told and reports it
// running, while every call fails with not_running, for ever.
TEST_F(review2_test, stop_cmd_from_a_client_does_not_silently_kill_the_agent) {
  auto spec = flags(strategy::one_for_one, 10);
  spec.children.push_back(worker("w", "echo"));
  caf::actor sup;
  ASSERT_FALSE(start("s", spec, &sup));
  auto cell = handle("s/w");
  ASSERT_TRUE(cell);
  auto refused = ask_void(cell, stop_cmd{true, false});
  auto r = call("s/w", ping(1));
  EXPECT_TRUE(refused || r)
    << "a client's stop_cmd was accepted; the supervisor says w is "
    << status_of(sup, "w") << " and a call gets " << describe(r.error());
}

// A start_cmd from a client replaces the running instance (no on_stop) and
// moves the cell to a generation its supervisor does not know: the new
// instance's crash is then dropped as stale and never restarted.
TEST_F(review2_test, start_cmd_from_a_client_does_not_orphan_the_agent) {
  auto spec = flags(strategy::one_for_one, 10);
  spec.children.push_back(worker("w", "echo"));
  caf::actor sup;
  ASSERT_FALSE(start("s", spec, &sup));
  auto cell = handle("s/w");
  ASSERT_TRUE(cell);
  auto refused = ask<uint64_t>(cell, start_cmd{});
  auto starts = switches::get().start_count("s/w");
  crash("s/w");
  advance(100ms);
  auto r = call("s/w", ping(1));
  EXPECT_TRUE(r) << "after a client's start_cmd ("
                 << (refused ? "accepted" : describe(refused.error()))
                 << ") the agent's crash was not restarted: "
                 << describe(r.error());
  EXPECT_GT(switches::get().start_count("s/w"), starts);
}

// A spec whose bytes do not parse: the requester should learn that (the
// bad_payload of wire.hpp's load_wire), not that the supervisor "takes no
// <empty-message>". CAF 0.17 swallows the element's load error and hands
// over an empty message, so the reason vigil wrote is lost.
TEST_F(review2_test, DISABLED_corrupt_spec_is_answered_with_the_parse_error) {
  caf::actor sup;
  ASSERT_FALSE(start("s", flags(strategy::one_for_one, 10), &sup));
  auto spec = worker("w", "echo");
  std::vector<char> buf;
  caf::binary_serializer sink{sys, buf};
  auto m0 = caf::make_message(start_child_atom::value, spec);
  ASSERT_FALSE(sink(m0));
  auto good = to_wire(spec).SerializeAsString();
  auto at = std::search(buf.begin(), buf.end(), good.begin(), good.end());
  ASSERT_NE(at, buf.end());
  *at = '\xff';
  caf::message m;
  caf::binary_deserializer source{sys, buf};
  auto err = source(m);
  if (err) { // refused at the boundary with a reason: fine if it says so
    EXPECT_NE(sys.render(err).find("vigil.wire.ChildSpec"), std::string::npos)
      << sys.render(err);
    return;
  }
  auto r = ask<child_info>(sup, std::move(m));
  ASSERT_FALSE(r);
  EXPECT_TRUE(is(r.error(), errc::bad_payload)) << describe(r.error());
}

} // namespace
} // namespace vigil::test
