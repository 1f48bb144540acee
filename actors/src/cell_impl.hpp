#pragma once

// The cell actor (see vigil/actors/cell.hpp): the class, shared by
// cell.cpp (messages, instances, failures) and cell_durable.cpp (snapshot
// and journal durability, the outbox).

#include <deque>
#include <exception>
#include <list>
#include <map>
#include <optional>
#include <typeinfo>
#include <unordered_map>

#include <caf/all.hpp>

#include "cell_util.hpp"
#include "durable.hpp"
#include "vigil/actors/approvals.hpp"
#include "vigil/actors/cell.hpp"
#include "vigil/actors/detail/actor_clock.hpp"
#include "cell_tools.hpp"
#include "vigil/actors/writer.hpp"
#include "vigil/resilience/backoff.hpp"

namespace vigil::detail {

using caf::response_promise;

/// Hosts the instances of one child across restarts. The cell is the child's
/// stable handle: senders keep addressing it while the supervisor replaces
/// the agent instance inside, and envelopes that arrive between instances wait
/// in `buffer_`, in order, up to `cfg_.buffer_cap`.
class cell : public caf::event_based_actor, public context {
public:
  struct deferred_slot; // (cell_state.hpp)
  cell(caf::actor_config& ac, std::shared_ptr<runtime> rt, cell_config cfg,
       caf::actor parent, uint64_t key)
    : caf::event_based_actor(ac),
      rt_(std::move(rt)),
      cfg_{std::move(cfg.path), cfg.type, std::move(cfg.params),
           cfg.buffer_cap, cfg.max_deliveries,
           std::move(cfg.tool_overrides), std::move(cfg.approval)},
      parent_(std::move(parent)),
      key_(key),
      queue_(cfg.queue_cap, cfg.overflow) {
    if (cfg.durability.mode != durability_mode::none)
      init_durable(cfg.durability);
    if (rt_->meters().on())
      rt_->meters().enroll(&cfg_.type->name, &meter_, &queue_);
  }

  ~cell() override {
    if (rt_->meters().on())
      rt_->meters().retire(&meter_);
  }

  const char* name() const override {
    return "vigil.cell";
  }

  caf::behavior make_behavior() override;

  void on_exit() override;

  /// Envelopes queued for this cell (see detail::queue_gauge).
  queue_gauge& queue() noexcept {
    return queue_;
  }

  // -- context ----------------------------------------------------------------

  const std::string& path() const noexcept override {
    return cfg_.path;
  }

  time_point now() const noexcept override {
    return const_cast<cell*>(this)->clock().now();
  }

  const envelope* current() const noexcept override {
    return current_;
  }

  const vigil::params& parameters() const noexcept override {
    static const vigil::params none;
    return cfg_.params ? *cfg_.params : none;
  }

  deferred_reply defer() override;

  bool take_retry() override;

  const tool_answer& answered() const noexcept override {
    return answer_;
  }

  void stop(caf::error reason) override {
    stop_requested_ = true;
    stop_reason_ = std::move(reason);
  }

protected:
  envelope make_envelope(const google::protobuf::Message& msg,
                         const call_options& opts) override;

  handle resolve(std::string_view path) const override {
    return handle{std::string{path}, rt_->binding_of(path)};
  }

  /// The live cell behind `to` and its queue count: its cached cell, or
  /// the one bound at its path now if that cell was replaced, unbound or
  /// has ended.
  bound target(const handle& to) const {
    if (to.current()) {
      if (auto cell = to.cell();
          cell
          && !caf::actor_cast<caf::abstract_actor*>(cell)->getf(
            caf::abstract_actor::is_terminated_flag))
        return bound{std::move(cell), to.queue()};
    }
    return rt_->lookup_bound(to.path());
  }

  bool send_envelope(const handle& to, envelope env,
                     bool shed = true) override;

  void shared_raw(records::SharedOp op,
                  std::function<void(records::SharedResult&&)> on_result,
                  std::function<void(const caf::error&)> on_error) override;

  void call_tool_raw(
    std::string_view tool, std::unique_ptr<google::protobuf::Message> req,
    symbol reply_type, const tool_options& opts,
    std::function<void(std::unique_ptr<google::protobuf::Message>)> on_result,
    std::function<void(const caf::error&)> on_error) override;

  void send_envelope_after(const handle& to, envelope env,
                           duration delay) override;

