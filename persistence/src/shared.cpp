// Shared state inside a write transaction: compare-and-swap on versioned
// keys, and a leased task queue (see vigil/persistence/shared.hpp).

#include "vigil/persistence/shared.hpp"

#include <chrono>

#include "store_impl.hpp"
#include "vigil/persistence/record.hpp"

namespace vigil {

namespace {

using records::KvRecord;
using records::SharedOp;
using records::SharedResult;
using records::TaskRecord;

/// LMDB keys stop at 511 bytes: a writer whose last-write key would be
/// longer has none kept (its path is very long).
constexpr size_t max_mine_key = 500;

} // namespace

uint64_t store::impl::wall_now() const {
  if (opts.wall_ms)
    return opts.wall_ms();
  using namespace std::chrono;
  return static_cast<uint64_t>(
    duration_cast<milliseconds>(system_clock::now().time_since_epoch())
      .count());
}

/// One operation inside a write transaction of `d`.
class store::impl::shared_txn {
public:
  shared_txn(impl& d, MDB_txn* t, const SharedOp& op,
             SharedResult& res)
    : d_(d), t_(t), op_(op), res_(res), now_(d.wall_now()),
      dbi_(d.dbi(db::shared)) {
    // nop
  }

  op_result run() {
    if (auto why = check_shared_op(op_); !why.empty())
      return invalid(std::move(why));
    switch (op_.kind()) {
      case SharedOp::KV_GET: return kv_get();
      case SharedOp::KV_PUT: return kv_write(false);
      case SharedOp::KV_DELETE: return kv_write(true);
      case SharedOp::ENQUEUE: return enqueue();
      case SharedOp::CLAIM: return claim();
      default: return settle();
    }
  }

private:
  op_result invalid(std::string why) {
    res_.set_status(SharedResult::INVALID);
    res_.set_detail(std::string{to_string(op_.kind())} + " on \""
                    + op_.name() + "\": " + why);
    return {};
  }

  op_result corrupt(const std::string& key, std::string why) {
    res_.set_status(SharedResult::CORRUPT);
    res_.set_detail("shared record \"" + detail::printable(key)
                    + "\" cannot be read: " + why);
    return {};
  }

  /// Reads `key` into `m`: found (true), absent (false), or a fault that
  /// `corrupt` reported (`bad`).
  op_result read(const std::string& key, google::protobuf::MessageLite& m,
                 bool& found, bool& bad) {
    found = bad = false;
    auto k = lmdb::val(key);
    MDB_val v;
    auto rc = mdb_get(t_, dbi_, &k, &v);
    if (rc == MDB_NOTFOUND)
      return {};
    if (rc != MDB_SUCCESS)
      return {rc, "shared", "mdb_get", key};
    if (auto f = decode_record(detail::view(v), m); f != record_fault::none) {
      bad = true;
      return corrupt(key, describe(f, detail::view(v), m));
    }
    found = true;
    return {};
  }

  op_result put(const std::string& key, std::string_view value) {
    auto k = lmdb::val(key);
    MDB_val v{value.size(), const_cast<char*>(value.data())};
    if (auto rc = mdb_put(t_, dbi_, &k, &v, 0); rc != MDB_SUCCESS)
      return {rc, "shared", "mdb_put", key};
    return {};
  }

  op_result put(const std::string& key,
                const google::protobuf::MessageLite& m) {
    return put(key, encode_record(m));
  }

  op_result del(const std::string& key) {
    auto k = lmdb::val(key);
    auto rc = mdb_del(t_, dbi_, &k, nullptr);
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
      return {rc, "shared", "mdb_del", key};
    return {};
  }

  /// The first key at or after `from` ("" if none).
  op_result first_at(const std::string& from, std::string& key) {
    key.clear();
    lmdb::cursor c;
    if (auto rc = c.open(t_, dbi_); rc != MDB_SUCCESS)
      return {rc, "shared", "mdb_cursor_open"};
    MDB_val k = lmdb::val(from), v;
    auto rc = c.get(k, v, MDB_SET_RANGE);
    if (rc == MDB_SUCCESS)
      key = std::string{detail::view(k)};
    else if (rc != MDB_NOTFOUND)
      return {rc, "shared", "mdb_cursor_get"};
    return {};
  }

