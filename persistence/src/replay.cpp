// store::replay_dead_letters: puts dead letters back into their journal
// agent's journal, so the agent applies them when it next runs (and an
// effect's back into its outbox, so that it is dispatched again).

#include "vigil/persistence/store.hpp"

#include <unordered_set>

#include "store_impl.hpp"
#include "vigil/persistence/approvals.hpp"
#include "vigil/persistence/shared.hpp"

namespace vigil {

namespace {

/// Raises `seq` past the last key of `path` in `which` (a `path_key` db:
/// journal, outbox), so that a replayed record comes after it.
op_result past_last(MDB_txn* t, MDB_dbi dbi, const char* which,
                    const std::string& path, uint64_t& seq) {
  lmdb::cursor c;
  if (auto rc = c.open(t, dbi); rc != MDB_SUCCESS)
    return {rc, which, "mdb_cursor_open"};
  auto upper = path_key(path, UINT64_MAX);
  MDB_val ck = lmdb::val(upper), cv;
  auto rc = c.get(ck, cv, MDB_SET_RANGE);
  rc = rc == MDB_SUCCESS ? c.get(ck, cv, MDB_PREV) : c.get(ck, cv, MDB_LAST);
  if (rc == MDB_SUCCESS) {
    std::string_view p;
    uint64_t last = 0;
    if (split_path_key({static_cast<const char*>(ck.mv_data), ck.mv_size}, p,
                       last)
        && p == path)
      seq = std::max(seq, last + 1);
  }
  return {};
}

/// An effect replayed whose approval a person rejected, or which expired
/// (it is a dead letter for that): the approval is dropped, so that the
/// effect's next dispatch asks a person again, as a first one does (the
/// key is unchanged, and a decided approval under it would answer the
/// same again forever). One approved, or still pending, is kept. What was
/// dropped is said in `note` (empty: nothing to drop).
op_result decided_approval(MDB_txn* t, MDB_dbi approvals,
                           const records::DeadLetter& dl,
                           const std::string& id_text,
                           std::string& note) {
  auto& key = dl.effect().key();
  if (key.empty())
    return {};
  auto k = lmdb::val(key);
  MDB_val v;
  auto rc = mdb_get(t, approvals, &k, &v);
  if (rc == MDB_NOTFOUND)
    return {};
  if (rc != MDB_SUCCESS)
    return {rc, "approvals", "mdb_get"};
  records::ApprovalRecord rec;
  if (decode_record(detail::view(v), rec) != record_fault::none)
    return {}; // listed by `vigil approvals list` with its fault; kept
  bool known = true;
  auto state = state_of(rec, &known);
  if (!known
      || (state != approval_state::rejected
          && state != approval_state::expired))
    return {};
  auto was = std::string{to_string(state)}
             + (rec.decided_by().empty() ? "" : " by " + rec.decided_by())
             + (rec.reason().empty() ? "" : ": " + rec.reason());
  note = id_text + ": approval " + approval_id(key) + " of " + dl.path()
         + "'s effect on " + rec.tool() + " was " + was
         + "; its next dispatch asks again";
  return {};
}

} // namespace

/// A task that ran out of attempts: ready again in its queue, its attempts
/// reset, if its record still says it is dead; the letter is removed.
op_result store::impl::replay_task(MDB_txn* t, const records::DeadLetter& dl,
                                   const std::string& id_text,
                                   std::vector<std::string>& skipped) {
  auto& d = *this;
  auto& q = dl.queue();
  auto tk = shared_key::task(q, dl.task().id());
  auto k = lmdb::val(tk);
  MDB_val v;
  records::TaskRecord task;
  auto rc = mdb_get(t, d.dbi(db::shared), &k, &v);
  if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
    return {rc, "shared", "mdb_get", tk};
  if (rc == MDB_NOTFOUND
      || decode_record(detail::view(v), task) != record_fault::none
      || task.state() != "dead") {
    skipped.push_back(id_text + ": task " + std::to_string(dl.task().id())
                      + " of queue \"" + q
                      + "\" is not dead in this data dir (gone, unreadable, or "
                        "replayed before); purge the letter");
    return {};
  }
  task.set_state("ready");
  task.set_attempts(0);
  task.set_done_ms(0);
  if (auto r = d.mutate(t, {mutation::op::put, db::shared, tk,
                            encode_record(task)});
      r.rc != MDB_SUCCESS)
    return r;
  if (auto r = d.mutate(t, {mutation::op::put, db::shared,
                            shared_key::ready(q, task.id()), {}});
      r.rc != MDB_SUCCESS)
    return r;
  char buf[8];
  detail::put_be64(buf, dl.seq());
  return d.mutate(t, {mutation::op::del, db::dead_letters,
                      std::string{buf, 8}, {}});
}

status store::replay_dead_letters(const std::vector<uint64_t>& seqs,
                                  bool all,
                                  std::vector<std::string>& problems,
                                  size_t& replayed,
                                  std::vector<std::string>* notes) {
  auto& d = *impl_;
  replayed = 0;
  problems.clear();
  std::vector<records::DeadLetter> dls;
  if (auto st = dead_letters(dls))
    return st;
  std::vector<const records::DeadLetter*> chosen;
  if (all) {
    for (auto& x : dls)
      chosen.push_back(&x);
  } else {
    for (auto seq : seqs) {
      auto i = std::find_if(dls.begin(), dls.end(),
                            [&](auto& x) { return x.seq() == seq; });
      if (i == dls.end())
        problems.push_back("dead letter " + std::to_string(seq)
                           + ": not found");
      else
        chosen.push_back(&*i);
    }
  }
  // Paths that a journal agent's cell named in a letter: journal agents,
  // even if they have no record yet (see DeadLetter.journal).
  std::unordered_set<std::string> marked;
  for (auto& x : dls)
    if (x.journal())
      marked.insert(x.path());
  size_t n = 0;
  std::vector<std::string> skipped;
  std::vector<std::string> reopened; // (notes)
  auto st = d.write([&](MDB_txn* t) -> op_result {
    n = 0;
    skipped.clear();
    reopened.clear();
    for (auto* dl : chosen) {
      auto id_text = "dead letter " + std::to_string(dl->seq());
      if (dl->has_task()) {
        if (auto r = d.replay_task(t, *dl, id_text, skipped);
            r.rc != MDB_SUCCESS)
          return r;
        n += skipped.empty() || skipped.back().rfind(id_text, 0) != 0;
        continue;
      }
      if (!dl->raw().empty() || dl->env().type().empty()) {
        skipped.push_back(id_text + ": a quarantined record, not an envelope; "
                          "inspect it, then purge it");
        continue;
      }
      if (dl->has_effect()) {
        // An effect: back into its agent's outbox, under its key, after
        // the agent's last outbox entry.
        auto skey = dl->path();
        auto k = lmdb::val(skey);
        MDB_val v;
        records::Snapshot snap;
        auto rc = mdb_get(t, d.dbi(db::snapshots), &k, &v);
        if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
          return {rc, "snapshots", "mdb_get", skey};
        if (rc == MDB_NOTFOUND
            || decode_record(detail::view(v), snap) != record_fault::none
            || snap.durability() != 2) {
          skipped.push_back(id_text + ": the effect's agent " + dl->path()
                            + " has no readable journal record in this "
                              "data dir; only a journal agent's outbox "
                              "takes an effect back");
          continue;
        }
        auto seq = std::max<uint64_t>(snap.next_outbox(), 1);
        if (auto r = past_last(t, d.dbi(db::outbox), "outbox", dl->path(),
                               seq);
            r.rc != MDB_SUCCESS)
          return r;
        records::OutboxEntry oe;
        oe.set_format(store::format);
        oe.set_seq(seq);
        *oe.mutable_effect() = dl->effect();
        if (auto r = d.mutate(t, {mutation::op::put, db::outbox,
                                  path_key(dl->path(), seq),
                                  encode_record(oe)});
            r.rc != MDB_SUCCESS)
          return r;
        snap.set_next_outbox(seq + 1);
        if (auto r = d.mutate(t, {mutation::op::put, db::snapshots, skey,
                                  encode_record(snap)});
            r.rc != MDB_SUCCESS)
          return r;
        std::string note;
        if (auto r = decided_approval(t, d.dbi(db::approvals), *dl, id_text,
                                      note);
            r.rc != MDB_SUCCESS)
          return r;
        if (!note.empty()) {
          if (auto r = d.mutate(t, {mutation::op::del, db::approvals,
                                    dl->effect().key(), {}});
              r.rc != MDB_SUCCESS)
            return r;
          reopened.push_back(std::move(note));
        }
        char buf[8];
        detail::put_be64(buf, dl->seq());
        if (auto r = d.mutate(t, {mutation::op::del, db::dead_letters,
                                  std::string{buf, 8}, {}});
            r.rc != MDB_SUCCESS)
          return r;
        ++n;
        continue;
      }
      if ((dl->env().flags() & 2u) != 0 && dl->env().deadline() != 0) {
        // envelope::start_deadline_flag: its sender (a saga) was told it
        // did not run and went on; running it now would run a step that
        // nothing compensates.
        skipped.push_back(id_text + ": " + dl->path()
                          + " was sent to start by a deadline (a saga "
                            "step), and its sender was told it did not "
                            "run; replaying it would run it outside its "
                            "saga: purge it, or run the saga again");
        continue;
      }
      if (dl->env().type() == "vigil.SagaCompensate"
          && dl->reason().rfind("compensation_failed", 0) != 0
          && dl->reason().rfind("in_doubt", 0) != 0) {
        // A step's own letter of a compensation attempt that failed there.
        // The saga retried it under another id, so running it again could
        // undo twice; the saga's own letter (compensation_failed) is the
        // one to replay when the compensation is owed.
        skipped.push_back(id_text + ": " + dl->path()
                          + " failed this attempt of a saga's compensation, "
                            "and the saga retried it; replay the saga's "
                            "compensation_failed letter for it if there is "
                            "one, or, if the saga's outcome says `accepted` "
                            "for this step, resend it with a new id; else "
                            "purge it");
        continue;
      }
      if (dl->refused()) {
        skipped.push_back(id_text + ": " + dl->path()
                          + " refused it, and committed the refusal with "
                            "its effects; replaying it would repeat them: "
                            "purge it, or resend it with a new id if it "
                            "must run again");
        continue;
      }
      auto skey = dl->path();
      auto k = lmdb::val(skey);
      MDB_val v;
      records::Snapshot snap;
      auto rc = mdb_get(t, d.dbi(db::snapshots), &k, &v);
      if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
        return {rc, "snapshots", "mdb_get", skey};
      if (rc == MDB_NOTFOUND && marked.count(dl->path()) > 0) {
        // A journal agent that never wrote a record (it consumed nothing,
        // and its first record did not land): its own cell said what it
        // is. The replay writes its first record.
        snap.set_format(store::format);
        snap.set_path(dl->path());
        snap.set_agent("?"); // its cell writes the type at its next commit
        snap.set_durability(2);
        snap.set_next_seq(1);
      } else if (rc == MDB_SUCCESS) {
        if (auto f = decode_record(detail::view(v), snap);
            f != record_fault::none) {
          skipped.push_back(
            id_text + ": the record of " + dl->path()
            + " in [snapshots] cannot be read ("
            + describe(f, detail::view(v), snap)
            + "); restart the node so that recovery moves it to the dead "
              "letters, then replay again");
          continue;
        }
      }
      if (!(rc == MDB_NOTFOUND && marked.count(dl->path()) > 0)
          && (rc == MDB_NOTFOUND || snap.durability() != 2)) {
        skipped.push_back(id_text + ": " + dl->path()
                          + " is not a journal agent in this data dir; "
                            "only journal agents take replays");
        continue;
      }
      auto seq = std::max<uint64_t>(snap.next_seq(), 1);
      // Past any journal entry of the path, too.
      if (auto r = past_last(t, d.dbi(db::journal), "journal", dl->path(),
                             seq);
          r.rc != MDB_SUCCESS)
        return r;
      // The id may have been accepted since (resent by its producer, or a
      // dead letter of it replayed already): then it is applied, or will
      // be, and this copy must not be. Only an unaccepted id, or one whose
      // guard still names the entry that consumed this very dead letter,
      // is taken back. Id 0 is an id like any other: the live accept
      // guards it too.
      {
        auto id = dl->env().id();
        auto gkey = guard_key(dl->path(), dl->env().origin(), id);
        auto gk = lmdb::val(gkey);
        MDB_val gv;
        rc = mdb_get(t, d.dbi(db::idempotency), &gk, &gv);
        if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
          return {rc, "idempotency", "mdb_get", gkey};
        if (rc == MDB_SUCCESS) {
          records::IdempotencyRecord guard;
          bool parsed = decode_record(detail::view(gv), guard)
                        == record_fault::none;
          if (!parsed || dl->consumed_seq() == 0
              || guard.seq() != dl->consumed_seq()) {
            skipped.push_back(
              id_text + ": message id " + std::to_string(id)
              + (dl->env().origin() != 0
                   ? " (origin " + std::to_string(dl->env().origin()) + ")"
                   : std::string{})
              + " of "
              + dl->path() + " was accepted "
              + (parsed ? "as journal entry " + std::to_string(guard.seq())
                        : std::string{"(its guard does not parse)"})
              + (dl->consumed_seq() != 0
                   ? ", not the one that failed ("
                       + std::to_string(dl->consumed_seq()) + ")"
                   : ", and this copy never was")
              + "; replaying it would apply it twice: purge it, or resend "
                "it with a new id if it must run again");
            continue;
          }
        }
      }
      records::JournalEntry je;
      je.set_format(store::format);
      je.set_seq(seq);
      *je.mutable_env() = dl->env();
      je.mutable_env()->set_attempt(1);
      je.mutable_env()->set_deadline(0); // a replay is not too late
      auto jv = encode_record(je);
      auto jk = path_key(dl->path(), seq);
      if (auto r = d.mutate(t, {mutation::op::put, db::journal, jk, jv});
          r.rc != MDB_SUCCESS)
        return r;
      // The id's guard now names the new journal entry (and a fresh time),
      // so compaction keeps it while the envelope waits and a redelivery
      // of the id stays a duplicate.
      if (auto r = d.mutate(t, {mutation::op::put, db::idempotency,
                                guard_key(dl->path(), dl->env().origin(),
                                          dl->env().id()),
                                idempotency_value(seq)});
          r.rc != MDB_SUCCESS)
        return r;
      snap.set_next_seq(seq + 1);
      auto sv = encode_record(snap);
      if (auto r = d.mutate(t, {mutation::op::put, db::snapshots, skey, sv});
          r.rc != MDB_SUCCESS)
        return r;
      char buf[8];
      detail::put_be64(buf, dl->seq());
      if (auto r = d.mutate(t, {mutation::op::del, db::dead_letters,
                                std::string{buf, 8}, {}});
          r.rc != MDB_SUCCESS)
        return r;
      ++n;
    }
    return {};
  });
  if (st)
    return st;
  replayed = n;
  problems.insert(problems.end(), skipped.begin(), skipped.end());
  if (notes != nullptr)
    notes->insert(notes->end(), reopened.begin(), reopened.end());
  return {};
}

} // namespace vigil
