// Account creation as a durable saga: create the user, then the
// subscription, then send the welcome e-mail, each a call to its own HTTP
// service under an idempotency key; when the e-mail service refuses an
// address, the subscription and the user are undone, in that order. The
// node runs as a real child process that this demo kills with SIGKILL at
// random points, again and again, and starts again on the same data dir;
// then every service's own records are checked: every effect applied
// once, every compensation once, every account fully created or fully
// undone. README.md, "Account creation, a durable saga".
//
//   accounts_demo [--accounts 200] [--kills 20] [--seed 7] [--rate 30]
//                 [--max-kill-ms 1000] [--data-dir DIR] [--report FILE]
//   accounts_demo node ...   (the node; started by the demo itself)
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fcntl.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include "accounts/accounts.pb.h"
#include "services.hpp"
#include "support/example_support.hpp"
#include "vigil/actors/agent.hpp"
#include "vigil/actors/error.hpp"
#include "vigil/builtin.pb.h"
#include "vigil/cli/app.hpp"
#include "vigil/node/node.hpp"
#include "vigil/saga.pb.h"

#ifndef ACCOUNTS_POLICY_DIR
#define ACCOUNTS_POLICY_DIR "examples/policies"
#endif

namespace {

using namespace std::chrono_literals;
using std::chrono::steady_clock;
using vigil::context;
using vigil::describe;
using vigil::errc;

// -- the step -----------------------------------------------------------------

std::string account_id(int64_t n) {
  char b[32];
  std::snprintf(b, sizeof b, "ACCT-%04lld", static_cast<long long>(n));
  return b;
}

/// Errors after which the service may yet answer differently: the call is
/// made again under the same key (the service applies a key once).
bool transient(const caf::error& e) {
  for (auto c : {errc::tool_unavailable, errc::deadline_exceeded,
                 errc::circuit_open, errc::bulkhead_full, errc::rate_limited,
                 errc::in_use})
    if (vigil::is(e, c))
      return true;
  return false;
}

/// One step of the saga: `execute` calls one tool, `compensate` another
/// (a step without one, the e-mail, is never compensated: it is last).
/// Each call carries a key named after the account and the operation, so
/// that whatever repeats it (a retry, a call made again after a transient
/// failure, the saga resending it after a kill) the service applies it
/// once. A journal agent: the saga's call and the step's answer to it are
/// committed together, so that a call the saga sends again after a kill
/// gets the same answer instead of running again.
class http_step : public vigil::agent<> {
public:
  explicit http_step(const vigil::params& ps)
    : execute_(ps.at("execute")),
      compensate_(ps.count("compensate") ? ps.at("compensate") : "") {
    // nop
  }

  static void define(vigil::handlers<http_step>& h) {
    h.on<vigil::SagaExecute>([](http_step& self, context& ctx,
                                const vigil::SagaExecute& m) -> caf::error {
      return self.start(ctx, m.input(), self.execute_, false);
    });
    h.on<vigil::SagaCompensate>([](http_step& self, context& ctx,
                                   const vigil::SagaCompensate& m)
                                  -> caf::error {
      if (self.compensate_.empty())
        return vigil::make_error(errc::refused,
                                 ctx.path() + " has nothing to undo");
      return self.start(ctx, m.input(), self.compensate_, true);
    });
  }

private:
  /// Calls made for a verdict before the step gives up (the fault model
  /// gives one by the third request about an account's operation; the
  /// others are for a loaded machine, each waiting out the call before).
  static constexpr int max_calls = 30;

  caf::error start(context& ctx, const std::string& input,
                   const std::string& tool, bool undoing) {
    vigil::builtin::Number n;
    if (!n.ParseFromString(input))
      return vigil::make_error(errc::bad_payload,
                               ctx.path() + ": the saga's input is not a "
                                            "vigil.builtin.Number");
    accounts::Account a;
    a.set_id(account_id(n.n()));
    a.set_email("user" + std::to_string(n.n()) + "@example.test");
    call(ctx, tool, a, tool + ":" + a.id(), max_calls, ctx.defer(), undoing);
    return {};
  }

