// Shared state from an agent (context::kv_get ... fail_task): the context's
// typed calls, and how a cell runs them: with a journal agent's consume, on
// their own through the writer, or (reads) at once.

#include "cell_state.hpp"
#include "vigil/persistence/shared.hpp"

namespace vigil {

namespace {

using records::SharedOp;
using records::SharedResult;

int64_t to_ms(duration d) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  return ms < 1 ? 1 : ms;
}

kv_entry entry_of(const SharedResult& res) {
  auto& r = res.entry();
  kv_entry e;
  e.my_version = res.mine_version();
  e.my_message_origin = res.mine_origin();
  e.my_message_id = res.mine_id();
  e.value = r.value();
  e.version = r.version();
  e.found = r.version() != 0 && !r.deleted();
  e.writer = r.writer();
  e.writer_id = r.writer_id();
  e.written_ms = r.written_ms();
  return e;
}

lease lease_of(const std::string& queue, const records::TaskRecord& t) {
  lease l;
  l.queue = queue;
  l.task = t.id();
  l.number = t.lease();
  l.expires_ms = t.lease_expires_ms();
  return l;
}

/// The error of a result that is not the operation's expected outcome.
caf::error error_of(const SharedOp& op, const SharedResult& r) {
  auto what = std::string{to_string(op.kind())} + " on \"" + op.name()
              + "\": " + r.detail();
  switch (r.status()) {
    case SharedResult::LEASE_EXPIRED:
      return make_error(errc::lease_expired, std::move(what));
    case SharedResult::NOT_FOUND:
      return make_error(errc::not_found, std::move(what));
    case SharedResult::INVALID:
      return make_error(errc::bad_payload, std::move(what));
    case SharedResult::CONFLICT:
      return make_error(errc::conflict, std::move(what));
    default:
      return make_error(errc::storage_failed, std::move(what));
  }
}

SharedOp make_op(SharedOp::Kind k, std::string_view name) {
  SharedOp op;
  op.set_kind(k);
  op.set_name(std::string{name});
  return op;
}

SharedOp settle_op(SharedOp::Kind k, const lease& l) {
  auto op = make_op(k, l.queue);
  op.set_task_id(l.task);
  op.set_lease(l.number);
  return op;
}

using on_error_fn = std::function<void(const caf::error&)>;

/// `f`, or a callable that does nothing if `f` is empty (a caller that
/// does not care about the outcome may pass none).
template <class F>
F or_nothing(F f) {
  if (!f)
    f = [](auto&&...) {};
  return f;
}

} // namespace

void context::kv_get(std::string_view store, std::string_view key,
                     std::function<void(kv_entry)> on_entry,
                     on_error_fn on_error) {
  if (!on_error)
    on_error = [](const caf::error&) {};
  auto op = make_op(SharedOp::KV_GET, store);
  op.set_key(std::string{key});
  auto copy = op;
  auto err = on_error;
  shared_raw(std::move(op),
             [f = or_nothing(std::move(on_entry)), err, copy](SharedResult&& r) {
               if (r.status() == SharedResult::OK)
                 f(entry_of(r));
               else
                 err(error_of(copy, r));
             },
             std::move(on_error));
}

namespace {

std::function<void(SharedResult&&)>
on_kv_result(std::function<void(kv_result)> f, on_error_fn err, SharedOp op) {
  return [f = std::move(f), err = std::move(err),
          op = std::move(op)](SharedResult&& r) {
    if (r.status() != SharedResult::OK
        && r.status() != SharedResult::CONFLICT) {
      err(error_of(op, r));
      return;
    }
    kv_result out;
    out.applied = r.status() == SharedResult::OK;
    out.entry = entry_of(r);
    f(std::move(out));
  };
}

} // namespace

void context::kv_put(std::string_view store, std::string_view key,
                     std::string value, uint64_t expected_version,
                     std::function<void(kv_result)> on_result,
                     on_error_fn on_error) {
  if (!on_error)
    on_error = [](const caf::error&) {};
  auto op = make_op(SharedOp::KV_PUT, store);
  op.set_key(std::string{key});
  op.set_value(std::move(value));
  op.set_expected_version(expected_version);
  auto done = on_kv_result(or_nothing(std::move(on_result)), on_error, op);
  shared_raw(std::move(op), std::move(done), std::move(on_error));
}

void context::kv_delete(std::string_view store, std::string_view key,
                        uint64_t expected_version,
                        std::function<void(kv_result)> on_result,
                        on_error_fn on_error) {
  if (!on_error)
    on_error = [](const caf::error&) {};
  auto op = make_op(SharedOp::KV_DELETE, store);
  op.set_key(std::string{key});
  op.set_expected_version(expected_version);
  auto done = on_kv_result(or_nothing(std::move(on_result)), on_error, op);
  shared_raw(std::move(op), std::move(done), std::move(on_error));
}