  /// Deletes the history of the op's key up to version `upto`: usually
  /// one entry; more after `kv_history` was lowered.
  op_result prune_history(uint64_t upto) {
    auto from = shared_key::history(op_.name(), op_.key(), 0);
    auto last = shared_key::history(op_.name(), op_.key(), upto);
    for (;;) {
      std::string key;
      if (auto r = first_at(from, key); r.rc != MDB_SUCCESS)
        return r;
      if (key.empty() || key.size() != from.size()
          || key.compare(0, from.size() - 8, from, 0, from.size() - 8) != 0
          || key > last)
        return {};
      if (auto r = del(key); r.rc != MDB_SUCCESS)
        return r;
    }
  }

  op_result kv_get() {
    bool found, bad;
    auto r = read(shared_key::kv(op_.name(), op_.key()),
                  *res_.mutable_entry(), found, bad);
    if (r.rc == MDB_SUCCESS && !bad)
      res_.set_status(SharedResult::OK);
    if (r.rc == MDB_SUCCESS && !bad)
      return read_mine();
    return r;
  }

  /// The op's writer's last write of the key, into the result.
  op_result read_mine() {
    auto mk = shared_key::mine(op_.name(), op_.key(), op_.writer());
    if (op_.writer().empty() || mk.size() > max_mine_key)
      return {};
    auto k = lmdb::val(mk);
    MDB_val v;
    auto rc = mdb_get(t_, dbi_, &k, &v);
    if (rc == MDB_NOTFOUND)
      return {};
    if (rc != MDB_SUCCESS)
      return {rc, "shared", "mdb_get", mk};
    if (v.mv_size != 24)
      return corrupt(mk, "a last-write record of " + std::to_string(v.mv_size)
                           + " bytes, not 24");
    auto* p = static_cast<const char*>(v.mv_data);
    res_.set_mine_version(detail::get_be64(p));
    res_.set_mine_origin(detail::get_be64(p + 8));
    res_.set_mine_id(detail::get_be64(p + 16));
    return {};
  }

  op_result kv_write(bool erase) {
    auto key = shared_key::kv(op_.name(), op_.key());
    KvRecord cur;
    bool found, bad;
    if (auto r = read(key, cur, found, bad); r.rc != MDB_SUCCESS || bad)
      return r;
    bool live = found && !cur.deleted();
    auto expected = op_.expected_version();
    // 0: absent (never written, or deleted), whatever the version. A put
    // may also name a tombstone's version: it then re-creates the key only
    // if nobody wrote it since that delete. A delete needs a live key.
    bool match = expected == 0
                   ? !live
                   : found && cur.version() == expected && (live || !erase);
    if (!match) {
      res_.set_status(SharedResult::CONFLICT);
      *res_.mutable_entry() = std::move(cur);
      return read_mine();
    }
    KvRecord next;
    next.set_format(1);
    next.set_version(cur.version() + 1);
    next.set_deleted(erase);
    if (!erase)
      next.set_value(op_.value());
    next.set_writer(op_.writer());
    next.set_writer_origin(op_.writer_origin());
    next.set_writer_id(op_.writer_id());
    next.set_written_ms(now_);
    auto bytes = encode_record(next);
    if (auto r = put(key, bytes); r.rc != MDB_SUCCESS)
      return r;
    if (auto r = put(shared_key::history(op_.name(), op_.key(),
                                         next.version()),
                     bytes);
        r.rc != MDB_SUCCESS)
      return r;
    auto keep = std::max<uint32_t>(1, d_.opts.kv_history);
    if (next.version() > keep)
      if (auto r = prune_history(next.version() - keep); r.rc != MDB_SUCCESS)
        return r;
    if (auto mk = shared_key::mine(op_.name(), op_.key(), op_.writer());
        !op_.writer().empty() && mk.size() <= max_mine_key) {
      char buf[24];
      detail::put_be64(buf, next.version());
      detail::put_be64(buf + 8, op_.writer_origin());
      detail::put_be64(buf + 16, op_.writer_id());
      if (auto r = put(mk, std::string_view{buf, 24});
          r.rc != MDB_SUCCESS)
        return r;
      res_.set_mine_version(next.version());
      res_.set_mine_origin(op_.writer_origin());
      res_.set_mine_id(op_.writer_id());
    }
    res_.set_status(SharedResult::OK);
    *res_.mutable_entry() = std::move(next);
    return {};
  }

