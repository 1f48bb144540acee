// The node's counts as Prometheus metric families, read at each scrape.

#include <cmath>
#include <limits>

#include "vigil/actors/runtime.hpp"
#include "vigil/metrics/exporter.hpp"
#include "vigil/version.hpp"

namespace vigil::metrics {

namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using labels = std::vector<ClientMetric::Label>;

/// `s` as valid UTF-8 (the text format's encoding): each byte that does
/// not start or continue a well-formed sequence becomes U+FFFD. A path may
/// hold any bytes but '/'.
std::string utf8(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  auto cont = [&](size_t i) {
    return i < s.size() && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80;
  };
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80                ? 1
               : (c >> 5) == 0x6 && c >= 0xC2 ? 2
               : (c >> 4) == 0xE      ? 3
               : (c >> 3) == 0x1E && c <= 0xF4 ? 4
                                      : 0;
    bool ok = n > 0 && i + n <= s.size();
    for (size_t k = 1; ok && k < n; ++k)
      ok = cont(i + k);
    if (ok && n == 3) {
      // No overlong forms, no surrogates.
      auto c1 = static_cast<unsigned char>(s[i + 1]);
      ok = !(c == 0xE0 && c1 < 0xA0) && !(c == 0xED && c1 >= 0xA0);
    } else if (ok && n == 4) {
      auto c1 = static_cast<unsigned char>(s[i + 1]);
      ok = !(c == 0xF0 && c1 < 0x90) && !(c == 0xF4 && c1 >= 0x90);
    }
    if (ok) {
      out.append(s, i, n);
      i += n;
    } else {
      out += "\xEF\xBF\xBD";
      ++i;
    }
  }
  return out;
}

labels clean(labels ls) {
  for (auto& l : ls)
    l.value = utf8(l.value);
  return ls;
}

MetricFamily family(std::string name, std::string help, MetricType type) {
  MetricFamily f;
  f.name = std::move(name);
  f.help = std::move(help);
  f.type = type;
  return f;
}

void sample(MetricFamily& f, labels ls, double v) {
  ClientMetric m;
  m.label = clean(std::move(ls));
  if (f.type == MetricType::Counter)
    m.counter.value = v;
  else
    m.gauge.value = v;
  f.metric.push_back(std::move(m));
}

/// `counts` are per bucket (the last +Inf); `bounds` their upper bounds in
/// the unit counted, `scale` turns that unit into the exported one.
template <size_t N>
void histogram(MetricFamily& f, labels ls, const detail::histogram_counts& h,
            const detail::bounds<N>& bounds, double scale) {
  ClientMetric m;
  m.label = clean(std::move(ls));
  uint64_t cum = 0;
  for (size_t i = 0; i < h.buckets.size(); ++i) {
    cum += h.buckets[i];
    ClientMetric::Bucket b;
    b.cumulative_count = cum;
    b.upper_bound = i < N ? static_cast<double>(bounds[i]) * scale
                          : std::numeric_limits<double>::infinity();
    m.histogram.bucket.push_back(b);
  }
  m.histogram.sample_count = cum;
  m.histogram.sample_sum = static_cast<double>(h.sum) * scale;
  f.metric.push_back(std::move(m));
}

constexpr double ns = 1e-9;

void node_families(const runtime& rt, std::vector<MetricFamily>& out) {
  auto info = family("vigil_build_info",
                     "vigil's release and the data dir format it writes",
                     MetricType::Gauge);
  sample(info,
         {{"data_format", std::to_string(store::format)},
          {"version", VIGIL_VERSION}},
         1);
  out.push_back(std::move(info));
  // The node-wide counters, but for those exported with labels below.
  rt.stats().for_each(
    [&](std::string_view name, std::string_view help, counters::kind k,
        uint64_t v) {
      if (name == "restarts" || name == "dead_letters")
        return;
      bool counter = k == counters::kind::counter;
      auto f = family("vigil_" + std::string{name}
                        + (counter ? "_total" : ""),
                      std::string{help},
                      counter ? MetricType::Counter : MetricType::Gauge);
      sample(f, {}, static_cast<double>(v));
      out.push_back(std::move(f));
    });
}

