// A tool's fallback chain, its dry run and its approvals on a real node:
// which tool answered (tool_answer), when a fallback is tried and when not,
// the default reply, the records a journal agent keeps of them, a failed
// dry run that stops the real call, and approvals decided by the real
// `vigil approvals` binary, also after a restart.

#include <atomic>
#include <chrono>
#include <future>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/eventually.hpp"
#include "support/approval_cli.hpp"
#include "support/temp_dir.hpp"
#include "support/tool_fixture.hpp"
#include "vigil/actors/detail/envelope_record.hpp"
#include "vigil/node/node.hpp"
#include "vigil/persistence/record.hpp"
#include "vigil/store.pb.h"

using namespace vigil;
using namespace vigil::test;
using namespace std::chrono_literals;

namespace {

/// What each tool of the test does, by name, and what it saw.
struct services {
  enum class mode { ok, transient, permanent, invalid };
  std::mutex mtx;
  std::map<std::string, mode> modes;
  std::map<std::string, int> runs;
  std::map<std::string, std::vector<std::string>> keys;
  std::vector<std::string> errors; ///< codes the agents saw outside replies
  std::atomic<bool> release{false}; ///< ends "hang"

  void seen(std::string code) {
    std::lock_guard<std::mutex> guard{mtx};
    errors.push_back(std::move(code));
  }
  std::vector<std::string> errors_seen() {
    std::lock_guard<std::mutex> guard{mtx};
    return errors;
  }

  tool_result<Pong> call(const std::string& tool, const Ping& req,
                         tool_call& c) {
    mode m;
    {
      std::lock_guard<std::mutex> guard{mtx};
      ++runs[tool];
      keys[tool].push_back(c.idempotency_key());
      m = modes[tool];
    }
    // A dry run (a validator) refuses negative amounts.
    if (tool == "check" && req.n() < 0)
      return tool_error::permanent("amount must be positive");
    switch (m) {
      case mode::transient: return tool_error::transient("503 from " + tool);
      case mode::permanent: return tool_error::permanent("400 from " + tool);
      case mode::invalid: return tool_error::invalid_output("garbage");
      default: break;
    }
    Pong p;
    p.set_n(req.n() + (tool == "main" ? 0 : tool == "backup" ? 1000 : 2000));
    p.set_from(tool);
    return p;
  }
  int count(const std::string& tool) {
    std::lock_guard<std::mutex> guard{mtx};
    return runs[tool];
  }
  std::vector<std::string> keys_of(const std::string& tool) {
    std::lock_guard<std::mutex> guard{mtx};
    return keys[tool];
  }
  void set(const std::string& tool, mode m) {
    std::lock_guard<std::mutex> guard{mtx};
    modes[tool] = m;
  }
  static services& get() {
    static services s;
    return s;
  }
  void reset() {
    std::lock_guard<std::mutex> guard{mtx};
    modes.clear();
    runs.clear();
    keys.clear();
    errors.clear();
    release = false;
  }
};

std::string code_of(const caf::error& e) {
  return e.category() == caf::atom("vigil")
           ? to_string(static_cast<errc>(e.code()))
           : describe(e);
}

/// On Ping n: calls the tool of param `tool` (default "main") with n and
/// answers Pong{n: the reply's, from: who answered, with "+default" and
/// "+replayed" as the tool_answer says}, or the call's error. With param
/// `at_start`, it calls the tool from on_start too (noting its error).
class caller : public agent<> {
public:
  explicit caller(const params& ps) {
    if (auto i = ps.find("tool"); i != ps.end())
      tool_ = i->second;
    at_start_ = ps.count("at_start") > 0;
    effect_ = ps.count("effect") > 0;
    then_hang_ = ps.count("then_hang") > 0;
  }

  void on_start(context& ctx) override {
    if (!at_start_)
      return;
    ctx.call_tool<Pong>(
      tool_, vigil::test::ping(1), [](Pong) { services::get().seen("ok"); },
      [](const caf::error& e) { services::get().seen(code_of(e)); });
  }

  static void define(handlers<caller>& h) {
    h.on<Ping>(&caller::ping);
  }

