#pragma once

// The supervisor's engine: OTP's restart and stop machinery as a CAF actor.
// Internal to vigil_supervision; the message API is in supervisor.cpp.

#include <algorithm>
#include <atomic>
#include <deque>
#include <map>
#include <random>
#include <set>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include <caf/all.hpp>

#include "vigil/actors/cell.hpp"
#include "vigil/actors/detail/actor_clock.hpp"
#include "vigil/actors/report.hpp"
#include "vigil/actors/writer.hpp"
#include "vigil/resilience/backoff.hpp"
#include "vigil/supervision/check.hpp"
#include "vigil/supervision/saga.hpp"
#include "vigil/supervision/supervisor.hpp"

namespace vigil {

namespace detail {

using try_again_atom = caf::atom_constant<caf::atom("vtryagain")>;
using child_down_atom = caf::atom_constant<caf::atom("vchilddown")>;
using nudge_atom = caf::atom_constant<caf::atom("vnudge")>;
using stop_timeout_atom = caf::atom_constant<caf::atom("vstoptime")>;
// A durable saga's supervisor to itself (supervisor_sagas.cpp).
using saga_retry_atom = caf::atom_constant<caf::atom("vsgresume")>;
using saga_outbox_atom = caf::atom_constant<caf::atom("vsgoutbox")>;
using saga_compact_atom = caf::atom_constant<caf::atom("vsgcompact")>;

constexpr auto high = caf::message_priority::high;

/// How long a brutal_kill waits for the cell to drop its instance before the
/// cell itself is killed (a cell only misses this while a handler is stuck).
constexpr auto brutal_kill_grace = std::chrono::seconds{1};

inline bool is_normal(const caf::error& x) {
  return !x || x == caf::exit_reason::normal;
}

/// The supervisor's `backoff` flags as a backoff policy: doubling, with a
/// proportional jitter (Akka's randomFactor).
inline resilience::backoff_policy backoff_policy_of(const backoff_spec& b) {
  resilience::backoff_policy p;
  p.initial = b.min;
  p.max = b.max;
  p.multiplier = 2.0;
  p.jitter = b.jitter > 0 ? resilience::jitter_kind::proportional
                          : resilience::jitter_kind::none;
  p.spread = b.jitter;
  p.reset_after = b.reset_after;
  return p;
}

inline bool is_shutdown(const caf::error& x) {
  return x == caf::exit_reason::user_shutdown || is(x, errc::shutting_down);
}

/// OTP's supervisor as a CAF actor. Children are kept in start order (their
/// key order) and stopped in reverse. Everything that must not interleave
/// (starting and stopping children) uses `await`, so the supervisor does one
/// thing at a time, as OTP's does; failed restarts are retried by a message
/// to itself so that API calls and shutdown still get in.
class supervisor_actor : public caf::event_based_actor {
public:
  supervisor_actor(caf::actor_config& cfg, std::shared_ptr<runtime> rt,
                   supervisor_spec spec, std::string path, caf::actor parent)
    : caf::event_based_actor(cfg),
      rt_(std::move(rt)),
      spec_(std::move(spec)),
      path_(std::move(path)),
      clock_view_(system().clock()),
      backoff_(backoff_policy_of(spec_.flags.backoff), clock_view_,
               spec_.flags.seed),
      parent_(std::move(parent)),
      meter_(rt_->meters().supervisor(path_)) {
    if (spec_.flags.strategy == strategy::simple_one_for_one)
      rt_->meters().dynamic(path_);
  }

  const char* name() const override {
    return "vigil.supervisor";
  }

  caf::behavior make_behavior() override;

