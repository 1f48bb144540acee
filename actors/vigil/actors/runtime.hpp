#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <caf/actor.hpp>

#include "vigil/actors/agent.hpp"
#include "vigil/actors/counters.hpp"
#include "vigil/actors/dead_letter_log.hpp"
#include "vigil/actors/detail/meters.hpp"
#include "vigil/actors/detail/tool_runtime.hpp"
#include "vigil/actors/directory.hpp"
#include "vigil/actors/envelope.hpp"
#include "vigil/actors/registry.hpp"
#include "vigil/persistence/store.hpp"

namespace vigil {

class approval_desk; // vigil/actors/approvals.hpp

/// Node-wide state shared by every cell and supervisor of one node. It
/// composes the parts, each in its own class:
///
/// - the agent registry (`types`);
/// - message ids (`next_id`);
/// - the path directory (`dir`, a `local_directory` unless one is
///   injected), with `bind`/`unbind`/`lookup`/`binding_of`/`paths`
///   forwarded to it;
/// - the dead letters (`dead_letter_log`), with `add_dead_letter` and its
///   readers forwarded to it;
/// - every node-wide counter (`stats`, a `counters` that the writer
///   shares);
/// - the approvals of calls that wait for a person (`approvals`);
/// - the store and the writer, attached once by the node. What the start
///   recovered lives in the writer's `recovery_table`.
///
/// Thread-safe. Owned by the node through a shared_ptr that every actor of
/// the node holds, so it outlives them all.
class runtime {
public:
  /// In-memory dead letters kept before the oldest are dropped (and
  /// counted); every one of them also goes to LMDB with a data dir.
  static constexpr size_t default_dead_letter_cap =
    dead_letter_log::default_cap;

  /// `dir` null: a `local_directory`.
  explicit runtime(registry types,
                   size_t dead_letter_cap = default_dead_letter_cap,
                   std::unique_ptr<directory> dir = nullptr);

  ~runtime();

  runtime(const runtime&) = delete;
  runtime& operator=(const runtime&) = delete;

  const registry& types() const noexcept {
    return types_;
  }

  /// Next message id: unique per node and monotonic. With a data dir, ids
  /// start at `boots << 40`, so they stay unique across restarts of the
  /// node and a journal agent can tell a redelivery from a new message.
  /// (origin = `node_id()`, id) is unique across nodes.
  uint64_t next_id() noexcept {
    return ids_.fetch_add(1, std::memory_order_relaxed);
  }

  /// The origin of the ids this node mints: its data dir's node id, or a
  /// random one per runtime without a data dir. Never 0.
  uint64_t node_id() const noexcept {
    return node_id_;
  }

  /// Gives a new envelope its identity and trace context. `message_id` 0
  /// mints (origin = node_id()); otherwise the caller's (`origin`, id).
  /// With `parent` (the envelope whose handler sends `e`), `e` joins its
  /// trace: same trace id and flags, span id = the parent's handling span,
  /// and the parent's attempt budget. Without, `e` starts a trace whose id
  /// is node_id():id.
  void stamp(envelope& e, uint64_t message_id, uint64_t origin,
             const envelope* parent) noexcept {
    if (message_id != 0) {
      e.id = message_id;
      e.origin = origin;
    } else {
      e.id = next_id();
      e.origin = node_id_;
    }
    if (parent != nullptr) {
      e.trace_id = parent->trace_id;
      e.trace_id_high = parent->trace_id_high;
      e.trace_flags = parent->trace_flags;
      e.span_id = parent->handling_span();
      e.attempt_budget = parent->attempt_budget;
    } else {
      e.trace_id = e.id;
      e.trace_id_high = node_id_;
    }
  }


  // -- counters ---------------------------------------------------------------

  /// Every node-wide counter (see counters.hpp). Lives as long as the
  /// runtime, or longer through `shared_stats`.
  counters& stats() noexcept {
    return *stats_;
  }

  const counters& stats() const noexcept {
    return *stats_;
  }

  /// The counters, for a part that may outlive the runtime (the writer).
  const std::shared_ptr<counters>& shared_stats() const noexcept {
    return stats_;
  }

  /// Counts one envelope handled by an agent (counters::handled).
  void count_handled() noexcept {
    counters::bump(stats_->handled);
  }

  /// Envelopes handled by this node's agents so far.
  uint64_t handled() const noexcept {
    return stats_->handled.load(std::memory_order_relaxed);
  }

  /// Counts one request answered by a degraded child's stand-in.
  void count_stand_in() noexcept {
    counters::bump(stats_->stand_in_answers);
  }

  /// Requests answered by stand-ins so far.
  uint64_t stand_in_answers() const noexcept {
    return stats_->stand_in_answers.load(std::memory_order_relaxed);
  }

  /// Counts one restart (or degrade) of a child, anywhere in the tree.
  void count_restart() noexcept {
    counters::bump(stats_->restarts);
  }