  caf::error effect_raw(std::string_view tool,
                        std::unique_ptr<google::protobuf::Message> req) override;

  void
  request_envelope(const handle& to, envelope env, duration timeout,
                   std::function<void(const envelope&)> on_reply,
                   std::function<void(const caf::error&)> on_error) override;

private:
  /// `abandoned`: the supervisor gave up on this cell (or a newer owner
  /// fenced its path); it forwards what reaches it to the path's current
  /// cell and ends once its writes are settled.
  enum class mode : uint8_t {
    idle_buffer,
    idle_reject,
    running,
    degraded,
    half_open,
    abandoned
  };

  /// What `run` did with an envelope: the handler replied; the envelope
  /// was rejected before (or instead of) running the handler (bad payload,
  /// unknown type, too late); the handler refused it with an error (an
  /// outcome, committed like a reply); the handler failed (a throw).
  enum class outcome { replied, rejected, refused, failed };

  /// Runs a request callback of the current instance. A throw there is a
  /// failure of the child, like a throw in a handler; a stop it asks for
  /// ends the instance as one asked for in a handler.
  template <class F>
  void invoke_callback(F f) {
    try {
      f();
    } catch (const tool_failure& f) {
      // A tool's failure passed on from a callback: nothing restarts (a
      // deferred reply the callback held is answered when it is dropped).
      // A held envelope's callback refuses that envelope, as its handler
      // would have by throwing it.
      if (held_ && cb_origin_ != nullptr && cb_origin_->chain == held_->chain)
        refuse_held(f.error());
    } catch (...) {
      auto err = make_error(errc::handler_failed,
                            cfg_.path + " (request callback): "
                              + what(std::current_exception()));
      // A callback of a held envelope's call failed: that envelope's
      // delivery failed (retried or a dead letter, as a handler's throw).
      if (held_ && cb_origin_ != nullptr && cb_origin_->chain == held_->chain)
        unhold(true, std::move(err));
      else
        end_instance(std::move(err), true);
      return;
    }
    if (stop_requested_ && instance_) {
      // Stopping ends the instance's calls: a held envelope is committed as
      // handled, with what its callbacks did so far.
      if (held_)
        release_held();
      stop_instance(true);
      end_instance(std::exchange(stop_reason_, caf::error{}), false);
    }
  }

  /// The instance ended outside a handler's envelope (it failed, `failed`,
  /// or asked to stop with `reason`), and is dropped. A probe's instance
  /// in half-open that failed (or stopped with an error) takes the child
  /// back to degraded, with the next probe on the probe schedule: its
  /// supervisor deems the child degraded and waits for the cell. One that
  /// stopped normally ran without failing: the supervisor hears of its
  /// recovery, then of its exit, and decides as for any child. Any other
  /// instance's end goes to the supervisor.
  void end_instance(caf::error reason, bool failed);

  // -- tool calls (cell_tools.cpp) ---------------------------------------------

