#include "report.hpp"

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
  out << "\n";
  for (auto& c : t.children)
    print_tree(c, out, depth + 1);
}

} // namespace vigil::cli