  void on_exit() override {
    rt_->unbind(path_, caf::actor_cast<caf::actor>(this));
    stop_runs(); // also when killed
    if (sagas_ && sagas_->cfg && sagas_->cfg->owner->load() != 0)
      caf::anon_send(rt_->writer(), release_atom::value, path_);
    sagas_.reset();
    run_inputs_.clear();
    // Children hold this supervisor's handle: drop theirs, so that a killed
    // supervisor and its cells do not keep each other alive.
    by_id_.clear(); // views the ids in children_
    for (auto& kvp : children_)
      set_st(kvp.second, status::stopped);
    children_.clear();
    if (escalated_)
      rt_->meters().escalating.fetch_sub(1, std::memory_order_relaxed);
    escalated_ = false;
    parent_ = nullptr;
  }

private:
  enum class status : uint8_t { running, restarting, stopped, degraded };

  // 96 bytes, so that a map node fits a 144-byte malloc chunk: a node may
  // supervise a million dynamic children.
  struct child {
    uint64_t key = 0;
    std::string id; // its path is child_path(id)
    /// Shared with the template for simple_one_for_one children that add no
    /// params, so a dynamic child costs no copy of the spec.
    std::shared_ptr<const child_spec> spec;
    caf::actor handle;
    uint64_t gen = 0;
    time_point last_failure{};
    uint32_t restarts = 0;
    uint32_t backoff_n = 0;
    uint32_t token = 0; // invalidates scheduled restarts
    status st = status::stopped;
  };
  static_assert(sizeof(child) <= 96, "a child must fit a 144-byte node");

  using cont = std::function<void(caf::error)>;

  // -- helpers ----------------------------------------------------------------

  bool simple() const {
    return spec_.flags.strategy == strategy::simple_one_for_one;
  }

  std::string child_path(const std::string& id) const {
    return path_.empty() ? id : path_ + "/" + id;
  }

  child* find_key(uint64_t key) {
    auto i = children_.find(key);
    return i != children_.end() ? &i->second : nullptr;
  }

  child* find_id(const std::string& id) {
    auto i = by_id_.find(id);
    return i != by_id_.end() ? find_key(i->second) : nullptr;
  }

  /// The child `id` if restart_child/delete_child may act on it, else OTP's
  /// error: simple_one_for_one, not_found, running or restarting.
  caf::expected<child*> stopped_child(const std::string& id) {
    if (simple())
      return make_error(errc::simple_one_for_one, path_);
    auto* c = find_id(id);
    if (c == nullptr)
      return make_error(errc::not_found, child_path(id));
    if (c->st == status::running || c->st == status::degraded)
      return make_error(errc::running, child_path(c->id));
    if (c->st == status::restarting)
      return make_error(errc::restarting, child_path(c->id));
    return c;
  }

  child_info info(const child& c) const {
    child_info ci;
    ci.id = c.id;
    ci.path = child_path(c.id);
    ci.kind = c.spec->kind;
    switch (c.st) {
      case status::running: ci.status = "running"; break;
      case status::restarting: ci.status = "restarting"; break;
      case status::stopped: ci.status = "stopped"; break;
      case status::degraded: ci.status = "degraded"; break;
    }
    ci.restarts = c.restarts;
    ci.handle = c.handle;
    return ci;
  }

  child& add_child(std::string id, std::shared_ptr<const child_spec> spec) {
    auto key = next_key_++;
    auto& c = children_[key];
    c.key = key;
    c.id = std::move(id);
    by_id_[c.id] = key; // views the id in the map node, which never moves
    c.spec = std::move(spec);
    return c;
  }

  child& add_child(child_spec spec) {
    auto id = spec.id;
    return add_child(std::move(id),
                     std::make_shared<const child_spec>(std::move(spec)));
  }

  void remove_child(uint64_t key) {
    forget_left_down(key);
    auto i = children_.find(key);
    if (i == children_.end())
      return;
    by_id_.erase(i->second.id);
    set_st(i->second, status::stopped);
    children_.erase(i);
  }

