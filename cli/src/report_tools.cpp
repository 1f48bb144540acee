// The tools' part of what the `vigil` command prints: their figures in the
// run report, and the breakers a data dir keeps (`vigil inspect tools`).

#include <cinttypes>
#include <cstdio>
#include <ctime>

#include "report.hpp"

namespace vigil::cli {

namespace {

uint64_t load(const std::atomic<uint64_t>& x) {
  return x.load(std::memory_order_relaxed);
}

} // namespace

// "2024-05-01T12:00:00.250Z"
std::string utc(int64_t unix_ms) {
  if (unix_ms <= 0)
    return "-";
  auto secs = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  auto n = std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof(buf) - n, ".%03dZ",
                static_cast<int>(unix_ms % 1000));
  return buf;
}

// "1h2m3.5s", "250ms"
std::string span(int64_t ms) {
  if (ms < 1000)
    return std::to_string(ms) + "ms";
  std::string out;
  if (ms >= 3600000) {
    out += std::to_string(ms / 3600000) + "h";
    ms %= 3600000;
  }
  if (ms >= 60000 || !out.empty()) {
    out += std::to_string(ms / 60000) + "m";
    ms %= 60000;
  }
  // Tenths cut, not rounded: 59,960 ms is "59.9s", never "60.0s".
  return out + std::to_string(ms / 1000) + "." + std::to_string(ms % 1000 / 100)
         + "s";
}

std::vector<tool_figures> read_tools(node& nd) {
  std::vector<tool_figures> out;
  for (auto& [name, t] : nd.rt()->tools()) {
    auto& s = t->stats();
    tool_figures f;
    f.name = name;
    f.type = t->impl().name;
    f.effect = to_string(t->decl().effect);
    f.calls = load(s.calls);
    f.executions = load(s.executions);
    f.retries = load(s.retries);
    f.succeeded_after_retry = load(s.succeeded_with_retry);
    f.succeeded = load(s.succeeded_without_retry) + f.succeeded_after_retry;
    f.failed = load(s.failed_without_retry) + load(s.failed_with_retry);
    f.budget_refusals = load(s.budget_refusals);
    f.circuit_open = load(s.not_permitted);
    f.bulkhead_full = load(s.bulkhead_full);
    f.rate_limited = load(s.rate_limited);
    f.cost_exceeded = load(s.cost_exceeded);
    f.deadline_exceeded = load(s.deadline_exceeded);
    f.abandoned = load(s.abandoned);
    auto v = t->look();
    f.breaker = resilience::to_string(v.state);
    f.next_probe_ms
      = std::chrono::duration_cast<std::chrono::milliseconds>(v.retry_after)
          .count();
    f.openings = v.openings;
    out.push_back(std::move(f));
  }
  return out;
}

nlohmann::json to_json(const tool_figures& t) {
  nlohmann::json j{{"type", t.type},
                   {"class", t.effect},
                   {"calls", t.calls},
                   {"executions", t.executions},
                   {"retries", t.retries},
                   {"succeeded", t.succeeded},
                   {"succeeded_after_retry", t.succeeded_after_retry},
                   {"failed", t.failed},
                   {"budget_refusals", t.budget_refusals},
                   {"circuit_open", t.circuit_open},
                   {"bulkhead_full", t.bulkhead_full},
                   {"rate_limited", t.rate_limited},
                   {"cost_exceeded", t.cost_exceeded},
                   {"deadline_exceeded", t.deadline_exceeded},
                   {"abandoned", t.abandoned},
                   {"breaker", t.breaker},
                   {"breaker_openings", t.openings}};
  if (t.breaker == "open")
    j["next_probe_ms"] = t.next_probe_ms;
  return j;
}

void print_tools(const std::vector<tool_figures>& tools, std::ostream& out) {
  for (auto& t : tools) {
    out << "tool " << t.name << " (" << t.type << ", " << t.effect
        << "): " << t.calls << " calls, " << t.executions << " executions, "
        << t.retries << " retries; " << t.succeeded << " succeeded ("
        << t.succeeded_after_retry << " after a retry), " << t.failed
        << " failed; refused: circuit_open " << t.circuit_open
        << ", budget " << t.budget_refusals << ", bulkhead_full "
        << t.bulkhead_full << ", rate_limited " << t.rate_limited
        << ", cost_exceeded " << t.cost_exceeded << "; deadline_exceeded "
        << t.deadline_exceeded << ", abandoned " << t.abandoned
        << "; breaker " << t.breaker;
    if (t.breaker == "open")
      out << " (next probe in " << span(t.next_probe_ms) << ")";
    if (t.openings > 0)
      out << ", opened " << t.openings << "x";
    out << "\n";
  }
}

void print_breakers(const nlohmann::json& breakers, bool as_json,
                    std::ostream& out) {
  if (as_json) {
    out << dump_json(breakers) << std::endl;
    return;
  }
  size_t open = 0;
  for (auto& b : breakers) {
    auto state = b["state"].get<std::string>();
    out << b["tool"].get<std::string>() << "  " << state;
    if (state != "closed") {
      ++open;
      auto left = b["open_left_ms"].get<int64_t>();
      out << "  until " << utc(b["open_until_unix_ms"].get<int64_t>())
          << (left > 0 ? " (" + span(left) + " left)"
                       : std::string{" (over: the next call is a probe)"});
    }
    out << "  trips=" << b["trips"] << "  updated "
        << utc(b["updated_unix_ms"].get<int64_t>()) << "\n";
  }
  out << breakers.size() << " breakers (" << open << " open)\n";
}

} // namespace vigil::cli
