// End-to-end tests of the `vigil` command: each runs the real binary as a
// child process on temp files and data dirs, and parses its JSON output.

#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "support/cli_run.hpp"
#include "support/process.hpp"
#include "support/temp_dir.hpp"

using namespace std::chrono_literals;
using nlohmann::json;
using vigil::test::process_result;
using vigil::test::run_process;
using vigil::test::temp_dir;
using vigil::test::child;
using vigil::test::parse;
using vigil::test::vigil_cmd;
using vigil::test::write;

namespace {

const char* pipeline = R"(node:
  name: job
tree:
  strategy: one_for_one
  intensity: 100
  children:
    - name: counter
      agent: counter
      durability: journal
    - name: source
      agent: source
      durability: journal
      params: {to: job/counter, count: 300, batch: 50}
)";

} // namespace

TEST(cli_test, check_accepts_a_valid_policy) {
  temp_dir d;
  auto f = write(d, "job.yaml", pipeline);
  auto r = vigil_cmd({"check", f});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("OK"), std::string::npos) << r.out;
}

TEST(cli_test, check_lists_every_error_with_its_position_and_exits_2) {
  temp_dir d;
  auto f = write(d, "bad.yaml", R"(tree:
  strategy: one_for_one
  stratgy: x
  period: 5 seconds
  children:
    - name: a
      agent: nosuch
)");
  auto r = vigil_cmd({"check", f});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find(f + ":3:3: unknown key \"stratgy\""), std::string::npos)
    << r.err;
  EXPECT_NE(r.err.find(f + ":4:3: period: \"5 seconds\" is not a duration"),
            std::string::npos)
    << r.err;
  EXPECT_NE(r.err.find(f + ":7:7: agent: unknown agent type \"nosuch\""),
            std::string::npos)
    << r.err;
  EXPECT_NE(r.err.find("3 errors; nothing started"), std::string::npos)
    << r.err;
}