  void ping(context& ctx, const Ping& m) {
    if (effect_) {
      if (auto err = ctx.effect(tool_, m))
        throw tool_failure{err};
      return ctx.defer().deliver(m.n() == 0 ? Pong{} : pong_of(m.n()));
    }
    auto rp = ctx.defer();
    ctx.call_tool<Pong>(
      tool_, m,
      [this, &ctx, rp](Pong p, const tool_answer& a) mutable {
        Pong out;
        out.set_n(p.n());
        out.set_from(std::string{a.tool} + (a.by_default ? "+default" : "")
                     + (a.replayed ? "+replayed" : ""));
        if (!then_hang_)
          return rp.deliver(out);
        // Noted, then a call that hangs keeps the envelope open.
        services::get().seen("answer:" + out.from());
        ctx.call_tool<Pong>(
          "hang", vigil::test::ping(1),
          [rp, out](Pong) mutable { rp.deliver(out); },
          [rp](const caf::error& e) mutable { rp.fail(e); });
      },
      [rp](const caf::error& e) mutable { rp.fail(e); });
  }

private:
  std::string tool_ = "main";
  bool at_start_ = false;
  bool effect_ = false; ///< sends the Ping as an effect, answers at once
  bool then_hang_ = false; ///< after the call, calls "hang"

  static Pong pong_of(int64_t n) {
    Pong p;
    p.set_n(n);
    return p;
  }
};

registry guard_types() {
  registry r;
  r.add<caller>("caller");
  // Blocks (ignoring cancellation, as a real blocking call does) until the
  // test releases it, or 20 s.
  r.add_tool<Ping, Pong>("hang", [](const Ping&, tool_call&) {
    auto until = std::chrono::steady_clock::now() + 20s;
    while (!services::get().release && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(1ms);
    return tool_result<Pong>{Pong{}};
  });
  for (auto name : {"main", "backup", "backup2", "check", "pay"})
    r.add_tool<Ping, Pong>(name, [name = std::string{name}](const Ping& req,
                                                           tool_call& c) {
      return services::get().call(name, req, c);
    });
  return r;
}

tool_decl quick(std::string name, side_effect fx = side_effect::read_only) {
  auto d = decl_of(std::move(name), fx);
  d.policy.retry.max_attempts = fx == side_effect::irreversible ? 1 : 2;
  d.policy.retry.initial = 1ms;
  d.policy.retry.max = 2ms;
  d.policy.breaker.enabled = false;
  return d;
}

supervisor_spec caller_tree(durability_mode mode = durability_mode::none,
                            std::string tool = "main") {
  child_spec c;
  c.id = "c";
  c.agent = "caller";
  c.params = {{"tool", std::move(tool)}};
  c.durability.mode = mode;
  supervisor_spec spec;
  spec.flags.intensity = 100;
  spec.children.push_back(c);
  return spec;
}

Pong pong(int64_t n) {
  Pong p;
  p.set_n(n);
  return p;
}

class tool_guards_test : public ::testing::Test {
protected:
  void SetUp() override {
    services::get().reset();
  }
  void TearDown() override {
    services::get().release = true;
  }

  /// A node with "main" falling back to "backup" (and `more`).
  node_config fallback_config(std::vector<std::string> chain = {"backup"},
                              bool with_default = false) {
    node_config cfg;
    auto m = quick("main");
    m.fallback.tools = std::move(chain);
    if (with_default) {
      m.fallback.default_type = "vigil.test.Pong";
      pong(-1).SerializeToString(&m.fallback.default_payload);
    }
    cfg.tools = {m, quick("backup"), quick("backup2")};
    return cfg;
  }

  temp_dir tmp_;
  std::string dir_ = tmp_.path() + "/data";
};

} // namespace

TEST_F(tool_guards_test, a_fallback_answers_after_the_retries_are_spent) {
  auto& svc = services::get();
  svc.set("main", services::mode::transient);
  node n{guard_types(), fallback_config()};
  ASSERT_FALSE(n.start("root", caller_tree()));
  auto r = n.call<Pong>("root/c", ping(5), 5s);
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_EQ(r->value.n(), 1005);
  EXPECT_EQ(r->value.from(), "backup");
  EXPECT_EQ(svc.count("main"), 2); // its two attempts, then the fallback
  EXPECT_EQ(svc.count("backup"), 1);
  // The fallback is the same call: the same idempotency key.
  ASSERT_EQ(svc.keys_of("backup").size(), 1u);
  EXPECT_EQ(svc.keys_of("backup")[0], svc.keys_of("main")[0]);
  EXPECT_EQ(n.rt()->find_tool("main")->stats().fallbacks.load(), 1u);
}

TEST_F(tool_guards_test, the_tool_that_answers_itself_is_named) {
  node n{guard_types(), fallback_config()};
  ASSERT_FALSE(n.start("root", caller_tree()));
  auto r = n.call<Pong>("root/c", ping(5), 5s);
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_EQ(r->value.from(), "main");
  EXPECT_EQ(services::get().count("backup"), 0);
}

TEST_F(tool_guards_test, an_open_breaker_falls_back_without_calling) {
  auto& svc = services::get();
  svc.set("main", services::mode::transient);
  auto cfg = fallback_config();
  cfg.tools[0].policy.retry.max_attempts = 1;
  cfg.tools[0].policy.breaker.enabled = true;
  cfg.tools[0].policy.breaker.consecutive_failures = 1;
  cfg.tools[0].policy.breaker.open_for = 60s;
  node n{guard_types(), cfg};
  ASSERT_FALSE(n.start("root", caller_tree()));
  auto r1 = n.call<Pong>("root/c", ping(1), 5s);
  ASSERT_TRUE(r1) << describe(r1.error());
  EXPECT_EQ(r1->value.from(), "backup");
  auto r2 = n.call<Pong>("root/c", ping(2), 5s);
  ASSERT_TRUE(r2) << describe(r2.error());
  EXPECT_EQ(r2->value.from(), "backup");
  EXPECT_EQ(r2->value.n(), 1002);
  EXPECT_EQ(svc.count("main"), 1) << "an open breaker let a call through";
  EXPECT_EQ(svc.count("backup"), 2);
}

TEST_F(tool_guards_test, invalid_output_falls_back_down_the_chain) {
  auto& svc = services::get();
  svc.set("main", services::mode::invalid);
  svc.set("backup", services::mode::invalid);
  node n{guard_types(), fallback_config({"backup", "backup2"})};
  ASSERT_FALSE(n.start("root", caller_tree()));
  auto r = n.call<Pong>("root/c", ping(3), 5s);
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_EQ(r->value.from(), "backup2");
  EXPECT_EQ(r->value.n(), 2003);
  EXPECT_EQ(svc.count("main"), 2);
  EXPECT_EQ(svc.count("backup"), 2);
  EXPECT_EQ(svc.count("backup2"), 1);
}

TEST_F(tool_guards_test, the_default_answers_when_the_chain_is_spent) {
  auto& svc = services::get();
  svc.set("main", services::mode::transient);
  svc.set("backup", services::mode::transient);
  node n{guard_types(), fallback_config({"backup"}, true)};
  ASSERT_FALSE(n.start("root", caller_tree()));
  auto r = n.call<Pong>("root/c", ping(3), 5s);
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_EQ(r->value.n(), -1);
  EXPECT_EQ(r->value.from(), "main+default");
  EXPECT_EQ(n.rt()->find_tool("main")->stats().defaults.load(), 1u);
}

TEST_F(tool_guards_test, a_permanent_error_does_not_fall_back) {
  auto& svc = services::get();
  svc.set("main", services::mode::permanent);
  node n{guard_types(), fallback_config({"backup"}, true)};
  ASSERT_FALSE(n.start("root", caller_tree()));
  auto r = n.call<Pong>("root/c", ping(3), 5s);
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), "tool_rejected") << describe(r.error());
  EXPECT_EQ(svc.count("backup"), 0);
}