  /// The request on whose behalf the running handler or callback calls.
  detail::call_origin origin_now();
  /// Runs `f` as a callback of a call made on behalf of `o`.
  template <class F>
  void invoke_as(const detail::call_origin& o, F f) {
    auto* prev = std::exchange(cb_origin_, &o);
    invoke_callback(std::move(f));
    cb_origin_ = prev;
  }
  /// The stack below the idempotency layer (call_tool_raw): admits the
  /// call and starts its first attempt; `owned`: the cell's own call.
  void start_call(
    detail::tool_runtime& tool, std::unique_ptr<google::protobuf::Message> req,
    const tool_options& opts,
    std::function<void(std::unique_ptr<google::protobuf::Message>)>&& on_result,
    std::function<void(const caf::error&)>&& on_error,
    const detail::call_origin& o, std::shared_ptr<detail::call_key> key,
    bool record, bool owned, const detail::fallback_step* fb = nullptr);
  /// This agent's override of `tool`'s policy, or null.
  const tool_override* override_of(const detail::tool_runtime& tool) const;
  /// A call's total timeout (`opts`', else the override's or the tool's).
  duration call_timeout(const detail::tool_runtime& tool,
                        const tool_options& opts) const;
  void start_attempt(uint64_t id, detail::tool_call_state& st, bool sync,
                     time_point now);
  /// The cell's tool calls, made on the first (cell_tools.cpp).
  detail::cell_tools& open_tools();
  /// Takes the attempts in the inbox (see tool_done_atom).
  void on_tools_done();
  void on_tool_done(detail::tool_attempt& a);
  /// A call's entry in the heap came up: whatever of its timers is due.
  void on_call_due(uint64_t id, time_point now);
  /// The cell's one timer for its tool calls fired (see tool_timer_atom).
  void on_tool_tick(uint64_t seq);
  /// Makes sure the cell's tool timer fires at `due` at the latest.
  void arm_tool_timer(time_point due);
  /// Makes sure the heap holds an entry for the call's earliest due time
  /// (and arms the timer for it if need be).
  void schedule(uint64_t id, detail::tool_call_state& st);
  /// True if the call moved on since `d` was added.
  bool stale(const detail::call_due& d);
  /// The attempt running failed with `e`: retry it, or answer the caller.
  void retry_or_fail(uint64_t id, detail::tool_call_state& st);
  /// Answers the caller (with `reply`, or with `err` if it has none) and
  /// forgets the call. `sync`: still inside `call_tool`.
  void finish_call(uint64_t id, caf::error err,
                   std::unique_ptr<google::protobuf::Message> reply,
                   bool sync);
  /// Gives up the attempt running: at its timeout or the call's deadline
  /// (`timed_out`: a failure for the breaker), or because its caller went
  /// (nothing for the breaker). True if it was still running.
  bool abandon_attempt(detail::tool_call_state& st, bool timed_out);
  /// The error the caller gets when no attempt is left.
  caf::error final_error(const detail::tool_call_state& st,
                         const std::string& why) const;
  void end_tool_calls();
  /// Where a call made now belongs: the callback's origin, else the
  /// handler's (made at its first call), else null (no envelope).
  const detail::call_origin* tool_parent();
  /// Answers a keyed call from its record if it has one (true: answered,
  /// or refused: `in_use`, `idempotency_mismatch`). Claims its key.
  bool answer_from_record(detail::tool_runtime& tool,
                          detail::tool_call_state& st,
                          const google::protobuf::Message& req,
                          bool* busy = nullptr);
  /// call_tool below its checks: the idempotency layer, then start_call.
  /// `since`: when the call was made (a call waiting for its key; max: now).
  void keyed_call(
    detail::tool_runtime& tool, std::unique_ptr<google::protobuf::Message> req,
    const tool_options& opts,
    std::function<void(std::unique_ptr<google::protobuf::Message>)>&& on_result,
    std::function<void(const caf::error&)>&& on_error,
    const detail::call_origin& o, time_point since);
  /// The calls waiting for their keys try again (tool_park_atom).
  void on_parked();
  /// A call of `chain` was answered (its callback ran, or never will).
  void chain_done(const std::shared_ptr<detail::call_chain>& chain);
  /// The call ended with an outcome that an execution produced: recorded
  /// (a journal agent's), its callbacks run once the record is committed.
  /// False if it is not recorded (the caller answers as usual).
  bool record_answer(detail::tool_call_state& st, caf::error& err,
                     std::unique_ptr<google::protobuf::Message>& reply);
  /// Runs a recorded answer's callbacks (or drops them if the instance
  /// that called is gone) and ends its call in the chain.
  void deliver_recorded(detail::recorded_answer& a);
  /// The commit of write `tok` was acknowledged; true if it was a record's.
  bool on_record_committed(uint64_t tok, const caf::error& err);
  /// Delivers the answers found recorded (tool_replay_atom).
  void on_tool_replay();
  /// The held envelope's calls are done: its consume and answer go out.
  void release_held();
  /// A callback of the held envelope's calls refused it (threw
  /// tool_failure): once its calls are done it is settled as refused.
  void refuse_held(const caf::error& err);
  /// The instance that ran the held envelope ends: the envelope, not
  /// consumed, waits for the next instance at the head of the buffer (or,
  /// `failed`, is settled as a failed delivery with `err`).
  void unhold(bool failed = false, caf::error err = {});

  // -- fallbacks, dry runs, approvals (cell_guards.cpp) -------------------------

