#include "durable.hpp"

#include "vigil/actors/durability.hpp"
#include "vigil/actors/error.hpp"

namespace vigil {

const char* to_string(durability_mode x) noexcept {
  switch (x) {
    case durability_mode::none: return "none";
    case durability_mode::snapshot: return "snapshot";
    case durability_mode::journal: return "journal";
  }
  return "?";
}

} // namespace vigil

namespace vigil::detail {

int64_t unix_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch())
    .count();
}

mutation put_record(db where, std::string key,
                    const google::protobuf::Message& m) {
  mutation x;
  x.what = mutation::op::put;
  x.where = where;
  x.key = std::move(key);
  encode_record(m, x.value);
  return x;
}

mutation dead_letter_record(const std::string& path, const envelope& e,
                     const std::string& reason, uint64_t consumed_seq,
                     bool journal, bool refused, uint64_t repeats) {
  records::DeadLetter dl;
  dl.set_format(store::format);
  dl.set_path(path);
  *dl.mutable_env() = to_record(e);
  dl.set_reason(reason);
  dl.set_consumed_seq(consumed_seq);
  dl.set_journal(journal);
  dl.set_refused(refused);
  dl.set_repeats(repeats);
  dl.set_unix_ms(unix_ms());
  mutation x;
  x.what = mutation::op::append_dead_letter;
  x.where = db::dead_letters;
  encode_record(dl, x.value);
  return x;
}

records::Envelope to_record(const envelope& e) {
  records::Envelope r;
  r.set_type(e.type.str());
  r.set_payload(e.payload);
  r.set_id(e.id);
  r.set_origin(e.origin);
  r.set_idempotency_key(e.idempotency_key);
  r.set_deadline(e.deadline);
  r.set_attempt(e.attempt);
  r.set_attempt_budget(e.attempt_budget);
  r.set_budget_id(e.budget_id);
  r.set_trace_id(e.trace_id);
  r.set_trace_id_high(e.trace_id_high);
  r.set_span_id(e.span_id);
  r.set_trace_flags(e.trace_flags);
  r.set_sender(e.sender);
  r.set_flags(e.flags & ~envelope::queued_flag);
  return r;
}

envelope from_record(const records::Envelope& r) {
  envelope e;
  e.type = r.type();
  e.payload = r.payload();
  e.id = r.id();
  e.origin = r.origin();
  e.idempotency_key = r.idempotency_key();
  e.deadline = r.deadline();
  e.attempt = r.attempt() == 0 ? 1 : r.attempt();
  e.attempt_budget = r.attempt_budget();
  e.budget_id = r.budget_id();
  e.trace_id = r.trace_id();
  e.trace_id_high = r.trace_id_high();
  e.span_id = r.span_id();
  e.trace_flags = static_cast<uint8_t>(r.trace_flags());
  e.sender = r.sender();
  e.flags = r.flags() & ~envelope::queued_flag; // never a queue place
  return e;
}

write_item accept_item(const std::string& path, uint64_t seq,
                       const envelope& e) {
  write_item item;
  item.guard = guard_key(path, e.origin, e.id);
  item.guard_value = idempotency_value(seq);
  records::JournalEntry je;
  je.set_format(store::format);
  je.set_seq(seq);
  *je.mutable_env() = to_record(e);
  item.muts.push_back(put_record(db::journal, path_key(path, seq), je));
  return item;
}

write_item consume_item(const consume_args& a) {
  write_item item;
  if (a.seq != 0) {
    mutation del;
    del.what = mutation::op::del;
    del.where = db::journal;
    del.key = path_key(*a.path, a.seq);
    item.muts.push_back(std::move(del));
  }
  records::Snapshot snap;
  snap.set_format(store::format);
  snap.set_path(*a.path);
  snap.set_agent(*a.agent);
  if (a.state != nullptr) {
    snap.set_state_type(a.state_type);
    snap.set_state(*a.state);
  }
  snap.set_applied_seq(a.seq);
  snap.set_next_seq(a.next_seq);
  snap.set_next_outbox(a.next_outbox);
  snap.set_processed(a.processed);
  snap.set_unix_ms(unix_ms());
  snap.set_durability(a.durability);
  if (a.pending != nullptr)
    for (auto* e : *a.pending)
      *snap.add_pending() = to_record(*e);
  item.muts.push_back(put_record(db::snapshots, *a.path, snap));
  if (a.outbox != nullptr) {
    for (auto& o : *a.outbox) {
      records::OutboxEntry oe;
      oe.set_format(store::format);
      oe.set_seq(o.seq);
      if (o.effect) {
        *oe.mutable_effect() = *o.effect;
      } else {
        oe.set_to(o.to);
        *oe.mutable_env() = to_record(o.env);
      }
      item.muts.push_back(put_record(db::outbox, path_key(*a.path, o.seq), oe));
    }
  }
  if (a.shared != nullptr)
    for (auto& op : *a.shared)
      item.muts.push_back({mutation::op::shared, db::shared, {}, op});
  if (a.keep_for != nullptr && (a.reply != nullptr || a.reply_err != nullptr)) {
    records::IdempotencyRecord ir;
    ir.set_format(store::format);
    ir.set_seq(a.seq);
    ir.set_accepted_ms(static_cast<uint64_t>(unix_ms()));
    ir.set_answered(true);
    if (a.reply_err != nullptr && *a.reply_err) {
      auto& err = *a.reply_err;
      // A vigil code is kept as it is; another category's error is a
      // refusal, its text kept.
      ir.set_error_code(err.category() == caf::atom("vigil")
                          ? err.code()
                          : static_cast<uint32_t>(errc::refused));
      ir.set_error(describe(err));
    } else if (a.reply != nullptr) {
      *ir.mutable_reply() = to_record(*a.reply);
    }
    item.muts.push_back(put_record(db::idempotency,
                            guard_key(*a.path, a.keep_for->origin,
                                      a.keep_for->id),
                            ir));
  }
  if (!a.dead_reason.empty() && a.dead_env != nullptr)
    item.muts.push_back(
      dead_letter_record(*a.path, *a.dead_env, a.dead_reason, a.seq,
                  a.durability == 2, a.dead_refused));
  return item;
}

caf::expected<envelope> stored_answer(const records::IdempotencyRecord& r) {
  if (r.error_code() == 0)
    return from_record(r.reply());
  auto code = static_cast<errc>(r.error_code());
  std::string text = r.error();
  // describe() wrote "<code>: <context>"; the error is rebuilt from the
  // context, so that it renders the same.
  std::string prefix = std::string{to_string(code)} + ": ";
  if (text.compare(0, prefix.size(), prefix) == 0)
    text.erase(0, prefix.size());
  return make_error(code, std::move(text));
}

write_item redeliver_item(const std::string& path, uint64_t seq,
                          const envelope& e) {
  write_item item;
  records::JournalEntry je;
  je.set_format(store::format);
  je.set_seq(seq);
  *je.mutable_env() = to_record(e);
  item.muts.push_back(put_record(db::journal, path_key(path, seq), je));
  return item;
}

write_item outbox_done_item(const std::string& path, uint64_t seq) {
  write_item item;
  mutation del;
  del.what = mutation::op::del;
  del.where = db::outbox;
  del.key = path_key(path, seq);
  item.muts.push_back(std::move(del));
  return item;
}

write_item dead_letter_item(const std::string& path, const envelope& e,
                            const std::string& reason, bool journal,
                            uint64_t repeats) {
  write_item item;
  item.muts.push_back(
    dead_letter_record(path, e, reason, 0, journal, false, repeats));
  return item;
}

} // namespace vigil::detail