TEST_F(tool_guards_test, a_journal_agent_records_who_answered) {
  auto& svc = services::get();
  svc.set("main", services::mode::transient);
  auto cfg = fallback_config();
  cfg.data_dir = dir_;
  cfg.tools[0].effect = side_effect::idempotent_write;
  node n{guard_types(), cfg};
  ASSERT_FALSE(n.start("root", caller_tree(durability_mode::journal)));
  auto r = n.call<Pong>("root/c", ping(4), 5s);
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_EQ(r->value.from(), "backup");
  // One record, of the call (to main), answered by backup.
  std::vector<std::pair<std::string, std::string>> raw;
  ASSERT_FALSE(n.rt()->storage()->scan_prefix(db::tool_results, "", raw));
  std::vector<records::ToolResultRecord> recs;
  for (auto& kv : raw) {
    records::ToolResultRecord x;
    EXPECT_EQ(decode_record(kv.second, x), record_fault::none);
    recs.push_back(x);
  }
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0].tool(), "main");
  EXPECT_EQ(recs[0].answered_by(), "backup");
  EXPECT_FALSE(recs[0].by_default());
}

TEST_F(tool_guards_test, a_failed_dry_run_stops_the_real_call) {
  auto& svc = services::get();
  node_config cfg;
  auto pay = quick("pay", side_effect::irreversible);
  pay.dry_run = {"check", true};
  cfg.tools = {pay, quick("check")};
  node n{guard_types(), cfg};
  ASSERT_FALSE(n.start("root", caller_tree(durability_mode::none, "pay")));
  auto bad = n.call<Pong>("root/c", ping(-5), 5s);
  ASSERT_FALSE(bad);
  EXPECT_EQ(code_of(bad.error()), "tool_rejected");
  EXPECT_NE(describe(bad.error()).find("dry run (\"check\") failed"),
            std::string::npos)
    << describe(bad.error());
  EXPECT_EQ(svc.count("check"), 1);
  EXPECT_EQ(svc.count("pay"), 0) << "the real call ran after a failed dry run";
  auto good = n.call<Pong>("root/c", ping(5), 5s);
  ASSERT_TRUE(good) << describe(good.error());
  EXPECT_EQ(good->value.from(), "pay");
  EXPECT_EQ(svc.count("check"), 2);
  EXPECT_EQ(svc.count("pay"), 1);
  auto& st = n.rt()->find_tool("pay")->stats();
  EXPECT_EQ(st.dry_runs.load(), 2u);
  EXPECT_EQ(st.dry_run_failures.load(), 1u);
}

