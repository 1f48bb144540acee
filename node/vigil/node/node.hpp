#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <caf/expected.hpp>

#include "vigil/actors/agent.hpp"
#include "vigil/actors/report.hpp"
#include "vigil/actors/runtime.hpp"
#include "vigil/actors/writer.hpp"
#include "vigil/persistence/store.hpp"
#include "vigil/supervision/child_spec.hpp"
#include "vigil/supervision/supervisor.hpp"

namespace vigil {

/// Settings of one node's actor system.
struct node_config {
  /// Scheduler threads (CAF's scheduler.max-threads).
  size_t threads = 2;
  /// "sharing" stays linear when many actors become runnable at once; CAF's
  /// default "stealing" does not. "testing" is for deterministic tests.
  std::string scheduler_policy = "sharing";
  /// Messages an actor handles before it gives its thread to the next
  /// runnable one (CAF's scheduler.max-throughput, unlimited by default):
  /// a flooded agent then cannot keep a thread from supervisors, timers
  /// and progress queries.
  size_t max_throughput = 300;
  /// The LMDB data dir; empty runs without one (then no child may be
  /// durable). Created if missing; one live node per dir.
  std::string data_dir;
  /// Walk every database of the data dir at start, in a child process
  /// (vigil/persistence/integrity.hpp): a damaged B-tree refuses the start
  /// with a pointer to `vigil repair`, and records that fail their checksum
  /// are logged by name. It costs about one more pass over the pages
  /// recovery reads anyway; false skips it (the size check stays).
  bool verify_data_dir = true;
  sync_mode sync = sync_mode::full;
  size_t map_size = size_t{64} << 20;
  size_t max_map_size = size_t{16} << 30;
  /// Shared state (context::kv_put, claim_task, ...): versions of each key
  /// kept in its history, and the wall clock of leases and write times in
  /// Unix ms (empty: the system clock; tests inject one).
  uint32_t kv_history = 32;
  std::function<uint64_t()> wall_ms;
  /// Group commit of the node's writer.
  writer_options writer;
  /// How often the node takes in the decisions that `vigil approvals
  /// approve|reject` drops into DIR/approvals/ (it also does at its start,
  /// before any agent runs). See approval_desk.
  std::chrono::milliseconds approvals_poll{200};
  /// The tools agents may call (`context::call_tool`), each on top of an
  /// implementation registered with `registry::add_tool`.
  std::vector<tool_decl> tools;
  /// Makes each tool's executor; null gives each tool a pool of
  /// `bulkhead.max_concurrent` threads. Deterministic tests inject one.
  tool_executor_factory tool_executors;
  /// host:port of the metrics endpoint (GET /metrics in Prometheus's text
  /// format, /healthz, /readyz; vigil/metrics/exporter.hpp), e.g.
  /// "127.0.0.1:9464"; port 0 takes a free one (`node::metrics_address`
  /// says which). Empty: no endpoint, and the handlers are not timed.
  std::string metrics;
  /// vigil's logger: JSON lines or text, and its level (see
  /// vigil/actors/report.hpp). Unset: the logger as the program left it.
  std::optional<log_settings> log;
};

/// One vigil process: an actor system, the agent registry and one tree.
///
/// All members are thread-safe and blocking; call them from outside actors
/// (main, tests, a CLI), never from inside an agent handler. Destroying a
/// running node stops its tree in reverse start order first.
class node {
public:
  /// How long `send` without a timeout waits for room in a full queue
  /// under overflow `wait`.
  static constexpr duration send_wait = std::chrono::seconds{10};

  explicit node(registry types, node_config cfg = {});
  ~node();

  node(const node&) = delete;
  node& operator=(const node&) = delete;

  /// Validates `spec` and starts the tree with root path `name`. With a
  /// data dir, first opens it and recovers every durable agent: each resumes
  /// at its path with its last state and unconsumed envelopes. Returns the
  /// first error: the data dir (locked, unwritable, newer format), invalid
  /// specs (all of them, in the context) or a child that failed to start.
  [[nodiscard]] caf::error start(std::string name, supervisor_spec spec);

  /// Sends `req` to the agent at `path` and waits up to `timeout` for the
  /// reply. Errors: not_found, deadline_exceeded, buffer_overflow,
  /// not_running, poison_message, unknown_message_type, bad_payload,
  /// overloaded (its queue is full: at once under overflow `shed`; under
  /// `wait` once no room came within `timeout`).
  template <class Reply>
  caf::expected<reply<Reply>> call(std::string_view path,
                                   const google::protobuf::Message& req,
                                   duration timeout) {
    auto rep = call_envelope(path, req, timeout);
    if (!rep)
      return std::move(rep.error());
    reply<Reply> r;
    r.degraded = rep->degraded();
    if (!r.value.ParseFromString(rep->payload))
      return make_error(errc::bad_payload,
                        std::string{path} + " replied with bad bytes");
    return r;
  }

  /// Sends `msg` to the agent at `path` without waiting for its handling.
  /// Returns not_found if no agent is bound there, and `overloaded` if its
  /// queue is full (queue_cap): at once under overflow `shed`; under
  /// `wait` once no room came within `opts.timeout` (`send_wait` if none).
  /// A refused message is the caller's: no dead letter is made of it.
  [[nodiscard]] caf::error send(std::string_view path,
                                const google::protobuf::Message& msg,
                                const call_options& opts = {});

  // OTP's supervisor API, addressed by the supervisor's path.
  caf::expected<child_info> start_child(std::string_view sup, child_spec cs);
  caf::expected<child_info> start_child(std::string_view sup, params extra,
                                        std::string name = "");
  caf::error terminate_child(std::string_view sup, std::string id);
  caf::expected<child_info> restart_child(std::string_view sup,
                                          std::string id);
  caf::error delete_child(std::string_view sup, std::string id);
  /// which_children and count_children give up after 5 s with
  /// `deadline_exceeded` (a supervisor busy stopping a stuck child answers
  /// late); the other calls wait for their answer.
  caf::expected<std::vector<child_info>>
  which_children(std::string_view sup);
  caf::expected<child_counts> count_children(std::string_view sup);

  /// Durable agents found in the data dir whose path is not in the tree
  /// (after `start`). They are kept, not deleted.
  std::vector<std::string> orphans() const;

  /// Corrupt records that `start` moved to the dead letters.
  std::vector<quarantined> quarantine() const;

  /// The writer's counters: items, commits, failures, largest batch,
  /// idempotency records compacted, compaction steps that failed,
  /// compaction passes finished, paths owned by a live cell now, writes
  /// refused (from a replaced owner, or after a failed commit).
  caf::expected<std::vector<uint64_t>> writer_stats();

  /// A copy of this node's dead letters.
  std::vector<dead_letter> dead_letters() const;

  /// Waits up to `timeout` for the root supervisor to exit on its own
  /// (escalation or auto_shutdown). Returns true and its reason in `reason`
  /// if it did.
  bool wait_for_exit(duration timeout, caf::error& reason);

  /// Stops the tree in reverse start order. Returns the root's exit reason
  /// if it had already exited (e.g. an escalation), or none.
  caf::error stop();

  /// host:port the metrics endpoint listens on (after `start`), or empty
  /// without one.
  std::string metrics_address() const;

  /// The shared runtime (registry, directory, dead letters).
  const std::shared_ptr<runtime>& rt() const noexcept;

  /// The underlying CAF actor system.
  caf::actor_system& system() noexcept;

private:
  caf::expected<envelope> call_envelope(std::string_view path,
                                        const google::protobuf::Message& req,
                                        duration timeout);
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace vigil
