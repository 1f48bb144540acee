// The approval desk: approvals as the node's cells ask for them, and the
// decisions that people drop into the data dir.

#include "vigil/actors/approvals.hpp"

#include <algorithm>
#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>
#include <vector>

#include <caf/all.hpp>
#include <google/protobuf/message.h>
#include <google/protobuf/util/json_util.h>
#include <spdlog/spdlog.h>

#include "vigil/actors/detail/log.hpp"
#include "vigil/actors/error.hpp"
#include "vigil/actors/writer.hpp"
#include "vigil/persistence/record.hpp"

namespace vigil {

namespace {

/// The desk's timer: take in the decision files.
using intake_atom = caf::atom_constant<caf::atom("vintake")>;

/// Failed commits of one record's write before the desk gives up on it.
constexpr uint8_t max_tries = 5;

uint64_t now_unix_ms() {
  using namespace std::chrono;
  return static_cast<uint64_t>(
    duration_cast<milliseconds>(system_clock::now().time_since_epoch())
      .count());
}

caf::error unavailable() {
  return make_error(errc::approval_unavailable,
                    "this node has no data dir, and approvals are kept "
                    "there: run the node with a data dir (--data-dir, "
                    "node.data_dir) to use tools or envelopes that need "
                    "approval");
}

/// Reads the approval under `key`: false if there is none, or if `err`
/// says why it cannot be read.
bool read_stored(store& st, const std::string& key,
                 records::ApprovalRecord& out, caf::error& err) {
  approval_entry e;
  bool found = false;
  if (auto bad = get_approval(st, key, e, found)) {
    err = make_error(errc::storage_failed, bad.message());
    return false;
  }
  if (found && !e.fault.empty())
    err = make_error(errc::storage_failed, st.options().dir + ": approval "
                                             + e.id + ": " + e.fault);
  if (!found || err)
    return false;
  out.Swap(&e.rec);
  return true;
}

approval_status status_of(const std::string& key,
                          const records::ApprovalRecord& rec) {
  approval_status out;
  out.state = state_of(rec);
  out.id = approval_id(key);
  out.decided_by = rec.decided_by();
  out.reason = rec.reason();
  out.decided_unix_ms = rec.decided_unix_ms();
  out.expires_unix_ms = rec.expires_unix_ms();
  return out;
}

} // namespace

records::ApprovalRecord
make_approval_record(std::string_view path, std::string_view tool,
                     const google::protobuf::Message& request,
                     uint64_t expires_unix_ms, approval_kind kind) {
  records::ApprovalRecord rec;
  rec.set_path(std::string{path});
  rec.set_tool(std::string{tool});
  rec.set_kind(static_cast<uint32_t>(kind));
  rec.set_request_type(request.GetTypeName());
  std::string json;
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  if (!google::protobuf::util::MessageToJsonString(request, &json, o).ok())
    json = "(" + request.GetTypeName() + " does not render as JSON)";
  rec.set_request_json(bound_request_text(std::move(json)));
  rec.set_requested_unix_ms(now_unix_ms());
  rec.set_expires_unix_ms(expires_unix_ms);
  return rec;
}

struct approval_desk::impl {
  /// One approval the desk is writing, or that has waiters.
  struct slot {
    /// The newest state: committed, or in the write `token` if it is not 0.
    records::ApprovalRecord rec;
    uint64_t token = 0;
    uint8_t tries = 0;
    /// Decision files carried by the write in flight: deleted once it is
    /// committed.
    std::vector<std::string> files;
    std::vector<caf::actor_addr> waiters;
  };

  mutable std::mutex mtx;
  std::shared_ptr<store> st;
  caf::actor writer;
  caf::actor self; ///< The desk's actor: sends the writes, gets the acks.
  uint64_t next_token = 1;
  std::map<std::string, slot> slots;
  std::unordered_map<uint64_t, std::string> tokens;
  /// Decision files whose write is in flight (skipped by intake).
  std::set<std::string> taking;

  // -- all below with `mtx` held ---------------------------------------------

  /// The slot of `key`, loaded from the store if need be; nullptr if no
  /// approval is stored under it (or `err` says why it cannot be read).
  slot* load(const std::string& key, caf::error& err) {
    if (auto i = slots.find(key); i != slots.end())
      return &i->second;
    slot loaded;
    if (!read_stored(*st, key, loaded.rec, err))
      return nullptr;
    return &slots.emplace(key, std::move(loaded)).first->second;
  }

  /// Forgets a slot that holds nothing the store does not.
  void tidy(const std::string& key) {
    auto i = slots.find(key);
    if (i != slots.end() && i->second.token == 0 && i->second.waiters.empty()
        && i->second.files.empty())
      slots.erase(i);
  }

  /// Sends the slot's record to the writer; the ack comes to `self`.
  void write(const std::string& key, slot& s) {
    auto token = next_token++;
    tokens[token] = key;
    s.token = token;
    write_item item;
    item.muts.push_back(
      {mutation::op::put, db::approvals, key, encode_record(s.rec)});
    caf::send_as(self, writer, write_atom::value, token,
                 owned_write{owner_ref{}, std::move(item)});
  }