void agent_families(const runtime& rt, std::vector<MetricFamily>& out) {
  auto handled = family("vigil_envelopes_handled_total",
                        "envelopes an agent's handler ran on, by how it "
                        "ended: replied, refused (an answer), rejected "
                        "(bad payload, unknown type, expired), failed (a "
                        "throw or past its deadline)",
                        MetricType::Counter);
  auto seconds = family("vigil_envelope_handling_seconds",
                        "time in an agent's handler per envelope",
                        MetricType::Histogram);
  auto queued = family("vigil_envelopes_queued",
                       "envelopes waiting in agents' queues now",
                       MetricType::Gauge);
  auto running = family("vigil_agents_running", "live agents (cells) now",
                        MetricType::Gauge);
  auto shed = family("vigil_envelopes_shed_total",
                     "envelopes refused as overloaded: the agent's queue "
                     "was full (queue_cap)",
                     MetricType::Counter);
  for (auto& [type, t] : rt.meters().by_type()) {
    for (size_t i = 0; i < detail::handling_kinds; ++i)
      sample(handled,
             {{"agent_type", type}, {"outcome", detail::handling_names[i]}},
             static_cast<double>(t.handled[i]));
    auto h = t.seconds;
    if (h.buckets.empty())
      h.buckets.assign(detail::duration_bounds.size() + 1, 0);
    histogram(seconds, {{"agent_type", type}}, h, detail::duration_bounds, ns);
    sample(queued, {{"agent_type", type}}, static_cast<double>(t.queued));
    sample(running, {{"agent_type", type}}, static_cast<double>(t.running));
    sample(shed, {{"agent_type", type}}, static_cast<double>(t.shed));
  }
  for (auto* f : {&handled, &seconds, &queued, &running, &shed})
    out.push_back(std::move(*f));
}

void supervisor_families(const runtime& rt, std::vector<MetricFamily>& out) {
  auto restarts = family("vigil_restarts_total",
                         "restarts of a supervisor's children",
                         MetricType::Counter);
  auto escalations = family("vigil_escalations_total",
                            "times a supervisor gave up (restart intensity "
                            "reached, or a child that escalates failed) and "
                            "escalated to its parent",
                            MetricType::Counter);
  auto degraded = family("vigil_degraded_children",
                         "a supervisor's children running degraded now (a "
                         "stand-in answers for them)",
                         MetricType::Gauge);
  for (auto& [path, m] : rt.meters().supervisors()) {
    sample(restarts, {{"supervisor", path}},
           static_cast<double>(m->restarts.load(std::memory_order_relaxed)));
    sample(escalations, {{"supervisor", path}},
           static_cast<double>(
             m->escalations.load(std::memory_order_relaxed)));
    sample(degraded, {{"supervisor", path}},
           static_cast<double>(m->degraded.load(std::memory_order_relaxed)));
  }
  for (auto* f : {&restarts, &escalations, &degraded})
    out.push_back(std::move(*f));
}

void dead_letter_families(const runtime& rt, std::vector<MetricFamily>& out) {
  auto total = family("vigil_dead_letters_total",
                      "dead letters recorded, by the code their reason "
                      "starts with",
                      MetricType::Counter);
  auto now = family("vigil_dead_letters",
                    "dead letters held in memory now, by reason code",
                    MetricType::Gauge);
  for (auto& [reason, n] : rt.dead_log().by_reason())
    sample(total, {{"reason", reason}}, static_cast<double>(n));
  for (auto& [reason, n] : rt.dead_log().current_by_reason())
    sample(now, {{"reason", reason}}, static_cast<double>(n));
  out.push_back(std::move(total));
  out.push_back(std::move(now));
}