  /// Restarts in this node so far; unlike `child_info::restarts` it does not
  /// start again at 0 when a supervisor is itself restarted.
  uint64_t restarts() const noexcept {
    return stats_->restarts.load(std::memory_order_relaxed);
  }

  /// The node's meters (detail/meters.hpp): per agent type and per
  /// supervisor, read by a metrics exporter.
  detail::meter_board& meters() noexcept {
    return meters_;
  }

  const detail::meter_board& meters() const noexcept {
    return meters_;
  }

  // -- tools and retry budgets ------------------------------------------------

  /// Attempts one request tree may make, the first included, when its
  /// envelope sets none (`envelope::attempt_budget` 0).
  static constexpr uint32_t default_attempt_budget = 3;

  /// Declares a tool (the node does, before the tree starts; not
  /// thread-safe).
  void add_tool(std::shared_ptr<detail::tool_runtime> t) {
    auto name = t->decl().name;
    tools_[name] = std::move(t);
  }

  /// The tool declared as `name`, or nullptr.
  detail::tool_runtime* find_tool(std::string_view name) const {
    auto i = tools_.find(std::string{name});
    return i != tools_.end() ? i->second.get() : nullptr;
  }

  /// Every declared tool, by name.
  const std::map<std::string, std::shared_ptr<detail::tool_runtime>>&
  tools() const noexcept {
    return tools_;
  }

  /// The attempt budgets of this node's request trees.
  detail::budget_ledger& ledger() noexcept {
    return ledger_;
  }

  // -- durability (set once by the node before the tree starts) -------------

  /// Attaches the node's store and its writer (which owns what the store
  /// recovered at start, in its recovery_table). Not thread-safe: call
  /// before any actor of the node runs.
  void attach_store(std::shared_ptr<store> st, caf::actor writer);

  /// The node's store, or nullptr without a data dir.
  const std::shared_ptr<store>& storage() const noexcept {
    return store_;
  }

  /// The node's writer actor; invalid without a data dir.
  const caf::actor& writer() const noexcept {
    return writer_;
  }

  /// The calls and envelopes that wait for a person's approval (include
  /// vigil/actors/approvals.hpp to call it). Without a data dir its calls
  /// fail with approval_unavailable.
  approval_desk& approvals() noexcept {
    return *approvals_;
  }

  // -- the path directory -----------------------------------------------------

  /// The directory this runtime resolves paths in.
  directory& dir() noexcept {
    return *dir_;
  }

  const directory& dir() const noexcept {
    return *dir_;
  }

  /// See directory::bind.
  void bind(const std::string& path, caf::actor cell,
            detail::queue_gauge* gauge = nullptr) {
    dir_->bind(path, std::move(cell), gauge);
  }

  /// See directory::unbind.
  void unbind(const std::string& path, const caf::actor& cell) {
    dir_->unbind(path, cell);
  }

  /// See directory::lookup.
  caf::actor lookup(std::string_view path) const {
    return dir_->lookup(path);
  }

  /// See directory::lookup_bound.
  detail::bound lookup_bound(std::string_view path) const {
    return dir_->lookup_bound(path);
  }

  /// See directory::binding_of.
  std::shared_ptr<const detail::binding>
  binding_of(std::string_view path) const {
    return dir_->binding_of(path);
  }

  /// See directory::paths.
  std::vector<std::string> paths() const {
    return dir_->paths();
  }

  // -- dead letters -----------------------------------------------------------

  /// The node's dead letters.
  dead_letter_log& dead_log() noexcept {
    return dead_;
  }

  const dead_letter_log& dead_log() const noexcept {
    return dead_;
  }

  /// See dead_letter_log::add.
  void add_dead_letter(std::string path, envelope env, std::string reason,
                       bool persist = true, bool journal = false) {
    dead_.add(std::move(path), std::move(env), std::move(reason), persist,
              journal);
  }

  /// A copy of all dead letters in memory, oldest first.
  std::vector<dead_letter> dead_letters() const {
    return dead_.snapshot();
  }

  /// Number of dead letters held in memory now.
  size_t dead_letter_count() const {
    return dead_.size();
  }

  /// Number of dead letters dropped because the cap was reached.
  size_t dead_letters_dropped() const {
    return dead_.dropped();
  }

private:
  registry types_;
  std::atomic<uint64_t> ids_{1};
  uint64_t node_id_;
  std::shared_ptr<counters> stats_;
  detail::meter_board meters_;
  std::unique_ptr<directory> dir_;
  dead_letter_log dead_;
  std::shared_ptr<store> store_;
  caf::actor writer_;
  std::unique_ptr<approval_desk> approvals_;
  std::map<std::string, std::shared_ptr<detail::tool_runtime>> tools_;
  detail::budget_ledger ledger_;
};

} // namespace vigil