  /// The call failed with `err`: true if its next fallback took over;
  /// else, if its tool's default answers, `reply` is that and `err` none.
  bool fall_back(detail::tool_call_state& st, caf::error& err,
                 std::unique_ptr<google::protobuf::Message>& reply, bool sync);
  /// Sets who answered, for the callback about to run (answered()).
  void answering(const detail::tool_call_state& st) noexcept;
  void answering(const detail::recorded_answer& a) noexcept;
  /// Whether calls of `tool` wait for a dry run or an approval first.
  static bool guarded(const detail::tool_runtime& tool) noexcept;
  /// The call's next stage: its dry run, its approval, then start_call.
  void guard_call(std::shared_ptr<detail::call_guard> g);
  /// The call ends before it ran (a failed dry run, a rejection).
  void guard_fail(detail::call_guard& g, const caf::error& err);
  /// Goes on with a call whose approval is `s`: it runs, or fails.
  void approval_decided(std::shared_ptr<detail::call_guard> g,
                        approval_state s, const std::string& by,
                        const std::string& reason);
  /// approval_decided as a callback of the call (dropped if the instance
  /// that called is gone).
  void resume_guard(std::shared_ptr<detail::call_guard> g, approval_state s,
                    const std::string& by, const std::string& reason);
  /// A call's approval was decided, or expired (approval_atom).
  void on_approval(const approval_outcome& x);
  /// A call's approval timeout passed (approval_due_atom).
  void on_approval_due(const std::string& key);
  /// Drops the calls waiting for approvals: the old instances' (`all`:
  /// every one, the cell ends).
  void drop_guards(bool all);

  /// A requester hears the stand-in's answer (counted).
  void stand_in(response_promise& rp);

  /// Why an async envelope to a degraded child is a dead letter.
  std::string degraded_reason() const;

  /// Why `e` is refused before it ran: its deadline passed.
  caf::error expired_error(const envelope& e) const;

  /// `(expire_atom, origin, id)`: the envelope (origin, id) is waiting in
  /// the buffer past its deadline (the instance is between starts, or the
  /// buffer is long): it is refused now, as `run` would refuse it, instead
  /// of when an instance reaches it. Its requester (a saga whose step
  /// timed out) learns now that it did not run. Answers true if it was
  /// found so.
  bool expire(uint64_t origin, uint64_t id);

  struct pending {
    envelope env;
    response_promise rp;
    uint64_t seq = 0; ///< Journal seq (journal agents only).
    /// Snapshot agents: listed in a save that was sent, so the path's next
    /// owner may apply it from the disk; it is never forwarded or rejected.
    bool saved = false;
  };

  std::string mode_name() const;

  bool is_request() {
    auto* mbe = current_mailbox_element();
    return mbe != nullptr && mbe->mid.is_request();
  }

  caf::result<envelope> on_envelope(envelope& e);

  /// An envelope that cannot run now: queued behind the buffer (or for
  /// the next instance), answered by the stand-in, or refused.
  caf::result<envelope> not_now(envelope& e);

  /// The supervisor protocol and the cell's own timers (see cell.hpp),
  /// reached through the default handler.
  caf::result<caf::message> control(caf::message& msg);

  /// Runs the handler for `e`. On `replied`, `out` holds the reply (empty type
  /// for void handlers); on `rejected` or `failed`, `err` holds the reason.
  /// Reports the instance's end (vigil/actors/report.hpp): a crash, or a
  /// failed probe, with the envelope involved if any.
  void report_end(std::string_view kind, std::string_view context,
                  const caf::error& why, const envelope* e);

  /// With metrics on, also counts the outcome and times the handler.
  outcome run(envelope& e, envelope& out, caf::error& err);
  outcome run_handler(envelope& e, envelope& out, caf::error& err);

  /// The instance failed while handling `e`: decide the envelope's fate, drop
  /// the instance and tell the supervisor. `seq` is its journal seq (0 if
  /// not journaled); `saved`: the last snapshot save lists it.
  void after_failure(envelope e, response_promise rp, caf::error err,
                     uint64_t seq = 0, bool saved = false);

  /// The fate of an envelope whose handler failed: told to the requester,
  /// kept for the next instance, or a dead letter.
  void settle(envelope e, response_promise rp, const caf::error& err,
              uint64_t seq, bool saved = false);

  /// `e` is done with for good (failed, or rejected): it leaves the disk
  /// with its dead letter (if `dead`) in one commit (a journal consumes
  /// its entry `seq`; a snapshot agent saves without it if the last save
  /// listed it, `saved`), and its requester hears `err` after that commit.
  void bury(envelope& e, response_promise& rp, caf::error err, uint64_t seq,
            bool saved, bool dead);

