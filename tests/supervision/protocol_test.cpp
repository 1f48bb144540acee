// The supervisor and cell protocols (vigil/supervision/supervisor.hpp,
// vigil/actors/cell.hpp): named messages that survive CAF's serializer, a
// typed handle whose requests the compiler checks, and a clear refusal,
// never a silent drop, for a message outside the protocol.

#include <gtest/gtest.h>

#include "support/fixture.hpp"

namespace vigil::test {
namespace {

class protocol_test : public runtime_fixture {
public:
  caf::message round_trip(caf::message m) {
    std::vector<char> buf;
    caf::binary_serializer sink{sys, buf};
    auto err = sink(m);
    EXPECT_FALSE(err) << sys.render(err);
    caf::message out;
    caf::binary_deserializer source{sys, buf};
    err = source(out);
    EXPECT_FALSE(err) << sys.render(err);
    return out;
  }

  caf::actor start_one_worker() {
    auto spec = flags(strategy::one_for_one);
    spec.children.push_back(worker("w", "echo"));
    caf::actor sup;
    auto err = start("sup", spec, &sup);
    EXPECT_FALSE(err) << describe(err);
    return sup;
  }
};

TEST_F(protocol_test, commands_and_reports_survive_caf_serialization) {
  auto m = round_trip(caf::make_message(
    start_cmd{true, make_error(errc::handler_failed, "boom")},
    stop_cmd{false, true, caf::timespan{42}, true}, exit_report{3, 4, {}},
    recover_report{5, 6}, stop_ack{7}));
  ASSERT_TRUE((m.match_elements<start_cmd, stop_cmd, exit_report,
                                recover_report, stop_ack>()))
    << caf::to_string(m);
  auto& start = m.get_as<start_cmd>(0);
  EXPECT_TRUE(start.is_restart);
  EXPECT_EQ(describe(start.reason), "handler_failed: boom");
  auto& stop = m.get_as<stop_cmd>(1);
  EXPECT_FALSE(stop.graceful);
  EXPECT_TRUE(stop.keep_buffer);
  EXPECT_EQ(stop.give_up_at.count(), 42);
  EXPECT_TRUE(stop.ack);
  EXPECT_EQ(m.get_as<exit_report>(2).key, 3u);
  EXPECT_EQ(m.get_as<exit_report>(2).gen, 4u);
  EXPECT_EQ(m.get_as<recover_report>(3).gen, 6u);
  EXPECT_EQ(m.get_as<stop_ack>(4).key, 7u);
  degrade_cmd d;
  d.fallback = wrap(ping(9));
  d.probe_min = caf::timespan{10};
  d.probe_max = caf::timespan{20};
  auto n = round_trip(caf::make_message(d));
  ASSERT_TRUE(n.match_elements<degrade_cmd>());
  EXPECT_EQ(n.get_as<degrade_cmd>(0).fallback.payload, d.fallback.payload);
  EXPECT_EQ(n.get_as<degrade_cmd>(0).probe_max.count(), 20);
  // Printed by name and field, as a log line shows them.
  EXPECT_EQ(caf::to_string(caf::make_message(stop_ack{7})),
            "(vigil.stop_ack(7))");
}

TEST_F(protocol_test, typed_handle_checks_requests_at_compile_time) {
  auto sup = start_one_worker();
  auto api = caf::actor_cast<supervisor_api>(sup);
  // (A request that supervisor_api does not declare would not compile.)
  auto h = self->request(api, caf::infinite, which_children_atom::value);
  run();
  std::vector<child_info> got;
  std::move(h).receive([&](std::vector<child_info>& xs) { got = xs; },
                       [](caf::error& e) { ADD_FAILURE() << describe(e); });
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].path, "sup/w");
}

TEST_F(protocol_test, supervisor_refuses_a_message_outside_its_protocol) {
  auto sup = start_one_worker();
  // The old positional form of a start, and something else entirely.
  auto err = ask_void(sup, caf::atom("vstart"), false, caf::error{});
  ASSERT_TRUE(err);
  EXPECT_TRUE(is(err, errc::unknown_message_type)) << describe(err);
  EXPECT_NE(describe(err).find("sup is a supervisor and takes no ('vstart', "
                               "false, "),
            std::string::npos)
    << describe(err);
  err = ask_void(sup, start_child_atom::value, std::string{"w2"});
  EXPECT_TRUE(is(err, errc::unknown_message_type)) << describe(err);
  // It is refused, not fatal: the supervisor and its child run on.
  EXPECT_TRUE(alive(sup));
  EXPECT_EQ(status_of(sup, "w"), "running");
  auto r = call("sup/w", ping(1));
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_EQ(pong_of(*r).n(), 1);
}

TEST_F(protocol_test, cell_refuses_a_message_outside_its_protocol) {
  auto sup = start_one_worker();
  auto cell = handle("sup/w");
  ASSERT_TRUE(cell);
  // A stop in the old positional form must not stop the child.
  auto err = ask_void(cell, caf::atom("vstop"), true, false);
  ASSERT_TRUE(err);
  EXPECT_TRUE(is(err, errc::unknown_message_type)) << describe(err);
  EXPECT_NE(describe(err).find("sup/w got an unexpected message: ('vstop', "
                               "true, false)"),
            std::string::npos)
    << describe(err);
  // A supervisor's request is no cell's either.
  err = ask_void(cell, which_children_atom::value);
  EXPECT_TRUE(is(err, errc::unknown_message_type)) << describe(err);
  EXPECT_EQ(status_of(sup, "w"), "running");
  auto r = call("sup/w", ping(2));
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_EQ(pong_of(*r).n(), 2);
  EXPECT_EQ(switches::get().start_count("sup/w"), 1);
}

} // namespace
} // namespace vigil::test
