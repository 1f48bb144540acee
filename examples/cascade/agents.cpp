#include "agents.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cascade/cascade.pb.h"
#include "services.hpp"
#include "vigil/actors/agent.hpp"
#include "vigil/actors/error.hpp"
#include "vigil/resilience/backoff.hpp"
#include "vigil/supervision/duration.hpp"

namespace cascade {

namespace {

using namespace std::chrono_literals;
using vigil::context;
using vigil::describe;

/// The value of `name` in `ps`, or a problem in `problems`.
std::string param(const vigil::params& ps, const char* name,
                  std::vector<std::string>& problems) {
  auto i = ps.find(name);
  if (i == ps.end() || i->second.empty()) {
    problems.push_back(std::string{name} + " is required");
    return {};
  }
  return i->second;
}

/// Enqueues the batch: DOC-0001 on, one task each, its id as dedupe key
/// (a resent Feed adds none). A journal agent: one transaction.
class feeder : public vigil::agent<> {
public:
  explicit feeder(const vigil::params& ps) {
    std::vector<std::string> problems;
    queue_ = param(ps, "queue", problems);
    auto n = param(ps, "max_attempts", problems);
    if (!n.empty()
        && (n.find_first_not_of("0123456789") != std::string::npos
            || n.size() > 3 || std::stoul(n) == 0))
      problems.push_back("max_attempts: a number from 1 to 999");
    if (!problems.empty())
      throw vigil::bad_params(problems);
    max_attempts_ = static_cast<uint32_t>(std::stoul(n));
  }

  static void define(vigil::handlers<feeder>& h) {
    h.on<Feed>(&feeder::feed);
  }

private:
  void feed(context& ctx, const Feed& f) {
    for (int64_t i = 0; i < f.documents(); ++i) {
      vigil::enqueue_options o;
      o.max_attempts = max_attempts_;
      o.dedupe_key = doc_id(static_cast<size_t>(i));
      ctx.enqueue_task(queue_, o.dedupe_key, o, [](uint64_t) {},
                       [](const caf::error& e) {
                         std::fprintf(stderr, "cascade: enqueue: %s\n",
                                      describe(e).c_str());
                       });
    }
  }

  std::string queue_;
  uint32_t max_attempts_ = 0;
};

/// Sums what the workers report, and answers Get with it.
class tally : public vigil::agent<Tally> {
public:
  static void define(vigil::handlers<tally>& h) {
    h.on<Finished>(&tally::take);
    h.on<Get>(&tally::get);
  }

private:
  void take(context&, const Finished& f) {
    auto& t = state();
    // Its claims, and the complete or fail that ended it.
    t.set_queue_calls(t.queue_calls() + f.claims() + 1);
    t.set_conflicts(t.conflicts() + f.conflicts());
    t.set_increments(t.increments() + (f.counted() ? 1 : 0));
    t.set_completed(t.completed() + (f.completed() ? 1 : 0));
    t.set_given_back(t.given_back() + (f.given_back() ? 1 : 0));
    t.set_dead(t.dead() + (f.dead() ? 1 : 0));
    if (f.error().empty())
      return; // completed and counted
    // "insert_record: tool_unavailable: tool ..." counts as
    // "insert_record: tool_unavailable".
    auto what = f.error().substr(0, f.error().find(':', f.error().find(':') + 1));
    ++(*t.mutable_errors())[what];
    t.mutable_example()->insert({what, f.error().substr(0, 200)});
  }