void context::enqueue_task(std::string_view queue, std::string payload,
                      const enqueue_options& opts,
                      std::function<void(uint64_t)> on_id,
                      on_error_fn on_error) {
  if (!on_error)
    on_error = [](const caf::error&) {};
  auto op = make_op(SharedOp::ENQUEUE, queue);
  op.set_value(std::move(payload));
  op.set_max_attempts(opts.max_attempts);
  op.set_dedupe_key(opts.dedupe_key);
  auto info = make_op(SharedOp::ENQUEUE, queue);
  // Copied before the call: the order in which its arguments are
  // evaluated is unspecified, and the last one moves on_error away.
  auto err_copy = on_error;
  shared_raw(std::move(op),
             [f = or_nothing(std::move(on_id)), err = std::move(err_copy),
              info = std::move(info)](SharedResult&& r) {
               if (r.status() == SharedResult::OK)
                 f(r.task().id());
               else
                 err(error_of(info, r));
             },
             std::move(on_error));
}

void context::claim_task(std::string_view queue, duration lease_for,
                    std::function<void(std::optional<claimed_task>)> on_task,
                    on_error_fn on_error) {
  if (!on_error)
    on_error = [](const caf::error&) {};
  auto op = make_op(SharedOp::CLAIM, queue);
  op.set_lease_ms(static_cast<uint64_t>(to_ms(lease_for)));
  auto info = make_op(SharedOp::CLAIM, queue);
  auto err_copy = on_error;
  shared_raw(std::move(op),
             [f = or_nothing(std::move(on_task)), err = std::move(err_copy),
              info = std::move(info)](SharedResult&& r) {
               if (r.status() == SharedResult::EMPTY) {
                 f(std::nullopt);
                 return;
               }
               if (r.status() != SharedResult::OK) {
                 err(error_of(info, r));
                 return;
               }
               claimed_task t;
               auto& rec = *r.mutable_task();
               t.lease = lease_of(info.name(), rec);
               t.payload = std::move(*rec.mutable_payload());
               t.attempts = rec.attempts();
               t.max_attempts = rec.max_attempts();
               t.last_error = rec.last_error();
               f(std::move(t));
             },
             std::move(on_error));
}

void context::extend_lease(const lease& l, duration lease_for,
                     std::function<void(lease)> on_extended,
                     on_error_fn on_error) {
  if (!on_error)
    on_error = [](const caf::error&) {};
  auto op = settle_op(SharedOp::EXTEND, l);
  op.set_lease_ms(static_cast<uint64_t>(to_ms(lease_for)));
  auto info = settle_op(SharedOp::EXTEND, l);
  auto err_copy = on_error;
  shared_raw(std::move(op),
             [f = or_nothing(std::move(on_extended)), err = std::move(err_copy),
              info = std::move(info)](SharedResult&& r) {
               if (r.status() == SharedResult::OK)
                 f(lease_of(info.name(), r.task()));
               else
                 err(error_of(info, r));
             },
             std::move(on_error));
}

void context::complete_task(const lease& l, std::function<void()> on_done,
                       on_error_fn on_error) {
  if (!on_error)
    on_error = [](const caf::error&) {};
  auto info = settle_op(SharedOp::COMPLETE, l);
  auto err_copy = on_error;
  shared_raw(settle_op(SharedOp::COMPLETE, l),
             [f = or_nothing(std::move(on_done)), err = std::move(err_copy),
              info = std::move(info)](SharedResult&& r) {
               if (r.status() == SharedResult::OK)
                 f();
               else
                 err(error_of(info, r));
             },
             std::move(on_error));
}

void context::fail_task(const lease& l, std::string reason,
                   std::function<void(bool)> on_done, on_error_fn on_error) {
  if (!on_error)
    on_error = [](const caf::error&) {};
  auto op = settle_op(SharedOp::FAIL, l);
  op.set_reason(std::move(reason));
  auto info = settle_op(SharedOp::FAIL, l);
  auto err_copy = on_error;
  shared_raw(std::move(op),
             [f = or_nothing(std::move(on_done)), err = std::move(err_copy),
              info = std::move(info)](SharedResult&& r) {
               if (r.status() == SharedResult::OK)
                 f(r.dead());
               else
                 err(error_of(info, r));
             },
             std::move(on_error));
}

} // namespace vigil