  caf::error start_instance(bool is_restart, const caf::error& reason);

  void stop_instance(bool graceful);

  /// Delivers up to `drain_chunk` buffered envelopes to the new instance,
  /// oldest first, and schedules the next chunk, until the buffer is empty or
  /// the instance fails again. Chunks keep control messages (stop, start)
  /// from waiting behind a long buffer.
  void drain();

  void reject_buffer(const caf::error& err);

  /// Switches to degraded and schedules the next probe. Every envelope
  /// waiting in the buffer is accounted for: a journal agent keeps what it
  /// accepted and a snapshot agent what its last save lists (applied once
  /// the child runs again; a requester of one waits for that answer, since
  /// the envelope will be applied); an async envelope waiting for its next
  /// delivery keeps waiting (the next probe's instance gets it); any other
  /// requester hears the stand-in, and any other async envelope is a dead
  /// letter (`degraded`).
  void enter_degraded();

  /// Half-open probe: try a fresh instance; the next envelope decides.
  void probe();

  // -- leaving ----------------------------------------------------------------

  /// The supervisor gave up on this cell (a stuck instance it could not stop
  /// in time), its parent is gone, or a newer owner fenced its path: drop
  /// the instance without on_stop, unbind the path, hand every envelope
  /// that is not in the journal to the path's current cell, and end once
  /// the writes already sent are acknowledged. Envelopes still queued in the
  /// mailbox are forwarded as they come, until a marker sent to ourselves
  /// now arrives behind them.
  void abandon();

  /// Ends the cell (retire): at once, or once the writes already sent are
  /// acknowledged, so that their requesters learn the outcome.
  void leave();

  /// Quits if leaving, past the marker, and nothing waits for the writer.
  void maybe_quit();

  /// Sends `p` on to the cell now bound at this path, keeping its requester;
  /// without one, the requester is told `not_running` (an async envelope
  /// becomes a dead letter).
  void forward(pending p);

  // -- durability (see durability.hpp) ----------------------------------------

  // What waits for a commit, and the durable state (cell_state.hpp).
  struct held_reply;
  struct dropped_reply;
  struct commit_wait;
  struct start_request;
  struct durable;

  /// Outbox deliveries in flight per agent.
  static constexpr size_t outbox_window = 256;
  /// How long the outbox waits before it looks again for room at a full
  /// receiver.
  static constexpr auto room_pause = std::chrono::milliseconds{2};

  /// Marks accept tokens; other writes count up from 1.
  static constexpr uint64_t accept_bit = uint64_t{1} << 62;
  /// Shared state (cell_shared.cpp): tokens of operations that commit on
  /// their own, and reads; an operation waiting for its result, whose
  /// callbacks run only in instance `gen`; its writer's results
  /// (before the acknowledgement), an own write's acknowledgement, and a
  /// result's delivery.
  static constexpr uint64_t own_shared_bit = uint64_t{1} << 60;
  struct shared_call {
    std::function<void(records::SharedResult&&)> ok;
    std::function<void(const caf::error&)> err;
    uint64_t gen = 0;
  };
  void on_shared_done(uint64_t tok, std::vector<std::string>& results);
  void on_own_shared_acked(uint64_t tok, const caf::error& err);
  void deliver_shared(shared_call& c, std::string* result,
                      const caf::error& err);

  void init_durable(const durability_spec& spec);

  /// Asks the writer for the path at a new epoch: `prev` 0 for this cell's
  /// first fence, else its own epoch after a failed commit.
  void request_fence(uint64_t prev);

  void on_grant(fence_grant& g);

  void on_fence_error(const caf::error& err, uint64_t prev);

  /// Runs the starts that waited for the grant.
  void run_starts();

  /// Starts an instance for the supervisor; the generation, or why not.
  caf::expected<uint64_t> start(bool is_restart, const caf::error& reason);

  /// Takes the path's records at the first grant: the last state, then the
  /// unconsumed envelopes in their original order, ahead of any new one.
  void adopt(const recovered_agent& rec);

  /// Takes undelivered outbox entries read from the store, ready to send.
  void adopt_outbox(const std::vector<records::OutboxEntry>& entries);

  /// Takes the path's records after a failed commit: the disk is the
  /// truth. Requesters keep their promise where their envelope is still in
  /// the journal; a running instance fails, so that its supervisor restarts
  /// it on what is on disk.
  void reconcile(const recovered_agent& rec);

