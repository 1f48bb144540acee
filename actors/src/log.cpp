#include "vigil/actors/detail/log.hpp"

#include <memory>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace vigil::detail {

spdlog::logger& log() {
  static std::shared_ptr<spdlog::logger> logger = [] {
    if (auto mine = spdlog::get("vigil"))
      return mine;
    try {
      return spdlog::stderr_logger_mt("vigil");
    } catch (const spdlog::spdlog_ex&) { // registered meanwhile
      if (auto theirs = spdlog::get("vigil"))
        return theirs;
    }
    // Never null: an unregistered one (a program that compiled spdlog's
    // headers otherwise than vigil did sees another registry).
    return std::make_shared<spdlog::logger>(
      "vigil", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  }();
  return *logger;
}

} // namespace vigil::detail
