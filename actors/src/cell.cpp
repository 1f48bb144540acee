#include "vigil/actors/cell.hpp"

#include <deque>
#include <exception>
#include <list>
#include <map>
#include <typeinfo>
#include <unordered_map>

#include <caf/all.hpp>

#include "durable.hpp"
#include "vigil/actors/writer.hpp"

namespace vigil {

namespace {

using caf::response_promise;

int64_t to_ns(time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
           t.time_since_epoch())
    .count();
}

std::string what(std::exception_ptr ep) {
  try {
    std::rethrow_exception(ep);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown exception";
  }
}

/// Hosts the instances of one child across restarts. The cell is the child's
/// stable handle: senders keep addressing it while the supervisor replaces
/// the agent instance inside, and envelopes that arrive between instances wait
/// in `buffer_`, in order, up to `cfg_.buffer_cap`.
class cell : public caf::event_based_actor, public context {
public:
  cell(caf::actor_config& ac, std::shared_ptr<runtime> rt, cell_config cfg,
       caf::actor parent, uint64_t key)
    : caf::event_based_actor(ac),
      rt_(std::move(rt)),
      cfg_(std::move(cfg)),
      parent_(std::move(parent)),
      key_(key) {
    if (cfg_.durability.mode != durability_mode::none)
      init_durable();
  }

  const char* name() const override {
    return "vigil.cell";
  }

  caf::behavior make_behavior() override {
    if (parent_)
      monitor(parent_);
    set_down_handler([this](caf::down_msg& dm) {
      // Our supervisor is gone without stopping us (it was killed): as an
      // OTP worker linked to it, end without on_stop.
      if (dm.source == parent_.address()) {
        stop_instance(false);
        quit(dm.reason);
      }
    });
    set_exit_handler([this](caf::exit_msg& msg) {
      // Exits come from the supervisor only after it stopped the instance
      // (or gave up on it); `kill` cannot be trapped anyway.
      reject_buffer(make_error(errc::not_running, cfg_.path + " stopped"));
      quit(msg.reason);
    });
    return {
      [this](envelope& e) -> caf::result<envelope> {
        if (dur_ && dur_->journal && mode_ != mode::idle_reject
            && !(mode_ == mode::degraded && is_request()))
          return accept(e);
        return on_envelope(e);
      },
      [this](committed_atom, std::vector<uint64_t>& tokens,
             caf::error& err) {
        for (auto tok : tokens)
          on_committed(tok & ~duplicate_bit, (tok & duplicate_bit) != 0, err);
      },
      [this](snap_atom) {
        dur_->timer = false;
        if (dur_->unsaved > 0 && instance_)
          save_snapshot();
      },
      [this](outbox_atom, uint64_t oseq) {
        auto i = dur_->outbox.find(oseq);
        if (i != dur_->outbox.end()) {
          dur_->ready.push_back(oseq);
          dispatch_outbox();
        }
      },
      [this](start_atom, bool is_restart, caf::error& reason)
        -> caf::result<uint64_t> {
        if (auto err = start_instance(is_restart, reason))
          return err;
        // Answer first, then drain in chunks, so the supervisor never waits
        // on buffered handlers. Until the buffer is empty, new envelopes
        // queue behind it (see on_envelope), which keeps their order.
        if (!buffer_.empty())
          event_based_actor::send<caf::message_priority::high>(
            this, drain_atom::value, gen_);
        if (dur_)
          dispatch_outbox();
        return gen_;
      },
      [this](drain_atom, uint64_t gen) {
        if (gen == gen_)
          drain();
      },
      [this](stop_atom, bool graceful, bool keep_buffer) {
        stop_instance(graceful);
        mode_ = keep_buffer ? mode::idle_buffer : mode::idle_reject;
        if (!keep_buffer) {
          reject_buffer(make_error(errc::not_running, cfg_.path));
          check_in(); // before the answer, which the supervisor awaits
        }
        return caf::unit;
      },
      [this](stop_atom, bool graceful, bool keep_buffer, ack_atom) {
        stop_instance(graceful);
        mode_ = keep_buffer ? mode::idle_buffer : mode::idle_reject;
        if (!keep_buffer) {
          reject_buffer(make_error(errc::not_running, cfg_.path));
          check_in();
        }
        event_based_actor::send(parent_, ack_atom::value, key_);
      },
      [this](retire_atom) {
        stop_instance(false);
        reject_buffer(make_error(errc::not_running, cfg_.path + " deleted"));
        check_in();
        quit();
      },
      [this](degrade_atom, envelope& fallback, caf::timespan min,
             caf::timespan max) {
        stop_instance(false);
        fallback_ = std::make_unique<envelope>(std::move(fallback));
        fallback_->flags |= envelope::degraded_flag;
        probe_min_ = min;
        probe_max_ = max;
        probe_delay_ = min;
        enter_degraded();
        return caf::unit;
      },
      [this](probe_atom, uint64_t seq) {
        if (mode_ == mode::degraded && seq == probe_seq_)
          probe();
      },
      [this](state_atom) -> std::string { return mode_name(); },
    };
  }

  void on_exit() override {
    rt_->unbind(cfg_.path, caf::actor_cast<caf::actor>(this));
    // Whoever still waits is told, also after a kill.
    reject_buffer(make_error(errc::not_running, cfg_.path + " stopped"));
    check_in();
    instance_.reset();
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
    return cfg_.params;
  }