  static void call(context& ctx, const std::string& tool,
                   const accounts::Account& a, const std::string& key,
                   int calls_left, vigil::deferred_reply reply, bool undoing) {
    vigil::tool_options o;
    o.idempotency_key = key;
    ctx.call_tool<accounts::Receipt>(
      tool, a, o,
      [reply, undoing](accounts::Receipt r) mutable {
        vigil::SagaStepOutput out;
        if (!undoing) {
          out.set_output_type(r.GetDescriptor()->full_name());
          r.SerializeToString(out.mutable_output());
        }
        reply.deliver(out);
      },
      [&ctx, tool, a, key, calls_left, reply,
       undoing](const caf::error& e) mutable {
        if (!transient(e)) {
          reply.fail(e); // a refusal: the saga undoes the steps before
        } else if (calls_left > 1) {
          call(ctx, tool, a, key, calls_left - 1, std::move(reply), undoing);
        } else {
          // No verdict: the service may have applied the call. Not a
          // refusal (a refused step is not undone): the saga reports the
          // step in doubt, with a dead letter for a person.
          reply.fail(vigil::make_error(
            errc::reply_dropped,
            ctx.path() + ": no verdict from tool \"" + tool + "\" after "
              + std::to_string(max_calls) + " calls (the last: " + describe(e)
              + "); the service may have applied " + key));
        }
      });
  }