  /// Sets a child's status, keeping the count of degraded children
  /// (meter_) true.
  void set_st(child& c, status s) {
    if (c.st == status::degraded && s != status::degraded)
      meter_.degraded.fetch_sub(1, std::memory_order_relaxed);
    else if (c.st != status::degraded && s == status::degraded)
      meter_.degraded.fetch_add(1, std::memory_order_relaxed);
    c.st = s;
  }

  /// Gives up on a child that did not stop in time. A supervisor is killed.
  /// A worker's cell is told to abandon its path and is unbound now, so
  /// that senders reach the next cell at once: CAF cannot preempt a stuck
  /// handler, so the old cell acts only once that returns; then it forwards
  /// what queued at it, and its writes are refused, since the next cell
  /// fenced the path at a newer epoch (see vigil::owner_ref).
  void give_up(child& c) {
    if (!c.handle)
      return;
    if (c.spec->kind == child_kind::worker) {
      send<high>(c.handle, abandon_atom::value);
      rt_->unbind(child_path(c.id), c.handle);
    } else {
      demonitor(c.handle);
      send_exit(c.handle, caf::exit_reason::kill);
    }
    c.handle = nullptr;
  }

  /// When a stop of this shutdown spec gives up (the actor clock's time
  /// since its epoch), or zero for never.
  caf::timespan give_up_at(const shutdown_spec& sd) {
    caf::timespan after{0};
    if (sd.how == shutdown_spec::kind::timeout)
      after = caf::timespan{sd.timeout};
    else if (sd.how == shutdown_spec::kind::brutal_kill)
      after = caf::timespan{brutal_kill_grace};
    else
      return caf::timespan{0};
    return clock().now().time_since_epoch() + after;
  }

  /// Ends a worker's cell after the envelopes queued at it, and unbinds
  /// its path now: later sends find no agent there (a dead letter at the
  /// sender) instead of a cell that is about to end.
  void retire(child& c) {
    if (c.handle && c.spec->kind == child_kind::worker) {
      send(c.handle, retire_atom::value); // behind queued envelopes
      rt_->unbind(child_path(c.id), c.handle);
    }
    c.handle = nullptr;
  }

  /// Messages that arrive during an `await` are skipped into the cache of
  /// their mailbox queue, and CAF 0.17 flushes a queue's cache only when that
  /// queue consumes a message. The awaited responses are high priority, so
  /// normal messages skipped meanwhile (child exits, retries, API calls)
  /// would wait for the next unrelated normal message. A no-op normal
  /// message to ourselves flushes them.
  /// True if the message being handled comes from `c`'s current cell, not
  /// from one that was killed and replaced.
  bool from_handle(const child& c) {
    return c.handle &&
           current_sender() == caf::actor_cast<caf::strong_actor_ptr>(c.handle);
  }

  void nudge() {
    send(this, nudge_atom::value);
  }

  /// Runs `f` for an awaited response, then nudges only if no new await
  /// began: one nudge per chain, not one per step, since nudges sent while
  /// awaiting pile up in the skip cache and every later message rescans it
  /// (a 100,000-child start went quadratic that way).
  template <class F>
  void after_await(F&& f) {
    --awaiting_;
    f();
    if (awaiting_ == 0)
      nudge();
  }

  // -- starting ---------------------------------------------------------------

  /// Spawns and binds the cell of worker `c` if it has none.
  caf::error spawn_worker_cell(child& c);

  /// Spawns the cell of a durable worker ahead of its start (see start_seq).
  void prespawn(uint64_t key);

  /// How many durable workers ahead start_seq spawns cells.
  static constexpr size_t prespawn_window = 64;

  /// Starts (or restarts) child `key`, then calls `k` with the outcome.
  void start_one(uint64_t key, bool is_restart, caf::error reason, cont k);

  /// Starts `keys` in order; stops at the first failure, which `k` receives
  /// together with the key that failed.
  /// Keys shared by the steps of a sequence: each step's continuation is
  /// copied, and copying the keys themselves made big trees quadratic.
  using key_list = std::shared_ptr<const std::vector<uint64_t>>;