  deferred_reply defer() override {
    if (current_rp_ == nullptr)
      return {};
    deferred_ = true;
    if (!current_rp_->pending())
      *current_rp_ = make_response_promise();
    auto rp = *current_rp_;
    return deferred_reply{[rp](envelope e) mutable { rp.deliver(std::move(e)); },
                          [rp](caf::error err) mutable {
                            rp.deliver(std::move(err));
                          }};
  }

  void stop(caf::error reason) override {
    stop_requested_ = true;
    stop_reason_ = std::move(reason);
  }

protected:
  envelope make_envelope(const google::protobuf::Message& msg,
                         const call_options& opts) override {
    envelope e;
    // GetDescriptor() runs Protobuf's call_once on every call; the last
    // type's name (owned by the descriptor pool, so stable) is cached.
    auto* ti = &typeid(msg);
    if (ti != last_type_) {
      last_type_ = ti;
      last_type_name_ = &msg.GetDescriptor()->full_name();
    }
    e.type = *last_type_name_;
    msg.SerializeToString(&e.payload);
    e.id = opts.message_id != 0 ? opts.message_id : rt_->next_id();
    e.idempotency_key = opts.idempotency_key;
    if (opts.timeout.count() > 0)
      e.deadline = to_ns(now() + opts.timeout);
    else if (current_ != nullptr)
      e.deadline = current_->deadline;
    e.trace_id = current_ != nullptr ? current_->trace_id : e.id;
    e.sender = cfg_.path;
    return e;
  }

  handle resolve(std::string_view path) const override {
    return handle{std::string{path}, rt_->lookup(path)};
  }

  /// The live cell behind `to`: its cached cell, or the one bound at its
  /// path now if that cell was replaced.
  caf::actor target(const handle& to) const {
    if (to.cell()) {
      auto* ptr = caf::actor_cast<caf::abstract_actor*>(to.cell());
      if (!ptr->getf(caf::abstract_actor::is_terminated_flag))
        return to.cell();
    }
    return rt_->lookup(to.path());
  }

  void send_envelope(const handle& to, envelope env) override {
    if (dur_ && dur_->journal && current_ != nullptr) {
      // Sent by a journal agent's handler: committed with the state change
      // (the outbox) and delivered after that commit, at least once; the
      // receiver drops a redelivered message id.
      dur_->sends.push_back(detail::outbox_send{0, to.path(), std::move(env)});
      return;
    }
    auto dest = target(to);
    if (!dest) {
      rt_->add_dead_letter(to.path(), std::move(env),
                           "not_found: no agent at this path");
      return;
    }
    caf::anon_send(dest, std::move(env));
  }

  void send_envelope_after(const handle& to, envelope env,
                           duration delay) override {
    // A timer is never outboxed, also for a journal agent (see send_after).
    auto dest = target(to);
    if (!dest) {
      rt_->add_dead_letter(to.path(), std::move(env),
                           "not_found: no agent at this path");
      return;
    }
    caf::delayed_anon_send(dest, delay, std::move(env));
  }

  void request_envelope(const handle& to, envelope env, duration timeout,
                        std::function<void(const envelope&)> on_reply,
                        std::function<void(const caf::error&)> on_error)
    override {
    auto dest = target(to);
    if (!dest) {
      on_error(make_error(errc::not_found, to.path()));
      return;
    }
    auto t = timeout.count() > 0 ? caf::duration{timeout} : caf::infinite;
    // The callbacks belong to the instance that made the request: after a
    // restart they are dropped, never run on a destroyed or newer instance
    // (a deferred reply they held then fails, see deferred_reply).
    event_based_actor::request(dest, t, std::move(env))
      .then(
        [this, gen = gen_, f = std::move(on_reply)](envelope& rep) {
          if (gen == gen_ && instance_)
            invoke_callback([&] { f(rep); });
        },
        [this, gen = gen_, g = std::move(on_error)](caf::error& err) {
          if (gen != gen_ || !instance_)
            return;
          if (err == caf::sec::request_timeout)
            err = make_error(errc::deadline_exceeded, "no reply in time");
          invoke_callback([&] { g(err); });
        });
  }

private:
  /// `draining` is never stored: it marks a running cell with a non-empty
  /// buffer while on_envelope queues a new envelope behind the buffer.
  enum class mode {
    idle_buffer,
    idle_reject,
    running,
    degraded,
    half_open,
    draining
  };

  enum class outcome { replied, rejected, failed };

  /// Runs a request callback of the current instance. A throw there is a
  /// failure of the child, like a throw in a handler.
  template <class F>
  void invoke_callback(F f) {
    try {
      f();
    } catch (...) {
      auto err = make_error(errc::handler_failed,
                            cfg_.path + " (request callback): "
                              + what(std::current_exception()));
      instance_.reset();
      stop_requested_ = false;
      mode_ = mode::idle_buffer;
      event_based_actor::send(parent_, exit_atom::value, key_, gen_,
                              std::move(err));
      return;
    }
    if (stop_requested_ && instance_) {
      stop_requested_ = false;
      stop_instance(true);
      mode_ = mode::idle_buffer;
      event_based_actor::send(parent_, exit_atom::value, key_, gen_,
                              std::move(stop_reason_));
      stop_reason_ = caf::error{};
    }
  }

  struct pending {
    envelope env;
    response_promise rp;
    uint64_t seq = 0; ///< Journal seq (journal agents only).
  };