  op_result enqueue() {
    auto dk = shared_key::dedupe(op_.name(), op_.dedupe_key());
    if (!op_.dedupe_key().empty()) {
      auto k = lmdb::val(dk);
      MDB_val v;
      auto rc = mdb_get(t_, dbi_, &k, &v);
      if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
        return {rc, "shared", "mdb_get", dk};
      if (rc == MDB_SUCCESS) {
        if (v.mv_size != 8)
          return corrupt(dk, "a dedupe record of " + std::to_string(v.mv_size)
                               + " bytes, not 8 (a task id)");
        bool found, bad;
        auto tk = shared_key::task(op_.name(), detail::get_be64(v.mv_data));
        if (auto r = read(tk, *res_.mutable_task(), found, bad);
            r.rc != MDB_SUCCESS || bad)
          return r;
        if (!found)
          return corrupt(dk, "its task " + detail::printable(tk)
                               + " is missing");
        res_.set_status(SharedResult::OK);
        res_.set_detail("duplicate");
        return {};
      }
    }
    auto nk = shared_key::next_id(op_.name());
    uint64_t id = 1;
    {
      auto k = lmdb::val(nk);
      MDB_val v;
      auto rc = mdb_get(t_, dbi_, &k, &v);
      if (rc == MDB_SUCCESS && v.mv_size == 8)
        id = detail::get_be64(v.mv_data);
      else if (rc == MDB_SUCCESS)
        return corrupt(nk, "the queue's next task id is "
                             + std::to_string(v.mv_size)
                             + " bytes, not 8; no task id can be trusted");
      else if (rc != MDB_NOTFOUND)
        return {rc, "shared", "mdb_get", nk};
    }
    // Never over an existing task, whatever the counter says.
    {
      auto tk = shared_key::task(op_.name(), id);
      auto k = lmdb::val(tk);
      MDB_val v;
      auto rc = mdb_get(t_, dbi_, &k, &v);
      if (rc == MDB_SUCCESS)
        return corrupt(nk, "the queue's next task id " + std::to_string(id)
                             + " is taken by an existing task");
      if (rc != MDB_NOTFOUND)
        return {rc, "shared", "mdb_get", tk};
    }
    char buf[8];
    detail::put_be64(buf, id + 1);
    if (auto r = put(nk, std::string_view{buf, 8}); r.rc != MDB_SUCCESS)
      return r;
    TaskRecord task;
    task.set_format(1);
    task.set_id(id);
    task.set_payload(op_.value());
    task.set_state("ready");
    task.set_max_attempts(op_.max_attempts() != 0 ? op_.max_attempts()
                                                  : default_max_attempts);
    task.set_enqueued_ms(now_);
    task.set_enqueued_by(op_.writer());
    task.set_dedupe_key(op_.dedupe_key());
    if (auto r = put(shared_key::task(op_.name(), id), task);
        r.rc != MDB_SUCCESS)
      return r;
    if (auto r = put(shared_key::ready(op_.name(), id), std::string_view{});
        r.rc != MDB_SUCCESS)
      return r;
    if (!op_.dedupe_key().empty()) {
      detail::put_be64(buf, id);
      if (auto r = put(dk, std::string_view{buf, 8}); r.rc != MDB_SUCCESS)
        return r;
    }
    res_.set_status(SharedResult::OK);
    *res_.mutable_task() = std::move(task);
    return {};
  }