void tool_families(const runtime& rt, std::vector<MetricFamily>& out) {
  auto calls = family("vigil_tool_calls_total",
                      "tool calls that ended, by resilience4j's kinds: "
                      "successful or failed, with or without a retry",
                      MetricType::Counter);
  auto seconds = family("vigil_tool_call_seconds",
                        "time of one attempt of a tool call",
                        MetricType::Histogram);
  auto retries = family("vigil_tool_retries_total", "retry attempts made",
                        MetricType::Counter);
  auto budget = family("vigil_tool_budget_refusals_total",
                       "retries refused by the tool's retry budget or the "
                       "request's attempt budget",
                       MetricType::Counter);
  auto state = family("vigil_tool_breaker_state",
                      "the tool's circuit breaker: 1 for its state now, 0 "
                      "for the others",
                      MetricType::Gauge);
  auto refused = family("vigil_tool_not_permitted_total",
                        "calls refused because the breaker was open",
                        MetricType::Counter);
  auto abandoned = family("vigil_tool_abandoned_total",
                          "attempts given up at their timeout while the "
                          "tool still ran",
                          MetricType::Counter);
  auto others = family("vigil_tool_refusals_total",
                       "calls refused before they ran: bulkhead_full, "
                       "rate_limited, cost_exceeded",
                       MetricType::Counter);
  auto get = [](const std::atomic<uint64_t>& x) {
    return static_cast<double>(x.load(std::memory_order_relaxed));
  };
  for (auto& entry : rt.tools()) {
    // (Not a structured binding: C++17 lambdas cannot capture one.)
    const std::string& name = entry.first;
    auto& tool = entry.second;
    auto& s = tool->stats();
    labels l{{"tool", name}};
    auto kind = [&](const char* k, const std::atomic<uint64_t>& x) {
      sample(calls, {{"kind", k}, {"tool", name}}, get(x));
    };
    kind("successful_without_retry", s.succeeded_without_retry);
    kind("successful_with_retry", s.succeeded_with_retry);
    kind("failed_without_retry", s.failed_without_retry);
    kind("failed_with_retry", s.failed_with_retry);
    histogram(seconds, l, s.attempt_ns.read(), detail::duration_bounds, ns);
    sample(retries, l, get(s.retries));
    sample(budget, l, get(s.budget_refusals));
    sample(refused, l, get(s.not_permitted));
    sample(abandoned, l, get(s.abandoned));
    sample(others, {{"reason", "bulkhead_full"}, {"tool", name}},
           get(s.bulkhead_full));
    sample(others, {{"reason", "rate_limited"}, {"tool", name}},
           get(s.rate_limited));
    sample(others, {{"reason", "cost_exceeded"}, {"tool", name}},
           get(s.cost_exceeded));
    auto v = tool->look();
    using bs = resilience::breaker_state;
    for (auto [st, label] : {std::pair{bs::closed, "closed"},
                             std::pair{bs::open, "open"},
                             std::pair{bs::half_open, "half_open"}})
      sample(state, {{"state", label}, {"tool", name}},
             v.state == st ? 1.0 : 0.0);
  }
  for (auto* f : {&calls, &seconds, &retries, &budget, &state, &refused,
                  &abandoned, &others})
    out.push_back(std::move(*f));
}

void store_families(const runtime& rt, std::vector<MetricFamily>& out) {
  auto& c = rt.stats();
  auto batch = family("vigil_writer_commit_items",
                      "items per write transaction the writer committed",
                      MetricType::Histogram);
  histogram(batch, {}, c.writer_batch.read(), detail::batch_bounds, 1.0);
  out.push_back(std::move(batch));
  auto latency = family("vigil_writer_commit_seconds",
                        "time of one write transaction (commit included)",
                        MetricType::Histogram);
  histogram(latency, {}, c.writer_commit_ns.read(), detail::duration_bounds,
            ns);
  out.push_back(std::move(latency));
  auto& st = rt.storage();
  if (!st)
    return;
  auto u = st->usage();
  auto map = family("vigil_lmdb_map_size_bytes",
                    "the LMDB map's size (it grows when full, up to "
                    "max_map_size)",
                    MetricType::Gauge);
  sample(map, {}, static_cast<double>(u.map_size));
  out.push_back(std::move(map));
  auto used = family("vigil_lmdb_used_bytes",
                     "bytes of the LMDB map in use (its last page used)",
                     MetricType::Gauge);
  sample(used, {}, static_cast<double>(u.used));
  out.push_back(std::move(used));
}

} // namespace

node_collector::node_collector(std::weak_ptr<const runtime> rt)
  : rt_(std::move(rt)) {
  // nop
}

std::vector<MetricFamily> node_collector::Collect() const {
  std::vector<MetricFamily> out;
  auto rt = rt_.lock();
  if (!rt)
    return out;
  node_families(*rt, out);
  agent_families(*rt, out);
  supervisor_families(*rt, out);
  dead_letter_families(*rt, out);
  tool_families(*rt, out);
  store_families(*rt, out);
  return out;
}

} // namespace vigil::metrics