  std::string mode_name() const {
    switch (mode_) {
      case mode::idle_buffer: return "restarting";
      case mode::idle_reject: return "stopped";
      case mode::running: return "running";
      case mode::degraded: return "degraded";
      case mode::half_open: return "half_open";
      case mode::draining: return "running";
    }
    return "?";
  }

  bool is_request() {
    auto* mbe = current_mailbox_element();
    return mbe != nullptr && mbe->mid.is_request();
  }

  caf::result<envelope> on_envelope(envelope& e) {
    if (mode_ == mode::running && !buffer_.empty())
      mode_ = mode::draining;
    switch (mode_) {
      case mode::running:
      case mode::half_open: {
        envelope out;
        caf::error err;
        response_promise rp;
        current_rp_ = &rp;
        auto res = run(e, out, err);
        current_rp_ = nullptr;
        if (deferred_) {
          deferred_ = false;
          if (res == outcome::replied)
            return caf::delegated<envelope>{};
        }
        switch (res) {
          case outcome::replied:
            // A reply to an async envelope would reach nobody (vigil sends
            // those anonymously); not making it saves a message per send.
            if (!is_request())
              return caf::delegated<envelope>{};
            return out;
          case outcome::rejected:
            if (!is_request())
              rt_->add_dead_letter(cfg_.path, std::move(e), describe(err));
            return err;
          case outcome::failed: {
            if (!rp.pending())
              rp = make_response_promise();
            after_failure(std::move(e), std::move(rp), std::move(err));
            return caf::delegated<envelope>{};
          }
        }
        return caf::delegated<envelope>{};
      }
      case mode::degraded:
        return *fallback_;
      case mode::idle_reject: {
        auto err = make_error(errc::not_running, cfg_.path);
        if (!is_request())
          rt_->add_dead_letter(cfg_.path, std::move(e), describe(err));
        return err;
      }
      case mode::idle_buffer:
      case mode::draining:
        break;
    }
    if (mode_ == mode::draining)
      mode_ = mode::running;
    if (buffer_.size() >= cfg_.buffer_cap) {
      auto err = make_error(errc::buffer_overflow,
                            cfg_.path + " is restarting and holds "
                              + std::to_string(buffer_.size())
                              + " envelopes (buffer_cap)");
      if (!is_request())
        rt_->add_dead_letter(cfg_.path, std::move(e), describe(err));
      return err;
    }
    buffer_.push_back(pending{std::move(e), make_response_promise()});
    return caf::delegated<envelope>{};
  }

  /// Runs the handler for `e`. On `replied`, `out` holds the reply (empty type
  /// for void handlers); on `rejected` or `failed`, `err` holds the reason.
  outcome run(envelope& e, envelope& out, caf::error& err) {
    if (e.deadline != 0 && to_ns(now()) > e.deadline) {
      err = make_error(errc::deadline_exceeded,
                       "deadline passed before " + cfg_.path + " handled "
                         + e.type);
      return outcome::rejected;
    }
    auto& table = cfg_.type->handlers->by_type;
    auto i = table.find(e.type);
    if (i == table.end()) {
      err = make_error(errc::unknown_message_type,
                       cfg_.path + " has no handler for " + e.type);
      return outcome::rejected;
    }
    current_ = &e;
    bool parsed = false;
    try {
      parsed = i->second(*instance_, *this, e, out);
    } catch (...) {
      if (dur_)
        dur_->sends.clear();
      current_ = nullptr;
      err = make_error(errc::handler_failed,
                       cfg_.path + ": " + what(std::current_exception()));
      return outcome::failed;
    }
    current_ = nullptr;
    if (!parsed) {
      if (dur_)
        dur_->sends.clear();
      err = make_error(errc::bad_payload,
                       cfg_.path + ": payload does not parse as " + e.type);
      return outcome::rejected;
    }
    if (e.deadline != 0 && to_ns(now()) > e.deadline) {
      if (dur_)
        dur_->sends.clear();
      err = make_error(errc::deadline_exceeded,
                       cfg_.path + " handled " + e.type
                         + " past its deadline");
      return outcome::failed;
    }
    rt_->count_handled();
    if (dur_)
      after_handled();
    if (mode_ == mode::half_open) {
      mode_ = mode::running;
      probe_delay_ = probe_min_;
      event_based_actor::send(parent_, recover_atom::value, key_, gen_);
    }
    if (stop_requested_) {
      stop_requested_ = false;
      stop_instance(true);
      mode_ = mode::idle_buffer;
      event_based_actor::send(parent_, exit_atom::value, key_, gen_, std::move(stop_reason_));
      stop_reason_ = caf::error{};
    }
    return outcome::replied;
  }

  /// The instance failed while handling `e`: decide the envelope's fate, drop
  /// the instance and tell the supervisor. `seq` is its journal seq (0 if
  /// not journaled).
  void after_failure(envelope e, response_promise rp, caf::error err,
                     uint64_t seq = 0) {
    instance_.reset();
    stop_requested_ = false;
    stop_reason_ = caf::error{};
    if (mode_ == mode::half_open) {
      // The probe failed: the stand-in answers and the child stays degraded.
      rp.deliver(*fallback_);
      if (seq != 0) // accepted: it still has to be applied or dead-lettered
        settle(std::move(e), std::move(rp), err, seq);
      probe_delay_ = std::min(probe_delay_ * 2, probe_max_);
      enter_degraded();
      return;
    }
    mode_ = mode::idle_buffer;
    settle(std::move(e), std::move(rp), err, seq);
    event_based_actor::send(parent_, exit_atom::value, key_, gen_, std::move(err));
  }