  void notify(const std::string& key, slot& s) {
    approval_outcome o;
    o.key = key;
    o.state = state_of(s.rec);
    o.by = s.rec.decided_by();
    o.reason = s.rec.reason();
    o.decided_unix_ms = s.rec.decided_unix_ms();
    for (auto& w : s.waiters)
      if (auto h = caf::actor_cast<caf::actor>(w))
        caf::anon_send(h, approval_atom::value, o);
    s.waiters.clear();
  }

  void on_committed(const std::vector<uint64_t>& toks, const caf::error& err) {
    std::lock_guard<std::mutex> guard{mtx};
    for (auto tok : toks) {
      auto t = tokens.find(tok);
      if (t == tokens.end())
        continue;
      auto key = std::move(t->second);
      tokens.erase(t);
      auto i = slots.find(key);
      if (i == slots.end() || i->second.token != tok)
        continue; // a newer write carries the newest state
      auto& s = i->second;
      if (err) {
        failed(key, s, err);
        continue;
      }
      s.token = 0;
      s.tries = 0;
      for (auto& f : s.files) {
        if (auto r = remove_decision_file(f))
          detail::log().warn(
            "vigil: approvals: {} (taken in; it is ignored when "
            "read again)",
            r.message());
        taking.erase(f);
      }
      s.files.clear();
      if (state_of(s.rec) != approval_state::pending)
        notify(key, s);
      tidy(key);
    }
  }

  /// A commit of the slot's write failed: write it again, or give up and
  /// go back to what the store holds (its decision files stay, for the
  /// next intake).
  void failed(const std::string& key, slot& s, const caf::error& err) {
    if (++s.tries < max_tries) {
      write(key, s);
      return;
    }
    detail::log().error(
      "vigil: approvals: approval {} of {} was not stored after "
      "{} attempts: {}",
      approval_id(key), s.rec.path(), static_cast<int>(s.tries), describe(err));
    for (auto& f : s.files)
      taking.erase(f);
    s.files.clear();
    s.token = 0;
    s.tries = 0;
    records::ApprovalRecord on_disk;
    caf::error ignored;
    if (read_stored(*st, key, on_disk, ignored)) {
      s.rec = std::move(on_disk);
      tidy(key);
      return;
    }
    // Its request never reached the disk: forget it, waiters and all, so
    // that the call's next request writes it again (a wait or an expire
    // before that is not_found).
    slots.erase(key);
  }

  /// What intake's examine_decision sees of `key`.
  lookup_result lookup(const std::string& key, approval_entry& e) {
    if (auto i = slots.find(key); i != slots.end()) {
      auto& s = i->second;
      if (s.token != 0 && state_of(s.rec) == approval_state::pending)
        return lookup_result::busy;
      e.key = key;
      e.id = approval_id(key);
      e.rec = s.rec;
      return lookup_result::found;
    }
    bool found = false;
    if (auto s = get_approval(*st, key, e, found)) {
      detail::log().error("vigil: approvals: {}", s.message());
      return lookup_result::busy; // tried again next time
    }
    return found ? lookup_result::found : lookup_result::missing;
  }

