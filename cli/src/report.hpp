#pragma once

// What the `vigil` command prints: the run report of `vigil run` (a
// snapshot of the tree with each node's state and restarts, and the figures
// of the node's tools, as text or JSON), its progress lines, and the views
// of `vigil inspect`. Rendering
// only: the commands (app.cpp) gather the data.

#include <cstdint>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "vigil/node/node.hpp"

namespace vigil::cli {

struct tree_node {
  std::string name;  ///< Path segment (the full path for the root).
  std::string path;
  std::string kind;  ///< "supervisor" or "worker"
  std::string state; ///< running | degraded | stopped | failed
  uint64_t restarts = 0;
  /// Workers: its queue (see detail::queue_gauge): envelopes waiting now,
  /// the cap, envelopes taken up and shed so far.
  bool has_queue = false;
  uint64_t queued = 0;
  uint64_t queue_cap = 0;
  uint64_t taken = 0;
  uint64_t shed = 0;
  std::vector<tree_node> children;
};

/// `j` as text; bytes that are not UTF-8 (names and keys read from a data
/// dir, which may be damaged) become U+FFFD instead of an exception.
inline std::string dump_json(const nlohmann::json& j, int indent = 2) {
  return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

/// Reads the tree under supervisor `root` with which_children, recursively.
/// False if the root does not answer (it exited).
bool snapshot_tree(node& nd, const std::string& root, tree_node& out);

/// Restarts summed over the tree, and children in state `degraded`.
void totals(const tree_node& t, uint64_t& restarts, size_t& degraded);

nlohmann::json to_json(const tree_node& t);

void print_tree(const tree_node& t, std::ostream& out, int depth = 0);

/// One declared tool's figures on the node (its tool_stats) and its
/// breaker as of the reading.
struct tool_figures {
  std::string name;
  std::string type;   ///< its implementation
  std::string effect; ///< read_only, idempotent_write, ...
  uint64_t calls = 0;      ///< calls admitted
  uint64_t executions = 0; ///< times the tool ran
  uint64_t retries = 0;
  uint64_t succeeded = 0;
  uint64_t succeeded_after_retry = 0;
  uint64_t failed = 0; ///< failed after at least one attempt
  uint64_t budget_refusals = 0;
  uint64_t circuit_open = 0; ///< attempts the breaker did not permit
  uint64_t bulkhead_full = 0;
  uint64_t rate_limited = 0;
  uint64_t cost_exceeded = 0;
  uint64_t deadline_exceeded = 0;
  uint64_t abandoned = 0; ///< attempts given up at their timeout
  std::string breaker;    ///< closed, open or half_open
  int64_t next_probe_ms = 0; ///< open: until probes are let through
  uint64_t openings = 0;
};

/// Every tool declared on `nd`, by name.
std::vector<tool_figures> read_tools(node& nd);

nlohmann::json to_json(const tool_figures& t);

/// The report's lines about the tools, one per tool.
void print_tools(const std::vector<tool_figures>& tools, std::ostream& out);

/// How a run ended, for its report.
struct run_outcome {
  std::string name;
  tree_node tree;
  bool escalated = false;
  std::string cause;              ///< Why the root exited (escalated).
  std::string stopped_by;         ///< "--for", "SIGINT" or "SIGTERM".
  uint64_t handled = 0;
  uint64_t restarts = 0;          ///< The sum of the tree's figures.
  uint64_t restarts_all = 0;      ///< Every restart in the node.
  /// Requests that degraded children's stand-ins answered.
  uint64_t stand_in_answers = 0;
  double seconds = 0;
  /// The newest dead letters (in memory), and every one by reason code.
  std::vector<dead_letter> dead_letters;
  uint64_t dead_total = 0;
  std::map<std::string, uint64_t> dead_by_reason;
  /// Saga runs ended (completed, compensated, compensation failed),
  /// durable runs resumed from the data dir, and resent inputs answered
  /// with a stored outcome (see counters).
  struct saga_figures {
    uint64_t completed = 0, compensated = 0, compensation_failed = 0;
    uint64_t resumed = 0, outcomes_resent = 0;
    bool any() const {
      return completed + compensated + compensation_failed + resumed
               + outcomes_resent
             > 0;
    }
  } sagas;
  /// The node's tools, as of the end of the run.
  std::vector<tool_figures> tools;
};

/// One progress line of `vigil run`; with `tools` (the node declares
/// some), their calls, retries and refusals summed, and the open breakers.
void print_progress(double seconds, uint64_t handled, uint64_t restarts,
                    size_t degraded, uint64_t stand_ins, size_t dead_letters,
                    std::ostream& out,
                    const std::vector<tool_figures>& tools = {});

/// The report at the end of `vigil run`.
void print_run_report(const run_outcome& r, bool as_json, std::ostream& out);

/// `vigil inspect` (agents): `agents` is the JSON array of the agents.
void print_agents(const nlohmann::json& agents, bool as_json,
                  std::ostream& out);

/// `vigil inspect mailbox PATH`: `pending` is the JSON array of envelopes.
void print_mailbox(const nlohmann::json& pending, const std::string& path,
                   bool as_json, std::ostream& out);

/// `vigil inspect sagas`: one line per durable saga run.
void print_saga_runs(const nlohmann::json& runs, bool as_json,
                     std::ostream& out);

/// `vigil inspect dead-letters` and `vigil dead-letters list`.
void print_dead_letters(const nlohmann::json& letters, bool as_json,
                        std::ostream& out);

/// `vigil inspect tools`: one line per stored breaker.
/// A Unix time in ms as "2024-05-01T12:00:00.250Z" ("-" for 0 or less).
std::string utc(int64_t unix_ms);

/// A span of ms as "1h2m3.5s" or "250ms".
std::string span(int64_t ms);

void print_breakers(const nlohmann::json& breakers, bool as_json,
                    std::ostream& out);

} // namespace vigil::cli
