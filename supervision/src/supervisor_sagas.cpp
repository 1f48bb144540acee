// A durable saga's supervisor: owns the saga's records (runs and outcome
// outbox) at the node's writer, resumes unfinished runs when it starts,
// answers a resent input from the stored run, delivers outcomes to
// outcome_to, and drops finished runs after the saga's retention.

#include <chrono>

#include <spdlog/spdlog.h>

#include "saga_run.hpp"
#include "supervisor_actor.hpp"
#include "vigil/actors/detail/envelope_record.hpp"
#include "vigil/actors/detail/log.hpp"
#include "vigil/persistence/record.hpp"

namespace vigil::detail {

namespace {

/// Records a compaction step looks at.
constexpr size_t compact_step = 1000;

/// How often finished runs older than the retention are looked for.
caf::timespan compact_every(milliseconds retention) {
  auto every = std::min<milliseconds>(retention / 4, std::chrono::minutes{1});
  return std::max<milliseconds>(every, milliseconds{100});
}

envelope outcome_envelope(const SagaOutcome& o) {
  envelope out;
  out.type = SagaOutcome::descriptor()->full_name();
  o.SerializeToString(&out.payload);
  return out;
}

} // namespace

void supervisor_actor::start_sagas() {
  sagas_ = std::make_unique<saga_home>();
  auto& h = *sagas_;
  h.cfg = std::make_shared<saga_journal>();
  h.cfg->sup_path = path_;
  h.cfg->writer = rt_->writer();
  h.cfg->outcome_to = spec_.saga.outcome_to;
  for (auto& c : spec_.children)
    h.cfg->journal_steps.push_back(c.durability.mode
                                   == durability_mode::journal);
  if (!h.cfg->writer) {
    h.granted = true;
    h.error = path_ + " is a durable saga and needs a data dir; set "
                      "node.data_dir (vigil run --data-dir)";
    return;
  }
  request(h.cfg->writer, caf::infinite, fence_atom::value, path_,
          uint64_t{0})
    .then([this](fence_grant& g) { on_saga_grant(g); },
          [this](caf::error& err) {
            if (!sagas_)
              return;
            sagas_->granted = true;
            sagas_->error = path_ + " cannot take ownership of its saga "
                                    "runs: "
                            + describe(err);
            sagas_steps_started();
          });
}

void supervisor_actor::on_saga_grant(fence_grant& g) {
  if (!sagas_)
    return;
  auto& h = *sagas_;
  if (h.refencing) {
    h.refencing = false;
    if (!g.error.empty())
      return quit(make_error(errc::storage_failed, g.error));
    h.cfg->owner->store(g.owner.bits); // every live run writes under it
    auto waiters = std::move(h.commit_waiters);
    h.commit_waiters.clear();
    for (auto& run : waiters)
      send(run, saga_commit_retry_atom::value);
    auto only = std::move(h.to_resume);
    h.to_resume.clear();
    resume_runs(&only);
    dispatch_saga_outbox(); // what came due meanwhile
    return;
  }
  h.granted = true;
  if (!g.error.empty()) {
    h.error = path_ + " cannot read its saga records: " + g.error;
  } else {
    h.cfg->owner->store(g.owner.bits);
    for (auto& oe : g.view.outbox)
      h.outbox.emplace(oe.seq(),
                       std::make_pair(oe.to(), from_record(oe.env())));
  }
  sagas_steps_started();
}

void supervisor_actor::sagas_steps_started() {
  auto& h = *sagas_;
  if (!h.granted || !h.steps_started || h.ready)
    return;
  h.ready = true;
  if (h.error.empty()) {
    resume_runs(nullptr);
    for (auto& kvp : h.outbox)
      h.due.push_back(kvp.first);
    dispatch_saga_outbox();
    saga_compact();
  } else {
    detail::log().error("vigil: {}", h.error);
  }
  auto waiting = std::move(h.waiting);
  h.waiting.clear();
  for (auto& [e, rp] : waiting)
    route_input(std::move(e), std::move(rp));
}

caf::actor supervisor_actor::spawn_run() {
  auto run = spawn_durable_saga_run(home_system(), rt_, step_paths(),
                                    spec_.saga,
                                    caf::actor_cast<caf::actor>(this),
                                    runs_ended(), sagas_->cfg);
  monitor(run);
  return run;
}

void supervisor_actor::resume_runs(
  const std::set<std::pair<uint64_t, uint64_t>>* only) {
  auto& st = rt_->storage();
  if (!st || stopping_)
    return;
  std::vector<std::pair<std::string, std::string>> rows;
  if (auto s = st->scan_prefix(db::sagas, runs_prefix(), rows)) {
    detail::log().error("vigil: {} cannot read its saga runs: {}", path_,
                        s.message());
    return;
  }
  size_t resumed = 0;
  for (auto& [key, raw] : rows) {
    std::string_view p;
    uint64_t origin = 0, id = 0;
    if (!split_guard_key(key, p, origin, id) || p != path_)
      continue;
    records::SagaRun rec;
    if (auto f = decode_record(raw, rec); f != record_fault::none) {
      detail::log().error("vigil: {} [sagas] \"{}\": {}; the run is left as it "
                          "is (vigil inspect shows it)",
                          path_, printable_key(key), describe(f, raw, rec));
      continue;
    }
    if (rec.phase() == "finished")
      continue;
    std::pair<uint64_t, uint64_t> input{origin, id};
    if (only != nullptr && only->count(input) == 0)
      continue;
    if (run_inputs_.count(input) > 0)
      continue;
    if (auto why = other_steps(rec, step_paths()); !why.empty()) {
      detail::log().error("vigil: {} cannot resume a saga run: {}", path_, why);
      continue;
    }
    auto run = spawn_run();
    runs_.emplace(run.address(), input);
    run_inputs_.emplace(input, run);
    send(run, saga_resume_atom::value, rec.SerializeAsString());
    ++resumed;
  }
  if (resumed > 0 && only == nullptr)
    detail::log().info("vigil: {} resumed {} saga run(s) from its data dir",
                       path_, resumed);
}

caf::result<envelope> supervisor_actor::durable_input(envelope& e) {
  if (!sagas_)
    return make_error(errc::not_running,
                      path_ + " has not started yet; send it again once it "
                              "runs");
  auto rp = make_response_promise<envelope>();
  if (e.id == 0) // the run's key and its steps' ids derive from it
    rt_->stamp(e, 0, 0, nullptr);
  if (!sagas_->ready)
    sagas_->waiting.emplace_back(std::move(e), rp);
  else
    route_input(std::move(e), rp);
  return rp;
}

void supervisor_actor::route_input(envelope e, caf::response_promise rp) {
  auto& h = *sagas_;
  if (!h.error.empty())
    return rp.deliver(make_error(errc::not_running, h.error));
  if (stopping_)
    return rp.deliver(make_error(errc::shutting_down, path_));
  std::pair<uint64_t, uint64_t> input{e.origin, e.id};
  if (auto i = finished_.find(input); i != finished_.end()) {
    counters::bump(rt_->stats().saga_outcomes_resent);
    return rp.deliver(i->second);
  }
  if (auto i = run_inputs_.find(input); i != run_inputs_.end()) {
    // In progress: this requester gets the outcome too.
    rp.delegate(i->second, run_saga_atom::value, std::move(e));
    return;
  }
  // Known to the data dir: finished (its outcome), or waiting to be
  // resumed after a failure (resumed now, with this requester).
  std::string raw;
  bool found = false;
  auto key = saga_run_key(path_, e.origin, e.id);
  if (auto s = rt_->storage()->get(db::sagas, key, raw, found))
    return rp.deliver(make_error(errc::storage_failed, s.message()));
  records::SagaRun rec;
  if (found) {
    if (auto f = decode_record(raw, rec); f != record_fault::none)
      return rp.deliver(make_error(
        errc::storage_failed, "data dir [sagas] \"" + printable_key(key)
                                + "\": " + describe(f, raw, rec)));
  }
  if (found && rec.phase() == "finished") {
    counters::bump(rt_->stats().saga_outcomes_resent);
    return rp.deliver(outcome_envelope(rec.outcome()));
  }
  if (found)
    if (auto why = other_steps(rec, step_paths()); !why.empty())
      return rp.deliver(make_error(errc::not_running, path_ + ": " + why));
  auto run = spawn_run();
  runs_.emplace(run.address(), input);
  run_inputs_.emplace(input, run);
  h.to_resume.erase(input);
  if (found) {
    send(run, saga_resume_atom::value, rec.SerializeAsString());
    rp.delegate(run, run_saga_atom::value, std::move(e));
    return;
  }
  rp.delegate(run, run_saga_atom::value, std::move(e));
}

void supervisor_actor::durable_run_down(std::pair<uint64_t, uint64_t> input,
                                        const caf::error& reason) {
  if (!sagas_ || stopping_ || is_normal(reason))
    return;
  if (is(reason, errc::bad_payload)) {
    // Its record cannot be resumed by this tree; resuming again would
    // fail again. It stays on disk (vigil inspect sagas shows it).
    detail::log().error("vigil: {}: a saga run cannot resume: {}", path_,
                        describe(reason));
    return;
  }
  auto& h = *sagas_;
  if (finished_.count(input) > 0)
    return;
  detail::log().warn(
    "vigil: {}: a saga run stopped before it finished ({}); it "
    "resumes from its last record",
    path_, describe(reason));
  h.to_resume.insert(input);
  if (h.refencing)
    return; // resumed once fenced
  delayed_send<caf::message_priority::high>(this, spec_.saga.retry_delay, saga_retry_atom::value);
}

void supervisor_actor::saga_commit_failed(caf::actor run, uint64_t owner) {
  if (!sagas_ || stopping_)
    return;
  auto& h = *sagas_;
  if (owner != h.cfg->owner->load() && !h.refencing) {
    // Fenced anew since it was sent: send it again under the new owner.
    send(run, saga_commit_retry_atom::value);
    return;
  }
  h.commit_waiters.push_back(std::move(run));
  refence_sagas();
}

void supervisor_actor::refence_sagas() {
  auto& h = *sagas_;
  if (h.refencing)
    return;
  // A failed commit poisons the owner's epoch at the writer: take the
  // path again (which also waits for every write of it).
  h.refencing = true;
  request(h.cfg->writer, caf::infinite, fence_atom::value, path_,
          owner_ref{h.cfg->owner->load()}.epoch())
    .then([this](fence_grant& g) { on_saga_grant(g); },
          [this](caf::error& err) {
            quit(make_error(errc::storage_failed,
                            path_ + " cannot take its saga runs again: "
                              + describe(err)));
          });
}

void supervisor_actor::saga_outcome_due(const envelope& out) {
  if (!sagas_ || spec_.saga.outcome_to.empty())
    return;
  auto& h = *sagas_;
  if (h.outbox.emplace(out.id, std::make_pair(spec_.saga.outcome_to, out))
        .second)
    h.due.push_back(out.id);
  dispatch_saga_outbox();
}

void supervisor_actor::write_saga(write_item item) {
  send(sagas_->cfg->writer, write_atom::value, uint64_t{0},
       owned_write{owner_ref{sagas_->cfg->owner->load()}, std::move(item)});
}

void supervisor_actor::dispatch_saga_outbox() {
  static constexpr size_t window = 64;
  auto& h = *sagas_;
  if (h.refencing)
    return;
  while (!h.due.empty() && h.in_flight < window) {
    auto seq = h.due.front();
    h.due.pop_front();
    auto i = h.outbox.find(seq);
    if (i == h.outbox.end())
      continue;
    auto not_delivered = [this, seq] {
      auto& h = *sagas_;
      ++h.outbox_failures;
      auto wait = spec_.saga.retry_delay
                  * (1 << std::min<uint32_t>(h.outbox_failures, 8));
      delayed_send<caf::message_priority::high>(this, std::min<milliseconds>(wait, std::chrono::seconds{30}),
                   saga_outbox_atom::value, seq);
    };
    auto dest = rt_->lookup(i->second.first);
    if (!dest) {
      not_delivered();
      continue;
    }
    ++h.in_flight;
    request(dest, std::chrono::seconds{30}, i->second.second)
      .then(
        [this, seq, not_delivered](envelope& rep) {
          if (!sagas_)
            return;
          --sagas_->in_flight;
          if (rep.degraded())
            return not_delivered();
          sagas_->outbox_failures = 0;
          if (sagas_->outbox.erase(seq) > 0)
            write_saga(outbox_done_item(path_, seq));
          dispatch_saga_outbox();
        },
        [this, seq, not_delivered](caf::error& err) {
          if (!sagas_)
            return;
          --sagas_->in_flight;
          if (undelivered(err))
            return not_delivered();
          // Refused by the receiver: delivered, and its answer stands.
          detail::log().warn(
            "vigil: {}: the outcome sent to {} was refused: {}", path_,
            spec_.saga.outcome_to, describe(err));
          if (sagas_->outbox.erase(seq) > 0)
            write_saga(outbox_done_item(path_, seq));
          dispatch_saga_outbox();
        });
  }
}

void supervisor_actor::saga_compact() {
  auto& h = *sagas_;
  auto& st = rt_->storage();
  if (!st || stopping_)
    return;
  std::vector<std::pair<std::string, std::string>> rows;
  bool more = false;
  if (!st->scan_prefix(db::sagas, runs_prefix(), rows, h.compact_from,
                       compact_step, &more)) {
    auto cutoff = unix_ms() - spec_.saga.retention.count();
    write_item item;
    for (auto& [key, raw] : rows) {
      records::SagaRun rec;
      if (decode_record(raw, rec) != record_fault::none)
        continue;
      if (rec.phase() == "finished" && rec.finished_ms() < cutoff) {
        mutation del;
        del.what = mutation::op::del;
        del.where = db::sagas;
        del.key = key;
        item.muts.push_back(std::move(del));
      }
    }
    if (!item.muts.empty())
      write_saga(std::move(item));
    h.compact_from = more && !rows.empty() ? rows.back().first : "";
  }
  delayed_send<caf::message_priority::high>(this, more ? caf::timespan{0}
                          : compact_every(spec_.saga.retention),
               saga_compact_atom::value);
}

} // namespace vigil::detail
