// The randomized lifecycle test, extended to sagas. From a seed: a saga
// "shop/checkout" over three scripted steps (memory or journal agents;
// random step_timeout, retry budget and restart backoff) and a history of
// operations: saga runs whose steps succeed, refuse, crash or finish late
// and whose compensations crash or refuse, crashes of steps, steps
// terminated and restarted (while holding a saga's envelopes), the saga
// supervisor restarted, time moving, and the scheduler run a few messages
// at a time so that operations land between any two deliveries. It runs
// on CAF's testing scheduler with virtual time, so a seed replays exactly.
//
// The oracle reads what the steps really did (saga_script counts effects)
// after a final drain, and checks what a saga promises:
// - every request is answered (an outcome, or an error and no effect);
// - no step runs twice, and no compensation runs for a step that did not
//   run;
// - every step that ran is part of a completed saga, or compensated once,
//   or its compensation is in the dead letters (memory steps: exactly one
//   of the two);
// - the outcome tells what happened (executed/compensated steps ran, a
//   failed or not_run step did not), and a run with a step scripted to
//   refuse, crash or finish late does not complete.
//
// VIGIL_SAGA_SEEDS=n runs n seeds (default 1000), VIGIL_SAGA_SEED=s repeats
// one, VIGIL_SAGA_TRACE=1 prints each operation.

#include <cstdio>
#include <cstdlib>
#include <random>
#include <sstream>

#include "support/saga_fixture.hpp"

using namespace std::chrono_literals;
using namespace vigil;
using namespace vigil::test;

namespace {

using exec = saga_script::exec;
using comp = saga_script::comp;

struct op {
  enum kind : uint8_t {
    submit,      // a saga run for a new order, with its script
    crash_step,  // a Crash envelope to step `step`
    stop_step,   // terminate_child(step)
    start_step,  // restart_child(step)
    bounce_saga, // terminate_child + restart_child of the saga supervisor
    advance,     // move the clock by `ms`
    run_some,    // run `ms` scheduler jobs (or all that are runnable)
  };
  kind what = advance;
  int step = 0;
  int64_t ms = 0;
  std::vector<exec> execs;              // submit: per step
  std::vector<std::deque<comp>> comps; // submit: per step
};

struct config {
  bool journal = false;
  std::chrono::milliseconds step_timeout{200};
  uint32_t retries = 2;
  std::chrono::milliseconds backoff{0};
  int intensity = 1000;
};

const char* name(exec x) {
  switch (x) {
    case exec::ok: return "ok";
    case exec::refuse: return "refuse";
    case exec::crash: return "crash";
    case exec::slow: return "slow";
  }
  return "?";
}

const char* name(comp x) {
  switch (x) {
    case comp::ok: return "ok";
    case comp::crash: return "crash";
    case comp::refuse: return "refuse";
  }
  return "?";
}

std::string describe(const op& o) {
  std::ostringstream os;
  switch (o.what) {
    case op::submit:
      os << "submit [";
      for (size_t i = 0; i < o.execs.size(); ++i) {
        os << (i ? " " : "") << name(o.execs[i]);
        for (auto c : o.comps[i])
          os << "/" << name(c);
      }
      os << "]";
      break;
    case op::crash_step: os << "crash " << saga_fixture::steps[o.step]; break;
    case op::stop_step: os << "stop " << saga_fixture::steps[o.step]; break;
    case op::start_step: os << "start " << saga_fixture::steps[o.step]; break;
    case op::bounce_saga: os << "bounce the saga supervisor"; break;
    case op::advance: os << "advance " << o.ms << "ms"; break;
    case op::run_some: os << "run " << o.ms << " jobs"; break;
  }
  return os.str();
}

config make_config(std::mt19937_64& rng) {
  config c;
  c.journal = rng() % 2 == 0;
  c.step_timeout = std::chrono::milliseconds{rng() % 2 == 0 ? 200 : 1000};
  c.retries = static_cast<uint32_t>(1 + rng() % 3);
  static const int backoffs[] = {0, 100, 2000};
  c.backoff = std::chrono::milliseconds{backoffs[rng() % 3]};
  c.intensity = rng() % 4 == 0 ? 3 : 1000;
  return c;
}

std::vector<op> generate(std::mt19937_64& rng, size_t n) {
  std::vector<op> out;
  auto pick = [&](int bound) { return static_cast<int>(rng() % bound); };
  for (size_t i = 0; i < n; ++i) {
    op o;
    auto r = pick(100);
    if (r < 30) {
      o.what = op::submit;
      for (int s = 0; s < 3; ++s) {
        auto x = pick(100);
        o.execs.push_back(x < 65   ? exec::ok
                          : x < 77 ? exec::refuse
                          : x < 89 ? exec::crash
                                   : exec::slow);
        std::deque<comp> cs;
        for (int k = pick(3); k > 0; --k)
          cs.push_back(pick(10) == 0 ? comp::refuse : comp::crash);
        o.comps.push_back(std::move(cs));
      }
    } else if (r < 37) {
      o.what = op::crash_step;
      o.step = pick(3);
    } else if (r < 42) {
      o.what = op::stop_step;
      o.step = pick(3);
    } else if (r < 50) {
      o.what = op::start_step;
      o.step = pick(3);
    } else if (r < 54) {
      o.what = op::bounce_saga;
    } else if (r < 75) {
      o.what = op::advance;
      static const int64_t steps[] = {1, 60, 150, 400, 1100, 2500};
      o.ms = steps[pick(6)];
    } else {
      o.what = op::run_some;
      o.ms = pick(8);
    }
    out.push_back(std::move(o));
  }
  return out;
}

/// One seed's world: a fresh runtime and saga (the fixture, used outside
/// GoogleTest's own fixture machinery).
class world : public saga_fixture {
public:
  void TestBody() override {
  }

