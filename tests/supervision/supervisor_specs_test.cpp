// Ports of OTP's supervisor_SUITE groups sup_start / sup_start_map and the
// child_specs / sup_flags cases: defaults, spec validation and failed starts.
// Each test is named after the OTP case it mirrors.

#include <functional>
#include <set>

#include "supervision/otp_support.hpp"

using namespace std::chrono_literals;
using namespace vigil;
using namespace vigil::test;

namespace {

using sup_test = otp_fixture;

// -- defaults and faulty specs (groups sup_start, sup_start_map, child specs) -

// OTP's defaults: one_for_one, intensity 1, period 5 s, auto_shutdown never;
// children permanent workers, shutdown 5000 ms (worker) / infinity
// (supervisor), not significant.
TEST_F(sup_test, sup_start_map) {
  sup_flags f;
  EXPECT_EQ(f.strategy, strategy::one_for_one);
  EXPECT_EQ(f.intensity, 1);
  EXPECT_EQ(f.period, 5000ms);
  EXPECT_EQ(f.auto_shutdown, auto_shutdown::never);
  auto w = worker("child1", "echo");
  EXPECT_EQ(w.kind, child_kind::worker);
  EXPECT_EQ(w.restart, restart_type::permanent);
  EXPECT_FALSE(w.significant);
  EXPECT_EQ(w.effective_shutdown().how, shutdown_spec::kind::timeout);
  EXPECT_EQ(w.effective_shutdown().timeout, 5000ms);
  auto s = supervisor("child2", supervisor_spec{});
  EXPECT_EQ(s.restart, restart_type::permanent);
  EXPECT_EQ(s.effective_shutdown().how, shutdown_spec::kind::infinity);
  // The defaults in force: a second restart within 5 s is one too many...
  supervisor_spec spec;
  spec.children.push_back(worker("child1", "echo"));
  caf::actor a;
  ASSERT_FALSE(start("a", spec, &a));
  auto wa = watch(a);
  crash("a/child1");
  EXPECT_TRUE(alive(a));
  advance(4000ms);
  crash("a/child1");
  EXPECT_TRUE(wa->exited);
  EXPECT_TRUE(has_code(wa->reason, errc::reached_max_restart_intensity));
  // ...but one more than 5 s after the first is not.
  caf::actor b;
  ASSERT_FALSE(start("b", spec, &b));
  crash("b/child1");
  advance(6000ms);
  crash("b/child1");
  EXPECT_TRUE(alive(b));
  EXPECT_EQ(starts("b/child1"), 3);
}

struct spec_case {
  const char* name;
  std::function<void(supervisor_spec&)> mutate;
  spec_errc code;
  const char* field;
  const char* where;
};

supervisor_spec valid_spec() {
  auto spec = flags(strategy::one_for_one, 3, 5000);
  spec.children.push_back(worker("child1", "echo"));
  return spec;
}

child_spec& first(supervisor_spec& s) {
  return s.children.front();
}

template <class E>
E bad(int x) {
  return static_cast<E>(x);
}

std::vector<spec_case> child_spec_cases() {
  return {
    {"missing_id", [](auto& s) { first(s).id = ""; }, spec_errc::missing_id,
     "id", "sup/<no id>"},
    {"invalid_id", [](auto& s) { first(s).id = "a/b"; },
     spec_errc::invalid_id, "id", "sup/a/b"},
    {"duplicate", [](auto& s) { s.children.push_back(worker("child1", "echo")); },
     spec_errc::duplicate_child_name, "id", "sup/child1"},
    {"kind_out_of_range",
     [](auto& s) { first(s).kind = bad<child_kind>(7); },
     spec_errc::invalid_child_type, "kind", "sup/child1"},
    {"supervisor_without_spec",
     [](auto& s) { first(s).kind = child_kind::supervisor; },
     spec_errc::invalid_child_type, "kind", "sup/child1"},
    {"unknown_agent", [](auto& s) { first(s).agent = "nope"; },
     spec_errc::unknown_agent_type, "agent", "sup/child1"},
    {"no_agent", [](auto& s) { first(s).agent = ""; },
     spec_errc::unknown_agent_type, "agent", "sup/child1"},
    {"restart_out_of_range",
     [](auto& s) { first(s).restart = bad<restart_type>(7); },
     spec_errc::invalid_restart_type, "restart", "sup/child1"},
    {"negative_shutdown",
     [](auto& s) { first(s).with_shutdown(shutdown_spec::after(-10ms)); },
     spec_errc::invalid_shutdown, "shutdown", "sup/child1"},
    {"shutdown_beyond_max",
     [](auto& s) {
       first(s).with_shutdown(shutdown_spec::after(max_duration + 1ms));
     },
     spec_errc::invalid_shutdown, "shutdown", "sup/child1"},
    {"shutdown_out_of_range",
     [](auto& s) {
       first(s).with_shutdown({bad<shutdown_spec::kind>(7), 0ms});
     },
     spec_errc::invalid_shutdown, "shutdown", "sup/child1"},
    {"significant_permanent",
     [](auto& s) {
       s.flags.auto_shutdown = auto_shutdown::any_significant;
       first(s).with_significant();
     },
     spec_errc::invalid_significant, "significant", "sup/child1"},
    {"significant_under_never",
     [](auto& s) {
       first(s).with_restart(restart_type::transient).with_significant();
     },
     spec_errc::bad_combination, "significant", "sup/child1"},
    {"on_failure_out_of_range",
     [](auto& s) { first(s).failure = bad<on_failure>(7); },
     spec_errc::invalid_on_failure, "on_failure", "sup/child1"},
    {"degrade_without_fallback",
     [](auto& s) { first(s).with_failure(on_failure::degrade); },
     spec_errc::invalid_degrade, "degrade.default", "sup/child1"},
    {"degrade_probe_beyond_max",
     [](auto& s) {
       first(s).with_failure(on_failure::degrade);
       first(s).degrade.set_fallback(Pong{});
       first(s).degrade.probe_max = max_duration + 1ms;
     },
     spec_errc::invalid_degrade, "degrade.probe", "sup/child1"},
    {"degrade_bad_probe",
     [](auto& s) {
       first(s).with_failure(on_failure::degrade);
       first(s).degrade.set_fallback(Pong{});
       first(s).degrade.probe_min = 0ms;
     },
     spec_errc::invalid_degrade, "degrade.probe", "sup/child1"},
    {"degrade_temporary",
     [](auto& s) {
       first(s).with_failure(on_failure::degrade);
       first(s).with_restart(restart_type::temporary);
       first(s).degrade.set_fallback(Pong{});
     },
     spec_errc::bad_combination, "on_failure", "sup/child1"},
    {"buffer_cap_zero", [](auto& s) { first(s).buffer_cap = 0; },
     spec_errc::invalid_buffer_cap, "buffer_cap", "sup/child1"},
    {"max_deliveries_zero", [](auto& s) { first(s).max_deliveries = 0; },
     spec_errc::invalid_max_deliveries, "max_deliveries", "sup/child1"},
    {"snapshot_that_never_saves",
     [](auto& s) {
       first(s).durability.mode = durability_mode::snapshot;
       first(s).durability.every_messages = 0;
       first(s).durability.every = milliseconds{0};
     },
     spec_errc::invalid_durability, "durability", "sup/child1"},
    {"nested",
     [](auto& s) {
       auto inner = valid_spec();
       inner.children.front().restart = bad<restart_type>(9);
       s.children.push_back(supervisor("inner", inner));
     },
     spec_errc::invalid_restart_type, "restart", "sup/inner/child1"},
  };
}

std::vector<spec_case> flag_cases() {
  return {
    {"strategy_out_of_range",
     [](auto& s) { s.flags.strategy = bad<strategy>(7); },
     spec_errc::invalid_strategy, "strategy", "sup"},
    {"negative_intensity", [](auto& s) { s.flags.intensity = -1; },
     spec_errc::invalid_intensity, "intensity", "sup"},
    {"zero_period", [](auto& s) { s.flags.period = 0ms; },
     spec_errc::invalid_period, "period", "sup"},
    {"negative_period", [](auto& s) { s.flags.period = -5ms; },
     spec_errc::invalid_period, "period", "sup"},
    {"auto_shutdown_out_of_range",
     [](auto& s) { s.flags.auto_shutdown = bad<auto_shutdown>(7); },
     spec_errc::invalid_auto_shutdown, "auto_shutdown", "sup"},
    {"backoff_max_below_min",
     [](auto& s) {
       s.flags.backoff.min = 200ms;
       s.flags.backoff.max = 100ms;
     },
     spec_errc::invalid_backoff, "backoff", "sup"},
    {"backoff_negative", [](auto& s) { s.flags.backoff.reset_after = -1ms; },
     spec_errc::invalid_backoff, "backoff", "sup"},
    {"period_beyond_max",
     [](auto& s) { s.flags.period = max_duration + 1ms; },
     spec_errc::invalid_period, "period", "sup"},
    {"backoff_beyond_max",
     [](auto& s) {
       s.flags.backoff.min = 1s;
       s.flags.backoff.max = max_duration + 1ms;
     },
     spec_errc::invalid_backoff, "backoff", "sup"},
    {"backoff_jitter", [](auto& s) { s.flags.backoff.jitter = 1.5; },
     spec_errc::invalid_backoff, "backoff.jitter", "sup"},
    {"simple_with_auto_shutdown",
     [](auto& s) {
       s.flags.strategy = strategy::simple_one_for_one;
       s.flags.auto_shutdown = auto_shutdown::any_significant;
     },
     spec_errc::bad_combination, "auto_shutdown", "sup"},
    {"simple_without_template",
     [](auto& s) {
       s.flags.strategy = strategy::simple_one_for_one;
       s.children.clear();
     },
     spec_errc::bad_start_spec, "children", "sup"},
    {"simple_with_two_templates",
     [](auto& s) {
       s.flags.strategy = strategy::simple_one_for_one;
       s.children.push_back(worker("child2", "echo"));
     },
     spec_errc::bad_start_spec, "children", "sup"},
  };
}

void check_cases(sup_test& t, const std::vector<spec_case>& cases,
                 std::set<spec_errc>& seen) {
  ASSERT_TRUE(check_child_specs(valid_spec(), &t.rt->types(), "sup").empty());
  int n = 0;
  for (auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto spec = valid_spec();
    c.mutate(spec);
    auto problems = check_child_specs(spec, &t.rt->types(), "sup");
    ASSERT_EQ(problems.size(), 1u);
    EXPECT_EQ(problems[0].code, c.code) << problems[0].to_string();
    EXPECT_EQ(problems[0].field, c.field);
    EXPECT_EQ(problems[0].where, c.where);
    seen.insert(c.code);
    // A supervisor started with it fails, naming the code.
    caf::actor sup;
    auto path = "bad" + std::to_string(n++);
    auto err = t.start(path, spec, &sup);
    EXPECT_TRUE(has_code(err, errc::invalid_child_spec));
    EXPECT_NE(describe(err).find(to_string(c.code)), std::string::npos)
      << describe(err);
    t.run();
    EXPECT_FALSE(t.alive(sup));
    EXPECT_EQ(t.rt->lookup(path), caf::actor{});
  }
}

// check_childspecs: one named error per invalid field, and a supervisor
// started with a bad spec does not start (OTP: {error,{start_spec,E}}).
TEST_F(sup_test, child_specs) {
  std::set<spec_errc> seen;
  check_cases(*this, child_spec_cases(), seen);
  // start_child validates as check_childspecs does (OTP: {error,E}).
  caf::actor sup;
  ASSERT_FALSE(start("sup", valid_spec(), &sup));
  for (auto& c : child_spec_cases()) {
    SCOPED_TRACE(c.name);
    auto spec = valid_spec();
    c.mutate(spec);
    auto& cs = spec.children.back();
    if (c.code == spec_errc::duplicate_child_name) {
      EXPECT_TRUE(has_code(start_child(sup, cs), errc::already_started));
      continue;
    }
    if (spec.flags.auto_shutdown != auto_shutdown::never)
      continue; // only valid under another supervisor's flags
    if (cs.id == "child1")
      cs.id = "other";
    EXPECT_TRUE(has_code(start_child(sup, cs), errc::invalid_child_spec));
  }
  EXPECT_EQ(counts(sup), cc(1, 1, 0, 1));
  // Every valid combination of restart x shutdown x kind is accepted.
  for (auto r : {restart_type::permanent, restart_type::transient,
                 restart_type::temporary})
    for (auto sd : {shutdown_spec::after(0ms), shutdown_spec::after(1000ms),
                    shutdown_spec::infinity(), shutdown_spec::brutal_kill()})
      for (bool nested : {false, true}) {
        auto spec = valid_spec();
        if (nested)
          spec.children[0] = supervisor("child1", valid_spec());
        spec.children[0].with_restart(r).with_shutdown(sd);
        EXPECT_TRUE(check_child_specs(spec, &rt->types(), "sup").empty());
      }
}

// sup_flags: one named error per invalid flag; the union of both tables
// names every spec_errc.
TEST_F(sup_test, sup_flags) {
  std::set<spec_errc> seen;
  check_cases(*this, flag_cases(), seen);
  check_cases(*this, child_spec_cases(), seen);
  for (int i = 0; i <= static_cast<int>(spec_errc::bad_start_spec); ++i)
    EXPECT_TRUE(seen.count(static_cast<spec_errc>(i)))
      << to_string(static_cast<spec_errc>(i)) << " is not tested";
}

// A child whose start fails fails the supervisor's start; the children
// started before it are stopped (in reverse order), later ones never start.
TEST_F(sup_test, sup_start_fail) {
  auto spec = flags(strategy::one_for_one, 1, 5000);
  for (auto id : {"child1", "child2", "child3", "child4"})
    spec.children.push_back(worker(id, "echo"));
  switches::get().set_fail("sup/child3", true);
  // (stops of child1, of child2) at each on_stop.
  auto log = std::make_shared<std::vector<std::pair<int, int>>>();
  switches::get().on_stop_hook = [log] {
    log->emplace_back(stops("sup/child1"), stops("sup/child2"));
  };
  auto& order = *log;
  caf::actor sup;
  auto err = start("sup", spec, &sup);
  switches::get().on_stop_hook = nullptr;
  EXPECT_TRUE(has_code(err, errc::start_failed));
  EXPECT_NE(describe(err).find("failed_to_start_child sup/child3"),
            std::string::npos)
    << describe(err);
  run();
  EXPECT_FALSE(alive(sup));
  EXPECT_EQ(starts("sup/child1"), 1);
  EXPECT_EQ(starts("sup/child2"), 1);
  EXPECT_EQ(starts("sup/child3"), 1);
  EXPECT_EQ(starts("sup/child4"), 0);
  EXPECT_EQ(stops("sup/child1"), 1);
  EXPECT_EQ(stops("sup/child2"), 1);
  // child2 stopped before child1.
  ASSERT_EQ(order.size(), 2u);
  EXPECT_EQ(order[0], std::make_pair(0, 0));
  EXPECT_EQ(order[1], std::make_pair(0, 1));
  EXPECT_EQ(handle("sup/child1"), caf::actor{});
}

// A start_child whose start fails returns the error and keeps no spec.
TEST_F(sup_test, sup_start_child_returns_error) {
  caf::actor sup;
  ASSERT_FALSE(start("sup", flags(strategy::one_for_one), &sup));
  switches::get().set_fail("sup/child1", true);
  EXPECT_TRUE(
    has_code(start_child(sup, worker("child1", "echo")), errc::start_failed));
  EXPECT_TRUE(which(sup).empty());
  EXPECT_EQ(counts(sup), cc(0, 0, 0, 0));
  EXPECT_TRUE(alive(sup));
}

// A restart_child whose start fails returns the error; the child stays
// stopped (OTP: undefined) and the supervisor stays up.
TEST_F(sup_test, sup_start_restart_child_returns_error) {
  auto spec = flags(strategy::one_for_one);
  spec.children.push_back(worker("child1", "echo"));
  caf::actor sup;
  ASSERT_FALSE(start("sup", spec, &sup));
  EXPECT_FALSE(terminate_child(sup, "child1"));
  switches::get().set_fail("sup/child1", true);
  EXPECT_TRUE(has_code(restart_child(sup, "child1"), errc::start_failed));
  EXPECT_EQ(status_of(sup, "child1"), "stopped");
  EXPECT_EQ(counts(sup), cc(1, 0, 0, 1));
  EXPECT_TRUE(alive(sup));
  switches::get().set_fail("sup/child1", false);
  EXPECT_TRUE(restart_child(sup, "child1"));
  EXPECT_EQ(status_of(sup, "child1"), "running");
}

} // namespace