  /// The fate of an envelope whose handler failed: told to the requester,
  /// kept for the next instance, or a dead letter.
  void settle(envelope e, response_promise rp, const caf::error& err,
              uint64_t seq) {
    bool journaled = seq != 0 && dur_ && dur_->journal;
    bool async = !rp.pending() || rp.async();
    // A journal agent keeps every envelope it accepted: one that fails for
    // good is a dead letter (replayable) even when a requester is told too,
    // since that requester may be an outbox that now considers it delivered.
    if (is(err, errc::deadline_exceeded)) {
      // Its time is up: retrying it cannot succeed.
      if (journaled)
        consume_failed(seq, e, describe(err));
      rp.deliver(err);
    } else if (e.attempt >= cfg_.max_deliveries) {
      // With max_deliveries 1 (the default, as in OTP and Akka) the failing
      // envelope is not retried; it is kept as a dead letter, not dropped.
      auto reason = cfg_.max_deliveries == 1
                      ? err
                      : make_error(errc::poison_message,
                                   cfg_.path + " failed "
                                     + std::to_string(e.attempt)
                                     + " times on this envelope; last: "
                                     + describe(err));
      // A requester is told and owns the retry; an async envelope would be
      // lost, so it goes to the dead letters, as does every poison message.
      bool dead = cfg_.max_deliveries > 1 || async;
      if (journaled)
        consume_failed(seq, e, describe(reason));
      else if (dead)
        rt_->add_dead_letter(cfg_.path, e, describe(reason));
      rp.deliver(std::move(reason));
    } else {
      ++e.attempt;
      if (journaled) // the attempt count survives a crash of the node, too
        write(detail::redeliver_item(cfg_.path, seq, e), false);
      buffer_.push_front(pending{std::move(e), std::move(rp), seq});
    }
  }

  caf::error start_instance(bool is_restart, const caf::error& reason) {
    instance_.reset();
    stop_requested_ = false;
    stop_reason_ = caf::error{};
    ++gen_;
    if (dur_ && checked_in_) {
      // Stopped earlier (terminate_child), now restarted: take back what
      // this cell handed over.
      checked_in_ = false;
      if (auto rec = rt_->claim(cfg_.path))
        restore(*rec);
    }
    try {
      instance_ = cfg_.type->make(cfg_.params);
      if (dur_)
        restore_state();
      if (is_restart)
        instance_->on_restart(*this, reason);
      else
        instance_->on_start(*this);
    } catch (...) {
      instance_.reset();
      mode_ = mode::idle_buffer;
      return make_error(errc::start_failed,
                        cfg_.path + ": " + what(std::current_exception()));
    }
    mode_ = mode::running;
    return caf::none;
  }

  void stop_instance(bool graceful) {
    if (!instance_)
      return;
    if (graceful) {
      try {
        instance_->on_stop(*this);
      } catch (...) {
        // on_stop cannot fail the stop; the instance is gone either way.
      }
      if (dur_ && !dur_->journal && dur_->unsaved > 0)
        save_snapshot();
    }
    instance_.reset();
    stop_requested_ = false;
  }

  /// Delivers up to `drain_chunk` buffered envelopes to the new instance,
  /// oldest first, and schedules the next chunk, until the buffer is empty or
  /// the instance fails again. Chunks keep control messages (stop, start)
  /// from waiting behind a long buffer.
  void drain() {
    static constexpr size_t drain_chunk = 64;
    size_t n = 0;
    while (!buffer_.empty() && instance_
           && (mode_ == mode::running
               || (mode_ == mode::half_open && dur_ && dur_->journal))) {
      if (n++ == drain_chunk) {
        event_based_actor::send<caf::message_priority::high>(
          this, drain_atom::value, gen_);
        return;
      }
      auto p = std::move(buffer_.front());
      buffer_.pop_front();
      envelope out;
      caf::error err;
      // Only a real requester can get a deferred reply: a promise made now
      // would answer the message that triggered the drain (often the cell's
      // own drain or commit message), i.e. send the reply to ourselves.
      current_rp_ = p.rp.pending() && !p.rp.async() ? &p.rp : nullptr;
      current_seq_ = p.seq;
      auto res = run(p.env, out, err);
      current_seq_ = 0;
      current_rp_ = nullptr;
      bool deferred = std::exchange(deferred_, false);
      switch (res) {
        case outcome::replied:
          if (!deferred)
            p.rp.deliver(std::move(out));
          break;
        case outcome::rejected: {
          bool async = !p.rp.pending() || p.rp.async();
          if (p.seq != 0 && dur_ && dur_->journal)
            consume_failed(p.seq, p.env, describe(err));
          else if (async)
            rt_->add_dead_letter(cfg_.path, std::move(p.env), describe(err));
          p.rp.deliver(std::move(err));
          break;
        }
        case outcome::failed:
          after_failure(std::move(p.env), std::move(p.rp), std::move(err),
                        p.seq);
          return;
      }
    }
  }