  Tally get(context&, const Get&) {
    return state();
  }
};

/// The backoff between two compare-and-swaps of one document after a
/// conflict: full jitter from 1 ms, doubling up to 16 ms.
vigil::resilience::backoff_policy conflict_backoff() {
  vigil::resilience::backoff_policy p;
  p.initial = 1ms;
  p.max = 16ms;
  p.jitter = vigil::resilience::jitter_kind::full;
  return p;
}

/// The wait of a task claimed again before its calls: 50 ms after its
/// first lease, doubling up to 2 s, give or take half.
vigil::resilience::backoff_policy again_backoff() {
  vigil::resilience::backoff_policy p;
  p.initial = 50ms;
  p.max = 2s;
  p.jitter = vigil::resilience::jitter_kind::proportional;
  p.spread = 0.5;
  return p;
}

/// How long a worker keeps trying to count a completed document (its
/// task is done, and nobody else will count it): through conflicts and
/// store errors alike. Past it the count is short by one, and the run
/// says so (a `config:` error, and a count at the end below the
/// documents done).
constexpr auto count_for = std::chrono::seconds{60};

std::atomic<uint64_t> worker_seeds{1};

/// The document a doc_worker has claimed and is working on.
struct doc_job {
  Doc doc;
  uint32_t conflicts = 0;
  bool counted = false;
  std::chrono::steady_clock::time_point completed; ///< its task's
  bool reread = false;  ///< the next try reads the config first
  vigil::kv_entry seen; ///< the config as the last conflict returned it
  vigil::resilience::backoff_track track;
};

/// One instance of the document agent: claims a task under a lease,
/// inserts the document's record and sends its webhook through tools under
/// keys named after the document ("record:DOC-0042", "hook:DOC-0042"), so
/// that a retry, or another instance that works the task after a failure,
/// is one call at the service; completes the task; counts it in the
/// shared config by compare-and-swap; reports to the tally; claims the
/// next. A tool that fails after its retries gives the task back, and a
/// task claimed again waits before its calls (see `work`).
class doc_worker : public vigil::agent<> {
public:
  explicit doc_worker(const vigil::params& ps)
    : conflict_(conflict_backoff(), vigil::resilience::steady_clock::instance(),
                worker_seeds++),
      again_(again_backoff(), vigil::resilience::steady_clock::instance(),
             worker_seeds++) {
    std::vector<std::string> problems;
    queue_ = param(ps, "queue", problems);
    store_ = param(ps, "store", problems);
    key_ = param(ps, "key", problems);
    tally_ = param(ps, "tally", problems);
    auto lease = param(ps, "lease", problems);
    std::chrono::milliseconds ms{0};
    // Longer than the wait of a task claimed again (3 s at most).
    if (!lease.empty() && (!vigil::parse_duration(lease, ms) || ms < 5s))
      problems.push_back("lease: a duration of 5s or more, like 10s");
    if (!problems.empty())
      throw vigil::bad_params(problems);
    lease_ = ms;
  }

  static void define(vigil::handlers<doc_worker>& h) {
    h.on<Poll>(&doc_worker::poll);
    h.on<Doc>(&doc_worker::work);
    h.on<ConfigRetry>(&doc_worker::retry_config);
  }

  void on_start(context& ctx) override {
    ctx.send(ctx.path(), Poll{});
  }

private:
  // (at namespace scope: clang cannot default-construct a nested class
  // with member initializers inside its enclosing class's body)
  using job = doc_job;

  void poll(context& ctx, const Poll&) {
    ++claims_;
    ctx.claim_task(
      queue_, lease_,
      [&ctx](std::optional<vigil::claimed_task> t) {
        if (!t) {
          ctx.send_after(20ms, ctx.path(), Poll{}); // none ready: later
          return;
        }
        Doc d;
        d.set_task(t->lease.task);
        d.set_lease(t->lease.number);
        d.set_expires_ms(t->lease.expires_ms);
        d.set_id(t->payload);
        d.set_attempts(t->attempts);
        ctx.send(ctx.path(), d);
      },
      [](const caf::error& e) { throw std::runtime_error(describe(e)); });
  }

  void work(context& ctx, const Doc& d) {
    // The queue makes a task given back claimable at once: one claimed
    // again waits first, longer after each lease, so that an outage (an
    // open breaker fails every call at once) cannot spend all of a task's
    // attempts within milliseconds.
    if (d.attempts() > 1 && !d.waited()) {
      vigil::resilience::backoff_track t;
      t.attempts = d.attempts() - 2;
      Doc later = d;
      later.set_waited(true);
      ctx.send_after(again_.next(t), ctx.path(), later);
      return;
    }
    job_.emplace();
    job_->doc = d;
    Record r;
    r.set_id(d.id());
    r.set_title("Document " + d.id().substr(4));
    r.set_pages(12);
    vigil::tool_options opts;
    opts.idempotency_key = "record:" + d.id();
    ctx.call_tool<Stored>(
      "insert_record", r, opts, [this, &ctx](Stored) { send_webhook(ctx); },
      [this, &ctx](const caf::error& e) {
        give_back(ctx, "insert_record: " + describe(e));
      });
  }

  void send_webhook(context& ctx) {
    Event ev;
    ev.set_id(job_->doc.id());
    ev.set_kind("document.processed");
    vigil::tool_options opts;
    opts.idempotency_key = "hook:" + job_->doc.id();
    ctx.call_tool<Ack>(
      "send_webhook", ev, opts, [this, &ctx](Ack) { complete(ctx); },
      [this, &ctx](const caf::error& e) {
        give_back(ctx, "send_webhook: " + describe(e));
      });
  }