  std::string execute_;
  std::string compensate_;
};

// -- the node (a child process) -------------------------------------------------

struct node_options {
  std::string data_dir;
  std::string policy_dir = ACCOUNTS_POLICY_DIR;
  int64_t accounts = 200;
  double rate = 100;
  std::string users, subscriptions, email;
  std::string outcomes_file;
};

/// Runs the saga on `data_dir` until every account's outcome reached the
/// `outcomes` agent (a run killed on the way resumes where it was), then
/// writes the outcomes as JSON to `outcomes_file`.
int run_node(const node_options& o) {
  spdlog::set_default_logger(spdlog::stderr_logger_mt("vigil"));
  vigil::registry types;
  types.add<http_step>("http_step");
  vigil::cli::add_builtin_agents(types);
  auto lp = examples::load_policy(
    o.policy_dir + "/accounts.yaml",
    {{"users", o.users},
     {"subscriptions", o.subscriptions},
     {"email", o.email},
     {"accounts", std::to_string(o.accounts)},
     {"rate", std::to_string(o.rate)}},
    types);
  lp.node.data_dir = o.data_dir;
  vigil::node n{std::move(types), lp.node};
  if (auto err = n.start(lp.name, std::move(lp.tree))) {
    std::cerr << "accounts node: did not start: " << describe(err) << "\n";
    return 1;
  }
  std::cerr << "accounts node: started on " << o.data_dir << std::endl;
  auto until = steady_clock::now() + 120s;
  vigil::builtin::OutcomeCount c;
  for (;;) {
    auto r = n.call<vigil::builtin::OutcomeCount>(lp.name + "/outcomes",
                                                  vigil::builtin::Get{}, 5s);
    if (r)
      c = r->value;
    if (c.completed() + c.compensated() + c.compensation_failed()
        >= o.accounts)
      break;
    if (steady_clock::now() > until) {
      std::cerr << "accounts node: only " << c.completed() + c.compensated()
                << " of " << o.accounts << " outcomes after 120 s\n";
      (void) n.stop();
      return 1;
    }
    std::this_thread::sleep_for(50ms);
  }
  (void) n.stop();
  std::ofstream out{o.outcomes_file};
  out << nlohmann::json{{"completed", c.completed()},
                        {"compensated", c.compensated()},
                        {"compensation_failed", c.compensation_failed()}}
           .dump()
      << "\n";
  return out ? 0 : 1;
}

// -- the demo -------------------------------------------------------------------

struct options {
  int64_t accounts = 200;
  int kills = 20;
  uint64_t seed = 7;
  double rate = 30;
  int max_kill_ms = 1000;
  std::string data_dir;
  std::string policy_dir = ACCOUNTS_POLICY_DIR;
  std::string report;
};

/// Starts this program as `accounts_demo node ...` with its output
/// appended to `log`; returns its pid.
pid_t spawn_node(const std::vector<std::string>& args, const std::string& log) {
  std::vector<char*> argv;
  for (auto& a : args)
    argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  auto pid = fork();
  if (pid < 0)
    throw std::runtime_error("fork failed: " + std::string{strerror(errno)});
  if (pid == 0) {
    int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    execv("/proc/self/exe", argv.data());
    _exit(127);
  }
  return pid;
}

/// Waits up to `d` for `pid` to exit; its status, or -1 if it still runs.
int wait_for(pid_t pid, std::chrono::milliseconds d) {
  auto until = steady_clock::now() + d;
  for (;;) {
    int st = 0;
    if (waitpid(pid, &st, WNOHANG) == pid)
      return st;
    if (steady_clock::now() >= until)
      return -1;
    std::this_thread::sleep_for(5ms);
  }
}

/// What the services' records say about each account: fully created
/// (user, subscription and e-mail, each once, nothing undone), fully undone
/// (each thing created deleted or cancelled once, no e-mail), or half
/// done; and how many ended as the fault model says (undone exactly when
/// the e-mail service refuses the address).
struct verdict {
  int64_t created = 0, undone = 0, half = 0, as_model = 0;
  int64_t expect_created = 0, expect_undone = 0;
  std::map<std::string, int64_t> applied_twice, undone_twice;
  std::vector<std::string> wrong; // "ACCT-0042: ..." (the first few)
};

verdict check(const accounts::services& svc, int64_t n) {
  verdict v;
  auto users = svc.figures("users");
  auto subs = svc.figures("subscriptions");
  auto mail = svc.figures("email");
  for (auto* f : {&users, &subs, &mail})
    for (auto& [id, r] : f->accounts) {
      auto name = f == &users ? "users" : f == &subs ? "subscriptions" : "email";
      v.applied_twice[name] += r.created > 1;
      v.undone_twice[name] += r.undone > 1;
    }
  for (int64_t i = 1; i <= n; ++i) {
    auto id = account_id(i);
    auto u = users.accounts[id], s = subs.accounts[id], m = mail.accounts[id];
    bool refused = svc.email_refused(id);
    ++(refused ? v.expect_undone : v.expect_created);
    bool full = u.created == 1 && u.undone == 0 && s.created == 1
                && s.undone == 0 && m.created == 1;
    // Undone: whatever was created, deleted once (also nothing at all).
    bool none = u.created <= 1 && u.undone == u.created && s.created <= 1
                && s.undone == s.created && m.created == 0;
    if (full)
      ++v.created;
    else if (none)
      ++v.undone;
    // As the model says: undone exactly when the address is refused
    // (after the user and the subscription were created).
    if ((full && !refused)
        || (none && refused && u.created == 1 && s.created == 1
            && m.refused >= 1))
      ++v.as_model;
    if (!full && !none) {
      ++v.half;
      if (v.wrong.size() < 5)
        v.wrong.push_back(id + ": user created " + std::to_string(u.created)
                          + " deleted " + std::to_string(u.undone)
                          + "; subscription created "
                          + std::to_string(s.created) + " cancelled "
                          + std::to_string(s.undone) + "; e-mail sent "
                          + std::to_string(m.created) + " refused "
                          + std::to_string(m.refused)
                          + (refused ? " (address refused)" : ""));
    }
  }
  return v;
}

int run_demo(const options& o, const std::string& self) {
  namespace fs = std::filesystem;
  auto dir = o.data_dir.empty() ? fs::temp_directory_path().string()
                                    + "/accounts-demo-"
                                    + std::to_string(getpid())
                                : o.data_dir;
  if (fs::exists(dir + "/data/data.mdb"))
    throw std::runtime_error(dir + "/data holds an earlier run's data dir; "
                             "remove it or pass another --data-dir");
  fs::create_directories(dir);
  auto log = dir + "/node.log";
  auto outcomes = dir + "/outcomes.json";
  accounts::fault_model f;
  accounts::services svc{o.seed, f};
  auto addr = svc.addresses();
  std::vector<std::string> args{
    self,        "node",
    "--data-dir", dir + "/data",
    "--accounts", std::to_string(o.accounts),
    "--rate",     std::to_string(o.rate),
    "--users",    addr.at("users"),
    "--subscriptions", addr.at("subscriptions"),
    "--email",    addr.at("email"),
    "--policy-dir", o.policy_dir,
    "--outcomes", outcomes};
  std::mt19937_64 rng{o.seed};
  std::uniform_int_distribution<int> delay{20, o.max_kill_ms};
  auto t0 = steady_clock::now();
  int killed = 0, runs = 0;
  auto finished = [&] {
    auto m = svc.figures("email");
    auto u = svc.figures("users");
    int64_t k = 0;
    for (auto& [id, r] : m.accounts)
      k += r.created > 0;
    for (auto& [id, r] : u.accounts)
      k += r.undone > 0;
    return k;
  };
  bool done = false;
  for (int round = 1; round <= o.kills && !done; ++round) {
    auto pid = spawn_node(args, log);
    ++runs;
    auto ms = delay(rng);
    auto st = wait_for(pid, std::chrono::milliseconds{ms});
    if (st != -1) { // it finished before its kill
      if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        throw std::runtime_error("the node failed (see " + log + ")");
      done = true;
      break;
    }
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    ++killed;
    std::fprintf(stderr,
                 "accounts: run %d killed with SIGKILL after %d ms; %lld of "
                 "%lld accounts finished at the services\n",
                 round, ms, static_cast<long long>(finished()),
                 static_cast<long long>(o.accounts));
  }
  if (!done) { // the last run, to the end
    auto pid = spawn_node(args, log);
    ++runs;
    auto st = wait_for(pid, 180s);
    if (st == -1) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      throw std::runtime_error("the last run did not finish in 180 s (see "
                               + log + ")");
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
      throw std::runtime_error("the last run failed (see " + log + ")");
  }
  auto elapsed = std::chrono::duration<double>(steady_clock::now() - t0).count();
  std::ifstream oin{outcomes};
  auto oc = nlohmann::json::parse(oin, nullptr, false);
  if (oc.is_discarded())
    throw std::runtime_error("the node wrote no outcomes to " + outcomes);
  auto v = check(svc, o.accounts);
  // What the node said when it started again: the runs a kill interrupted.
  int64_t resumed = 0;
  {
    std::ifstream lin{log};
    std::string line;
    const std::string mark = "resumed ";
    while (std::getline(lin, line))
      if (auto p = line.find(mark); p != std::string::npos
                                    && line.find("saga run") != std::string::npos)
        resumed += std::atoll(line.c_str() + p + mark.size());
  }

  std::printf("\n== account creation as a durable saga: %lld accounts, seed "
              "%llu; the e-mail service refuses %.0f%% of the addresses\n",
              static_cast<long long>(o.accounts),
              static_cast<unsigned long long>(o.seed), f.email_refused * 100);
  std::printf("node processes: %d (%d killed with SIGKILL at random points, "
              "then one to the end); saga runs resumed after a kill: %lld; "
              "wall time %.1f s\n\n",
              runs, killed, static_cast<long long>(resumed), elapsed);
  std::printf("%-34s%12s%16s%10s\n", "", "users", "subscriptions", "e-mail");
  auto row = [&](const char* name, auto get) {
    std::printf("%-34s", name);
    int w[] = {12, 16, 10};
    int k = 0;
    for (auto* s : {"users", "subscriptions", "email"})
      std::printf("%*s", w[k++], get(s).c_str());
    std::printf("\n");
  };
  std::map<std::string, accounts::service_figures> fig;
  for (auto* s : {"users", "subscriptions", "email"})
    fig[s] = svc.figures(s);
  auto count = [&](const char* s, auto f) {
    int64_t k = 0;
    for (auto& [id, r] : fig[s].accounts)
      k += f(r);
    return std::to_string(k);
  };
  row("requests", [&](auto s) { return std::to_string(fig[s].requests); });
  row("transient faults injected",
      [&](auto s) { return std::to_string(fig[s].faults); });
  row("repeats answered by key",
      [&](auto s) { return std::to_string(fig[s].repeats); });
  row("created / sent", [&](auto s) {
    return count(s, [](auto& r) { return r.created; });
  });
  row("  for an account more than once",
      [&](auto s) { return std::to_string(v.applied_twice[s]); });
  row("refused (no such mailbox)", [&](auto s) {
    return count(s, [](auto& r) { return r.refused > 0; });
  });
  row("undone (deleted / cancelled)", [&](auto s) {
    return std::string{s} == "email"
             ? std::string{"-"}
             : count(s, [](auto& r) { return r.undone; });
  });
  row("  for an account more than once", [&](auto s) {
    return std::string{s} == "email" ? std::string{"-"}
                                     : std::to_string(v.undone_twice[s]);
  });
  std::printf("\naccounts fully created     %6lld  (the fault model: %lld)\n",
              static_cast<long long>(v.created),
              static_cast<long long>(v.expect_created));
  std::printf("accounts fully undone      %6lld  (the fault model: %lld)\n",
              static_cast<long long>(v.undone),
              static_cast<long long>(v.expect_undone));
  std::printf("accounts half done          %6lld\n",
              static_cast<long long>(v.half));
  std::printf("accounts as the model says %6lld of %lld\n",
              static_cast<long long>(v.as_model),
              static_cast<long long>(o.accounts));
  for (auto& w : v.wrong)
    std::printf("  %s\n", w.c_str());
  std::printf("saga outcomes at `outcomes`: %lld completed, %lld "
              "compensated, %lld with a compensation failed\n",
              oc.value("completed", 0LL), oc.value("compensated", 0LL),
              oc.value("compensation_failed", 0LL));
  if (!o.report.empty()) {
    nlohmann::json j;
    j["accounts"] = o.accounts;
    j["runs"] = runs;
    j["killed"] = killed;
    j["resumed"] = resumed;
    j["elapsed_s"] = elapsed;
    j["fully_created"] = v.created;
    j["fully_undone"] = v.undone;
    j["half_done"] = v.half;
    j["as_model"] = v.as_model;
    j["expect_created"] = v.expect_created;
    j["expect_undone"] = v.expect_undone;
    j["outcomes"] = oc;
    for (auto& [s, f2] : fig) {
      int64_t created = 0, undone = 0, refused = 0;
      for (auto& [id, r] : f2.accounts) {
        created += r.created;
        undone += r.undone;
        refused += r.refused > 0;
      }
      j["services"][s] = {{"requests", f2.requests},
                          {"faults", f2.faults},
                          {"repeats", f2.repeats},
                          {"created", created},
                          {"undone", undone},
                          {"refused", refused},
                          {"applied_twice", v.applied_twice[s]},
                          {"undone_twice", v.undone_twice[s]}};
    }
    std::ofstream out{o.report};
    out << j.dump(2) << "\n";
    if (!out)
      throw std::runtime_error("cannot write the report to " + o.report);
  }
  if (o.data_dir.empty())
    fs::remove_all(dir);
  return v.half == 0 ? 0 : 3;
}

} // namespace

