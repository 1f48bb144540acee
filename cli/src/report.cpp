#include "report.hpp"

#include <cstdio>

#include "vigil/actors/cell.hpp"

namespace vigil::cli {

namespace {

std::string state_of(const std::string& status) {
  if (status == "restarting")
    return "failed"; // down, waiting for its restart
  return status;     // running, degraded, stopped
}

bool fill(node& nd, tree_node& t) {
  auto kids = nd.which_children(t.path);
  if (!kids)
    return false;
  for (auto& c : *kids) {
    tree_node x;
    x.name = c.id;
    x.path = c.path;
    x.kind = c.kind == child_kind::supervisor ? "supervisor" : "worker";
    x.state = state_of(c.status);
    x.restarts = c.restarts;
    if (c.kind == child_kind::worker && c.handle) {
      if (auto* g = queue_of(c.handle)) {
        x.has_queue = true;
        x.queued = g->queued.load(std::memory_order_relaxed);
        x.queue_cap = g->cap;
        x.taken = g->taken.load(std::memory_order_relaxed);
        x.shed = g->shed.load(std::memory_order_relaxed);
      }
    }
    if (c.kind == child_kind::supervisor && c.status == "running")
      fill(nd, x);
    t.children.push_back(std::move(x));
  }
  return true;
}

} // namespace

bool snapshot_tree(node& nd, const std::string& root, tree_node& out) {
  tree_node t;
  t.name = root;
  t.path = root;
  t.kind = "supervisor";
  t.state = "running";
  if (!fill(nd, t))
    return false;
  out = std::move(t);
  return true;
}

void totals(const tree_node& t, uint64_t& restarts, size_t& degraded) {
  restarts += t.restarts;
  if (t.state == "degraded")
    ++degraded;
  for (auto& c : t.children)
    totals(c, restarts, degraded);
}

nlohmann::json to_json(const tree_node& t) {
  nlohmann::json j{{"name", t.name},
                   {"path", t.path},
                   {"kind", t.kind},
                   {"state", t.state},
                   {"restarts", t.restarts}};
  if (t.has_queue)
    j["queue"] = {{"queued", t.queued},
                  {"cap", t.queue_cap},
                  {"taken", t.taken},
                  {"shed", t.shed}};
  if (t.kind == "supervisor") {
    auto kids = nlohmann::json::array();
    for (auto& c : t.children)
      kids.push_back(to_json(c));
    j["children"] = std::move(kids);
  }
  return j;
}

void print_tree(const tree_node& t, std::ostream& out, int depth) {
  out << std::string(static_cast<size_t>(depth) * 2, ' ') << t.name << "  "
      << t.kind << "  " << t.state;
  if (t.restarts > 0)
    out << "  restarts=" << t.restarts;
  if (t.shed > 0)
    out << "  shed=" << t.shed << " (queue_cap " << t.queue_cap << ")";
  out << "\n";
  for (auto& c : t.children)
    print_tree(c, out, depth + 1);
}

void print_progress(double seconds, uint64_t handled, uint64_t restarts,
                    size_t degraded, uint64_t stand_ins, size_t dead_letters,
                    std::ostream& out, const std::vector<tool_figures>& tools) {
  char line[200];
  std::snprintf(line, sizeof(line),
                "vigil: %6.1fs  handled=%llu  restarts=%llu  degraded=%zu  "
                "stand_in=%llu  dead_letters=%zu",
                seconds, static_cast<unsigned long long>(handled),
                static_cast<unsigned long long>(restarts), degraded,
                static_cast<unsigned long long>(stand_ins), dead_letters);
  out << line;
  if (!tools.empty()) {
    tool_figures sum;
    std::string open;
    for (auto& t : tools) {
      sum.calls += t.calls;
      sum.retries += t.retries;
      sum.failed += t.failed;
      sum.circuit_open += t.circuit_open;
      sum.budget_refusals += t.budget_refusals;
      sum.bulkhead_full += t.bulkhead_full;
      sum.rate_limited += t.rate_limited;
      if (t.breaker != "closed")
        open += (open.empty() ? "" : ",") + t.name;
    }
    out << "  tool_calls=" << sum.calls << "  tool_retries=" << sum.retries
        << "  tool_failed=" << sum.failed
        << "  circuit_open=" << sum.circuit_open
        << "  budget_refusals=" << sum.budget_refusals
        << "  bulkhead_full=" << sum.bulkhead_full
        << "  rate_limited=" << sum.rate_limited
        << "  open_breakers=" << (open.empty() ? "none" : open);
  }
  out << "\n" << std::flush;
}

void print_run_report(const run_outcome& r, bool as_json, std::ostream& out) {
  auto& dls = r.dead_letters;
  if (as_json) {
    nlohmann::json j;
    j["tree"] = to_json(r.tree);
    auto items = nlohmann::json::array();
    for (size_t i = 0; i < dls.size() && i < 100; ++i)
      items.push_back({{"seq", dls[i].seq},
                       {"path", dls[i].path},
                       {"type", dls[i].env.type},
                       {"id", dls[i].env.id},
                       {"reason", dls[i].reason}});
    j["dead_letters"] = {{"count", r.dead_total},
                         {"by_reason", r.dead_by_reason},
                         {"first", items}};
    j["stand_in_answers"] = r.stand_in_answers;
    j["sagas"] = {{"completed", r.sagas.completed},
                  {"compensated", r.sagas.compensated},
                  {"compensation_failed", r.sagas.compensation_failed},
                  {"resumed", r.sagas.resumed},
                  {"outcomes_resent", r.sagas.outcomes_resent}};
    auto tools = nlohmann::json::object();
    auto open = nlohmann::json::array();
    for (auto& t : r.tools) {
      tools[t.name] = to_json(t);
      if (t.breaker != "closed")
        open.push_back(t.name);
    }
    j["tools"] = std::move(tools);
    j["open_breakers"] = std::move(open);
    j["outcome"] = r.escalated ? "escalated" : "completed";
    if (r.escalated)
      j["cause"] = r.cause;
    j["handled"] = r.handled;
    j["restarts"] = r.restarts;
    j["restarts_all"] = r.restarts_all;
    j["seconds"] = r.seconds;
    out << dump_json(j) << std::endl;
    return;
  }
  out << "== " << r.name << " after " << r.seconds << " s\n";
  print_tree(r.tree, out);
  out << "handled " << r.handled << " envelopes, " << r.restarts
      << " restarts in this tree";
  if (r.restarts_all != r.restarts)
    out << " (" << r.restarts_all
        << " in all, with those before a supervisor's restart)";
  out << ", " << r.stand_in_answers << " stand-in answers, " << r.dead_total
      << " dead letters";
  if (!r.dead_by_reason.empty()) {
    out << " (";
    bool first = true;
    for (auto& [code, n] : r.dead_by_reason) {
      out << (first ? "" : ", ") << code << " " << n;
      first = false;
    }
    out << ")";
  }
  out << "\n";
  if (r.sagas.any())
    out << "sagas: " << r.sagas.completed << " completed, "
        << r.sagas.compensated << " compensated, "
        << r.sagas.compensation_failed
        << " with a compensation in the dead letters, " << r.sagas.resumed
        << " resumed from the data dir, " << r.sagas.outcomes_resent
        << " resent inputs answered with their stored outcome\n";
  print_tools(r.tools, out);
  for (size_t i = 0; i < dls.size() && i < 10; ++i)
    out << "  dead letter " << dls[i].seq << " " << dls[i].path << ": "
        << dls[i].reason << "\n";
  out << "outcome: "
      << (r.escalated ? "escalated <- " + r.cause : std::string{"completed"})
      << "\n";
}

void print_agents(const nlohmann::json& agents, bool as_json,
                  std::ostream& out) {
  if (as_json) {
    out << dump_json(agents) << std::endl;
    return;
  }
  for (auto& a : agents)
    out << a["path"].get<std::string>() << "  "
        << a["agent"].get<std::string>() << "  "
        << a["durability"].get<std::string>() << "  seq=" << a["seq"]
        << "  pending=" << a["pending"] << "  outbox=" << a["outbox"]
        << "  state=" << dump_json(a["state"], -1) << "\n";
  out << agents.size() << " durable agents\n";
}

void print_mailbox(const nlohmann::json& pending, const std::string& path,
                   bool as_json, std::ostream& out) {
  if (as_json) {
    out << dump_json(pending) << std::endl;
    return;
  }
  for (auto& e : pending)
    out << "seq=" << e["seq"] << "  id=" << e["id"] << "  "
        << e["type"].get<std::string>() << "  attempt=" << e["attempt"]
        << "  " << dump_json(e["payload"], -1) << "\n";
  out << pending.size() << " pending envelopes for " << path << "\n";
}

void print_dead_letters(const nlohmann::json& letters, bool as_json,
                        std::ostream& out) {
  if (as_json) {
    out << dump_json(letters) << std::endl;
    return;
  }
  uint64_t repeats = 0;
  for (auto& x : letters) {
    out << x["seq"] << "  " << x["path"].get<std::string>() << "  "
        << x["reason"].get<std::string>();
    if (x.contains("repeats")) {
      auto k = x["repeats"].get<uint64_t>();
      repeats += k;
      out << "  (and " << k << " more like it, counted)";
    }
    out << "\n";
  }
  out << letters.size() << " dead letters";
  if (repeats > 0)
    out << ", standing for " << letters.size() + repeats;
  out << "\n";
}

void print_saga_runs(const nlohmann::json& runs, bool as_json,
                     std::ostream& out) {
  if (as_json) {
    out << dump_json(runs) << std::endl;
    return;
  }
  size_t open = 0;
  for (auto& r : runs) {
    auto phase = r["phase"].get<std::string>();
    out << r["saga"].get<std::string>() << "  origin="
        << r["origin"].get<std::string>() << " id=" << r["id"] << "  "
        << phase;
    if (phase == "finished") {
      out << "  " << r["outcome"].get<std::string>();
    } else {
      ++open;
      out << "  " << r["call"].get<std::string>() << " "
          << r["step"].get<std::string>() << " (attempt "
          << r["attempts"] << ")";
    }
    if (r["resumes"].get<uint64_t>() > 0)
      out << "  resumed " << r["resumes"] << "x";
    out << "\n";
  }
  out << runs.size() << " saga runs (" << open << " unfinished)\n";
}

} // namespace vigil::cli