  /// Completes the task, and counts the document only then: the count is
  /// not idempotent, and only the holder of a live lease completes a task,
  /// once. A worker whose lease expired on the way (a slow machine, a long
  /// run of conflicts) has made its calls again under the same keys, and
  /// counts nothing; the task's next worker does.
  void complete(context& ctx) {
    ctx.complete_task(
      lease_of(job_->doc),
      [this, &ctx] {
        job_->completed = std::chrono::steady_clock::now();
        read_config(ctx);
      },
      [this, &ctx](const caf::error& e) {
        Finished f;
        f.set_error("complete_task: " + describe(e));
        finish(ctx, f);
      });
  }

  void read_config(context& ctx) {
    ctx.kv_get(
      store_, key_, [this, &ctx](vigil::kv_entry cur) { put_config(ctx, cur); },
      [this, &ctx](const caf::error& e) {
        job_->reread = true;
        count_later(ctx, describe(e));
      });
  }

  /// The config `cur` with this document counted in it.
  std::string counted(const vigil::kv_entry& cur, context& ctx) const {
    auto j = cur.found ? nlohmann::json::parse(cur.value)
                       : nlohmann::json{{"documents_processed", 0}};
    auto& p = ctx.path();
    j["documents_processed"] = j["documents_processed"].get<int64_t>() + 1;
    j["last_document"] = job_->doc.id();
    j["updated_by"] = p.substr(p.rfind('/') + 1);
    return j.dump();
  }

  /// Compare-and-swap from `cur`; on a conflict, again from what the
  /// conflict returns, after a jittered backoff.
  void put_config(context& ctx, const vigil::kv_entry& cur) {
    ctx.kv_put(
      store_, key_, counted(cur, ctx), cur.version,
      [this, &ctx](vigil::kv_result r) {
        if (r.applied) {
          job_->counted = true;
          Finished f;
          f.set_completed(true);
          return finish(ctx, f);
        }
        ++job_->conflicts;
        job_->seen = std::move(r.entry);
        job_->reread = false;
        count_later(ctx, "compare-and-swap conflicts");
      },
      [this, &ctx](const caf::error& e) {
        // Not applied (a store's error is its transaction's): read the
        // config again, and try again.
        job_->reread = true;
        count_later(ctx, describe(e));
      });
  }

  /// Tries the count again after a jittered backoff, while `count_for`
  /// lasts; past it, the task is done and its count not written: a
  /// `config:` error in the tally.
  void count_later(context& ctx, const std::string& why) {
    if (std::chrono::steady_clock::now() - job_->completed >= count_for) {
      Finished f;
      f.set_completed(true);
      f.set_error("config: not counted after "
                  + std::to_string(count_for.count()) + " s: " + why);
      return finish(ctx, f);
    }
    ctx.send_after(conflict_.next(job_->track), ctx.path(), ConfigRetry{});
  }

  void retry_config(context& ctx, const ConfigRetry&) {
    if (!job_)
      return;
    if (job_->reread)
      read_config(ctx);
    else
      put_config(ctx, job_->seen);
  }

  vigil::lease lease_of(const Doc& d) const {
    return vigil::lease{queue_, d.task(), d.lease(), d.expires_ms()};
  }

  /// Gives the task back: claimable again (its keys unchanged, so that its
  /// next worker's calls are the same calls), or a dead letter once its
  /// attempts are spent.
  void give_back(context& ctx, std::string why) {
    ctx.fail_task(
      lease_of(job_->doc), why,
      [this, &ctx, why](bool dead) {
        Finished f;
        f.set_given_back(true);
        f.set_dead(dead);
        f.set_error(why);
        finish(ctx, f);
      },
      [this, &ctx, why](const caf::error& e) {
        Finished f;
        f.set_error(why + "; fail_task: " + describe(e));
        finish(ctx, f);
      });
  }

  /// Reports the document to the tally, and claims the next.
  void finish(context& ctx, Finished& f) {
    f.set_conflicts(job_->conflicts);
    f.set_counted(job_->counted);
    f.set_claims(claims_);
    claims_ = 0;
    job_.reset();
    ctx.send(tally_, f);
    ctx.send(ctx.path(), Poll{});
  }

  std::string queue_, store_, key_, tally_;
  vigil::duration lease_{0};
  std::optional<job> job_;
  int64_t claims_ = 0; ///< claim calls since the last document finished
  vigil::resilience::backoff conflict_;
  vigil::resilience::backoff again_;
};

} // namespace

void add_agents(vigil::registry& types) {
  types.add<feeder>("feeder");
  types.add<tally>("tally");
  types.add<doc_worker>("doc_worker");
}

} // namespace cascade