TEST_F(tool_guards_test, a_journal_agent_records_the_dry_run_and_the_call) {
  auto& svc = services::get();
  node_config cfg;
  cfg.data_dir = dir_;
  auto pay = quick("pay", side_effect::irreversible);
  pay.dry_run = {"check", true};
  cfg.tools = {pay, quick("check")};
  node n{guard_types(), cfg};
  ASSERT_FALSE(
    n.start("root", caller_tree(durability_mode::journal, "pay")));
  auto good = n.call<Pong>("root/c", ping(5), 5s);
  ASSERT_TRUE(good) << describe(good.error());
  size_t records = 0;
  ASSERT_FALSE(n.rt()->storage()->count(db::tool_results, records));
  EXPECT_EQ(records, 2u); // the dry run's and the call's
  // Keys of their own: the dry run's is placed under the call's.
  auto dry = svc.keys_of("check");
  auto real = svc.keys_of("pay");
  ASSERT_EQ(dry.size(), 1u);
  ASSERT_EQ(real.size(), 1u);
  EXPECT_NE(dry[0], real[0]);
  EXPECT_EQ(dry[0].rfind(real[0] + ".", 0), 0u) << dry[0] << " " << real[0];
}

namespace {

/// A node whose "pay" needs approval (within `timeout`), with a data dir.
node_config approval_config(const std::string& dir,
                            std::chrono::milliseconds timeout = 60s) {
  node_config cfg;
  cfg.data_dir = dir;
  cfg.sync = sync_mode::nosync;
  cfg.approvals_poll = 20ms;
  auto pay = quick("pay", side_effect::irreversible);
  pay.approval.required = true;
  pay.approval.timeout = timeout;
  cfg.tools = {pay};
  return cfg;
}

/// The ids of the pending approvals.
std::vector<std::string> pending_ids(const std::string& dir) {
  std::vector<std::string> out;
  for (auto& x : pending_approvals(dir))
    out.push_back(x.value("id", ""));
  return out;
}

} // namespace

TEST_F(tool_guards_test, an_approved_call_runs_once_a_person_approves) {
  auto& svc = services::get();
  node n{guard_types(), approval_config(dir_)};
  ASSERT_FALSE(n.start("root", caller_tree(durability_mode::none, "pay")));
  auto reply = std::async(std::launch::async,
                          [&] { return n.call<Pong>("root/c", ping(120), 30s); });
  std::vector<std::string> ids;
  ASSERT_TRUE(eventually([&] { return (ids = pending_ids(dir_)).size() == 1; },
                         10s));
  EXPECT_EQ(svc.count("pay"), 0) << "ran before approval";
  auto ok = vigil_cmd(dir_, {"approvals", "approve", ids[0], "--by", "alice"});
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  auto r = reply.get();
  ASSERT_TRUE(r) << describe(r.error());
  EXPECT_EQ(r->value.from(), "pay");
  EXPECT_EQ(svc.count("pay"), 1);
  EXPECT_EQ(n.rt()->find_tool("pay")->stats().approvals_asked.load(), 1u);
}

