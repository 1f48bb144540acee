#include "vigil/actors/report.hpp"

#include <atomic>
#include <cstdio>
#include <ctime>
#include <memory>

#include <nlohmann/json.hpp>
#include <spdlog/formatter.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/spdlog.h>

#include "vigil/actors/detail/log.hpp"

namespace vigil {

namespace {

std::atomic<log_format> format_{log_format::text};


/// Writes every line as one JSON object: ts (UTC, microseconds), level,
/// logger, and either the fields of a report (a message that is itself a
/// JSON object, as `emit` makes in json) or `msg`.
class json_formatter final : public spdlog::formatter {
public:
  void format(const spdlog::details::log_msg& msg,
              spdlog::memory_buf_t& dest) override {
    using namespace std::chrono;
    auto t = msg.time.time_since_epoch();
    auto secs = duration_cast<seconds>(t);
    auto micros = duration_cast<microseconds>(t - secs).count();
    std::time_t tt = static_cast<std::time_t>(secs.count());
    std::tm tm{};
    gmtime_r(&tt, &tm);
    char ts[40];
    auto n = std::snprintf(ts, sizeof(ts),
                           "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ",
                           tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                           tm.tm_hour, tm.tm_min, tm.tm_sec,
                           static_cast<long>(micros));
    std::string_view payload{msg.payload.data(), msg.payload.size()};
    auto lvl = spdlog::level::to_string_view(msg.level);
    std::string head = "{\"ts\":\"" + std::string{ts, static_cast<size_t>(n)}
                       + "\",\"level\":\"" + std::string{lvl.data(), lvl.size()}
                       + "\",\"logger\":"
                       + nlohmann::json(std::string{msg.logger_name.data(),
                                                    msg.logger_name.size()})
                           .dump();
    dest.append(head.data(), head.data() + head.size());
    if (payload.size() >= 2 && payload.substr(0, 10) == "{\"report\":"
        && payload.back() == '}') {
      // A report: its own fields follow.
      dest.push_back(',');
      dest.append(payload.data() + 1, payload.data() + payload.size());
    } else {
      auto text = ",\"msg\":"
                  + nlohmann::json(std::string{payload})
                      .dump(-1, ' ', false,
                            nlohmann::json::error_handler_t::replace)
                  + "}";
      dest.append(text.data(), text.data() + text.size());
    }
    dest.push_back('\n');
  }

  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<json_formatter>();
  }
};

spdlog::level::level_enum level_of(std::string_view kind) {
  if (kind == "crash" || kind == "escalation")
    return spdlog::level::err;
  // As OTP's logger: progress at info, so that `warn` keeps only what
  // needs a person.
  if (kind == "probe" || kind == "dead_letter" || kind == "shed"
      || kind == "compensation")
    return spdlog::level::info;
  return spdlog::level::warn;
}

char hex_digit(unsigned x) {
  return "0123456789abcdef"[x & 0xf];
}

void put_hex(std::string& out, uint64_t x) {
  for (int i = 60; i >= 0; i -= 4)
    out.push_back(hex_digit(static_cast<unsigned>(x >> i)));
}

/// A path as a text report writes it: as it is if it is plain, else
/// quoted as a JSON string (a path may hold any byte but '/', newlines
/// too, and a report must stay one line that nothing else can forge).
std::string field(std::string_view x) {
  if (x.empty())
    return "-";
  bool plain = true;
  for (unsigned char c : x)
    plain = plain && c > 0x20 && c < 0x7f && c != '"' && c != '\\';
  if (plain)
    return std::string{x};
  return nlohmann::json(std::string{x}).dump(
    -1, ' ', false, nlohmann::json::error_handler_t::replace);
}

} // namespace

void apply_log_settings(const log_settings& s) {
  auto& lg = detail::log();
  lg.set_level(s.level);
  auto before = format_.exchange(s.format, std::memory_order_relaxed);
  if (s.format == log_format::json)
    lg.set_formatter(std::make_unique<json_formatter>());
  else if (before == log_format::json)
    // Back from JSON: spdlog's default pattern (a sink does not hand back
    // the formatter it had, so a program's own pattern is not restored).
    lg.set_formatter(std::make_unique<spdlog::pattern_formatter>());
}

log_format current_log_format() noexcept {
  return format_.load(std::memory_order_relaxed);
}

std::string trace_hex(const envelope& e) {
  std::string out;
  out.reserve(32);
  put_hex(out, e.trace_id_high);
  put_hex(out, e.trace_id);
  return out;
}

void emit(const report& r) {
  auto& lg = detail::log();
  auto lvl = level_of(r.kind);
  if (!lg.should_log(lvl))
    return;
  std::string trace = r.env != nullptr ? trace_hex(*r.env) : std::string{};
  if (current_log_format() == log_format::json) {
    // Ordered: "report" first, which is how the JSON formatter knows a
    // report from any other line.
    nlohmann::ordered_json j;
    j["report"] = std::string{r.kind};
    j["supervisor"] = std::string{r.supervisor};
    j["context"] = std::string{r.context};
    j["reason"] = std::string{r.reason};
    j["offender"] = std::string{r.offender};
    j["attempt"] = r.attempt;
    if (!trace.empty())
      j["trace_id"] = trace;
    lg.log(lvl, "{}",
           j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    return;
  }
  // Text: OTP's field names, the reason last and quoted (it may hold
  // spaces).
  std::string line = "vigil: report ";
  line += r.kind;
  line += " supervisor=";
  line += field(r.supervisor);
  line += " context=";
  line += r.context;
  line += " offender=";
  line += field(r.offender);
  line += " attempt=" + std::to_string(r.attempt);
  if (!trace.empty())
    line += " trace_id=" + trace;
  line += " reason=";
  line += nlohmann::json(std::string{r.reason})
            .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  lg.log(lvl, "{}", line);
}

} // namespace vigil
