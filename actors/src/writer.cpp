#include "vigil/actors/writer.hpp"

#include <algorithm>
#include <chrono>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <caf/all.hpp>

#include "vigil/actors/error.hpp"
#include "vigil/actors/recovery_table.hpp"

namespace vigil {

namespace {

/// The writer's record of one path's owner (see owner_ref), at a fixed
/// index of its slot table. Touched only by the writer's thread.
struct owner_slot {
  /// The current owner's epoch; writes of any other epoch are refused.
  /// 0: the slot is free.
  uint64_t epoch = 0;
  /// The batch (see writer::batch_no_) that last took a write of this path.
  uint64_t batch = 0;
  /// Cells that fenced the path and have not released it yet.
  uint32_t holders = 0;
  /// A commit of `epoch` failed: its owner's memory may be ahead of the
  /// disk, so its writes are refused until it fences again.
  bool poisoned = false;
  /// The epoch the current owner held before it fenced again after a
  /// failed commit (0: the owner is new). Its late writes are refused as
  /// poisoned, not as a takeover, so the owner does not give itself up.
  uint64_t renewed_from = 0;
};

class writer : public caf::event_based_actor {
public:
  writer(caf::actor_config& cfg, std::shared_ptr<store> st,
         writer_options opts, std::map<std::string, recovered_agent> found,
         std::shared_ptr<counters> stats)
    : caf::event_based_actor(cfg),
      st_(std::move(st)),
      opts_(opts),
      stats_(stats ? std::move(stats) : std::make_shared<counters>()),
      boot_(std::move(found)),
      epoch_(0) {
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
    if (opts_.idempotency_retention.count() > 0
        || opts_.tool_result_retention.count() > 0
        || opts_.task_retention.count() > 0)
      delayed_send(this, opts_.compact_every, compact_atom::value);
    return {
      [this](write_atom, uint64_t token, owned_write& w) {
        auto& from = current_sender();
        auto own = w.owner;
        if (own) {
          auto* slot = slot_of(own);
          if (slot == nullptr && renewed(own))
            // Its owner fenced again after a failed commit, and this write
            // left before that: poisoned, not taken over.
            return refuse(from, own, token,
                          make_error(errc::storage_failed,
                                     "rejected: written before its owner "
                                     "fenced again after a failed commit"));
          if (slot == nullptr)
            return refuse(from, own, token,
                          make_error(errc::fenced,
                                     "a newer owner holds this path"));
          if (slot->poisoned)
            return refuse(from, own, token,
                          make_error(errc::storage_failed,
                                     "rejected: an earlier commit of this "
                                     "owner failed; it must fence again"));
          slot->batch = batch_no_;
        }
        batch_.push_back(entry{std::move(w.item), token, from, own});
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
      [this](fence_atom, std::string& path,
             uint64_t prev) -> caf::result<fence_grant> {
        return fence(std::move(path), prev);
      },
      [this](release_atom, std::string& path) { release(path); },
      [this](orphans_atom) { return boot_.take_unclaimed(); },
      // From itself (anonymous) or from a node that waits for a flush.
      [this](flush_atom) {
        flush_pending_ = false;
        flush();
        return caf::unit;
      },
      [this](stats_atom) {
        auto& c = *stats_;
        auto get = [](const std::atomic<uint64_t>& x) {
          return x.load(std::memory_order_relaxed);
        };
        return caf::make_message(
          get(c.writer_items), get(c.writer_commits), get(c.writer_failures),
          get(c.writer_largest_batch), get(c.writer_compacted),
          get(c.writer_compact_failures), get(c.writer_compact_passes),
          static_cast<uint64_t>(slots_.size()), get(c.writer_refused));
      },
      [this](compact_atom) { compact(); },
      [this](crash_atom) {
        batch_.clear(); // never committed
        grants_.clear();
        refusals_.clear();
        quit(caf::exit_reason::kill);
      },
    };
  }

  void on_exit() override {
    flush();
  }

private:
  /// One compaction step; the next one queues behind the writes that
  /// arrived meanwhile, and a finished pass waits `compact_every`. A pass
  /// goes through the idempotency records, then the tool results, then the
  /// completed tasks of the shared queues (each skipped if its retention
  /// is 0).
  void compact() {
    flush(); // items that came before this step keep their order
    auto retention = compact_phase_ == 0   ? opts_.idempotency_retention
                     : compact_phase_ == 1 ? opts_.tool_result_retention
                                           : opts_.task_retention;
    std::string next;
    size_t deleted = 0;
    if (retention.count() > 0) {
      using namespace std::chrono;
      auto now_ms = duration_cast<milliseconds>(
                      system_clock::now().time_since_epoch())
                      .count();
      auto cutoff = static_cast<uint64_t>(
        std::max<int64_t>(0, now_ms - retention.count()));
      auto st = compact_phase_ == 0
                  ? st_->compact_idempotency(cutoff, compact_from_,
                                             opts_.compact_step, next, deleted)
                : compact_phase_ == 1
                  ? st_->compact_tool_results(cutoff, compact_from_,
                                              opts_.compact_step, next,
                                              deleted)
                  : st_->compact_tasks(cutoff, compact_from_,
                                       opts_.compact_step, next, deleted);
      if (st) {
        counters::bump(stats_->writer_compact_failures); // retried next pass
        compact_from_.clear();
        compact_phase_ = 0;
        delayed_send(this, opts_.compact_every, compact_atom::value);
        return;
      }
      counters::bump(stats_->writer_compacted, deleted);
    }
    compact_from_ = std::move(next);
    if (!compact_from_.empty()) {
      send(this, compact_atom::value);
    } else if (compact_phase_ < 2) {
      ++compact_phase_;
      send(this, compact_atom::value);
    } else {
      compact_phase_ = 0;
      counters::bump(stats_->writer_compact_passes);
      delayed_send(this, opts_.compact_every, compact_atom::value);
    }
  }

  struct entry {
    write_item item;
    uint64_t token;
    caf::strong_actor_ptr sender;
    owner_ref owner;
    /// Failed commits this item was in (see retry_).
    uint8_t tries = 0;
  };

  /// An unfenced item (a dead letter of an envelope never accepted) has
  /// nobody to tell when its commit fails, so the writer tries it again
  /// in later batches, this many times in all.
  static constexpr uint8_t unfenced_tries = 5;

  /// A write that was refused; told after the acknowledgements of the
  /// batch being collected, which may hold earlier writes of its sender.
  struct refusal {
    caf::strong_actor_ptr to;
    uint64_t token;
    caf::error err;
  };

  /// A fence granted but not yet answered: the batch held a write of its
  /// path, which has to be on disk before the path's records are read.
  struct grant_wait {
    owner_ref owner;
    std::string path;
    caf::response_promise rp;
  };

  /// Tells `to` that its write was refused: now, or after the batch if
  /// the batch holds earlier writes of the same path, whose
  /// acknowledgements must come first. A fence of that path waits for the
  /// batch as well (see fence), so a refusal never follows the grant that
  /// answers the failure it reports.
  void refuse(const caf::strong_actor_ptr& to, owner_ref own, uint64_t token,
              caf::error err) {
    counters::bump(stats_->writer_refused);
    if (!to)
      return;
    auto i = own.slot();
    if (!batch_.empty() && i < table_.size() && table_[i].batch == batch_no_)
      refusals_.push_back(refusal{to, token, std::move(err)});
    else
      caf::anon_send(caf::actor_cast<caf::actor>(to), committed_atom::value,
                     token_list(token), std::move(err));
  }

  static std::vector<uint64_t> token_list(uint64_t token) {
    return token == 0 ? std::vector<uint64_t>{}
                      : std::vector<uint64_t>{token};
  }

  /// True if `own`'s epoch was replaced by its own owner's re-fence.
  bool renewed(owner_ref own) const {
    auto i = own.slot();
    return i < table_.size() && table_[i].renewed_from != 0
           && table_[i].renewed_from == own.epoch();
  }

  /// The slot `own` names if `own` is still its owner, else nullptr.
  owner_slot* slot_of(owner_ref own) {
    auto i = own.slot();
    if (i >= table_.size() || table_[i].epoch != own.epoch())
      return nullptr;
    return &table_[i];
  }

  caf::result<fence_grant> fence(std::string path, uint64_t prev) {
    auto i = slots_.find(path);
    if (prev != 0) {
      // A re-fence after a failed commit: only while still the owner.
      if (i == slots_.end() || table_[i->second].epoch != prev)
        return make_error(errc::fenced,
                          path + ": a newer owner holds this path");
    } else if (i == slots_.end()) {
      uint32_t idx;
      if (!free_.empty()) {
        idx = free_.back();
        free_.pop_back();
      } else if (table_.size() < owner_ref::max_slots) {
        idx = static_cast<uint32_t>(table_.size());
        table_.emplace_back();
      } else {
        return make_error(errc::storage_failed,
                          path + ": this node owns "
                            + std::to_string(table_.size())
                            + " durable paths, its limit; stop some "
                              "durable agents or spread them over nodes");
      }
      i = slots_.emplace(path, idx).first;
      stats_->writer_owned_paths.store(slots_.size(),
                                       std::memory_order_relaxed);
    }
    auto idx = i->second;
    auto& slot = table_[idx];
    if (prev == 0)
      ++slot.holders;
    slot.renewed_from = prev; // 0 for a new owner
    slot.epoch = ++epoch_;
    slot.poisoned = false;
    auto own = owner_ref::make(idx, slot.epoch);
    auto rp = make_response_promise<fence_grant>();
    if (!batch_.empty() && slot.batch == batch_no_)
      grants_.push_back(grant_wait{own, std::move(path), rp});
    else
      grant(own, path, rp);
    return rp;
  }

  void grant(owner_ref own, const std::string& path,
             caf::response_promise& rp) {
    fence_grant g;
    g.owner = own;
    if (boot_.claim(path, g.view)) {
      // nop: nothing of the path was written since the start read it
    } else if (auto st = st_->load(path, g.view)) {
      g.error = st.message();
    }
    rp.deliver(std::move(g));
  }

  void release(const std::string& path) {
    auto i = slots_.find(path);
    if (i == slots_.end())
      return;
    auto idx = i->second;
    auto& slot = table_[idx];
    if (--slot.holders > 0)
      return;
    if (!batch_.empty() && slot.batch == batch_no_) {
      // Its last writes are not committed yet: a fence of the path before
      // they are must still wait for them, so the slot stays until then.
      releasing_.push_back(path);
      return;
    }
    free_slot(i);
  }

  void free_slot(std::unordered_map<std::string, uint32_t>::iterator i) {
    // Every holder's writes came before its release; none can match now.
    table_[i->second] = owner_slot{};
    free_.push_back(i->second);
    slots_.erase(i);
    stats_->writer_owned_paths.store(slots_.size(),
                                     std::memory_order_relaxed);
  }

  void flush() {
    if (batch_.empty())
      return;
    ptrs_.clear();
    for (auto& e : batch_)
      ptrs_.push_back(&e.item);
    results_.assign(batch_.size(), write_result::applied);
    auto t0 = std::chrono::steady_clock::now();
    auto st = st_->apply(ptrs_.data(), ptrs_.size(), results_.data());
    stats_->writer_commit_ns.observe(
      static_cast<uint64_t>(std::chrono::nanoseconds{
        std::chrono::steady_clock::now() - t0}.count()),
      detail::duration_bounds);
    caf::error err;
    if (st) {
      counters::bump(stats_->writer_failures);
      err = make_error(errc::storage_failed, st.message());
      for (auto& e : batch_) {
        if (auto* slot = e.owner ? slot_of(e.owner) : nullptr)
          slot->poisoned = true;
        else if (!e.owner && !e.sender && ++e.tries < unfenced_tries)
          retry_.push_back(std::move(e));
      }
    } else {
      counters::bump(stats_->writer_commits);
      counters::bump(stats_->writer_items, batch_.size());
      stats_->writer_batch.observe(batch_.size(), detail::batch_bounds);
      // Only this actor writes it: no compare-exchange needed.
      auto& largest = stats_->writer_largest_batch;
      if (batch_.size() > largest.load(std::memory_order_relaxed))
        largest.store(batch_.size(), std::memory_order_relaxed);
    }
    if (!st)
      send_shared_results();
    // One acknowledgement per sender, not per item. A failure reaches
    // every owner in the batch, also one that asked for no token.
    for (size_t i = 0; i < batch_.size(); ++i) {
      auto& e = batch_[i];
      if (!e.sender || (e.token == 0 && !(st && e.owner)))
        continue;
      auto [pos, added] = acks_.emplace(e.sender.get(), acks_.size());
      if (added)
        ack_lists_.emplace_back(e.sender, std::vector<uint64_t>{});
      if (e.token == 0)
        continue;
      auto tok = e.token;
      if (results_[i] == write_result::duplicate)
        tok |= duplicate_bit;
      ack_lists_[pos->second].second.push_back(tok);
    }
    for (auto& [to, toks] : ack_lists_)
      caf::anon_send(caf::actor_cast<caf::actor>(to), committed_atom::value,
                     std::move(toks), err);
    acks_.clear();
    ack_lists_.clear();
    batch_.clear();
    ++batch_no_;
    for (auto& path : releasing_)
      if (auto i = slots_.find(path);
          i != slots_.end() && table_[i->second].holders == 0)
        free_slot(i);
    releasing_.clear();
    for (auto& r : refusals_)
      caf::anon_send(caf::actor_cast<caf::actor>(r.to), committed_atom::value,
                     token_list(r.token), std::move(r.err));
    refusals_.clear();
    auto grants = std::move(grants_);
    grants_.clear();
    for (auto& g : grants)
      grant(g.owner, g.path, g.rp);
    if (!retry_.empty()) {
      for (auto& e : retry_)
        batch_.push_back(std::move(e));
      retry_.clear();
      if (!flush_pending_) {
        flush_pending_ = true;
        caf::anon_send(caf::actor_cast<caf::actor>(this), flush_atom::value);
      }
    }
  }

  /// The results of the committed batch's shared operations, to their
  /// senders (see shared_bit).
  void send_shared_results() {
    for (size_t i = 0; i < batch_.size(); ++i) {
      auto& e = batch_[i];
      if ((e.token & shared_bit) == 0 || !e.sender)
        continue;
      std::vector<std::string> rs;
      if (results_[i] == write_result::applied)
        for (auto& m : e.item.muts)
          if (m.what == mutation::op::shared)
            rs.push_back(std::move(m.key));
      caf::anon_send(caf::actor_cast<caf::actor>(e.sender),
                     shared_done_atom::value, e.token, std::move(rs));
    }
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
  /// This writer's counters: the node's (see spawn_writer) or its own.
  std::shared_ptr<counters> stats_;
  /// What recovery read at the node's start, by path, until a fence claims
  /// it or the node asks for the orphans.
  recovery_table boot_;
  /// The slot of every path that a live cell fenced, by path; the slots
  /// themselves by index (see owner_ref), and the free indexes.
  std::unordered_map<std::string, uint32_t> slots_;
  std::vector<owner_slot> table_;
  std::vector<uint32_t> free_;
  /// The last epoch handed out; epochs are unique in this writer's life.
  uint64_t epoch_;
  /// Counts flushes; see owner_slot::batch.
  uint64_t batch_no_ = 1;
  std::vector<refusal> refusals_;
  /// Unfenced items of a failed batch, for the next one.
  std::vector<entry> retry_;
  /// Paths released while the batch held their writes (see release).
  std::vector<std::string> releasing_;
  std::vector<grant_wait> grants_;
  /// Where the running compaction pass continues ("" = the start of its
  /// phase), and its phase: 0 idempotency records, 1 tool results, 2
  /// completed tasks.
  std::string compact_from_;
  int compact_phase_ = 0;
};

} // namespace

caf::actor spawn_writer(caf::actor_system& sys, std::shared_ptr<store> st,
                        writer_options opts,
                        std::map<std::string, recovered_agent> found,
                        std::shared_ptr<counters> stats) {
  if (!opts.detached)
    return sys.spawn<writer>(std::move(st), opts, std::move(found),
                             std::move(stats));
  return sys.spawn<writer, caf::detached>(std::move(st), opts,
                                          std::move(found), std::move(stats));
}

} // namespace vigil
