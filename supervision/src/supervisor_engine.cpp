// The supervisor engine's longer steps: starting and stopping children in
// sequence, shutdown, and what happens when a child exits (restart with
// backoff, group restarts, retries, degrade, escalate). The class is in
// supervisor_actor.hpp; its message handlers are in supervisor.cpp.

#include "restart_plan.hpp"
#include "supervisor_actor.hpp"

namespace vigil::detail {

caf::error supervisor_actor::spawn_worker_cell(child& c) {
  if (c.handle)
    return caf::none;
  cell_config cc;
  cc.path = child_path(c.id);
  auto path = cc.path; // cc moves into the cell
  cc.type = rt_->types().find(c.spec->agent);
  cc.params = {c.spec, &c.spec->params}; // shares, no copy
  cc.buffer_cap = static_cast<uint32_t>(
    std::min<size_t>(c.spec->buffer_cap, UINT32_MAX));
  cc.queue_cap = static_cast<uint32_t>(
    std::min<size_t>(c.spec->queue_cap, UINT32_MAX));
  cc.overflow = c.spec->overflow;
  cc.max_deliveries = c.spec->max_deliveries;
  cc.durability = c.spec->durability;
  if (!c.spec->tools.empty())
    cc.tool_overrides = {c.spec, &c.spec->tools}; // shares, no copy
  if (c.spec->approval.required)
    cc.approval = {c.spec, &c.spec->approval};
  if (cc.type == nullptr)
    return make_error(errc::unknown_agent_type, c.spec->agent);
  c.handle = spawn_cell(home_system(), rt_, std::move(cc),
                        caf::actor_cast<caf::actor>(this), c.key);
  rt_->bind(path, c.handle, queue_of(c.handle));
  return caf::none;
}

void supervisor_actor::prespawn(uint64_t key) {
  auto* c = find_key(key);
  if (c != nullptr && c->spec->kind == child_kind::worker
      && c->spec->durability.mode != durability_mode::none)
    static_cast<void>(spawn_worker_cell(*c)); // start_one reports errors
}

void supervisor_actor::start_one(uint64_t key, bool is_restart,
                                 caf::error reason, cont k) {
  auto* c = find_key(key);
  if (c == nullptr)
    return k(make_error(errc::not_found));
  if (c->spec->kind == child_kind::worker) {
    if (auto err = spawn_worker_cell(*c))
      return k(std::move(err));
  } else {
    auto spec = *c->spec->sup;
    // A saga child with durability journal is a durable saga.
    if (spec.saga.enabled
        && c->spec->durability.mode == durability_mode::journal)
      spec.saga.durable = true;
    c->handle = spawn_supervisor(home_system(), rt_, std::move(spec),
                                 child_path(c->id),
                                 caf::actor_cast<caf::actor>(this));
    monitor(c->handle);
  }
  ++awaiting_;
  request<high>(c->handle, caf::infinite,
                start_cmd{is_restart, std::move(reason)})
    .await(
      [this, key, k](uint64_t gen) {
        after_await([&] {
          if (auto* c = find_key(key)) {
            c->gen = gen;
            set_st(*c, status::running);
          }
          k(caf::none);
        });
      },
      [this, key, k](caf::error& err) {
        after_await([&] {
          if (auto* c = find_key(key)) {
            set_st(*c, status::restarting);
            if (c->spec->kind == child_kind::supervisor)
              c->handle = nullptr;
          }
          k(err);
        });
      });
}

void supervisor_actor::start_seq(std::vector<uint64_t> keys, size_t i,
                                 bool is_restart, caf::error reason,
                                 std::function<void(caf::error, uint64_t)> k) {
  start_seq(std::make_shared<const std::vector<uint64_t>>(std::move(keys)),
            i, is_restart, std::move(reason), std::move(k));
}

void supervisor_actor::start_seq(key_list keys, size_t i, bool is_restart,
                                 caf::error reason,
                                 std::function<void(caf::error, uint64_t)> k) {
  if (i == keys->size())
    return k(caf::none, 0);
  // The cells of the next durable workers are spawned ahead: each fences
  // its path with the node's writer as it spawns, so those round trips
  // overlap instead of adding up. Instances still start in order.
  if (i == 0)
    for (size_t j = 1; j < std::min(keys->size(), prespawn_window); ++j)
      prespawn((*keys)[j]);
  if (i + prespawn_window < keys->size())
    prespawn((*keys)[i + prespawn_window]);
  auto key = (*keys)[i];
  start_one(key, is_restart, reason,
            [this, keys = std::move(keys), i, is_restart, reason,
             k = std::move(k), key](caf::error err) mutable {
              if (err)
                return k(std::move(err), key);
              start_seq(std::move(keys), i + 1, is_restart,
                        std::move(reason), std::move(k));
            });
}

void supervisor_actor::stop_one(uint64_t key, bool keep_buffer,
                                std::function<void()> k) {
  auto* c = find_key(key);
  if (c == nullptr || !c->handle) {
    if (c != nullptr)
      set_st(*c, status::stopped);
    return k();
  }
  auto sd = c->spec->effective_shutdown();
  bool graceful = sd.how != shutdown_spec::kind::brutal_kill;
  caf::duration timeout = caf::infinite;
  if (sd.how == shutdown_spec::kind::timeout)
    timeout = caf::duration{sd.timeout};
  else if (sd.how == shutdown_spec::kind::brutal_kill)
    timeout = caf::duration{brutal_kill_grace};
  ++c->token;
  ++awaiting_;
  // A worker's cell learns when this supervisor gives up on it, so that a
  // stop it only reaches later (its handler was stuck) runs no on_stop.
  stop_cmd cmd{graceful, keep_buffer};
  if (c->spec->kind == child_kind::worker)
    cmd.give_up_at = give_up_at(sd);
  request<high>(c->handle, timeout, std::move(cmd))
    .await(
      [this, key, k]() {
        after_await([&] {
          if (auto* c = find_key(key)) {
            set_st(*c, status::stopped);
            if (c->spec->kind == child_kind::supervisor) {
              demonitor(c->handle);
              c->handle = nullptr;
            }
          }
          k();
        });
      },
      [this, key, k](caf::error&) {
        after_await([&] {
          // Did not stop in time: give up on it. A worker gets a new
          // cell on its next start, which reads its records from the
          // disk; the old one forwards what queued at it.
          if (auto* c = find_key(key)) {
            give_up(*c);
            set_st(*c, status::stopped);
          }
          k();
        });
      });
}

void supervisor_actor::stop_seq(std::vector<uint64_t> keys, size_t i,
                                bool keep_buffer, std::function<void()> k) {
  stop_seq(std::make_shared<const std::vector<uint64_t>>(std::move(keys)),
           i, keep_buffer, std::move(k));
}

void supervisor_actor::stop_seq(key_list keys, size_t i, bool keep_buffer,
                                std::function<void()> k) {
  if (i == keys->size())
    return k();
  auto key = (*keys)[i];
  stop_one(key, keep_buffer,
           [this, keys = std::move(keys), i, keep_buffer,
            k = std::move(k)]() mutable {
             stop_seq(std::move(keys), i + 1, keep_buffer, std::move(k));
           });
}

void supervisor_actor::stop_all(std::function<void()> k) {
  std::vector<uint64_t> keys;
  for (auto i = children_.rbegin(); i != children_.rend(); ++i)
    keys.push_back(i->first);
  auto finish = [this, k] {
    for (auto& kvp : children_)
      retire(kvp.second);
    k();
  };
  if (!simple())
    return stop_seq(std::move(keys), 0, false, finish);
  if (spec_.children.front().kind == child_kind::worker)
    return stop_workers_at_once(std::move(keys), finish);
  auto pending = std::make_shared<size_t>(0);
  for (auto key : keys) {
    auto& c = children_[key];
    if (!c.handle || c.st == status::stopped)
      continue;
    auto sd = c.spec->effective_shutdown();
    caf::duration timeout = caf::infinite;
    if (sd.how == shutdown_spec::kind::timeout)
      timeout = caf::duration{sd.timeout};
    else if (sd.how == shutdown_spec::kind::brutal_kill)
      timeout = caf::duration{brutal_kill_grace};
    ++*pending;
    auto done = [this, pending, key, finish](bool killed) {
      if (killed)
        if (auto* c = find_key(key))
          give_up(*c);
      if (--*pending == 0)
        finish();
    };
    request<high>(c.handle, timeout,
                  stop_cmd{sd.how != shutdown_spec::kind::brutal_kill, false})
      .then([done]() { done(false); },
            [done](caf::error&) { done(true); });
  }
  if (*pending == 0)
    finish();
}

void supervisor_actor::stop_workers_at_once(const std::vector<uint64_t>& keys,
                                            std::function<void()> done) {
  auto sd = spec_.children.front().effective_shutdown();
  bool graceful = sd.how != shutdown_spec::kind::brutal_kill;
  ++ack_batch_;
  ack_keys_.clear();
  for (auto key : keys) {
    auto& c = children_[key];
    if (!c.handle || c.st == status::stopped)
      continue;
    set_st(c, status::running); // until its ack arrives
    send<high>(c.handle, stop_cmd{graceful, false, give_up_at(sd), true});
    ack_keys_.insert(key);
  }
  if (ack_keys_.empty())
    return done();
  acks_done_ = std::move(done);
  if (sd.how == shutdown_spec::kind::timeout)
    delayed_send<caf::message_priority::high>(this, caf::timespan{sd.timeout}, stop_timeout_atom::value,
                 ack_batch_);
  else if (sd.how == shutdown_spec::kind::brutal_kill)
    delayed_send<caf::message_priority::high>(this, caf::timespan{brutal_kill_grace},
                 stop_timeout_atom::value, ack_batch_);
}

void supervisor_actor::on_ack(uint64_t key) {
  // Counted by key, so that a child removed meanwhile cannot stall the
  // batch.
  if (ack_keys_.erase(key) == 0)
    return;
  if (auto* c = find_key(key))
    set_st(*c, status::stopped);
  if (ack_keys_.empty()) {
    auto f = std::move(acks_done_);
    acks_done_ = nullptr;
    f();
  }
}

void supervisor_actor::on_stop_timeout(uint64_t batch) {
  if (batch != ack_batch_ || ack_keys_.empty())
    return;
  for (auto key : ack_keys_)
    if (auto* c = find_key(key); c != nullptr && c->handle) {
      give_up(*c);
      set_st(*c, status::stopped);
    }
  ack_keys_.clear();
  auto f = std::move(acks_done_);
  acks_done_ = nullptr;
  f();
}

void supervisor_actor::shutdown(caf::error reason, caf::response_promise rp) {
  if (rp.pending())
    stop_requests_.push_back(std::move(rp));
  if (stopping_)
    return;
  stopping_ = true;
  // Saga runs start nothing more; what they sent is answered as the steps
  // stop, and then they answer their requesters.
  stop_runs();
  stop_all([this, reason]() mutable {
    for (auto& p : stop_requests_)
      p.deliver(caf::unit);
    stop_requests_.clear();
    quit(reason);
  });
}

caf::timespan supervisor_actor::backoff_delay(child& c) {
  return backoff_.next(c.backoff_n, c.last_failure);
}

void supervisor_actor::check_auto_shutdown(bool significant) {
  if (!significant)
    return;
  switch (spec_.flags.auto_shutdown) {
    case auto_shutdown::never:
      return;
    case auto_shutdown::any_significant:
      return shutdown(caf::exit_reason::user_shutdown);
    case auto_shutdown::all_significant:
      for (auto& kvp : children_)
        if (kvp.second.spec->significant
            && kvp.second.st != status::stopped)
          return;
      return shutdown(caf::exit_reason::user_shutdown);
  }
}

void supervisor_actor::on_child_exit(uint64_t key, caf::error reason) {
  auto* c = find_key(key);
  if (c == nullptr)
    return;
  bool benign = is_normal(reason) || is_shutdown(reason);
  bool significant = c->spec->significant;

  if (c->spec->restart == restart_type::temporary) {
    retire(*c);
    remove_child(key);
    return check_auto_shutdown(significant);
  }
  if (c->spec->restart == restart_type::transient && benign) {
    set_st(*c, status::stopped);
    if (c->handle && c->spec->kind == child_kind::worker)
      send<high>(c->handle, stop_cmd{false, false});
    if (c->spec->kind == child_kind::supervisor)
      c->handle = nullptr;
    return check_auto_shutdown(significant);
  }
  if (c->spec->kind == child_kind::supervisor)
    c->handle = nullptr;
  if (c->spec->failure == on_failure::escalate && !benign)
    return escalate(chain(*c, reason, errc::escalated));
  set_st(*c, status::restarting);
  schedule_restart(*c, std::move(reason));
}

void supervisor_actor::schedule_restart(child& c, caf::error reason) {
  auto delay = backoff_delay(c);
  uint64_t token = ++c.token;
  if (delay.count() == 0)
    return restart(c.key, std::move(reason));
  delayed_send<caf::message_priority::high>(this, delay, try_again_atom::value, c.key, token,
               std::move(reason));
}

void supervisor_actor::restart(uint64_t key, caf::error reason) {
  auto* c = find_key(key);
  if (c == nullptr || stopping_)
    return;
  if (!add_restart()) {
    if (c->spec->failure == on_failure::degrade) {
      restarts_.pop_back();
      return degrade(*c);
    }
    return escalate(chain(*c, reason, errc::reached_max_restart_intensity));
  }
  // Decide first (a pure function of the strategy and the failed child),
  // then act: stop the siblings, start the group.
  auto plan = plan_restart(spec_.flags.strategy, children_, key);
  // This group restart takes its members over: what an earlier failed one
  // left down, or left down by them, is its to start now.
  for (auto k : plan.start)
    forget_left_down(k);
  auto& stop_keys = plan.stop;
  auto& start_keys = plan.start;
  stop_seq(stop_keys, 0, true, [this, key, start_keys, reason]() mutable {
    // Temporary siblings are not restarted: their specs go.
    std::vector<uint64_t> keys;
    for (auto k : start_keys) {
      auto* s = find_key(k);
      if (s == nullptr)
        continue;
      if (k != key && s->spec->restart == restart_type::temporary) {
        retire(*s);
        remove_child(k);
        continue;
      }
      set_st(*s, status::restarting);
      keys.push_back(k);
    }
    auto why = describe(reason);
    for (auto k : keys)
      if (auto* s = find_key(k)) {
        ++s->restarts;
        rt_->count_restart();
        meter_.restarts.fetch_add(1, std::memory_order_relaxed);
        auto who = child_path(s->id);
        emit(report{"restart", path_, "child_terminated", why, who,
                    s->restarts});
      }
    restart_members(std::move(keys), reason);
  });
}

caf::result<child_info> supervisor_actor::start_api(uint64_t key,
                                                    bool forget_on_failure) {
  auto rp = make_response_promise<child_info>();
  start_one(key, false, caf::error{},
            [this, key, rp, forget_on_failure](caf::error err) mutable {
              auto* c = find_key(key);
              if (!err && c != nullptr) {
                rp.deliver(info(*c));
                return;
              }
              if (c != nullptr) {
                set_st(*c, status::stopped);
                if (forget_on_failure) {
                  retire(*c);
                  remove_child(key);
                }
              }
              if (!err)
                err = make_error(errc::not_found);
              rp.deliver(std::move(err));
            });
  return rp;
}

void supervisor_actor::schedule_retry(child& c, caf::error reason) {
  auto delay = backoff_delay(c);
  uint64_t token = ++c.token;
  if (delay.count() == 0)
    send(this, try_again_atom::value, c.key, token, std::move(reason));
  else
    delayed_send<caf::message_priority::high>(this, delay, try_again_atom::value, c.key, token,
                 std::move(reason));
}

void supervisor_actor::degrade(child& c) {
  if (!c.handle) // its cell was killed: nobody to stand in
    return escalate(chain(c, make_error(errc::not_running, "no cell"),
                          errc::reached_max_restart_intensity));
  set_st(c, status::degraded);
  ++c.restarts;
  rt_->count_restart();
  {
    auto who = child_path(c.id);
    emit(report{"degrade", path_, "degraded",
                "reached_max_restart_intensity: a stand-in answers with its "
                "declared fallback",
                who, c.restarts});
  }
  auto& d = c.spec->degrade;
  send<high>(c.handle, degrade_cmd{d.fallback, caf::timespan{d.probe_min},
                                    caf::timespan{d.probe_max}});
  // A group restart that failed at this child left the members after it
  // stopped, for its retry to restart with it. It degrades instead, so
  // they start now, in order: they did not fail.
  auto i = left_down_.find(c.key);
  if (i == left_down_.end())
    return;
  auto down = std::move(i->second);
  left_down_.erase(i);
  std::vector<uint64_t> rest;
  for (auto k : down)
    if (auto* s = find_key(k); s != nullptr && s->st == status::stopped) {
      set_st(*s, status::restarting);
      rest.push_back(k);
    }
  if (!rest.empty())
    restart_members(std::move(rest), caf::error{});
}

void supervisor_actor::restart_members(std::vector<uint64_t> keys,
                                       caf::error reason) {
  auto group = keys;
  start_seq(std::move(keys), 0, true, std::move(reason),
            [this, group](caf::error err, uint64_t failed) {
              if (!err)
                return;
              // Retry by a message to ourselves, so that API calls and
              // shutdown can still get in (OTP's try_again_restart).
              auto* f = find_key(failed);
              if (f == nullptr)
                return;
              // As in OTP, the children after the failed one stay down
              // (undefined) until its retry restarts the group.
              auto i = std::find(group.begin(), group.end(), failed);
              std::vector<uint64_t> down;
              for (++i; i < group.end(); ++i)
                if (auto* s = find_key(*i)) {
                  set_st(*s, status::stopped);
                  down.push_back(*i);
                }
              left_down_[failed] = std::move(down);
              set_st(*f, status::restarting);
              schedule_retry(*f, std::move(err));
            });
}
} // namespace vigil::detail