  void reject_buffer(const caf::error& err) {
    if (dur_ && dur_->journal) {
      // Accepted envelopes stay in the journal and are applied when the
      // agent runs again (restart_child, or the next start of the node).
      // A requester is told now; its envelope is not lost.
      for (auto& p : buffer_)
        if (p.rp.pending() && !p.rp.async())
          p.rp.deliver(make_error(
            errc::not_running, cfg_.path
                                 + " stopped; the envelope is kept in its "
                                   "journal and applied when it runs again"));
      buffer_.remove_if([](const pending& p) { return p.seq == 0; });
      return;
    }
    for (auto& p : buffer_) {
      if (!p.rp.pending() || p.rp.async())
        rt_->add_dead_letter(cfg_.path, std::move(p.env), describe(err));
      else
        p.rp.deliver(err);
    }
    buffer_.clear();
  }

  void enter_degraded() {
    mode_ = mode::degraded;
    for (auto& p : buffer_)
      p.rp.deliver(*fallback_);
    // A journal agent keeps what it accepted, to apply after recovery.
    if (dur_ && dur_->journal)
      buffer_.remove_if([](const pending& p) { return p.seq == 0; });
    else
      buffer_.clear();
    delayed_send(this, probe_delay_, probe_atom::value, ++probe_seq_);
  }

  /// Half-open probe: try a fresh instance; the next envelope decides.
  void probe() {
    if (start_instance(true, make_error(errc::start_failed, "probe"))) {
      probe_delay_ = std::min(probe_delay_ * 2, probe_max_);
      enter_degraded();
      return;
    }
    mode_ = mode::half_open;
    if (!buffer_.empty())
      drain(); // a journal agent's kept envelopes: the first one decides
  }

  // -- durability (see durability.hpp) ----------------------------------------

  struct durable {
    bool journal = false;
    durability_spec spec;
    caf::actor writer;
    uint64_t next_seq = 1;
    uint64_t next_outbox = 1;
    uint64_t processed = 0;
    uint64_t next_token = 1;
    uint64_t duplicates = 0;
    /// The last state handed to the writer; what a restart restores.
    std::string state;
    std::string state_type;
    bool has_state = false;
    /// Journal: envelopes whose accept commit is outstanding, in token
    /// order (the writer acknowledges in the order it was written to);
    /// `accepting.front()` has token `first_accept`.
    std::deque<pending> accepting;
    uint64_t first_accept = accept_bit;
    uint64_t next_accept = accept_bit;
    /// Outbox sends of the handler running now.
    std::vector<detail::outbox_send> sends;
    /// Outbox entries not yet delivered, by outbox seq; `ready` lists the
    /// committed ones waiting for a delivery slot.
    std::map<uint64_t, detail::outbox_send> outbox;
    std::deque<uint64_t> ready;
    size_t in_flight = 0;
    /// Consume commits outstanding that carry outbox entries: token -> the
    /// outbox seqs to deliver once it is committed.
    std::unordered_map<uint64_t, std::vector<uint64_t>> after_commit;
    /// A reset of the writer is under way (see storage_failure).
    bool resetting = false;
    /// Snapshot mode.
    uint32_t unsaved = 0;
    bool timer = false;
  };

  /// Outbox deliveries in flight per agent.
  static constexpr size_t outbox_window = 256;

  /// Marks accept tokens; other writes count up from 1.
  static constexpr uint64_t accept_bit = uint64_t{1} << 62;

  void init_durable() {
    dur_ = std::make_unique<durable>();
    dur_->journal = cfg_.durability.mode == durability_mode::journal;
    dur_->spec = cfg_.durability;
    dur_->writer = rt_->writer();
    if (auto rec = rt_->claim(cfg_.path)) {
      // Records of the other durable mode are not migrated: refuse to start
      // rather than misread them (a journal left to a snapshot child would
      // be replayed at every start).
      uint32_t was = rec->has_snapshot ? rec->snapshot.durability() : 0;
      if (!rec->journal.empty() && was == 0)
        was = 2;
      uint32_t now = dur_->journal ? 2 : 1;
      if (was != 0 && was != now) {
        mode_mismatch_ = cfg_.path + " is a "
                         + (was == 2 ? "journal" : "snapshot")
                         + " agent in this data dir but its child spec says "
                         + to_string(cfg_.durability.mode)
                         + "; records are not migrated: keep the old mode, "
                           "or move its records away (vigil inspect shows "
                           "them) and use another data dir";
        rt_->hand_over(std::move(*rec)); // kept for a later, matching cell
        return;
      }
      restore(*rec);
    }
  }

  /// Takes what the node recovered for this path: the last state, then the
  /// unconsumed envelopes in their original order, ahead of any new one.
  void restore(const recovered_agent& rec) {
    auto& d = *dur_;
    if (rec.has_snapshot) {
      auto& s = rec.snapshot;
      d.has_state = !s.state_type().empty();
      d.state = s.state();
      d.state_type = s.state_type();
      d.next_seq = std::max<uint64_t>(1, s.next_seq());
      d.next_outbox = std::max<uint64_t>(1, s.next_outbox());
      d.processed = s.processed();
      for (auto& r : s.pending())
        buffer_.push_back(pending{detail::from_record(r), {}, 0});
    }
    for (auto& je : rec.journal) {
      buffer_.push_back(pending{detail::from_record(je.env()), {}, je.seq()});
      d.next_seq = std::max(d.next_seq, je.seq() + 1);
    }
    adopt_outbox(rec.outbox);
  }