  void start_seq(std::vector<uint64_t> keys, size_t i, bool is_restart,
                 caf::error reason,
                 std::function<void(caf::error, uint64_t)> k);

  void start_seq(key_list keys, size_t i, bool is_restart, caf::error reason,
                 std::function<void(caf::error, uint64_t)> k);

  // -- stopping ---------------------------------------------------------------

  /// Stops child `key` as its shutdown spec says. With `keep_buffer`, a
  /// worker's cell keeps buffering for the restart that follows.
  void stop_one(uint64_t key, bool keep_buffer, std::function<void()> k);

  /// Stops `keys` one after the other, in the given order.
  void stop_seq(std::vector<uint64_t> keys, size_t i, bool keep_buffer,
                std::function<void()> k);

  void stop_seq(key_list keys, size_t i, bool keep_buffer,
                std::function<void()> k);

  /// Stops every child: in reverse start order, or all at once for
  /// simple_one_for_one (as OTP does, so 10,000 children stop in linear
  /// time). Retires worker cells afterwards.
  void stop_all(std::function<void()> k);

  /// Stops many worker cells at once with plain messages and acks, and one
  /// timer for the batch, so stopping n children costs O(n). (n pending
  /// request handlers would cost O(n^2): CAF 0.17 keeps them in a flat map.)
  void stop_workers_at_once(const std::vector<uint64_t>& keys,
                            std::function<void()> done);

  void on_ack(uint64_t key);

  void on_stop_timeout(uint64_t batch);

  /// Shuts this supervisor down: children first, then itself.
  /// Every stop request gets its answer, also one that arrives while the
  /// supervisor is already stopping (e.g. escalating).
  void shutdown(caf::error reason, caf::response_promise rp = {});

  // -- requests: one named handler each (see make_behavior) ----------------

  /// A message outside supervisor_api: logged, and refused with its name.
  caf::error refuse(const caf::message& msg);

  /// Starts the children in order (once); a failed start fails this
  /// supervisor, as in OTP.
  caf::result<uint64_t> handle_start();
  /// Stops the children in reverse order, then this supervisor.
  caf::result<void> handle_stop();
  /// A child cell reports that its instance ended.
  void handle_exit_report(uint64_t key, uint64_t gen, caf::error& reason);
  void handle_recovered(uint64_t key, uint64_t gen);
  void handle_child_down(caf::actor_addr& src, caf::error& reason);
  void handle_try_again(uint64_t key, uint64_t token, caf::error& reason);
  /// An envelope for the supervisor's path: runs a saga, or not_found.
  caf::result<envelope> handle_envelope(envelope& e);
  caf::result<child_info> handle_start_child(child_spec& cs);
  caf::result<child_info> handle_start_dynamic_child(params& extra,
                                                     std::string& name);
  caf::result<void> handle_terminate_child(std::string& id);
  caf::result<child_info> handle_restart_child(std::string& id);
  caf::result<void> handle_delete_child(std::string& id);
  std::vector<child_info> handle_which_children();
  child_counts handle_count_children();

  // -- failures and restarts --------------------------------------------------

  /// Adds a restart to the sliding window; false if that exceeds intensity.
  bool add_restart() {
    auto now = clock().now();
    restarts_.push_back(now);
    // Compared in the period's unit: converting a long period to
    // nanoseconds would overflow (and switch the limit off).
    while (!restarts_.empty()
           && std::chrono::duration_cast<milliseconds>(now - restarts_.front())
                >= spec_.flags.period)
      restarts_.pop_front();
    return static_cast<int>(restarts_.size()) <= spec_.flags.intensity;
  }

  caf::timespan backoff_delay(child& c);

  caf::error chain(const child& c, const caf::error& reason, errc code) {
    return make_error(code, (path_.empty() ? "<root>" : path_) +
                                " escalated <- " + child_path(c.id) + " " +
                                describe(reason));
  }