TEST(cli_test, run_reports_the_tree_as_json_and_the_counter_is_exact) {
  temp_dir d;
  auto f = write(d, "job.yaml", pipeline);
  auto data = d.path() + "/data";
  auto r = vigil_cmd({"run", f, "--data-dir", data, "--for", "1500ms",
                      "--report", "json", "--progress", "200ms"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("handled="), std::string::npos) << "progress: " << r.err;
  auto j = parse(r.out);
  EXPECT_EQ(j["outcome"], "completed");
  EXPECT_EQ(j["tree"]["name"], "job");
  EXPECT_EQ(j["tree"]["kind"], "supervisor");
  EXPECT_EQ(j["tree"]["state"], "stopped");
  ASSERT_EQ(j["tree"]["children"].size(), 2u);
  auto* c = child(j["tree"], "counter");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ((*c)["kind"], "worker");
  EXPECT_EQ((*c)["state"], "running"); // as of the end, before the stop
  EXPECT_EQ((*c)["restarts"], 0);
  EXPECT_EQ(j["dead_letters"]["count"], 0);
  // The counter's durable state, read back from the data dir.
  auto in = vigil_cmd({"inspect", "--data-dir", data, "--json"});
  ASSERT_EQ(in.exit_code, 0) << in.err;
  auto agents = parse(in.out);
  bool found = false;
  for (auto& a : agents)
    if (a["path"] == "job/counter") {
      found = true;
      EXPECT_EQ(a["durability"], "journal");
      EXPECT_EQ(a["agent"], "counter");
      EXPECT_EQ(a["pending"], 0);
      // Protobuf JSON writes int64 as strings.
      EXPECT_EQ(a["state"]["count"], "300");
      EXPECT_EQ(a["state"]["sum"], "45150");
    }
  EXPECT_TRUE(found) << in.out;
}

int sum_restarts(const json& t) {
  int n = t.value("restarts", 0);
  for (auto& c : t.value("children", json::array()))
    n += sum_restarts(c);
  return n;
}

// The report's restarts are the sum of its tree's figures. A restarted
// supervisor starts its children's figures over; the node's count of every
// restart is restarts_all (it used to be printed as "restarts" and
// contradict the tree).
TEST(cli_test, the_reported_restarts_add_up_to_the_tree) {
  temp_dir d;
  auto f = write(d, "nested.yaml", R"(node:
  name: job
tree:
  intensity: 1000
  children:
    - name: pipe
      supervisor:
        intensity: 1
        children:
          - name: f
            agent: flaky
            params: {crash_every: 1}
    - name: source
      agent: source
      params: {to: job/pipe/f, count: 60, rate: 100, batch: 1}
)");
  auto r = vigil_cmd({"run", f, "--for", "1s", "--report", "json",
                      "--progress", "0"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = parse(r.out);
  EXPECT_EQ(j["restarts"].get<int>(), sum_restarts(j["tree"])) << r.out;
  // f crashes on every number: pipe (intensity 1) gives up and is
  // restarted by the root, which starts f's figure over.
  auto* pipe = child(j["tree"], "pipe");
  ASSERT_NE(pipe, nullptr) << r.out;
  EXPECT_GE((*pipe)["restarts"].get<int>(), 1) << r.out;
  EXPECT_GT(j["restarts_all"].get<int>(), j["restarts"].get<int>()) << r.out;
  auto text = vigil_cmd({"run", f, "--for", "1s", "--progress", "0"});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find(" restarts in this tree ("), std::string::npos)
    << text.out;
}

// CAF cannot preempt a handler, but vigil run bounds its own exit: a
// handler stuck for 20 s under a 300 ms shutdown is given up on, and the
// process exits about 2 s after the report instead of when it returns.
TEST(cli_test, a_stuck_handler_does_not_hold_the_exit) {
  temp_dir d;
  auto f = write(d, "stuck.yaml", R"(node:
  name: job
tree:
  children:
    - name: slow
      agent: flaky
      shutdown: 300ms
      params: {delay: 20s}
    - name: source
      agent: source
      params: {to: job/slow, count: 1}
)");
  auto t0 = std::chrono::steady_clock::now();
  auto r = vigil_cmd({"run", f, "--for", "500ms", "--progress", "0"}, 15s);
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("outcome: completed"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("exiting while a given-up handler is still stuck"),
            std::string::npos)
    << r.err;
  EXPECT_LT(took, 8s) << "the exit waited for the stuck handler";
}

TEST(cli_test, run_exits_3_when_the_root_escalates) {
  temp_dir d;
  auto f = write(d, "esc.yaml", R"(node:
  name: esc
tree:
  children:
    - name: sink
      agent: flaky
      on_failure: escalate
      params: {crash_every: 1}
    - name: source
      agent: source
      params: {to: esc/sink, count: 5}
)");
  auto r = vigil_cmd({"run", f, "--for", "10s", "--report", "json"});
  ASSERT_EQ(r.exit_code, 3) << r.err;
  auto j = parse(r.out);
  EXPECT_EQ(j["outcome"], "escalated");
  EXPECT_EQ(j["tree"]["state"], "failed");
  for (auto& c : j["tree"]["children"])
    EXPECT_EQ(c["state"], "stopped") << c.dump();
  auto cause = j["cause"].get<std::string>();
  EXPECT_NE(cause.find("escalated"), std::string::npos) << cause;
  EXPECT_NE(cause.find("esc/sink"), std::string::npos) << cause;
}

TEST(cli_test, sigterm_stops_the_tree_in_order_and_prints_the_report) {
  temp_dir d;
  auto f = write(d, "job.yaml", pipeline);
  auto r = vigil_cmd({"run", f, "--data-dir", d.path() + "/data",
                      "--progress", "100ms"},
                     20s, SIGTERM, "handled=");
  ASSERT_FALSE(r.timed_out) << r.err;
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("stopping (SIGTERM)"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("outcome: completed"), std::string::npos) << r.out;
}

TEST(cli_test, dead_letters_are_listed_replayed_and_purged) {
  temp_dir d;
  auto f = write(d, "dl.yaml", R"(node:
  name: dl
tree:
  intensity: 100
  children:
    - name: bad
      agent: flaky
      durability: journal
      params: {crash_every: 2}
    - name: source
      agent: source
      durability: journal
      params: {to: dl/bad, count: 10, batch: 1}
)");
  auto data = d.path() + "/data";
  auto r = vigil_cmd({"run", f, "--data-dir", data, "--for", "1500ms",
                      "--report", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Every second message crashed its instance: 5 dead letters, committed.
  auto in = vigil_cmd({"inspect", "--data-dir", data, "dead-letters",
                       "--json"});
  ASSERT_EQ(in.exit_code, 0) << in.err;
  auto dls = parse(in.out);
  ASSERT_EQ(dls.size(), 5u) << in.out;
  for (auto& x : dls) {
    EXPECT_EQ(x["path"], "dl/bad");
    EXPECT_EQ(x["envelope"]["type"], "vigil.builtin.Number");
  }
  auto first = dls[0]["seq"].get<uint64_t>();
  auto rp = vigil_cmd({"dead-letters", "replay", "--data-dir", data,
                       std::to_string(first)});
  ASSERT_EQ(rp.exit_code, 0) << rp.err;
  EXPECT_NE(rp.out.find("replayed 1"), std::string::npos) << rp.out;
  auto mb = vigil_cmd({"inspect", "--data-dir", data, "mailbox", "dl/bad",
                       "--json"});
  ASSERT_EQ(mb.exit_code, 0) << mb.err;
  auto pending = parse(mb.out);
  ASSERT_EQ(pending.size(), 1u) << mb.out;
  EXPECT_EQ(pending[0]["type"], "vigil.builtin.Number");
  EXPECT_EQ(pending[0]["attempt"], 1);
  auto pg = vigil_cmd({"dead-letters", "purge", "--data-dir", data, "--all"});
  ASSERT_EQ(pg.exit_code, 0) << pg.err;
  EXPECT_NE(pg.out.find("purged 4"), std::string::npos) << pg.out;
  auto left = vigil_cmd({"inspect", "--data-dir", data, "dead-letters",
                         "--json"});
  EXPECT_EQ(parse(left.out).size(), 0u) << left.out;
}

TEST(cli_test, dead_letters_list_shows_the_named_seqs) {
  temp_dir d;
  auto f = write(d, "dl.yaml", R"(node:
  name: dl
tree:
  intensity: 100
  children:
    - name: bad
      agent: flaky
      durability: journal
      params: {crash_every: 2}
    - name: source
      agent: source
      durability: journal
      params: {to: dl/bad, count: 10, batch: 1}
)");
  auto data = d.path() + "/data";
  ASSERT_EQ(vigil_cmd({"run", f, "--data-dir", data, "--for", "1500ms"})
              .exit_code,
            0);
  auto all = parse(vigil_cmd({"inspect", "--data-dir", data, "dead-letters",
                              "--json"})
                     .out);
  ASSERT_GE(all.size(), 3u);
  auto second = all[1]["seq"].get<uint64_t>();
  auto r = vigil_cmd({"dead-letters", "list", "--data-dir", data,
                      std::to_string(second)});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("1 dead letters"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find(std::to_string(second) + "  dl/bad"), 0u) << r.out;
}

// Every param of every child is checked before anything starts: a bad one
// of the last child used to fail `vigil run` after the first had started
// and written to the data dir.
TEST(cli_test, bad_params_are_refused_before_anything_starts) {
  temp_dir d;
  auto f = write(d, "job.yaml", R"(node:
  name: job
tree:
  children:
    - name: counter
      agent: counter
      durability: journal
    - name: source
      agent: source
      durability: journal
      params: {to: job/counter, count: abc}
)");
  auto data = d.path() + "/data";
  auto c = vigil_cmd({"check", f});
  EXPECT_EQ(c.exit_code, 2) << c.out << c.err;
  EXPECT_NE(c.err.find("params: source: param 'count' is 'abc'"),
            std::string::npos)
    << c.err;
  auto r = vigil_cmd({"run", f, "--data-dir", data, "--for", "1s"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("nothing started"), std::string::npos) << r.err;
  auto in = vigil_cmd({"inspect", "--data-dir", data});
  EXPECT_EQ(in.exit_code, 1) << "the run created a data dir: " << in.out;
}

TEST(cli_test, durable_children_without_a_data_dir_are_refused_up_front) {
  temp_dir d;
  auto f = write(d, "job.yaml", pipeline);
  auto r = vigil_cmd({"run", f, "--for", "1s"});
  EXPECT_EQ(r.exit_code, 64) << r.err; // an argument is missing
  EXPECT_NE(r.err.find("job/counter, job/source need a data dir: pass "
                       "--data-dir DIR or set node.data_dir"),
            std::string::npos)
    << r.err;
}

// The command's documented behaviour as a table: exit codes (64 bad
// arguments, 2 an invalid policy file, 1 other errors) and what stderr says
// to do next.
TEST(cli_test, each_mistake_gets_its_exit_code_and_what_to_do) {
  temp_dir d;
  auto f = write(d, "job.yaml", pipeline);
  auto data = d.path() + "/data";
  ASSERT_EQ(vigil_cmd({"run", f, "--data-dir", data, "--for", "300ms",
                       "--progress", "0"})
              .exit_code,
            0);
  struct row {
    std::vector<std::string> args;
    int exit_code;
    std::string says;
  };
  std::vector<row> rows{
    {{"run"}, 64, "FILE"},
    {{"frobnicate"}, 64, "A subcommand is required"},
    {{"run", f, "--for", "soon"}, 64, "--for soon: not a duration"},
    // The run loop wakes every 100 ms: a shorter progress period is
    // refused, not silently stretched.
    {{"run", f, "--for", "1s", "--progress", "1ms"}, 64,
     "--progress 1ms: not a progress period"},
    {{"run", f, "--report", "xml"}, 64, "--report"},
    {{"inspect", "--data-dir", data, "mailbox"}, 64, "give the agent's PATH"},
    {{"dead-letters", "purge", "--data-dir", data}, 64, "or pass --all"},
    {{"check", d.path() + "/missing.yaml"}, 2,
     d.path() + "/missing.yaml: cannot read the file: No such file"},
    {{"check", d.path()}, 2, d.path() + ": is a directory; give a policy file"},
    {{"inspect", "--data-dir", d.path() + "/nothing"}, 1, "no vigil data dir"},
    {{"inspect", "--data-dir", data, "mailbox", "job/nobody"}, 1,
     "no durable agent at job/nobody"},
    {{"dead-letters", "list", "--data-dir", data, "99"}, 1,
     "dead letter 99 not found"},
  };
  for (auto& r : rows) {
    std::string cmd;
    for (auto& a : r.args)
      cmd += a + " ";
    auto got = vigil_cmd(r.args);
    EXPECT_EQ(got.exit_code, r.exit_code) << cmd << "\n" << got.err;
    EXPECT_NE(got.err.find(r.says), std::string::npos) << cmd << "\n"
                                                        << got.err;
    EXPECT_EQ(got.err.find(":0:0"), std::string::npos) << cmd << got.err;
  }
  // A known agent's empty mailbox is not an error.
  auto mb = vigil_cmd({"inspect", "--data-dir", data, "mailbox", "job/counter"});
  EXPECT_EQ(mb.exit_code, 0) << mb.err;
  EXPECT_NE(mb.out.find("0 pending envelopes for job/counter"),
            std::string::npos)
    << mb.out;
}

TEST(cli_test, every_subcommand_has_help_with_an_example) {
  for (auto* sub : {"run", "check", "inspect", "dead-letters"}) {
    auto r = vigil_cmd({sub, "--help"});
    EXPECT_EQ(r.exit_code, 0) << sub;
    EXPECT_NE(r.out.find("Example"), std::string::npos) << sub << r.out;
  }
}

// Issue 13: every Number a memory-only source sends to a child that
// degrades is accounted for in the run's report: handled by the child
// (and counted by the journal counter it forwards to) or a dead letter,
// with the report's figures by reason.
TEST(cli_test, every_send_to_a_degrading_child_is_in_the_report) {
  temp_dir d;
  auto f = write(d, "acct.yaml", R"(node:
  name: acct
tree:
  strategy: one_for_one
  intensity: 1
  period: 60s
  children:
    - name: counter
      agent: counter
      durability: journal
    - name: w
      agent: flaky
      on_failure: degrade
      degrade:
        default: {type: vigil.builtin.Number, value: {n: -1}}
        probe_min: 100ms
        probe_max: 200ms
      params: {crash_every: 3, to: acct/counter}
    - name: feeder
      agent: source
      params: {to: acct/w, count: 100, rate: 100, batch: 1}
)");
  auto data = d.path() + "/data";
  auto r = vigil_cmd({"run", f, "--data-dir", data, "--for", "2500ms",
                      "--report", "json", "--progress", "500ms"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("stand_in="), std::string::npos) << r.err;
  auto j = parse(r.out);
  auto& dl = j["dead_letters"];
  uint64_t by_reason = 0;
  for (auto& [code, n] : dl["by_reason"].items())
    by_reason += n.get<uint64_t>();
  EXPECT_EQ(dl["count"].get<uint64_t>(), by_reason) << dl.dump();
  EXPECT_GT(dl["by_reason"].value("degraded", 0), 0) << dl.dump();
  EXPECT_GT(dl["by_reason"].value("handler_failed", 0), 0) << dl.dump();
  EXPECT_EQ(j["stand_in_answers"], 0); // async sends: nobody to answer
  for (auto& x : dl["first"])
    EXPECT_EQ(x["path"], "acct/w") << x.dump();
  auto in = vigil_cmd({"inspect", "--data-dir", data, "--json"});
  ASSERT_EQ(in.exit_code, 0) << in.err;
  uint64_t counted = 0;
  for (auto& a : parse(in.out))
    if (a["path"] == "acct/counter")
      counted = std::stoull(a["state"].value("count", std::string{"0"}));
  EXPECT_GT(counted, 0u);
  EXPECT_EQ(counted + dl["count"].get<uint64_t>(), 100u)
    << "counted " << counted << ", dead letters " << dl.dump();
}

// examples/policies/saga.yaml, as the README runs it: a saga of built-in
// journal steps fed by a source. Every failed saga's steps are compensated
// exactly: the step states on disk add up.
TEST(cli_test, the_example_saga_compensates_exactly) {
  temp_dir d;
  auto r = vigil_cmd({"run", VIGIL_SAGA_POLICY, "--data-dir", d.path(),
                      "--for", "5s", "--progress", "0"},
                     60s);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // No policy warning (FILE: warning: ...); the supervisor reports of the
  // steps that crash by design are not warnings about the policy.
  EXPECT_EQ(r.err.find(": warning:"), std::string::npos) << r.err;
  auto i = vigil_cmd({"inspect", "--data-dir", d.path(), "agents", "--json"});
  ASSERT_EQ(i.exit_code, 0) << i.err;
  auto j = parse(i.out);
  std::map<std::string, json> st;
  for (auto& a : j)
    st[a["path"].get<std::string>()] = a["state"];
  auto num = [&](const std::string& p, const char* k) {
    auto& s = st[p];
    return s.contains(k) ? std::stoll(s[k].get<std::string>()) : 0ll;
  };
  // Orders 1..200: charge refuses the 28 multiples of 7; ship crashes on
  // the 16 multiples of 11 that charge let through.
  EXPECT_EQ(num("shop/orders", "next"), 201) << "the source did not finish";
  EXPECT_EQ(num("shop/checkout/reserve", "executed"), 200);
  EXPECT_EQ(num("shop/checkout/reserve", "compensated"), 28 + 16);
  EXPECT_EQ(num("shop/checkout/charge", "executed"), 172);
  EXPECT_EQ(num("shop/checkout/charge", "refused"), 28);
  EXPECT_EQ(num("shop/checkout/charge", "compensated"), 16);
  EXPECT_EQ(num("shop/checkout/ship", "executed"), 156);
  EXPECT_EQ(num("shop/checkout/ship", "compensated"), 0);
}

TEST(cli_test, check_warns_about_saga_steps_that_are_not_journal_agents) {
  temp_dir d;
  auto f = write(d, "saga.yaml", R"(tree:
  children:
    - name: checkout
      supervisor:
        saga: {}
        children:
          - {name: reserve, agent: step}
          - {name: charge, agent: step, durability: journal}
)");
  auto r = vigil_cmd({"check", f});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find(f + ": warning: root/checkout/reserve: durability: "
                           "a saga step that is not a journal agent"),
            std::string::npos)
    << r.err;
  EXPECT_EQ(r.err.find("root/checkout/charge"), std::string::npos) << r.err;
}

// examples/policies/durable_saga.yaml, as the README runs it: the same
// checkout as a durable saga, with every outcome sent to `outcomes`. The
// report counts the runs, `vigil inspect sagas` lists them, and a second
// run on the data dir finds nothing to resume and runs nothing twice.
TEST(cli_test, the_example_durable_saga_keeps_its_runs) {
  temp_dir d;
  auto r = vigil_cmd({"run", VIGIL_DSAGA_POLICY, "--data-dir", d.path(),
                      "--for", "5s", "--progress", "0", "--report", "json"},
                     60s);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto rep = parse(r.out);
  EXPECT_EQ(rep["sagas"]["completed"], 156) << rep["sagas"].dump();
  EXPECT_EQ(rep["sagas"]["compensated"], 44) << rep["sagas"].dump();
  EXPECT_EQ(rep["sagas"]["compensation_failed"], 0);
  auto s = vigil_cmd({"inspect", "--data-dir", d.path(), "sagas", "--json"});
  ASSERT_EQ(s.exit_code, 0) << s.err;
  auto runs = parse(s.out);
  ASSERT_EQ(runs.size(), 200u);
  size_t completed = 0;
  for (auto& x : runs) {
    EXPECT_EQ(x["saga"], "shop/checkout");
    EXPECT_EQ(x["phase"], "finished") << x.dump();
    completed += x["outcome"] == "completed" ? 1 : 0;
  }
  EXPECT_EQ(completed, 156u);
  // Only the runs of one saga: a PATH that is not a saga lists none.
  auto none = vigil_cmd({"inspect", "--data-dir", d.path(), "sagas", "shop"});
  ASSERT_EQ(none.exit_code, 0) << none.err;
  EXPECT_NE(none.out.find("0 saga runs"), std::string::npos) << none.out;
  auto again = vigil_cmd({"run", VIGIL_DSAGA_POLICY, "--data-dir", d.path(),
                          "--for", "1s", "--progress", "0", "--report",
                          "json"},
                         60s);
  ASSERT_EQ(again.exit_code, 0) << again.err;
  auto rep2 = parse(again.out);
  EXPECT_EQ(rep2["sagas"]["resumed"], 0) << rep2["sagas"].dump();
  EXPECT_EQ(rep2["sagas"]["completed"], 0) << rep2["sagas"].dump();
  auto i = vigil_cmd({"inspect", "--data-dir", d.path(), "agents", "--json"});
  ASSERT_EQ(i.exit_code, 0) << i.err;
  std::map<std::string, json> st;
  for (auto& a : parse(i.out))
    st[a["path"].get<std::string>()] = a["state"];
  auto num = [&](const std::string& p, const char* k) {
    auto& x = st[p];
    return x.contains(k) ? std::stoll(x[k].get<std::string>()) : 0ll;
  };
  EXPECT_EQ(num("shop/checkout/reserve", "executed"), 200);
  EXPECT_EQ(num("shop/checkout/reserve", "compensated"), 44);
  EXPECT_EQ(num("shop/checkout/ship", "executed"), 156);
  EXPECT_EQ(num("shop/outcomes", "completed"), 156);
  EXPECT_EQ(num("shop/outcomes", "compensated"), 44);
}

TEST(cli_test, durable_saga_policy_errors_name_their_place) {
  temp_dir d;
  auto f = write(d, "bad.yaml", R"(tree:
  children:
    - name: plain
      durability: journal
      supervisor:
        children:
          - {name: a, agent: counter}
    - name: snap
      durability: snapshot
      supervisor:
        saga: {}
        children:
          - {name: s, agent: step, durability: journal}
    - name: memory
      supervisor:
        saga: {outcome_to: root/x, retention: 0s}
        children:
          - {name: s, agent: step, durability: journal}
)");
  auto r = vigil_cmd({"check", f});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  for (auto* want :
       {":4:7: durability: only agents and sagas are durable",
        ":9:7: durability: a saga is durable with journal",
        ":16:16: saga.outcome_to: outcomes are sent through the saga's outbox",
        ":16:36: saga.retention: got 0ms"})
    EXPECT_NE(r.err.find(f + want), std::string::npos)
      << "missing \"" << want << "\" in:\n"
      << r.err;
}