  /// Takes undelivered outbox entries read from the store, ready to send.
  void adopt_outbox(const std::vector<records::OutboxEntry>& entries) {
    auto& d = *dur_;
    for (auto& oe : entries) {
      d.outbox.emplace(oe.seq(), detail::outbox_send{
                                   oe.seq(), oe.to(),
                                   detail::from_record(oe.env())});
      d.ready.push_back(oe.seq());
      d.next_outbox = std::max(d.next_outbox, oe.seq() + 1);
    }
  }

  /// Hands this path's durable view to the runtime, for the next cell at
  /// this path (a restarted parent spawns new cells) or for this cell when
  /// it starts again: the last state, the accepted envelopes not yet
  /// handled (also those whose accept commit is still on its way; the
  /// writer commits in order, before anything of the next cell) and the
  /// undelivered outbox. Runs before the stop is answered, so the
  /// supervisor's next start sees it. Requesters still waiting are told.
  void check_in() {
    if (!dur_ || checked_in_)
      return;
    checked_in_ = true;
    auto& d = *dur_;
    recovered_agent rec;
    rec.path = cfg_.path;
    rec.has_snapshot = true;
    auto& s = rec.snapshot;
    s.set_format(store::format);
    s.set_path(cfg_.path);
    s.set_agent(cfg_.type->name);
    if (d.has_state) {
      s.set_state_type(d.state_type);
      s.set_state(d.state);
    }
    s.set_next_seq(d.next_seq);
    s.set_next_outbox(d.next_outbox);
    s.set_processed(d.processed);
    s.set_durability(d.journal ? 2 : 1);
    auto kept = make_error(errc::not_running,
                           cfg_.path + " stopped; the envelope is kept in its "
                                       "journal and applied when it runs "
                                       "again");
    auto take = [&](pending& p) {
      if (p.rp.pending() && !p.rp.async())
        p.rp.deliver(kept);
      if (p.seq == 0) {
        *s.add_pending() = detail::to_record(p.env);
        return;
      }
      records::JournalEntry je;
      je.set_format(store::format);
      je.set_seq(p.seq);
      *je.mutable_env() = detail::to_record(p.env);
      rec.journal.push_back(std::move(je));
    };
    for (auto& p : buffer_)
      take(p);
    for (auto& p : d.accepting)
      take(p);
    for (auto& [oseq, o] : d.outbox) {
      records::OutboxEntry oe;
      oe.set_format(store::format);
      oe.set_seq(oseq);
      oe.set_to(o.to);
      *oe.mutable_env() = detail::to_record(o.env);
      rec.outbox.push_back(std::move(oe));
    }
    buffer_.clear();
    d.accepting.clear();
    d.first_accept = d.next_accept; // late acks of those are ignored
    d.outbox.clear();
    d.ready.clear();
    d.after_commit.clear();
    d.in_flight = 0;
    d.sends.clear();
    rt_->hand_over(std::move(rec));
  }

  /// Loads the last saved state into a new instance (throws on mismatch,
  /// which fails the start).
  void restore_state() {
    if (!mode_mismatch_.empty())
      throw std::runtime_error(mode_mismatch_);
    // Keys are path + 9 bytes; LMDB keys end at 511 bytes.
    if (cfg_.path.size() > 400)
      throw std::runtime_error("a durable agent's path is at most 400 bytes "
                               "(LMDB keys); shorten "
                               + cfg_.path.substr(0, 60) + "...");
    if (!dur_->writer)
      throw std::runtime_error("durability " + std::string{to_string(
                                 cfg_.durability.mode)}
                               + " needs a data dir; set node_config::data_dir");
    auto* m = instance_->state_message();
    if (!dur_->has_state || m == nullptr)
      return;
    if (m->GetDescriptor()->full_name() != dur_->state_type)
      throw std::runtime_error("saved state of " + cfg_.path + " is a "
                               + dur_->state_type + ", but agent type "
                               + cfg_.type->name + " keeps a "
                               + m->GetDescriptor()->full_name());
    if (!m->ParseFromString(dur_->state))
      throw std::runtime_error("saved state of " + cfg_.path
                               + " does not parse as " + dur_->state_type);
  }

  void capture_state() {
    auto& d = *dur_;
    if (auto* m = instance_ ? instance_->state_message() : nullptr) {
      d.state.clear();
      m->SerializeToString(&d.state);
      d.state_type = m->GetDescriptor()->full_name();
      d.has_state = true;
    }
  }

  /// Hands `item` to the writer; with `ack`, returns the token of the
  /// commit acknowledgement (a failed commit then fails the instance).
  uint64_t write(write_item item, bool ack) {
    auto& d = *dur_;
    uint64_t tok = ack ? d.next_token++ : 0;
    event_based_actor::send(d.writer, write_atom::value, tok,
                            std::move(item));
    return tok;
  }

  detail::consume_args consume_args(uint64_t seq) {
    auto& d = *dur_;
    detail::consume_args a;
    a.path = &cfg_.path;
    a.agent = &cfg_.type->name;
    a.seq = seq;
    a.state = d.has_state ? &d.state : nullptr;
    a.state_type = d.state_type;
    a.next_seq = d.next_seq;
    a.next_outbox = d.next_outbox;
    a.processed = d.processed;
    a.durability = d.journal ? 2 : 1;
    return a;
  }