  void escalate(caf::error reason) {
    meter_.escalations.fetch_add(1, std::memory_order_relaxed);
    if (!escalated_) {
      escalated_ = true;
      rt_->meters().escalating.fetch_add(1, std::memory_order_relaxed);
    }
    auto why = describe(reason);
    emit(report{"escalation", path_, "shutdown", why, path_,
                meter_.escalations.load(std::memory_order_relaxed)});
    shutdown(std::move(reason));
  }

  void check_auto_shutdown(bool significant);

  /// A child's instance ended with `reason`, on its own.
  void on_child_exit(uint64_t key, caf::error reason);

  void schedule_restart(child& c, caf::error reason);

  /// Applies the strategy to restart `key`, within the restart budget.
  void restart(uint64_t key, caf::error reason);

  /// Starts child `key` for an API call (start_child, restart_child) and
  /// answers with its info, or with the start error. A failed start_child
  /// keeps no spec, as in OTP.
  caf::result<child_info> start_api(uint64_t key, bool forget_on_failure);

  void schedule_retry(child& c, caf::error reason);

  /// Starts `keys` (members of a group restart, in order) as restarts. If
  /// one fails, the members after it are left down (stopped, as OTP's
  /// undefined) under its key in `left_down_`, and its retry is scheduled.
  void restart_members(std::vector<uint64_t> keys, caf::error reason);

  /// `key` is no longer left down, nor does it leave others down: an API
  /// call took it over, or it is gone.
  void forget_left_down(uint64_t key) {
    left_down_.erase(key);
    for (auto& kvp : left_down_) {
      auto& v = kvp.second;
      v.erase(std::remove(v.begin(), v.end(), key), v.end());
    }
  }

  /// The key prefix of this saga's runs in db::sagas (see saga_run_key).
  std::string runs_prefix() const {
    return path_ + std::string(1, '\0');
  }

  /// A saga's steps: its children's paths, in order.
  std::vector<std::string> step_paths() const {
    std::vector<std::string> out;
    for (auto& kvp : children_)
      out.push_back(child_path(kvp.second.id));
    return out;
  }

  /// The flag its runs read before every send (see spawn_saga_run).
  const std::shared_ptr<std::atomic<bool>>& runs_ended() {
    if (!runs_ended_)
      runs_ended_ = std::make_shared<std::atomic<bool>>(false);
    return runs_ended_;
  }

  /// Tells every saga run that this supervisor ends (see saga.hpp).
  void stop_runs() {
    if (runs_ended_)
      runs_ended_->store(true, std::memory_order_release);
    for (auto& kvp : run_inputs_)
      caf::anon_send(kvp.second, saga_stop_atom::value);
    if (sagas_) { // inputs that came before the runs could resume
      for (auto& [e, rp] : sagas_->waiting)
        rp.deliver(make_error(errc::shutting_down,
                              path_ + " stopped before it ran this input; "
                                      "send it again once it runs"));
      sagas_->waiting.clear();
    }
  }

  // -- durable sagas (supervisor_sagas.cpp) -----------------------------------

  bool durable_saga() const {
    return spec_.saga.enabled && spec_.saga.durable;
  }

  /// Takes ownership of the saga's records at the writer (a fence of its
  /// path); once granted and the steps started, resumes every unfinished
  /// run and delivers the outcomes still in the outbox.
  void start_sagas();
  /// The steps started (handle_start); runs may resume once fenced too.
  void sagas_steps_started();
  void on_saga_grant(fence_grant& g);
  /// Resumes unfinished runs from the disk (all, or only `only`).
  void resume_runs(const std::set<std::pair<uint64_t, uint64_t>>* only);
  /// An input for a durable saga.
  caf::result<envelope> durable_input(envelope& e);
  /// Starts the run of `e`, or attaches `rp` to the one in progress, or
  /// answers with the stored outcome.
  void route_input(envelope e, caf::response_promise rp);
  caf::actor spawn_run();
  /// A durable run ended before it finished (not a stop): resumed.
  void durable_run_down(std::pair<uint64_t, uint64_t> input,
                        const caf::error& reason);
  /// A run's commit failed under `owner`: fence the path again (once for
  /// all runs that failed under the same owner), then tell it to retry.
  void saga_commit_failed(caf::actor run, uint64_t owner);
  void refence_sagas();
  void saga_outcome_due(const envelope& out);
  void dispatch_saga_outbox();
  void saga_compact();
  void write_saga(write_item item);