  /// Loads the last saved state into a new instance (throws on mismatch,
  /// which fails the start).
  void restore_state();

  void capture_state();

  /// Hands `item` to the writer; with `ack`, returns the token of the
  /// commit acknowledgement (a failed commit then fails the instance).
  /// Sends `item` to the writer; `shared`: it holds shared operations, whose
  /// results the writer sends back (on_shared_done).
  uint64_t write(write_item item, bool ack, bool shared = false);

  /// A dead letter of this cell's own path (marked as a journal agent's
  /// when it is one). `persist` as in runtime::add_dead_letter.
  void own_dead_letter(envelope e, std::string reason, bool persist = true);

  detail::consume_args consume_args(uint64_t seq);

  /// A journal agent's accept: the envelope is durable (and checked against
  /// the message ids already accepted) before it is handled.
  caf::result<envelope> accept(envelope& e);

  /// Sends the accept write of `p` (this cell owns its path).
  void send_accept(pending p);

  /// An accept was committed: `p` waits for its handler.
  void accepted(pending p);

  /// An accept failed: the sender is told, or it is a dead letter.
  void not_accepted(pending p, const caf::error& err);

  /// Answers `rp` with `out` (or `err`), after the commit that the handling
  /// of journal entry `seq` made, if there is one outstanding.
  void answer(response_promise& rp, envelope out, caf::error err,
              uint64_t seq);

  /// The writer's acknowledgement of one batch.
  void on_acks(const std::vector<uint64_t>& tokens, const caf::error& err);

  void on_committed(uint64_t tok, bool duplicate, const caf::error& err);

  /// A write was refused or failed: `fenced` abandons the path, anything
  /// else is a storage failure.
  void on_write_error(const caf::error& err);

  /// A commit of this agent failed, so memory may be ahead of the disk.
  /// The writer refuses this epoch's writes now; the cell fences again and
  /// reconciles with what is on disk at that fence.
  void storage_failure(const caf::error& err);

  /// True if no write of this cell waits for an acknowledgement that
  /// somebody is waiting for.
  bool settled() const;

  /// The node's writer is gone: nothing more will be acknowledged.
  void writer_lost();

  /// Runs after a handler succeeded (inside `run`).
  /// Commits a handled envelope. `refused`: the handler refused `e` with
  /// that reason (a journal agent's dead letter goes into the same commit).
  /// `out`/`err`: the answer, stored with the message id when `e` asks
  /// for it (envelope::keep_reply_flag).
  void after_handled(const envelope& e, const std::string* refused,
                     const envelope& out, const caf::error& err);

  /// Consumes journal entry `seq` without a state change; a non-empty
  /// `reason` makes the envelope a dead letter in the same transaction.
  /// `err`: its answer, stored when `e` asks for it.
  void consume_failed(uint64_t seq, const envelope& e,
                      const std::string& reason,
                      const caf::error* err = nullptr);

  /// A resend of an envelope this journal agent accepted earlier, which
  /// asks for its answer (keep_reply_flag): answered with the stored
  /// answer, or given the entry still waiting in the buffer so that it is
  /// answered when handled. False if neither is there (then `duplicate`).
  bool answer_again(pending& p);

  /// Snapshot mode: state plus the envelopes waiting in the buffer. With
  /// `dropped` (an envelope the last save listed, out of the buffer now,
  /// failed for good) and `reason`, its dead letter goes into the same
  /// commit. Returns the save's commit token.
  uint64_t save_snapshot(const envelope* dropped = nullptr,
                         const std::string* reason = nullptr);

  /// Delivers committed outbox entries, at most `outbox_window` at a time,
  /// each as a request: any answer (also an error from the receiver) ends
  /// its delivery; an unreachable receiver is retried.
  void dispatch_outbox();
  /// Dispatches the effect in outbox entry `oseq` (0: one not in the
  /// outbox, dispatched once) through its tool's stack (cell_effects.cpp).
  void dispatch_effect(uint64_t oseq,
                       std::shared_ptr<const records::Effect> fx);
  /// An effect's dispatch ended: delivered, sent again, or a dead letter.
  /// `attempted`: an attempt of it ran (a refusal then counts).
  void effect_done(uint64_t oseq, std::shared_ptr<const records::Effect> fx,
                   const caf::error& err, bool attempted = false);