TEST_F(tool_guards_test, a_rejected_call_fails_and_never_runs) {
  auto& svc = services::get();
  node n{guard_types(), approval_config(dir_)};
  ASSERT_FALSE(n.start("root", caller_tree(durability_mode::none, "pay")));
  auto reply = std::async(std::launch::async,
                          [&] { return n.call<Pong>("root/c", ping(120), 30s); });
  std::vector<std::string> ids;
  ASSERT_TRUE(eventually([&] { return (ids = pending_ids(dir_)).size() == 1; },
                         10s));
  auto no = vigil_cmd(dir_, {"approvals", "reject", ids[0], "--by", "bob",
                             "--reason", "wrong payee"});
  ASSERT_EQ(no.exit_code, 0) << no.err;
  auto r = reply.get();
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), "approval_rejected");
  EXPECT_NE(describe(r.error()).find("rejected by bob: wrong payee"),
            std::string::npos)
    << describe(r.error());
  EXPECT_EQ(svc.count("pay"), 0);
}

TEST_F(tool_guards_test, no_decision_within_the_timeout_expires_the_call) {
  auto& svc = services::get();
  node n{guard_types(), approval_config(dir_, 300ms)};
  ASSERT_FALSE(n.start("root", caller_tree(durability_mode::none, "pay")));
  auto r = n.call<Pong>("root/c", ping(120), 10s);
  ASSERT_FALSE(r);
  EXPECT_EQ(code_of(r.error()), "approval_expired") << describe(r.error());
  EXPECT_EQ(svc.count("pay"), 0);
  // The CLI shows it expired, and refuses a late approval.
  auto list = vigil_cmd(dir_, {"approvals", "list", "--json", "--all"});
  EXPECT_NE(list.out.find("expired"), std::string::npos) << list.out << list.err;
  EXPECT_TRUE(pending_ids(dir_).empty());
}

TEST_F(tool_guards_test, a_call_without_a_key_cannot_wait_for_approval) {
  // From on_start there is no envelope, so no key to keep an approval under.
  auto& svc = services::get();
  node n{guard_types(), approval_config(dir_)};
  auto tree = caller_tree(durability_mode::none, "pay");
  tree.children[0].params["at_start"] = "";
  ASSERT_FALSE(n.start("root", tree));
  ASSERT_TRUE(eventually([&] { return !svc.errors_seen().empty(); }, 10s));
  EXPECT_EQ(svc.errors_seen()[0], "approval_unavailable");
  EXPECT_EQ(svc.count("pay"), 0);
  EXPECT_TRUE(pending_ids(dir_).empty());
}

TEST_F(tool_guards_test, an_approval_granted_while_the_node_was_down_counts) {
  auto& svc = services::get();
  {
    node n{guard_types(), approval_config(dir_)};
    ASSERT_FALSE(n.start("root", caller_tree(durability_mode::journal, "pay")));
    ASSERT_FALSE(n.send("root/c", ping(120)));
    ASSERT_TRUE(eventually([&] { return pending_ids(dir_).size() == 1; }, 10s));
    n.stop();
  }
  EXPECT_EQ(svc.count("pay"), 0);
  // Approved while no node runs: a decision file, taken in at the start.
  auto ids = pending_ids(dir_);
  ASSERT_EQ(ids.size(), 1u);
  auto ok = vigil_cmd(dir_, {"approvals", "approve", ids[0], "--by", "carol"});
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  node n{guard_types(), approval_config(dir_)};
  ASSERT_FALSE(n.start("root", caller_tree(durability_mode::journal, "pay")));
  // The replayed envelope finds its approval and the call runs, once.
  ASSERT_TRUE(eventually([&] { return svc.count("pay") == 1; }, 10s));
  size_t left = 1;
  ASSERT_TRUE(eventually([&] {
    return !n.rt()->storage()->count(db::journal, left) && left == 0;
  }, 10s));
  EXPECT_EQ(svc.count("pay"), 1);
  EXPECT_EQ(n.rt()->find_tool("pay")->stats().approvals_asked.load(), 0u);
}