  /// The task's lease is over (`why`): ready again, or a dead letter once
  /// its attempts are spent. Its lease index entry is already gone.
  op_result release(TaskRecord& task, const std::string& why) {
    task.set_last_error(why);
    task.set_holder(std::string{});
    task.set_lease_expires_ms(0);
    if (task.attempts() >= task.max_attempts()) {
      task.set_state("dead");
      task.set_done_ms(now_);
      records::DeadLetter dl;
      dl.set_format(store::format);
      dl.set_path("queue:" + op_.name());
      dl.set_reason("task " + std::to_string(task.id()) + " of queue \""
                    + op_.name() + "\" failed " + std::to_string(task.attempts())
                    + " of " + std::to_string(task.max_attempts())
                    + " attempts; last: " + why);
      dl.set_unix_ms(static_cast<int64_t>(now_));
      dl.set_queue(op_.name());
      *dl.mutable_task() = task;
      if (auto r = d_.append_dead_letter(t_, encode_record(dl));
          r.rc != MDB_SUCCESS)
        return r;
      res_.set_dead(true);
    } else {
      task.set_state("ready");
      if (auto r = put(shared_key::ready(op_.name(), task.id()),
                       std::string_view{});
          r.rc != MDB_SUCCESS)
        return r;
    }
    return put(shared_key::task(op_.name(), task.id()), task);
  }

  /// Ends the leases of queue `name` that expired by now, at most 256;
  /// `more` says whether there may be more.
  op_result expire(bool& more) {
    more = false;
    auto prefix = std::string{"l"} + op_.name() + '\0';
    auto upto = shared_key::lease(op_.name(), now_, UINT64_MAX);
    for (int n = 0; n < 256; ++n) {
      std::string key;
      if (auto r = first_at(prefix, key); r.rc != MDB_SUCCESS)
        return r;
      if (key.compare(0, prefix.size(), prefix) != 0 || key > upto)
        return {};
      more = n == 255;
      if (key.size() != prefix.size() + 16) {
        // Not one of ours: moved out of the way, never interpreted.
        if (auto r = del(key); r.rc != MDB_SUCCESS)
          return r;
        continue;
      }
      auto id = detail::get_be64(key.data() + prefix.size() + 8);
      auto expires = detail::get_be64(key.data() + prefix.size());
      if (auto r = del(key); r.rc != MDB_SUCCESS)
        return r;
      TaskRecord task;
      bool found, bad;
      auto tk = shared_key::task(op_.name(), id);
      if (auto r = read(tk, task, found, bad); r.rc != MDB_SUCCESS)
        return r;
      if (bad) {
        // A lease of an unreadable task: the task stays where it is, for
        // `vigil inspect` to show; the claim goes on.
        res_.Clear();
        continue;
      }
      if (!found || task.state() != "leased"
          || task.lease_expires_ms() != expires)
        continue; // a stale index entry
      if (auto r = release(task, "lease " + std::to_string(task.lease())
                                   + " held by " + task.holder()
                                   + " expired");
          r.rc != MDB_SUCCESS)
        return r;
    }
    return {};
  }