  /// The codes with which the runtime gives its own verdict on an envelope
  /// (expired, duplicate, handler_failed, ...): a handler's refusal with
  /// one of them is reported as `refused`, so that no requester (a saga)
  /// mistakes the refusal for that verdict.
  static bool verdict(const caf::error& err);

  void retry_outbox(uint64_t oseq);

  void outbox_not_delivered(uint64_t oseq);

  void outbox_delivered(uint64_t oseq);

  /// The cell_config without its durability (which lives in `dur_`).
  struct settings {
    std::string path;
    const agent_type* type;
    std::shared_ptr<const vigil::params> params;
    uint32_t buffer_cap;
    uint32_t max_deliveries;
    std::shared_ptr<const std::map<std::string, tool_override>> tool_overrides;
    std::shared_ptr<const envelope_approval> approval;
  };

  std::shared_ptr<runtime> rt_;
  settings cfg_;
  caf::actor parent_;
  uint64_t key_;
  queue_gauge queue_;
  /// This cell's counts (with metrics on; see detail::meter_board).
  cell_meter meter_;
  uint64_t gen_ = 0;
  /// Shared operations that commit on their own, and reads, by token.
  std::unordered_map<uint64_t, shared_call> shared_waits_;
  uint64_t next_shared_ = 1;
  mode mode_ = mode::idle_buffer;
  bool deferred_ = false;
  std::shared_ptr<deferred_slot> defer_slot_;
  bool stop_requested_ = false;
  /// Ending (see leave, abandon); `marker_` once every envelope that was
  /// queued when it began has been handled.
  bool leaving_ = false;
  bool marker_ = false;
  /// Set by end_tool_calls (the cell's exit): a call made after it (from
  /// an agent's destructor) is refused, as its inbox would never close.
  bool tools_ended_ = false;
  std::unique_ptr<agent_base> instance_;
  // A list, not a deque: an empty std::deque allocates ~600 bytes, and
  // every cell has a buffer that is empty almost always.
  std::list<pending> buffer_;
  const envelope* current_ = nullptr;
  response_promise* current_rp_ = nullptr;
  caf::error stop_reason_;
  struct degraded_state; // (cell_state.hpp)
  // Only degraded children have one; the rest pay a pointer.
  std::unique_ptr<degraded_state> deg_;
  // Only durable children pay for this.
  std::unique_ptr<durable> dur_;
  // Only children that called a tool pay for this.
  std::unique_ptr<detail::cell_tools> tools_;
  /// Set while a callback runs: the request its call was made for.
  const detail::call_origin* cb_origin_ = nullptr;
  /// Who answered the call whose callback runs (answered()).
  tool_answer answer_;
  /// The approval key of the envelope at the head of the buffer that waits
  /// for a person (empty: none); drain waits meanwhile.
  std::string awaiting_;
  /// The origin of the handler running, once it called a tool (its chain
  /// and the number of calls it made).
  detail::call_origin cur_origin_;
  bool cur_origin_ready_ = false;
  /// A journal agent's envelope whose handler returned with tool calls
  /// open: its consume (and answer) waits until they and their callbacks
  /// are done, and no other envelope runs meanwhile (cell_records.cpp).
  struct held_envelope {
    pending p;
    outcome res = outcome::replied;
    envelope out;
    caf::error err;
    bool deferred = false;
    std::shared_ptr<detail::call_chain> chain;
    std::shared_ptr<deferred_slot> slot;
  };
  std::unique_ptr<held_envelope> held_;
  enum class gate { go, wait, refused };
  /// An envelope that needs approval (cfg_.approval): `go` once approved;
  /// `wait` while pending (awaiting_ holds its key, drain waits);
  /// `refused`: rejected or expired, settled as a rejected envelope.
  gate approve_envelope(pending& p);
  /// Why the instance cannot start: its envelopes' approvals need a data dir.
  caf::error approvals_ready() const;
  /// The key of `e`'s approval (cfg_.approval).
  std::string approval_key_of(const envelope& e) const;
  /// True while the envelope at the head of the buffer waits for its
  /// approval (awaiting_); a wait for one that left the buffer ends.
  bool still_awaiting();
  /// After `run`: holds the envelope (and its slot) if its calls are open.
  bool hold_if_open(pending& p, outcome res, envelope& out, caf::error& err,
                    bool deferred, std::shared_ptr<deferred_slot>& slot);
};

} // namespace vigil::detail

#include "cell_state.hpp"