TEST_F(tool_guards_test, the_node_refuses_links_to_tools_that_do_not_fit) {
  registry types = guard_types();
  types.add_tool<Ping, Tally>("tally", [](const Ping&, tool_call&) {
    return tool_result<Tally>{Tally{}};
  });
  struct row {
    std::function<void(node_config&)> change;
    std::string expected;
  };
  std::vector<row> rows = {
    {[](node_config& c) { c.tools[0].fallback.tools = {"nope"}; },
     "tool \"main\": fallback.tools: \"nope\" is not a tool of this node"},
    {[](node_config& c) { c.tools[0].fallback.tools = {"tally"}; },
     "tool \"main\": fallback.tools: \"tally\" takes vigil.test.Ping and "
     "replies vigil.test.Tally; it must take vigil.test.Ping and reply "
     "vigil.test.Pong"},
    {[](node_config& c) {
       c.tools[0].fallback.default_type = "vigil.test.Tally";
     },
     "tool \"main\": fallback.default: a vigil.test.Tally; the tool replies "
     "vigil.test.Pong"},
    {[](node_config& c) {
       c.tools[0].effect = side_effect::irreversible;
       c.tools[0].policy.retry.max_attempts = 1;
       c.tools[0].dry_run = {"backup", true};
       c.tools[1].approval.required = true;
     },
     "tool \"main\": dry_run.tool: \"backup\" has a dry run or an approval "
     "of its own; a dry run must be a plain call"},
    {[](node_config& c) { c.tools[0].approval.required = true; },
     "tool \"main\": approval.required: a call's approval is kept on disk; "
     "give the node a data dir (node_config::data_dir)"},
  };
  for (auto& r : rows) {
    auto cfg = fallback_config();
    cfg.tools.push_back(quick("tally"));
    r.change(cfg);
    node n{types, cfg};
    auto err = n.start("root", caller_tree());
    ASSERT_TRUE(err) << r.expected;
    EXPECT_NE(describe(err).find(r.expected), std::string::npos)
      << describe(err);
  }
}

TEST_F(tool_guards_test, an_effect_waits_for_its_approval_then_is_sent) {
  auto& svc = services::get();
  auto cfg = approval_config(dir_);
  cfg.tools[0].effect = side_effect::idempotent_write;
  node n{guard_types(), cfg};
  auto tree = caller_tree(durability_mode::journal, "pay");
  tree.children[0].params["effect"] = "";
  ASSERT_FALSE(n.start("root", tree));
  auto r = n.call<Pong>("root/c", ping(9), 10s);
  ASSERT_TRUE(r) << describe(r.error()); // the handler's commit is done
  std::vector<std::string> ids;
  ASSERT_TRUE(eventually([&] { return (ids = pending_ids(dir_)).size() == 1; },
                         10s));
  EXPECT_EQ(svc.count("pay"), 0);
  auto ok = vigil_cmd(dir_, {"approvals", "approve", ids[0], "--by", "dora"});
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  ASSERT_TRUE(eventually([&] { return svc.count("pay") == 1; }, 10s));
  size_t outbox = 1;
  ASSERT_TRUE(eventually([&] {
    return !n.rt()->storage()->count(db::outbox, outbox) && outbox == 0;
  }, 10s));
}

TEST_F(tool_guards_test, a_replay_is_told_who_answered_the_recorded_call) {
  auto& svc = services::get();
  svc.set("main", services::mode::transient);
  auto cfg = fallback_config();
  cfg.data_dir = dir_;
  cfg.tools[0].effect = side_effect::idempotent_write;
  cfg.tools.push_back(quick("hang"));
  // A stop does not wait for the hung execution.
  cfg.tool_executors = [](const tool_decl& t) {
    return std::make_shared<detail::thread_pool>(
      t.policy.bulkhead.max_concurrent, t.name, 0ms);
  };
  auto tree = caller_tree(durability_mode::journal);
  tree.children[0].params["then_hang"] = "";
  {
    node n{guard_types(), cfg};
    ASSERT_FALSE(n.start("root", tree));
    ASSERT_FALSE(n.send("root/c", ping(6)));
    ASSERT_TRUE(eventually([&] { return !svc.errors_seen().empty(); }, 10s));
    n.stop(); // the envelope is still held: "hang" runs
  }
  svc.release = true;
  EXPECT_EQ(svc.errors_seen(), std::vector<std::string>{"answer:backup"});
  int main_runs = svc.count("main");
  int backup_runs = svc.count("backup");
  svc.release = false;
  node n{guard_types(), cfg};
  ASSERT_FALSE(n.start("root", tree));
  // The replay's first call is answered from its record: by the backup,
  // replayed, and neither tool runs again.
  ASSERT_TRUE(eventually([&] { return svc.errors_seen().size() == 2; }, 10s));
  EXPECT_EQ(svc.errors_seen()[1], "answer:backup+replayed");
  EXPECT_EQ(svc.count("main"), main_runs);
  EXPECT_EQ(svc.count("backup"), backup_runs);
  svc.release = true;
}
