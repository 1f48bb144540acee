#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

namespace vigil {

class runtime; // vigil/actors/runtime.hpp

namespace metrics {

/// A node's counts as Prometheus metric families, read when scraped: the
/// node-wide counters, each agent type's envelopes (by outcome, handling
/// time, queued, running, shed), each supervisor's restarts, escalations
/// and degraded children, the dead letters by reason, each tool's calls
/// (resilience4j's four kinds), retries, refusals, attempt time and
/// breaker state, the writer's commits and LMDB's map. Every name starts
/// with `vigil_`; labels are bounded (agent_type, supervisor, tool,
/// outcome, kind, reason, state). The hot paths only add to counters that
/// their own thread owns (detail/meters.hpp); this reads them.
class node_collector final : public prometheus::Collectable {
public:
  /// Reads `rt` (and its store, if any) for as long as it lives.
  explicit node_collector(std::weak_ptr<const runtime> rt);

  std::vector<prometheus::MetricFamily> Collect() const override;

private:
  std::weak_ptr<const runtime> rt_;
};

/// What /healthz and /readyz ask the node. Each returns an empty string
/// when healthy (ready), else why not; both run on the endpoint's thread.
struct health_checks {
  std::function<std::string()> live;
  std::function<std::string()> ready;
};

/// One HTTP endpoint on `host:port`: GET /metrics (Prometheus text format
/// 0.0.4), /healthz and /readyz (200 "ok", or 503 with the reason).
/// Anything else is 404, another method 405 (its body unread). Serves
/// from eight threads of its own, one request per connection (a client
/// that sends nothing for 1 s is dropped, one that stalls mid-request for
/// 2 s): a thread per connection, so more than eight slow clients at once
/// delay a probe by up to those 2 s. Destroying it frees the port at once
/// and waits for the requests being answered; a connection that a slow
/// client still holds ends later on its own, without touching the node.
class endpoint {
public:
  /// Binds `address` ("127.0.0.1:9464"; port 0 takes a free one). On
  /// failure returns null and sets `error` (names the address).
  static std::unique_ptr<endpoint>
  start(std::string_view address,
        std::vector<std::shared_ptr<prometheus::Collectable>> sources,
        health_checks checks, std::string& error);

  ~endpoint();

  endpoint(const endpoint&) = delete;
  endpoint& operator=(const endpoint&) = delete;

  /// The port it listens on.
  uint16_t port() const noexcept;

  /// host:port as bound.
  std::string address() const;

  /// The text a scrape gets now (what GET /metrics answers).
  std::string scrape() const;

  struct impl;

private:
  explicit endpoint(std::shared_ptr<impl> p);
  std::shared_ptr<impl> impl_;
};

/// Splits "IP:PORT" ("[::1]:9464" for IPv6; "localhost" is 127.0.0.1).
/// The host must be an IP address literal. False, with `error`, if it is
/// not one.
bool parse_address(std::string_view address, std::string& host,
                   uint16_t& port, std::string& error);

} // namespace metrics

} // namespace vigil