int main(int argc, char** argv) {
  CLI::App app{"accounts_demo: account creation as a durable saga, its node "
               "killed with SIGKILL at random points and resumed"};
  options o;
  app.add_option("--accounts", o.accounts, "accounts to create")
    ->check(CLI::Range(int64_t{1}, int64_t{100000}));
  app.add_option("--kills", o.kills, "times the node is killed")
    ->check(CLI::Range(0, 10000));
  app.add_option("--seed", o.seed, "the faults' and the kills' seed");
  app.add_option("--rate", o.rate, "accounts a second")
    ->check(CLI::Range(1.0, 100000.0));
  app.add_option("--max-kill-ms", o.max_kill_ms,
                 "a node is killed 20 ms to this long after it starts")
    ->check(CLI::Range(21, 600000));
  app.add_option("--data-dir", o.data_dir,
                 "where the node's data dir and log go (default: a temp dir, "
                 "removed after a good run)");
  app.add_option("--policy-dir", o.policy_dir, "where accounts.yaml is");
  app.add_option("--report", o.report, "write the figures as JSON to FILE");
  node_options no;
  auto* node = app.add_subcommand("node", "the node (the demo starts it)");
  node->add_option("--data-dir", no.data_dir)->required();
  node->add_option("--accounts", no.accounts)->required();
  node->add_option("--rate", no.rate);
  node->add_option("--users", no.users)->required();
  node->add_option("--subscriptions", no.subscriptions)->required();
  node->add_option("--email", no.email)->required();
  node->add_option("--policy-dir", no.policy_dir);
  node->add_option("--outcomes", no.outcomes_file)->required();
  CLI11_PARSE(app, argc, argv);
  try {
    if (*node)
      return run_node(no);
    if (!o.report.empty()) { // an unwritable path fails now, not after
      std::ofstream probe{o.report};
      if (!probe)
        throw std::runtime_error("cannot write the report to " + o.report);
    }
    return run_demo(o, argv[0]);
  } catch (const std::exception& e) {
    std::cerr << "accounts_demo: " << e.what() << "\n";
    return 1;
  }
}