  void intake() {
    std::lock_guard<std::mutex> guard{mtx};
    if (!st)
      return;
    std::vector<std::string> files;
    if (auto s = list_decision_files(st->options().dir, files)) {
      detail::log().error("vigil: approvals: {}", s.message());
      return;
    }
    auto look = [this](const std::string& key, approval_entry& e) {
      return lookup(key, e);
    };
    for (auto& f : files) {
      if (taking.count(f) != 0)
        continue;
      auto step = examine_decision(f, look);
      switch (step.what) {
        case decision_step::kind::write: {
          auto& key = step.decision.key;
          caf::error err;
          auto* s = load(key, err);
          if (s == nullptr) // found by lookup a moment ago, under the lock
            break;
          s->rec = std::move(step.next);
          s->files.push_back(f);
          taking.insert(f);
          write(key, *s);
          detail::log().info("vigil: approvals: {}", step.text);
          break;
        }
        case decision_step::kind::drop:
          if (auto r = remove_decision_file(f))
            detail::log().warn("vigil: approvals: {}", r.message());
          detail::log().info("vigil: approvals: {}", step.text);
          break;
        case decision_step::kind::bad:
          if (auto r = quarantine_decision_file(f))
            detail::log().error("vigil: approvals: {}; {}", step.text,
                                r.message());
          else
            detail::log().warn("vigil: approvals: {}; renamed to {}.bad",
                               step.text, f);
          break;
        case decision_step::kind::wait:
          break;
      }
    }
  }
};

approval_desk::approval_desk() : impl_(std::make_shared<impl>()) {
  // nop
}

approval_desk::~approval_desk() {
  detach();
}

void approval_desk::attach(caf::actor_system& sys, std::shared_ptr<store> st,
                           caf::actor writer, std::chrono::milliseconds poll) {
  poll = std::max(poll, std::chrono::milliseconds{1});
  std::weak_ptr<impl> desk{impl_};
  // The actor holds the desk weakly: the runtime owns it, the desk holds
  // the actor, and detach ends the actor.
  auto self = sys.spawn([desk, poll](caf::event_based_actor* self)
                          -> caf::behavior {
    self->delayed_send(self, poll, intake_atom::value);
    return {
      [desk](committed_atom, const std::vector<uint64_t>& toks,
             const caf::error& err) {
        if (auto d = desk.lock())
          d->on_committed(toks, err);
      },
      [self, desk, poll](intake_atom) {
        if (auto d = desk.lock())
          d->intake();
        self->delayed_send(self, poll, intake_atom::value);
      },
    };
  });
  std::lock_guard<std::mutex> guard{impl_->mtx};
  impl_->st = std::move(st);
  impl_->writer = std::move(writer);
  impl_->self = std::move(self);
}

void approval_desk::detach() {
  caf::actor self;
  {
    std::lock_guard<std::mutex> guard{impl_->mtx};
    self = std::move(impl_->self);
    impl_->self = nullptr;
    impl_->writer = nullptr;
    impl_->st.reset();
    impl_->slots.clear();
    impl_->tokens.clear();
    impl_->taking.clear();
  }
  if (self)
    caf::anon_send_exit(self, caf::exit_reason::user_shutdown);
}

bool approval_desk::attached() const {
  std::lock_guard<std::mutex> guard{impl_->mtx};
  return impl_->st != nullptr;
}

caf::expected<approval_status>
approval_desk::request(const std::string& key, records::ApprovalRecord rec) {
  auto& d = *impl_;
  std::lock_guard<std::mutex> guard{d.mtx};
  if (!d.st)
    return unavailable();
  if (key.empty())
    return make_error(errc::refused, "approval_desk::request: empty key");
  caf::error err;
  if (auto* s = d.load(key, err)) {
    auto out = status_of(key, s->rec);
    d.tidy(key);
    return out;
  }
  if (err)
    return err;
  rec.set_format(store::format);
  rec.set_state(static_cast<uint32_t>(approval_state::pending));
  rec.clear_decided_unix_ms();
  rec.clear_decided_by();
  rec.clear_reason();
  if (rec.key_text().empty())
    rec.set_key_text(printable_key(key));
  if (rec.requested_unix_ms() == 0)
    rec.set_requested_unix_ms(now_unix_ms());
  if (rec.request_json().size() > approval_request_max)
    rec.set_request_json(bound_request_text(rec.request_json()));
  auto& s = d.slots[key];
  s.rec = std::move(rec);
  d.write(key, s);
  return status_of(key, s.rec);
}

caf::expected<approval_status>
approval_desk::state(const std::string& key) {
  auto& d = *impl_;
  std::lock_guard<std::mutex> guard{d.mtx};
  if (!d.st)
    return unavailable();
  caf::error err;
  auto* s = d.load(key, err);
  if (s == nullptr)
    return err ? err
               : make_error(errc::not_found, "no approval under key \""
                                               + printable_key(key) + "\"");
  auto out = status_of(key, s->rec);
  d.tidy(key);
  return out;
}

caf::error approval_desk::wait(const std::string& key,
                               const caf::actor_addr& waiter) {
  auto& d = *impl_;
  std::lock_guard<std::mutex> guard{d.mtx};
  if (!d.st)
    return unavailable();
  caf::error err;
  auto* s = d.load(key, err);
  if (s == nullptr)
    return err ? err
               : make_error(errc::not_found, "no approval under key \""
                                               + printable_key(key) + "\"");
  auto& ws = s->waiters;
  if (std::find(ws.begin(), ws.end(), waiter) == ws.end())
    ws.push_back(waiter);
  // Decided and committed: no commit will come to tell it.
  if (s->token == 0 && state_of(s->rec) != approval_state::pending)
    d.notify(key, *s);
  d.tidy(key);
  return caf::none;
}

void approval_desk::cancel(const std::string& key,
                           const caf::actor_addr& waiter) {
  auto& d = *impl_;
  std::lock_guard<std::mutex> guard{d.mtx};
  auto i = d.slots.find(key);
  if (i == d.slots.end())
    return;
  auto& ws = i->second.waiters;
  ws.erase(std::remove(ws.begin(), ws.end(), waiter), ws.end());
  d.tidy(key);
}

caf::expected<approval_status>
approval_desk::expire(const std::string& key, std::string reason) {
  auto& d = *impl_;
  std::lock_guard<std::mutex> guard{d.mtx};
  if (!d.st)
    return unavailable();
  caf::error err;
  auto* s = d.load(key, err);
  if (s == nullptr)
    return err ? err
               : make_error(errc::not_found, "no approval under key \""
                                               + printable_key(key) + "\"");
  if (reason.empty())
    reason = "its approval timeout passed";
  if (expire_record(s->rec, now_unix_ms(), std::move(reason)))
    d.write(key, *s);
  auto out = status_of(key, s->rec);
  d.tidy(key);
  return out;
}

void approval_desk::intake() {
  impl_->intake();
}

} // namespace vigil
