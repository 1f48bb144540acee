#include "vigil/supervision/supervisor.hpp"

#include <spdlog/spdlog.h>

#include "supervisor_actor.hpp"
#include "vigil/actors/detail/log.hpp"

namespace vigil {

namespace detail {

caf::behavior supervisor_actor::make_behavior() {
  rt_->bind(path_, caf::actor_cast<caf::actor>(this));
  if (parent_)
    monitor(parent_);
  set_down_handler([this](caf::down_msg& dm) {
    if (auto i = runs_.find(dm.source); i != runs_.end()) {
      auto input = i->second;
      if (auto j = run_inputs_.find(input);
          j != run_inputs_.end() && j->second.address() == dm.source)
        run_inputs_.erase(j); // a saga run answered
      runs_.erase(i);
      if (durable_saga())
        durable_run_down(input, dm.reason);
      return;
    }
    if (parent_ && dm.source == parent_.address()) {
      // Our supervisor is gone (OTP: the linked parent's exit signal): stop
      // the children and follow it.
      shutdown(dm.reason);
      return;
    }
    // Queue it behind whatever is in progress.
    send(this, child_down_atom::value, dm.source, std::move(dm.reason));
  });
  set_exit_handler([this](caf::exit_msg& msg) {
    if (msg.reason == caf::exit_reason::kill)
      quit(msg.reason);
    else
      shutdown(msg.reason);
  });
  // A message outside the protocol is refused with its name, not dropped.
  set_default_handler([](caf::scheduled_actor* self, caf::message_view& x)
                        -> caf::result<caf::message> {
    return static_cast<supervisor_actor*>(self)->refuse(
      x.copy_content_to_message());
  });
  // One named handler per request, as OTP has one handle_call clause per
  // request. The typed behavior checks them against supervisor_api at
  // compile time: a handler that takes or answers something else than the
  // interface declares does not compile.
  supervisor_api::behavior_type api{
    [this](start_cmd&) -> caf::result<uint64_t> { return handle_start(); },
    [this](stop_cmd&) -> caf::result<void> { return handle_stop(); },
    [this](exit_report& x) { handle_exit_report(x.key, x.gen, x.reason); },
    [this](recover_report& x) { handle_recovered(x.key, x.gen); },
    [this](stop_ack& x) { on_ack(x.key); },
    [this](envelope& e) -> caf::result<envelope> {
      return handle_envelope(e);
    },
    [this](start_child_atom, child_spec& cs) -> caf::result<child_info> {
      return handle_start_child(cs);
    },
    [this](start_child_atom, params& extra,
           std::string& name) -> caf::result<child_info> {
      return handle_start_dynamic_child(extra, name);
    },
    [this](terminate_child_atom, std::string& id) -> caf::result<void> {
      return handle_terminate_child(id);
    },
    [this](restart_child_atom, std::string& id) -> caf::result<child_info> {
      return handle_restart_child(id);
    },
    [this](delete_child_atom, std::string& id) -> caf::result<void> {
      return handle_delete_child(id);
    },
    [this](which_children_atom) -> std::vector<child_info> {
      return handle_which_children();
    },
    [this](count_children_atom) -> child_counts {
      return handle_count_children();
    },
  };
  // The supervisor's messages to itself.
  caf::behavior own{
    [this](child_down_atom, caf::actor_addr& src, caf::error& reason) {
      handle_child_down(src, reason);
    },
    [this](stop_timeout_atom, uint64_t batch) { on_stop_timeout(batch); },
    [this](saga_done_atom, uint64_t origin, uint64_t id, envelope& out) {
      // Kept for a resent input, the newest `finished_cap` of them.
      auto key = std::make_pair(origin, id);
      if (finished_.emplace(key, std::move(out)).second)
        finished_order_.push_back(key);
      if (finished_order_.size() > finished_cap) {
        finished_.erase(finished_order_.front());
        finished_order_.pop_front();
      }
      if (durable_saga()) {
        saga_outcome_due(finished_[key]);
        // The run waits for this, answering resends meanwhile.
        send(caf::actor_cast<caf::actor>(current_sender()),
             saga_stop_atom::value);
      }
    },
    [this](saga_retry_atom) {
      if (!sagas_)
        return;
      auto only = std::move(sagas_->to_resume);
      sagas_->to_resume.clear();
      resume_runs(&only);
    },
    [this](saga_outbox_atom, uint64_t seq) {
      if (!sagas_)
        return;
      sagas_->due.push_back(seq);
      dispatch_saga_outbox();
    },
    [this](saga_commit_failed_atom, uint64_t owner) {
      saga_commit_failed(caf::actor_cast<caf::actor>(current_sender()),
                         owner);
    },
    [this](saga_compact_atom) {
      if (sagas_)
        saga_compact();
    },
    [this](committed_atom, std::vector<uint64_t>&, caf::error& err) {
      // Outbox deletions and compaction ask for no acknowledgement; a
      // failure is told all the same. What was not deleted is delivered
      // (or dropped) again at the next start.
      if (err)
        detail::log().warn("vigil: {}: a saga record write failed: {}", path_,
                           describe(err));
    },
    [](nudge_atom) {
      // nop: consuming it flushes skipped messages (see nudge())
    },
    [this](try_again_atom, uint64_t key, uint64_t token, caf::error& reason) {
      handle_try_again(key, token, reason);
    },
  };
  return caf::behavior{
    api.unbox().as_behavior_impl()->or_else(own.as_behavior_impl())};
}

caf::error supervisor_actor::refuse(const caf::message& msg) {
  auto what = caf::to_string(msg);
  detail::log().warn("vigil: {} (a supervisor) refused a message outside its "
                     "protocol: {}",
                     path_.empty() ? "<root>" : path_, what);
  return make_error(errc::unknown_message_type,
                    (path_.empty() ? std::string{"<root>"} : path_)
                      + " is a supervisor and takes no " + what
                      + " (see vigil/supervision/supervisor.hpp)");
}

caf::result<uint64_t> supervisor_actor::handle_start() {
  if (started_)
    return make_error(errc::running, path_);
  started_ = true;
  auto problems = check_child_specs(spec_, &rt_->types(), path_);
  if (!problems.empty()) {
    std::string text;
    for (auto& p : problems)
      text += (text.empty() ? "" : "; ") + p.to_string();
    auto err = make_error(errc::invalid_child_spec, text);
    quit(err);
    return err;
  }
  std::vector<uint64_t> keys;
  if (!simple())
    for (auto& cs : spec_.children)
      keys.push_back(add_child(cs).key);
  if (durable_saga())
    start_sagas(); // its fence goes first: before the node's orphans
  auto rp = make_response_promise<uint64_t>();
  start_seq(keys, 0, false, caf::error{},
            [this, rp](caf::error err, uint64_t failed) mutable {
              if (!err) {
                rp.deliver(uint64_t{1});
                if (sagas_) {
                  sagas_->steps_started = true;
                  sagas_steps_started();
                }
                return;
              }
              // OTP: a child that fails to start fails the supervisor.
              auto* c = find_key(failed);
              auto reason = make_error(
                errc::start_failed,
                "failed_to_start_child " + (c ? child_path(c->id) : path_)
                  + ": "
                  + describe(err));
              if (c != nullptr)
                set_st(*c, status::stopped);
              rp.deliver(reason);
              shutdown(reason);
            });
  return rp;
}

caf::result<void> supervisor_actor::handle_stop() {
  auto rp = make_response_promise();
  shutdown(caf::exit_reason::user_shutdown, rp);
  return rp;
}

void supervisor_actor::handle_exit_report(uint64_t key, uint64_t gen,
                                          caf::error& reason) {
  auto* c = find_key(key);
  if (stopping_ || c == nullptr || c->gen != gen
      || c->st != status::running || !from_handle(*c))
    return; // stale: that instance (or cell) is already handled
  on_child_exit(key, std::move(reason));
}

void supervisor_actor::handle_recovered(uint64_t key, uint64_t gen) {
  if (auto* c = find_key(key);
      c && c->st == status::degraded && gen > c->gen && from_handle(*c)) {
    // A report from an older probe than the last instance is stale.
    set_st(*c, status::running);
    c->gen = gen;
    auto who = child_path(c->id);
    emit(report{"probe", path_, "probe_succeeded",
                "the child answered its probe and runs again", who,
                c->restarts});
  }
}

void supervisor_actor::handle_child_down(caf::actor_addr& src,
                                         caf::error& reason) {
  if (stopping_)
    return;
  for (auto& kvp : children_) {
    auto& c = kvp.second;
    if (c.handle && c.handle.address() == src) {
      if (c.st == status::running)
        on_child_exit(kvp.first, std::move(reason));
      return;
    }
  }
}

void supervisor_actor::handle_try_again(uint64_t key, uint64_t token,
                                        caf::error& reason) {
  auto* c = find_key(key);
  if (c == nullptr || c->token != token || c->st != status::restarting)
    return;
  restart(key, std::move(reason));
}

caf::result<envelope> supervisor_actor::handle_envelope(envelope& e) {
  if (!spec_.saga.enabled)
    return make_error(errc::not_found,
                      path_ + " is a supervisor, not an agent");
  if (stopping_)
    return make_error(errc::shutting_down, path_);
  if (durable_saga())
    return durable_input(e);
  // A saga: each input runs in its own saga actor over the steps, at most
  // one per input id at a time (its steps' message ids derive from it).
  std::pair<uint64_t, uint64_t> input{e.origin, e.id};
  if (e.id != 0)
    if (auto i = finished_.find(input); i != finished_.end()) {
      counters::bump(rt_->stats().saga_outcomes_resent);
      return i->second; // a resent input: its outcome, not a second run
    }
  if (e.id != 0 && run_inputs_.count(input) > 0)
    return make_error(errc::duplicate,
                      path_ + ": a saga run of message id "
                        + std::to_string(e.id)
                        + " is in progress; its requester gets the outcome");
  auto run = spawn_saga_run(home_system(), rt_, step_paths(), spec_.saga,
                            caf::actor_cast<caf::actor>(this), runs_ended());
  monitor(run);
  if (e.id == 0) // minted by the run; tracked under its actor only
    input = {0, rt_->next_id()};
  runs_.emplace(run.address(), input);
  run_inputs_.emplace(input, run);
  delegate(run, run_saga_atom::value, std::move(e));
  return caf::delegated<envelope>{};
}

caf::result<child_info> supervisor_actor::handle_start_child(child_spec& cs) {
  if (stopping_)
    return make_error(errc::shutting_down, path_);
  if (simple())
    return make_error(errc::simple_one_for_one, path_);
  auto problems = check_child_spec(cs, spec_.flags, &rt_->types(), path_);
  if (spec_.saga.enabled)
    check_saga_step(cs, &rt_->types(), path_, problems);
  if (!problems.empty())
    return make_error(errc::invalid_child_spec,
                      problems.front().to_string());
  if (auto* c = find_id(cs.id))
    return c->st == status::running || c->st == status::degraded
             ? make_error(errc::already_started, child_path(c->id))
             : make_error(errc::already_present, child_path(c->id));
  auto key = add_child(std::move(cs)).key;
  return start_api(key, true);
}

caf::result<child_info>
supervisor_actor::handle_start_dynamic_child(params& extra,
                                             std::string& name) {
  if (stopping_)
    return make_error(errc::shutting_down, path_);
  if (!simple())
    return make_error(errc::invalid_child_spec,
                      path_ + " is not simple_one_for_one: pass a "
                              "child_spec");
  if (!template_)
    template_ = std::make_shared<const child_spec>(spec_.children.front());
  auto id = name;
  if (id.empty()) {
    id = template_->id + "-" + std::to_string(next_key_);
    // A named child may hold that id already: skip its number.
    while (find_id(id) != nullptr)
      id = template_->id + "-" + std::to_string(++next_key_);
  }
  if (auto* c = find_id(id))
    return make_error(errc::already_started, child_path(c->id));
  auto spec = template_;
  if (!extra.empty()) { // only then does the child need its own spec
    auto own = std::make_shared<child_spec>(*template_);
    for (auto& kvp : extra)
      own->params[kvp.first] = kvp.second;
    spec = std::move(own);
  }
  // Checked as a static child is: its name, and its params as this start
  // completes them (check_child_specs skips a template's params). The
  // template alone is checked once.
  if (!extra.empty() || !name.empty() || !template_checked_) {
    auto flags = spec_.flags;
    flags.strategy = strategy::one_for_one;
    auto problems = [&] {
      if (name.empty())
        return check_child_spec(*spec, flags, &rt_->types(), path_);
      child_spec named = *spec;
      named.id = id;
      return check_child_spec(named, flags, &rt_->types(), path_);
    }();
    if (!problems.empty())
      return make_error(errc::invalid_child_spec,
                        problems.front().to_string());
    if (extra.empty() && name.empty())
      template_checked_ = true;
  }
  auto key = add_child(std::move(id), std::move(spec)).key;
  return start_api(key, true);
}

caf::result<void> supervisor_actor::handle_terminate_child(std::string& id) {
  // While shutting down, the shutdown owns every child (OTP's
  // supervisor handles no call then).
  if (stopping_)
    return make_error(errc::shutting_down, path_);
  auto* c = find_id(id);
  if (c == nullptr)
    return make_error(errc::not_found, child_path(id));
  auto key = c->key;
  auto rp = make_response_promise();
  ++c->token; // cancels a pending restart
  forget_left_down(key); // the caller owns it now
  stop_one(key, false, [this, key, rp]() mutable {
    if (auto* c = find_key(key)) {
      set_st(*c, status::stopped);
      if (simple() || c->spec->restart == restart_type::temporary) {
        retire(*c);
        remove_child(key);
      }
    }
    rp.deliver(caf::unit);
  });
  return rp;
}

caf::result<child_info>
supervisor_actor::handle_restart_child(std::string& id) {
  if (stopping_)
    return make_error(errc::shutting_down, path_);
  auto c = stopped_child(id);
  if (!c)
    return std::move(c.error());
  forget_left_down((*c)->key); // the caller owns it now
  return start_api((*c)->key, false);
}

caf::result<void> supervisor_actor::handle_delete_child(std::string& id) {
  if (stopping_)
    return make_error(errc::shutting_down, path_);
  auto c = stopped_child(id);
  if (!c)
    return std::move(c.error());
  retire(**c);
  remove_child((*c)->key);
  return caf::unit;
}

std::vector<child_info> supervisor_actor::handle_which_children() {
  std::vector<child_info> out;
  out.reserve(children_.size());
  for (auto& kvp : children_)
    out.push_back(info(kvp.second));
  return out;
}

child_counts supervisor_actor::handle_count_children() {
  child_counts n;
  n.specs = simple() ? 1 : children_.size();
  for (auto& kvp : children_) {
    auto& c = kvp.second;
    if (c.st == status::running)
      ++n.active;
    if (c.spec->kind == child_kind::supervisor)
      ++n.supervisors;
    else
      ++n.workers;
  }
  return n;
}

} // namespace detail

caf::actor spawn_supervisor(caf::actor_system& sys,
                            std::shared_ptr<runtime> rt, supervisor_spec spec,
                            std::string path, caf::actor parent) {
  return sys.spawn<detail::supervisor_actor>(std::move(rt), std::move(spec),
                                             std::move(path),
                                             std::move(parent));
}

} // namespace vigil