  struct figures {
    std::vector<std::string> problems;
    size_t runs = 0, completed = 0, executed = 0, compensated = 0,
           letters = 0, late = 0, refused_requests = 0;
    std::map<std::string, size_t> refusals; // by error code
  };

  figures play(const config& cfg, const std::vector<op>& ops, bool trace) {
    figures f;
    saga_spec opts;
    opts.step_timeout = cfg.step_timeout;
    opts.retry_delay = 50ms;
    opts.compensation_retries = cfg.retries;
    saga_script::get().slow_ms = 2 * cfg.step_timeout.count();
    shop_ = start_shop(opts, cfg.backoff, cfg.journal, cfg.intensity);
    // The requester: an actor that asks the saga and keeps each answer.
    struct answers {
      std::map<std::string, SagaOutcome> outcomes;
      std::map<std::string, std::string> errors;
      std::vector<std::string> problems;
    };
    auto got = std::make_shared<answers>();
    auto requester = sys.spawn([got](caf::event_based_actor* me)
                                 -> caf::behavior {
      return {[me, got](const std::string& id, const caf::actor& sg,
                        envelope& e) {
        me->request(sg, caf::infinite, std::move(e))
          .then(
            [got, id](envelope& r) {
              SagaOutcome o;
              if (!o.ParseFromString(r.payload))
                got->problems.push_back(id + ": the outcome does not parse");
              if (!got->outcomes.emplace(id, o).second)
                got->problems.push_back(id + ": answered twice");
            },
            [got, id](caf::error& err) {
              if (!got->errors.emplace(id, vigil::describe(err)).second)
                got->problems.push_back(id + ": answered twice");
            });
      }};
    });
    sups.push_back(requester); // ended with the fixture
    auto& outcomes = got->outcomes;
    auto& errors = got->errors;
    std::map<std::string, const op*> scripts;
    std::vector<std::string> asked;
    int next_order = 0;
    for (auto& o : ops) {
      if (trace)
        std::printf("  %s\n", describe(o).c_str());
      auto sg = handle(saga_path);
      switch (o.what) {
        case op::submit: {
          auto id = "o-" + std::to_string(next_order++);
          for (int s = 0; s < 3; ++s) {
            script_exec(id, steps[s], o.execs[s]);
            script_comps(id, steps[s], o.comps[s]);
          }
          scripts[id] = &o;
          if (!sg) {
            errors[id] = "not submitted: no saga at " + std::string{saga_path};
            break;
          }
          asked.push_back(id);
          caf::anon_send(requester, id, sg, wrap(order(id)));
          break;
        }
        case op::crash_step:
          if (auto h = handle(step_path(steps[o.step]))) {
            Crash c;
            c.set_why("chaos");
            caf::anon_send(h, wrap(c));
          }
          break;
        case op::stop_step:
          if (sg)
            caf::anon_send(sg, terminate_child_atom::value,
                           std::string{steps[o.step]});
          break;
        case op::start_step:
          if (sg)
            caf::anon_send(sg, restart_child_atom::value,
                           std::string{steps[o.step]});
          break;
        case op::bounce_saga:
          caf::anon_send(shop_, terminate_child_atom::value,
                         std::string{"checkout"});
          caf::anon_send(shop_, restart_child_atom::value,
                         std::string{"checkout"});
          break;
        case op::advance:
          advance(std::chrono::milliseconds{o.ms});
          break;
        case op::run_some:
          for (int64_t k = 0; k < o.ms && sched.try_run_once(); ++k) {
            // one job at a time
          }
          break;
      }
    }
    // The drain: every step runs again (so that what a journal kept is
    // applied), the saga supervisor too, and time moves until every run
    // answered and every retry is spent.
    run();
    for (int round = 0; round < 200; ++round) {
      if (!handle(saga_path))
        caf::anon_send(shop_, restart_child_atom::value,
                       std::string{"checkout"});
      if (auto sg = handle(saga_path))
        for (auto* s : steps)
          caf::anon_send(sg, restart_child_atom::value, std::string{s});
      advance(1s);
      if (outcomes.size() + errors.size() == scripts.size() && round > 70)
        break;
    }
    f.problems = got->problems;
    if (trace)
      for (auto& e : saga_script::get().events)
        std::printf("  event: %s\n", e.c_str());
    for (auto& id : asked)
      if (outcomes.count(id) + errors.count(id) == 0)
        f.problems.push_back(id + ": no answer after the drain");
    check(f, outcomes, errors, scripts);
    return f;
  }

private:
  void check(figures& f, const std::map<std::string, SagaOutcome>& outcomes,
             const std::map<std::string, std::string>& errors,
             const std::map<std::string, const op*>& scripts) {
    auto bad = [&](const std::string& id, const std::string& what) {
      f.problems.push_back(id + ": " + what);
    };
    for (auto& [id, o] : scripts) {
      auto oc = outcomes.find(id);
      auto er = errors.find(id);
      for (int s = 0; s < 3; ++s) {
        auto path = step_path(steps[s]);
        int ex = saga_script::get().executed_of(id, path);
        int co = saga_script::get().compensated_of(id, path);
        auto dl = comp_letters(id, steps[s]);
        f.executed += static_cast<size_t>(ex);
        f.compensated += static_cast<size_t>(co);
        f.letters += dl;
        auto tag = std::string{steps[s]} + " (executed " + std::to_string(ex)
                   + ", compensated " + std::to_string(co)
                   + ", compensation letters " + std::to_string(dl) + ")";
        if (ex > 1)
          bad(id, tag + ": executed more than once");
        if (co > 1)
          bad(id, tag + ": compensated more than once");
        if (co > ex)
          bad(id, tag + ": compensated, but it never ran");
        if (oc == outcomes.end()) {
          if (ex != 0)
            bad(id, tag + ": ran, but its request was answered "
                      + (er != errors.end() ? er->second : "not at all"));
          continue;
        }
        auto& out = oc->second;
        auto& st = out.steps(s);
        tag += " [" + st.status()
               + (st.error().empty() ? "" : ": " + st.error()) + "]";
        if (out.completed()) {
          if (ex != 1 || co != 0 || dl != 0)
            bad(id, tag + ": in a completed saga");
          continue;
        }
        if (ex == 1 && co == 0 && dl == 0)
          bad(id, tag + ": ran, and neither compensated nor a dead letter");
        if (!cfg_journal_ && ex == 1 && co + dl != 1)
          bad(id, tag + ": a memory step compensated and dead-lettered");
        if ((st.status() == "executed" || st.status() == "compensated"
             || st.status() == "compensation_failed"
             || st.status() == "accepted")
            && ex != 1)
          bad(id, tag + ": the outcome says " + st.status());
        if ((st.status() == "failed" || st.status() == "not_run") && ex != 0)
          bad(id, tag + ": the outcome says " + st.status());
        if (st.status() == "compensated" && co != 1)
          bad(id, tag + ": the outcome says compensated");
        if (st.status() == "accepted" && (!cfg_journal_ || (co != 1 && dl == 0)))
          bad(id, tag + ": the outcome says accepted");
        if (st.status() == "compensation_failed" && dl == 0)
          bad(id, tag + ": the outcome says compensation_failed");
        if (st.late())
          ++f.late;
        auto x = scripts.at(id)->execs[s];
        if (x != exec::ok && ex == 1 && x != exec::slow)
          bad(id, tag + ": scripted to " + name(x) + ", but it ran");
      }
      if (oc != outcomes.end()) {
        ++f.runs;
        if (oc->second.completed()) {
          ++f.completed;
          for (auto x : scripts.at(id)->execs)
            if (x != exec::ok)
              bad(id, std::string{"completed, though a step was scripted to "}
                        + name(x));
        }
      } else {
        ++f.refused_requests;
        auto why = errors.count(id) ? errors.at(id) : std::string{"none"};
        ++f.refusals[why.substr(0, why.find(':'))];
      }
    }
  }

public:
  bool cfg_journal_ = false;
  caf::actor shop_;
};

uint64_t env_u64(const char* name, uint64_t fallback) {
  auto* s = std::getenv(name);
  return s != nullptr ? std::strtoull(s, nullptr, 10) : fallback;
}

TEST(saga_lifecycle_test, random_histories_keep_the_saga_promise) {
  auto one = std::getenv("VIGIL_SAGA_SEED");
  auto count = one != nullptr ? 1 : env_u64("VIGIL_SAGA_SEEDS", 1000);
  auto first = one != nullptr ? env_u64("VIGIL_SAGA_SEED", 0) : 1;
  bool trace = std::getenv("VIGIL_SAGA_TRACE") != nullptr;
  world::figures total;
  size_t journal_seeds = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (uint64_t seed = first; seed < first + count; ++seed) {
    std::mt19937_64 rng{seed};
    auto cfg = make_config(rng);
    auto ops = generate(rng, 40);
    world::figures f;
    {
      world w;
      w.cfg_journal_ = cfg.journal;
      f = w.play(cfg, ops, trace);
    }
    journal_seeds += cfg.journal ? 1 : 0;
    total.runs += f.runs;
    total.completed += f.completed;
    total.executed += f.executed;
    total.compensated += f.compensated;
    total.letters += f.letters;
    total.late += f.late;
    total.refused_requests += f.refused_requests;
    for (auto& [code, n] : f.refusals)
      total.refusals[code] += n;
    if (f.problems.empty())
      continue;
    std::ostringstream os;
    os << "seed " << seed << " (repeat with VIGIL_SAGA_SEED=" << seed
       << ", VIGIL_SAGA_TRACE=1 for the history): "
       << (cfg.journal ? "journal" : "memory") << " steps, step_timeout "
       << cfg.step_timeout.count() << "ms, " << cfg.retries
       << " retries, backoff " << cfg.backoff.count() << "ms, intensity "
       << cfg.intensity << "\n";
    for (auto& p : f.problems)
      os << "  " << p << "\n";
    FAIL() << os.str();
  }
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
              std::chrono::steady_clock::now() - t0)
              .count();
  // Not vacuous: runs completed and failed, steps ran, were compensated
  // and dead-lettered, and some finished late.
  EXPECT_GT(total.runs, count);
  EXPECT_GT(total.completed, 0u);
  EXPECT_GT(total.runs, total.completed);
  EXPECT_GT(total.compensated, 0u);
  if (count >= 50) {
    EXPECT_GT(total.letters, 0u);
    EXPECT_GT(total.late, 0u);
    EXPECT_GT(journal_seeds, 0u);
  }
  std::printf("saga_lifecycle_test: %llu seeds from %llu in %lld ms "
              "(%zu with journal steps): %zu saga runs answered (%zu "
              "completed), %zu requests refused, %zu steps executed, %zu "
              "compensated, %zu compensation dead letters, %zu late "
              "steps\n",
              static_cast<unsigned long long>(count),
              static_cast<unsigned long long>(first),
              static_cast<long long>(ms), journal_seeds, total.runs,
              total.completed, total.refused_requests, total.executed,
              total.compensated, total.letters, total.late);
  for (auto& [code, n] : total.refusals)
    std::printf("  requests refused with %s: %zu\n", code.c_str(), n);
}

} // namespace
