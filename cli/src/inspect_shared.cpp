// `vigil inspect shared [NAME]`: the shared state of a data dir: every
// store's keys with their versions and writers, and every queue's depth,
// live leases and their holders; with NAME, that store's keys with the
// versions kept in their history (who wrote what).

#include <chrono>
#include <iostream>

#include "inspect.hpp"
#include "report.hpp"
#include "vigil/persistence/shared.hpp"

namespace vigil::cli {

using nlohmann::json;

namespace {

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

/// True if `v` is valid UTF-8 without control characters.
bool printable_utf8(const std::string& v) {
  size_t i = 0;
  while (i < v.size()) {
    auto c = static_cast<unsigned char>(v[i]);
    size_t n = 0;
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7f)
        return false;
    } else if ((c >> 5) == 0x6) {
      n = 1;
    } else if ((c >> 4) == 0xe) {
      n = 2;
    } else if ((c >> 3) == 0x1e) {
      n = 3;
    } else {
      return false;
    }
    if (i + n >= v.size() && n > 0)
      return false;
    for (size_t k = 1; k <= n; ++k)
      if ((static_cast<unsigned char>(v[i + k]) & 0xc0) != 0x80)
        return false;
    i += n + 1;
  }
  return true;
}

/// JSON as text that never throws on bad UTF-8 (it is replaced).
std::string dumped(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

/// A value as text if it is printable UTF-8, else its size and bytes
/// escaped (\xNN), so that no value can break the output.
json value_json(const std::string& v) {
  if (printable_utf8(v))
    return v;
  return json{{"bytes", v.size()}, {"escaped", printable_key(v)}};
}

/// A name or key as text: as it is if printable UTF-8, else escaped.
std::string text_of(const std::string& v) {
  return printable_utf8(v) ? v : printable_key(v);
}

json version_json(const records::KvRecord& r) {
  return json{{"version", r.version()},
              {"deleted", r.deleted()},
              {"value", r.deleted() ? json(nullptr) : value_json(r.value())},
              {"writer", text_of(r.writer())},
              {"writer_message", r.writer_id()},
              {"written", utc(static_cast<int64_t>(r.written_ms()))}};
}

void print_text(const json& out, std::ostream& os) {
  auto& stores = out["stores"];
  for (auto& k : stores) {
    os << "store " << k["store"].get<std::string>() << "  key "
       << k["key"].get<std::string>();
    if (k.contains("problem")) {
      os << "  UNREADABLE: " << k["problem"].get<std::string>() << "\n";
      continue;
    }
    os << "  v" << k["version"] << (k["deleted"].get<bool>() ? " (deleted)" : "")
       << "  by " << k["writer"].get<std::string>() << " at "
       << k["written"].get<std::string>();
    if (!k["deleted"].get<bool>())
      os << "  value=" << dumped(k["value"]);
    os << "\n";
    if (k.contains("history"))
      for (auto& h : k["history"])
        os << "    v" << h["version"] << "  by "
           << h["writer"].get<std::string>() << " (message "
           << h["writer_message"] << ") at " << h["written"].get<std::string>()
           << (h["deleted"].get<bool>() ? "  deleted" : "  value=" + dumped(h["value"]))
           << "\n";
  }
  os << stores.size() << " keys\n";
  for (auto& q : out["queues"]) {
    os << "queue " << q["queue"].get<std::string>() << "  ready=" << q["ready"]
       << "  leased=" << q["leased"] << "  done=" << q["done"]
       << "  dead=" << q["dead"];
    if (q["unreadable"].get<size_t>() > 0)
      os << "  unreadable=" << q["unreadable"];
    os << "\n";
    for (auto& l : q["leases"])
      os << "    task " << l["task"] << "  lease " << l["lease"] << "  held by "
         << l["holder"].get<std::string>() << "  attempt " << l["attempt"]
         << "/" << l["max_attempts"] << "  "
         << (l["expires_in_ms"].get<int64_t>() > 0
               ? "expires in " + span(l["expires_in_ms"].get<int64_t>())
               : std::string{"expired (claimable)"})
         << "\n";
  }
  os << out["queues"].size() << " queues\n";
}

} // namespace

int inspect_shared(store& st, const std::string& name, bool as_json) {
  std::vector<kv_listing> keys;
  std::vector<queue_listing> queues;
  if (auto s = kv_list(st, keys); s || (s = queue_list(st, queues))) {
    std::cerr << "vigil: " << s.message() << "\n";
    return exit_error;
  }
  json out{{"stores", json::array()}, {"queues", json::array()}};
  bool bad = false;
  for (auto& k : keys) {
    if (!name.empty() && k.name != name)
      continue;
    json j{{"store", text_of(k.name)}, {"key", text_of(k.key)}};
    if (!k.readable) {
      j["problem"] = k.problem;
      bad = true;
    } else {
      j.update(version_json(k.current));
      if (!name.empty()) {
        std::vector<records::KvRecord> h;
        if (auto s = kv_history(st, k.name, k.key, h)) {
          std::cerr << "vigil: " << s.message() << "\n";
          return exit_error;
        }
        j["history"] = json::array();
        for (auto& r : h)
          j["history"].push_back(version_json(r));
      }
    }
    out["stores"].push_back(std::move(j));
  }
  auto now = now_ms();
  for (auto& q : queues) {
    if (!name.empty() && q.name != name)
      continue;
    json leases = json::array();
    for (auto& t : q.live_leases)
      leases.push_back(
        {{"task", t.id()},
         {"lease", t.lease()},
         {"holder", text_of(t.holder())},
         {"attempt", t.attempts()},
         {"max_attempts", t.max_attempts()},
         {"expires", utc(static_cast<int64_t>(t.lease_expires_ms()))},
         {"expires_in_ms",
          static_cast<int64_t>(t.lease_expires_ms()) - now}});
    bad |= q.unreadable > 0;
    out["queues"].push_back({{"queue", text_of(q.name)},
                             {"ready", q.ready},
                             {"leased", q.leased},
                             {"done", q.done},
                             {"dead", q.dead},
                             {"unreadable", q.unreadable},
                             {"leases", std::move(leases)}});
  }
  if (as_json)
    std::cout << out.dump(2, ' ', false, json::error_handler_t::replace)
              << std::endl;
  else
    print_text(out, std::cout);
  return bad ? exit_error : exit_ok;
}

} // namespace vigil::cli
