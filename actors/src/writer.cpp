#include "vigil/actors/writer.hpp"

#include <algorithm>
#include <chrono>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <caf/all.hpp>

#include "vigil/actors/error.hpp"

namespace vigil {

namespace {

class writer : public caf::event_based_actor {
public:
  writer(caf::actor_config& cfg, std::shared_ptr<store> st,
         writer_options opts)
    : caf::event_based_actor(cfg), st_(std::move(st)), opts_(opts) {
    if (opts_.max_batch == 0)
      opts_.max_batch = 1;
    if (opts_.compact_step == 0)
      opts_.compact_step = 1;
    batch_.reserve(opts_.max_batch);
    ptrs_.reserve(opts_.max_batch);
    results_.reserve(opts_.max_batch);
  }

  const char* name() const override {
    return "vigil.writer";
  }

  caf::behavior make_behavior() override {
    if (opts_.idempotency_retention.count() > 0)
      delayed_send(this, opts_.compact_every, compact_atom::value);
    return {
      [this](write_atom, uint64_t token, write_item& item) {
        auto& from = current_sender();
        if (from && poisoned_.count(from) > 0) {
          if (token != 0)
            caf::anon_send(caf::actor_cast<caf::actor>(from),
                           committed_atom::value,
                           std::vector<uint64_t>{token},
                           make_error(errc::storage_failed,
                                      "rejected: an earlier commit of this "
                                      "agent failed; it must reset first"));
          return;
        }
        batch_.push_back(entry{std::move(item), token, from});
        if (batch_.size() >= opts_.max_batch) {
          flush();
        } else if (!flush_pending_) {
          // The flush request queues behind whatever is in the mailbox now,
          // so everything that arrived meanwhile joins this batch.
          flush_pending_ = true;
          if (opts_.max_latency.count() > 0)
            caf::delayed_anon_send(caf::actor_cast<caf::actor>(this),
                                  opts_.max_latency, flush_atom::value);
          else
            caf::anon_send(caf::actor_cast<caf::actor>(this),
                           flush_atom::value);
        }
      },
      // From itself (anonymous) or from a node that waits for a flush.
      [this](flush_atom) {
        flush_pending_ = false;
        flush();
        return caf::unit;
      },
      [this](reset_atom) {
        if (auto& from = current_sender())
          poisoned_.erase(from);
        return caf::unit;
      },
      [this](stats_atom) {
        return caf::make_message(items_, commits_, failures_, largest_,
                                 compacted_, compact_failures_,
                                 compact_passes_);
      },
      [this](compact_atom) { compact(); },
    };
  }

  void on_exit() override {
    flush();
  }

private:
  /// One compaction step; the next one queues behind the writes that
  /// arrived meanwhile, and a finished pass waits `compact_every`.
  void compact() {
    flush(); // items that came before this step keep their order
    using namespace std::chrono;
    auto now_ms = duration_cast<milliseconds>(
                    system_clock::now().time_since_epoch())
                    .count();
    auto cutoff = static_cast<uint64_t>(
      std::max<int64_t>(0, now_ms - opts_.idempotency_retention.count()));
    std::string next;
    size_t deleted = 0;
    if (auto st = st_->compact_idempotency(cutoff, compact_from_,
                                           opts_.compact_step, next, deleted)) {
      ++compact_failures_; // retried with the next pass
      compact_from_.clear();
      delayed_send(this, opts_.compact_every, compact_atom::value);
      return;
    }
    compacted_ += deleted;
    compact_from_ = std::move(next);
    if (compact_from_.empty()) {
      ++compact_passes_;
      delayed_send(this, opts_.compact_every, compact_atom::value);
    } else {
      send(this, compact_atom::value);
    }
  }

  struct entry {
    write_item item;
    uint64_t token;
    caf::strong_actor_ptr sender;
  };

  void flush() {
    if (batch_.empty())
      return;
    ptrs_.clear();
    for (auto& e : batch_)
      ptrs_.push_back(&e.item);
    results_.assign(batch_.size(), write_result::applied);
    auto st = st_->apply(ptrs_.data(), ptrs_.size(), results_.data());
    caf::error err;
    if (st) {
      ++failures_;
      err = make_error(errc::storage_failed, st.message());
      for (auto& e : batch_)
        if (e.sender)
          poisoned_.insert(e.sender);
    } else {
      ++commits_;
      items_ += batch_.size();
      largest_ = std::max<uint64_t>(largest_, batch_.size());
    }
    // One acknowledgement per sender, not per item.
    for (size_t i = 0; i < batch_.size(); ++i) {
      auto& e = batch_[i];
      if (e.token == 0 || !e.sender)
        continue;
      auto tok = e.token;
      if (results_[i] == write_result::duplicate)
        tok |= duplicate_bit;
      auto [pos, added] = acks_.emplace(e.sender.get(), acks_.size());
      if (added)
        ack_lists_.emplace_back(e.sender, std::vector<uint64_t>{});
      ack_lists_[pos->second].second.push_back(tok);
    }
    for (auto& [to, toks] : ack_lists_)
      caf::anon_send(caf::actor_cast<caf::actor>(to), committed_atom::value,
                     std::move(toks), err);
    acks_.clear();
    ack_lists_.clear();
    batch_.clear();
  }

  std::shared_ptr<store> st_;
  writer_options opts_;
  std::vector<entry> batch_;
  std::vector<write_item*> ptrs_;
  std::vector<write_result> results_;
  std::unordered_map<caf::actor_control_block*, size_t> acks_;
  std::vector<std::pair<caf::strong_actor_ptr, std::vector<uint64_t>>>
    ack_lists_;
  bool flush_pending_ = false;
  /// Senders whose commit failed, until they reset.
  std::unordered_set<caf::strong_actor_ptr> poisoned_;
  uint64_t items_ = 0;
  uint64_t commits_ = 0;
  uint64_t failures_ = 0;
  uint64_t largest_ = 0;
  /// Where the running compaction pass continues ("" = a new pass).
  std::string compact_from_;
  uint64_t compacted_ = 0;
  uint64_t compact_failures_ = 0;
  uint64_t compact_passes_ = 0;
};

} // namespace

caf::actor spawn_writer(caf::actor_system& sys, std::shared_ptr<store> st,
                        writer_options opts) {
  return sys.spawn<writer, caf::detached>(std::move(st), opts);
}

} // namespace vigil