namespace vigil::detail {

void cell::shared_raw(records::SharedOp op,
                      std::function<void(records::SharedResult&&)> on_result,
                      std::function<void(const caf::error&)> on_error) {
  auto& st = rt_->storage();
  if (!st || !rt_->writer()) {
    on_error(make_error(errc::storage_failed,
                        cfg_.path + ": " + to_string(op.kind()) + " on \""
                          + op.name()
                          + "\": shared state needs a data dir, and this "
                            "node has none (set node.data_dir)"));
    return;
  }
  if (auto why = check_shared_op(op); !why.empty()) {
    on_error(make_error(errc::bad_payload,
                        cfg_.path + ": " + to_string(op.kind()) + " on \""
                          + op.name() + "\": " + why));
    return;
  }
  op.set_writer(cfg_.path);
  if (current_ != nullptr) {
    op.set_writer_origin(current_->origin);
    op.set_writer_id(current_->id);
  } else if (cb_origin_ != nullptr) {
    op.set_writer_origin(cb_origin_->key_origin);
    op.set_writer_id(cb_origin_->key_id);
  }
  shared_call call{std::move(on_result), std::move(on_error), gen_};
  if (op.kind() == records::SharedOp::KV_GET) {
    // A read needs no commit: read now, answer as a message to self, so
    // that the callback runs after this handler, as every other one.
    records::SharedResult res;
    bool found = false;
    if (auto s = kv_read(*st, op.name(), op.key(), *res.mutable_entry(),
                         found);
        s || (s = kv_read_mine(*st, op.name(), op.key(), cfg_.path, res))) {
      res.set_status(records::SharedResult::CORRUPT);
      res.set_detail(s.message());
    }
    auto tok = own_shared_bit | next_shared_++;
    shared_waits_.emplace(tok, std::move(call));
    std::vector<std::string> rs(1);
    res.SerializeToString(&rs[0]);
    event_based_actor::send(this, shared_done_atom::value, tok, std::move(rs));
    return;
  }
  bool with_consume = dur_ && dur_->journal()
                      && (current_ != nullptr
                            ? dur_->current_seq != 0
                            : cb_origin_ != nullptr && cb_origin_->chain
                                && cb_origin_->chain->held);
  std::string bytes;
  op.SerializeToString(&bytes);
  if (with_consume) {
    dur_->shared_ops.push_back(std::move(bytes));
    dur_->shared.push_back(std::move(call));
    return;
  }
  write_item item;
  item.muts.push_back({mutation::op::shared, db::shared, {}, std::move(bytes)});
  auto tok = own_shared_bit | next_shared_++;
  shared_waits_.emplace(tok, std::move(call));
  // A durable cell's own write is fenced by its epoch once it has one;
  // during a re-fence after a failed commit its old epoch is refused as
  // poisoned, as every other write of it is.
  auto owner = dur_ ? dur_->owner : owner_ref{};
  event_based_actor::send(rt_->writer(), write_atom::value, tok | shared_bit,
                          owned_write{owner, std::move(item)});
}

void cell::on_shared_done(uint64_t tok, std::vector<std::string>& results) {
  tok &= ~shared_bit;
  if ((tok & own_shared_bit) != 0) {
    auto i = shared_waits_.find(tok);
    if (i == shared_waits_.end())
      return;
    auto call = std::move(i->second);
    shared_waits_.erase(i);
    deliver_shared(call, results.empty() ? nullptr : &results[0],
                   caf::error{});
    return;
  }
  if (!dur_)
    return;
  auto j = dur_->after_commit.find(tok);
  if (j != dur_->after_commit.end())
    j->second.shared_results = std::move(results);
}

void cell::on_own_shared_acked(uint64_t tok, const caf::error& err) {
  if (!err)
    return; // its result came first (on_shared_done)
  auto i = shared_waits_.find(tok);
  if (i != shared_waits_.end()) {
    auto call = std::move(i->second);
    shared_waits_.erase(i);
    deliver_shared(call, nullptr, err);
  }
  if (dur_ && (is(err, errc::fenced) || is(err, errc::storage_failed)))
    on_write_error(err);
}

void cell::deliver_shared(shared_call& c, std::string* result,
                          const caf::error& err) {
  if (c.gen != gen_ || !instance_ || !c.ok)
    return; // the instance that called has ended: dropped
  if (err) {
    invoke_callback([&] { c.err(err); });
    return;
  }
  records::SharedResult r;
  if (result == nullptr || !r.ParseFromString(*result)) {
    auto e = make_error(errc::storage_failed,
                        cfg_.path + ": a shared operation's commit gave no "
                                    "result (a duplicate write?)");
    invoke_callback([&] { c.err(e); });
    return;
  }
  invoke_callback([&] { c.ok(std::move(r)); });
}

} // namespace vigil::detail