  struct saga_home {
    bool granted = false, steps_started = false, ready = false;
    bool refencing = false;
    std::string error; // why durable runs cannot run here
    std::shared_ptr<saga_journal> cfg; // the owner bits, shared with runs
    std::vector<std::pair<envelope, caf::response_promise>> waiting;
    std::map<uint64_t, std::pair<std::string, envelope>> outbox;
    std::deque<uint64_t> due;
    size_t in_flight = 0;
    uint32_t outbox_failures = 0;
    std::set<std::pair<uint64_t, uint64_t>> to_resume;
    /// Runs whose commit failed, waiting to send it again once the path
    /// is fenced anew.
    std::vector<caf::actor> commit_waiters;
    std::string compact_from;
  };
  std::unique_ptr<saga_home> sagas_;

  /// Degrades child `c`: a stand-in answers for it and its cell probes.
  /// The members that its failed group restart left down start now.
  void degrade(child& c);

  // -- state ------------------------------------------------------------------

  std::shared_ptr<runtime> rt_;
  supervisor_spec spec_;
  std::string path_;
  detail::actor_clock_view clock_view_;
  /// The restart delays of every child; each child keeps its own track.
  resilience::backoff backoff_;
  std::shared_ptr<const child_spec> template_; // simple_one_for_one
  bool template_checked_ = false; // its params, once (start_child)
  std::map<uint64_t, child> children_;
  std::unordered_map<std::string_view, uint64_t> by_id_;
  std::deque<time_point> restarts_;
  /// By the member whose start failed in a group restart (one_for_all,
  /// rest_for_one): the members after it that were left down. Its retry
  /// restarts the group; its degrade starts them. Empty almost always.
  std::map<uint64_t, std::vector<uint64_t>> left_down_;
  uint64_t next_key_ = 1;
  /// Awaited responses outstanding (see after_await).
  size_t awaiting_ = 0;
  bool started_ = false;
  bool stopping_ = false;
  /// A saga supervisor's runs in progress, by actor, with the (origin, id)
  /// of their input: a second run of the same input is refused meanwhile,
  /// and every run hears when this supervisor ends (saga_stop_atom).
  std::map<caf::actor_addr, std::pair<uint64_t, uint64_t>> runs_;
  std::map<std::pair<uint64_t, uint64_t>, caf::actor> run_inputs_;
  /// Set when this supervisor begins to end, before any step stops: its
  /// runs read it before every send (see spawn_saga_run).
  std::shared_ptr<std::atomic<bool>> runs_ended_;
  /// The outcomes of the last `finished_cap` runs by input (origin, id):
  /// a resent input gets its outcome instead of a second run. In memory,
  /// for the life of this supervisor instance.
  static constexpr size_t finished_cap = 4096;
  std::map<std::pair<uint64_t, uint64_t>, envelope> finished_;
  std::deque<std::pair<uint64_t, uint64_t>> finished_order_;
  std::vector<caf::response_promise> stop_requests_;
  uint64_t ack_batch_ = 0;
  /// Children whose stop acknowledgement the running batch waits for.
  std::unordered_set<uint64_t> ack_keys_;
  std::function<void()> acks_done_;
  caf::actor parent_;
  /// This supervisor's counts, by its path (kept by the node's board).
  sup_meter& meter_;
  /// It escalated and has not exited yet (meter_board::escalating).
  bool escalated_ = false;
};

} // namespace detail

} // namespace vigil
