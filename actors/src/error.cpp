#include "vigil/actors/error.hpp"

#include <caf/atom.hpp>
#include <caf/message.hpp>
#include <caf/sec.hpp>
#include <caf/exit_reason.hpp>

namespace vigil {

namespace {

constexpr caf::atom_value category = caf::atom("vigil");

} // namespace

const char* to_string(errc x) noexcept {
  switch (x) {
    case errc::none: return "none";
    case errc::deadline_exceeded: return "deadline_exceeded";
    case errc::buffer_overflow: return "buffer_overflow";
    case errc::not_running: return "not_running";
    case errc::running: return "running";
    case errc::restarting: return "restarting";
    case errc::not_found: return "not_found";
    case errc::already_present: return "already_present";
    case errc::already_started: return "already_started";
    case errc::simple_one_for_one: return "simple_one_for_one";
    case errc::reached_max_restart_intensity:
      return "reached_max_restart_intensity";
    case errc::escalated: return "escalated";
    case errc::poison_message: return "poison_message";
    case errc::handler_failed: return "handler_failed";
    case errc::start_failed: return "start_failed";
    case errc::unknown_message_type: return "unknown_message_type";
    case errc::unknown_agent_type: return "unknown_agent_type";
    case errc::bad_payload: return "bad_payload";
    case errc::invalid_child_spec: return "invalid_child_spec";
    case errc::saga_compensated: return "saga_compensated";
    case errc::compensation_failed: return "compensation_failed";
    case errc::shutting_down: return "shutting_down";
    case errc::storage_failed: return "storage_failed";
    case errc::duplicate: return "duplicate";
    case errc::expired: return "expired";
    case errc::reply_dropped: return "reply_dropped";
    case errc::unknown_tool: return "unknown_tool";
    case errc::circuit_open: return "circuit_open";
    case errc::bulkhead_full: return "bulkhead_full";
    case errc::rate_limited: return "rate_limited";
    case errc::cost_exceeded: return "cost_exceeded";
    case errc::tool_unavailable: return "tool_unavailable";
    case errc::tool_rejected: return "tool_rejected";
    case errc::invalid_output: return "invalid_output";
    case errc::in_use: return "in_use";
    case errc::idempotency_mismatch: return "idempotency_mismatch";
    case errc::approval_unavailable: return "approval_unavailable";
    case errc::approval_rejected: return "approval_rejected";
    case errc::approval_expired: return "approval_expired";
    case errc::fenced: return "fenced";
    case errc::refused: return "refused";
    case errc::degraded: return "degraded";
    case errc::lease_expired: return "lease_expired";
    case errc::conflict: return "conflict";
    case errc::overloaded: return "overloaded";
  }
  return "unknown";
}

caf::error make_error(errc x) {
  return caf::error{static_cast<uint8_t>(x), category};
}

caf::error make_error(errc x, std::string what) {
  return caf::error{static_cast<uint8_t>(x), category,
                    caf::make_message(std::move(what))};
}

bool is(const caf::error& x, errc code) noexcept {
  // (An empty error has no category: CAF 0.17 crashes on asking it.)
  return x && x.category() == category && x.code() == static_cast<uint8_t>(code);
}

bool undelivered(const caf::error& x) noexcept {
  return x == caf::sec::request_timeout || x == caf::sec::request_receiver_down
         || is(x, errc::not_found) || is(x, errc::not_running)
         || is(x, errc::buffer_overflow) || is(x, errc::storage_failed)
         || is(x, errc::shutting_down) || is(x, errc::overloaded);
}

std::string describe(const caf::error& x) {
  if (!x)
    return "normal";
  std::string out;
  if (x.category() == category) {
    out = to_string(static_cast<errc>(x.code()));
  } else if (x.category() == caf::atom("exit")) {
    out = caf::to_string(static_cast<caf::exit_reason>(x.code()));
  } else if (x.category() == caf::atom("system")) {
    out = caf::to_string(static_cast<caf::sec>(x.code()));
  } else {
    out = caf::to_string(x.category()) + ":" + std::to_string(x.code());
  }
  auto& ctx = x.context();
  if (ctx.match_elements<std::string>())
    out += ": " + ctx.get_as<std::string>(0);
  else if (!ctx.empty())
    out += ": " + caf::to_string(ctx);
  return out;
}

} // namespace vigil