  /// A journal agent's accept: the envelope is durable (and checked against
  /// the message ids already accepted) before it is handled.
  caf::result<envelope> accept(envelope& e) {
    auto& d = *dur_;
    if (d.accepting.size() + buffer_.size() >= cfg_.buffer_cap) {
      auto err = make_error(errc::buffer_overflow,
                            cfg_.path + " holds "
                              + std::to_string(buffer_.size()
                                               + d.accepting.size())
                              + " envelopes (buffer_cap)");
      if (!is_request())
        rt_->add_dead_letter(cfg_.path, std::move(e), describe(err));
      return err;
    }
    auto seq = d.next_seq++;
    auto tok = d.next_accept++;
    event_based_actor::send(d.writer, write_atom::value, tok,
                            detail::accept_item(cfg_.path, seq, e));
    d.accepting.push_back(pending{std::move(e), make_response_promise(), seq});
    return caf::delegated<envelope>{};
  }

  void on_committed(uint64_t tok, bool duplicate, caf::error& err) {
    auto& d = *dur_;
    if ((tok & accept_bit) != 0) {
      if (tok != d.first_accept || d.accepting.empty())
        return; // cannot happen: the writer acknowledges in order
      ++d.first_accept;
      auto p = std::move(d.accepting.front());
      d.accepting.pop_front();
      bool async = !p.rp.pending() || p.rp.async();
      if (err) {
        // Not accepted: the sender is told (or it is a dead letter). `err`
        // is shared by every token of this acknowledgement: copy it.
        if (async)
          rt_->add_dead_letter(cfg_.path, std::move(p.env), describe(err));
        p.rp.deliver(err);
        storage_failure(err);
      } else if (duplicate) {
        ++d.duplicates;
        p.rp.deliver(make_error(errc::duplicate,
                                cfg_.path + " already accepted message "
                                  + std::to_string(p.env.id)));
      } else {
        buffer_.push_back(std::move(p));
        if (instance_
            && (mode_ == mode::running || mode_ == mode::half_open))
          drain();
      }
      return;
    }
    if (err) {
      d.after_commit.erase(tok);
      storage_failure(err);
      return;
    }
    // Only commits that carry outbox entries are registered.
    auto j = d.after_commit.find(tok);
    if (j == d.after_commit.end())
      return;
    for (auto oseq : j->second)
      d.ready.push_back(oseq);
    d.after_commit.erase(j);
    dispatch_outbox();
  }

  /// A commit of this agent failed, so memory may be ahead of the disk.
  /// The writer now rejects this cell's writes until it resets; once the
  /// reset is answered (after every earlier write of this cell), the cell
  /// reloads its state, journal and outbox from the store, and a running
  /// instance fails so that its supervisor restarts it on what is on disk.
  void storage_failure(const caf::error& err) {
    auto& d = *dur_;
    if (d.resetting)
      return;
    d.resetting = true;
    event_based_actor::request(d.writer, caf::infinite, reset_atom::value)
      .then([this, err]() { reload(err); },
            [this, err](caf::error&) { reload(err); });
  }

  void reload(const caf::error& why) {
    auto& d = *dur_;
    d.resetting = false;
    auto& st = *rt_->storage();
    records::Snapshot snap;
    bool found = false;
    std::vector<records::JournalEntry> journal;
    std::vector<records::OutboxEntry> outbox;
    auto s1 = st.snapshot(cfg_.path, snap, found);
    auto s2 = s1 ? s1 : st.mailbox(cfg_.path, journal);
    auto s3 = s2 ? s2 : st.outbox(cfg_.path, outbox);
    if (s3) {
      // Cannot read the truth back: stop serving rather than guess.
      quit(make_error(errc::storage_failed,
                      cfg_.path + ": cannot reload after a failed commit: "
                        + s3.message()));
      return;
    }
    d.has_state = found && !snap.state_type().empty();
    d.state = found ? snap.state() : std::string{};
    d.state_type = found ? snap.state_type() : std::string{};
    d.processed = found ? snap.processed() : 0;
    d.next_seq = std::max<uint64_t>(d.next_seq, found ? snap.next_seq() : 1);
    d.next_outbox = std::max<uint64_t>(d.next_outbox,
                                       found ? snap.next_outbox() : 1);
    // The journal on disk is the truth; requesters still waiting keep their
    // promise where the envelope is still there.
    std::map<uint64_t, response_promise> waiting;
    std::list<pending> others;
    for (auto& p : buffer_) {
      if (p.seq != 0)
        waiting.emplace(p.seq, std::move(p.rp));
      else
        others.push_back(std::move(p));
    }
    buffer_.clear();
    for (auto& je : journal) {
      pending p{detail::from_record(je.env()), {}, je.seq()};
      if (auto i = waiting.find(je.seq()); i != waiting.end())
        p.rp = std::move(i->second);
      buffer_.push_back(std::move(p));
      d.next_seq = std::max(d.next_seq, je.seq() + 1);
    }
    buffer_.splice(buffer_.end(), others);
    d.outbox.clear();
    d.ready.clear();
    d.after_commit.clear();
    d.in_flight = 0;
    adopt_outbox(outbox);
    if (instance_) {
      instance_.reset();
      stop_requested_ = false;
      mode_ = mode::idle_buffer;
      event_based_actor::send(parent_, exit_atom::value, key_, gen_, why);
    }
    dispatch_outbox();
  }