  op_result claim() {
    // Expired leases in steps of 256, as long as no task is ready and more
    // may have expired: a claim never answers empty while one is claimable.
    bool more = true;
    if (auto r = expire(more); r.rc != MDB_SUCCESS)
      return r;
    auto prefix = std::string{"r"} + op_.name() + '\0';
    for (;;) {
      std::string key;
      if (auto r = first_at(prefix, key); r.rc != MDB_SUCCESS)
        return r;
      if (key.compare(0, prefix.size(), prefix) != 0) {
        if (more) {
          if (auto r = expire(more); r.rc != MDB_SUCCESS)
            return r;
          continue;
        }
        res_.set_status(SharedResult::EMPTY);
        return {};
      }
      if (auto r = del(key); r.rc != MDB_SUCCESS)
        return r;
      if (key.size() != prefix.size() + 8)
        continue; // not one of ours
      auto id = detail::get_be64(key.data() + prefix.size());
      auto tk = shared_key::task(op_.name(), id);
      TaskRecord task;
      bool found, bad;
      if (auto r = read(tk, task, found, bad); r.rc != MDB_SUCCESS)
        return r;
      if (bad) {
        res_.Clear(); // skipped, kept for inspection
        continue;
      }
      if (!found || task.state() != "ready")
        continue; // a stale index entry
      task.set_state("leased");
      task.set_attempts(task.attempts() + 1);
      task.set_lease(task.lease() + 1);
      task.set_lease_expires_ms(now_ + op_.lease_ms());
      task.set_holder(op_.writer());
      task.set_claimed_ms(now_);
      if (auto r = put(tk, task); r.rc != MDB_SUCCESS)
        return r;
      if (auto r = put(shared_key::lease(op_.name(), task.lease_expires_ms(),
                                         id),
                       std::string_view{});
          r.rc != MDB_SUCCESS)
        return r;
      res_.set_status(SharedResult::OK);
      *res_.mutable_task() = std::move(task);
      return {};
    }
  }

  /// EXTEND, COMPLETE, FAIL: only under the task's live lease.
  op_result settle() {
    auto tk = shared_key::task(op_.name(), op_.task_id());
    TaskRecord task;
    bool found, bad;
    if (auto r = read(tk, task, found, bad); r.rc != MDB_SUCCESS || bad)
      return r;
    if (!found) {
      res_.set_status(SharedResult::NOT_FOUND);
      res_.set_detail("queue \"" + op_.name() + "\" has no task "
                      + std::to_string(op_.task_id()));
      return {};
    }
    if (task.state() != "leased" || task.lease() != op_.lease()
        || task.lease_expires_ms() <= now_) {
      res_.set_status(SharedResult::LEASE_EXPIRED);
      res_.set_detail("lease " + std::to_string(op_.lease()) + " of task "
                      + std::to_string(task.id()) + " in queue \""
                      + op_.name() + "\" is not live (the task is "
                      + task.state() + ", lease "
                      + std::to_string(task.lease()) + ")");
      *res_.mutable_task() = std::move(task);
      return {};
    }
    if (auto r = del(shared_key::lease(op_.name(), task.lease_expires_ms(),
                                       task.id()));
        r.rc != MDB_SUCCESS)
      return r;
    switch (op_.kind()) {
      case SharedOp::EXTEND:
        task.set_lease_expires_ms(now_ + op_.lease_ms());
        if (auto r = put(shared_key::lease(op_.name(),
                                           task.lease_expires_ms(), task.id()),
                         std::string_view{});
            r.rc != MDB_SUCCESS)
          return r;
        if (auto r = put(tk, task); r.rc != MDB_SUCCESS)
          return r;
        break;
      case SharedOp::COMPLETE:
        task.set_state("done");
        task.set_done_ms(now_);
        if (auto r = put(tk, task); r.rc != MDB_SUCCESS)
          return r;
        break;
      default: // FAIL
        if (auto r = release(task, op_.reason().empty() ? "failed"
                                                        : op_.reason());
            r.rc != MDB_SUCCESS)
          return r;
        break;
    }
    res_.set_status(SharedResult::OK);
    *res_.mutable_task() = std::move(task);
    return {};
  }

  impl& d_;
  MDB_txn* t_;
  const SharedOp& op_;
  SharedResult& res_;
  uint64_t now_;
  MDB_dbi dbi_;
};

op_result store::impl::run_shared(MDB_txn* t, mutation& m) {
  SharedOp op;
  SharedResult res;
  if (!op.ParseFromString(m.value)) {
    res.set_status(SharedResult::INVALID);
    res.set_detail("the operation's bytes do not parse as vigil.records."
                   "SharedOp");
  } else if (auto r = shared_txn{*this, t, op, res}.run();
             r.rc != MDB_SUCCESS) {
    return r;
  }
  m.key.clear();
  res.SerializeToString(&m.key);
  return {};
}

} // namespace vigil