  /// Runs after a handler succeeded (inside `run`).
  void after_handled() {
    auto& d = *dur_;
    ++d.processed;
    if (!d.journal) {
      ++d.unsaved;
      if (d.spec.every_messages != 0 && d.unsaved >= d.spec.every_messages)
        save_snapshot();
      else if (d.spec.every.count() > 0 && !d.timer) {
        d.timer = true;
        delayed_send(this, d.spec.every, snap_atom::value);
      }
      return;
    }
    capture_state();
    auto sends = std::move(d.sends);
    d.sends.clear();
    for (auto& x : sends)
      x.seq = d.next_outbox++;
    auto a = consume_args(current_seq_);
    a.outbox = &sends;
    auto tok = write(detail::consume_item(a), true);
    if (!sends.empty()) {
      auto& seqs = d.after_commit[tok];
      for (auto& x : sends) {
        seqs.push_back(x.seq);
        auto oseq = x.seq;
        d.outbox.emplace(oseq, std::move(x));
      }
    }
  }

  /// Consumes journal entry `seq` without a state change; a non-empty
  /// `reason` makes the envelope a dead letter in the same transaction.
  void consume_failed(uint64_t seq, const envelope& e,
                      const std::string& reason) {
    ++dur_->processed;
    auto a = consume_args(seq);
    a.dead_reason = reason;
    a.dead_env = &e;
    write(detail::consume_item(a), true);
    if (!reason.empty())
      rt_->add_dead_letter(cfg_.path, e, reason, false);
  }

  /// Snapshot mode: state plus the envelopes waiting in the buffer.
  void save_snapshot() {
    auto& d = *dur_;
    capture_state();
    std::vector<const envelope*> waiting;
    for (auto& p : buffer_)
      waiting.push_back(&p.env);
    auto a = consume_args(0);
    a.pending = &waiting;
    write(detail::consume_item(a), true);
    d.unsaved = 0;
  }

  /// Delivers committed outbox entries, at most `outbox_window` at a time,
  /// each as a request: any answer (also an error from the receiver) ends
  /// its delivery; an unreachable receiver is retried.
  void dispatch_outbox() {
    auto& d = *dur_;
    while (!d.ready.empty() && d.in_flight < outbox_window) {
      auto oseq = d.ready.front();
      d.ready.pop_front();
      auto i = d.outbox.find(oseq);
      if (i == d.outbox.end())
        continue;
      auto dest = rt_->lookup(i->second.to);
      if (!dest) {
        retry_outbox(oseq);
        continue;
      }
      ++d.in_flight;
      event_based_actor::request(dest, std::chrono::seconds{30},
                                 i->second.env)
        .then(
              [this, oseq](envelope& rep) {
                // A stand-in answered for a degraded receiver: the envelope
                // was not applied, so it is not delivered yet.
                if (rep.degraded())
                  outbox_not_delivered(oseq);
                else
                  outbox_delivered(oseq);
              },
              [this, oseq](caf::error& err) {
                if (unreachable(err))
                  outbox_not_delivered(oseq);
                else
                  outbox_delivered(oseq);
              });
    }
  }

  static bool unreachable(const caf::error& err) {
    return err == caf::sec::request_timeout
           || err == caf::sec::request_receiver_down
           || is(err, errc::not_found) || is(err, errc::not_running)
           || is(err, errc::buffer_overflow) || is(err, errc::storage_failed)
           || is(err, errc::shutting_down);
  }

  void retry_outbox(uint64_t oseq) {
    delayed_send(this, std::chrono::milliseconds{250}, outbox_atom::value,
                 oseq);
  }

  void outbox_not_delivered(uint64_t oseq) {
    auto& d = *dur_;
    if (d.in_flight > 0) // 0 after a check_in
      --d.in_flight;
    retry_outbox(oseq);
    dispatch_outbox();
  }

  void outbox_delivered(uint64_t oseq) {
    auto& d = *dur_;
    if (d.in_flight > 0) // 0 after a check_in
      --d.in_flight;
    if (d.outbox.erase(oseq) > 0)
      write(detail::outbox_done_item(cfg_.path, oseq), false);
    dispatch_outbox();
  }

  std::shared_ptr<runtime> rt_;
  cell_config cfg_;
  caf::actor parent_;
  uint64_t key_;
  uint64_t gen_ = 0;
  mode mode_ = mode::idle_buffer;
  std::unique_ptr<agent_base> instance_;
  // A list, not a deque: an empty std::deque allocates ~600 bytes, and
  // every cell has a buffer that is empty almost always.
  std::list<pending> buffer_;
  const envelope* current_ = nullptr;
  response_promise* current_rp_ = nullptr;
  bool deferred_ = false;
  bool stop_requested_ = false;
  caf::error stop_reason_;
  // Only degraded children have a stand-in reply; the rest pay a pointer.
  std::unique_ptr<envelope> fallback_;
  caf::timespan probe_min_{0};
  caf::timespan probe_max_{0};
  caf::timespan probe_delay_{0};
  uint64_t probe_seq_ = 0;
  // Only durable children pay for this.
  std::unique_ptr<durable> dur_;
  uint64_t current_seq_ = 0;
  /// The durable view was handed to the runtime (see check_in).
  bool checked_in_ = false;
  /// Set when the data dir holds this path under another durable mode.
  std::string mode_mismatch_;
  /// make_envelope's cache of the last message type and its name.
  const std::type_info* last_type_ = nullptr;
  const std::string* last_type_name_ = nullptr;
};

} // namespace

caf::actor spawn_cell(caf::actor_system& sys, std::shared_ptr<runtime> rt,
                      cell_config cfg, caf::actor parent, uint64_t key) {
  return sys.spawn<cell>(std::move(rt), std::move(cfg), std::move(parent),
                         key);
}

} // namespace vigil
