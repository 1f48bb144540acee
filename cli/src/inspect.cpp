// `vigil inspect`: what a data dir holds, as text or JSON.

#include "inspect.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/util/json_util.h>

#include "report.hpp"

namespace vigil::cli {

using nlohmann::json;

namespace {

std::string hex64(uint64_t x) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx",
                static_cast<unsigned long long>(x));
  return buf;
}

} // namespace

/// A Protobuf payload as JSON if its type is linked into this binary.
json payload_json(const std::string& type, const std::string& bytes) {
  auto* desc = google::protobuf::DescriptorPool::generated_pool()
                 ->FindMessageTypeByName(type);
  if (desc != nullptr) {
    std::unique_ptr<google::protobuf::Message> m{
      google::protobuf::MessageFactory::generated_factory()
        ->GetPrototype(desc)
        ->New()};
    std::string out;
    if (m->ParseFromString(bytes)
        && google::protobuf::util::MessageToJsonString(*m, &out).ok())
      return json::parse(out, nullptr, false);
  }
  return json{{"type", type},
              {"bytes", bytes.size()},
              {"note", "type not linked into this binary, or bytes do not "
                       "parse"}};
}

json envelope_json(const records::Envelope& e) {
  // Ids and trace context as W3C trace context writes them: lower-case
  // hex (origin and span id 16 digits, trace id 32).
  return json{{"id", e.id()},
              {"origin", hex64(e.origin())},
              {"trace_id", hex64(e.trace_id_high()) + hex64(e.trace_id())},
              {"parent_span", e.span_id() != 0 ? json(hex64(e.span_id()))
                                               : json(nullptr)},
              {"type", e.type()},
              {"attempt", e.attempt()},
              {"sender", e.sender()},
              {"payload", payload_json(e.type(), e.payload())}};
}

/// True if the data dir holds a record of an agent at `path`.
bool has_agent(store& st, const std::string& path) {
  std::vector<records::Snapshot> snaps;
  (void) st.snapshots(snaps);
  if (std::any_of(snaps.begin(), snaps.end(),
                  [&](auto& s) { return s.path() == path; }))
    return true;
  std::vector<std::string> jpaths;
  (void) st.journal_paths(jpaths);
  return std::find(jpaths.begin(), jpaths.end(), path) != jpaths.end();
}

/// `vigil inspect` (agents): every durable agent of the data dir.
int inspect_agents(store& st, bool as_json) {
  std::vector<records::Snapshot> snaps;
  std::vector<quarantined> bad;
  if (auto s = st.snapshots(snaps, &bad)) {
    std::cerr << "vigil: " << s.message() << "\n";
    return exit_error;
  }
  // A journal agent whose first record did not land (an older data dir,
  // say) is listed from its journal entries.
  std::vector<std::string> jpaths;
  (void) st.journal_paths(jpaths);
  for (auto& p : jpaths) {
    auto known = std::any_of(snaps.begin(), snaps.end(),
                             [&](auto& s) { return s.path() == p; });
    if (!known) {
      records::Snapshot s;
      s.set_path(p);
      s.set_agent("?");
      s.set_durability(2);
      snaps.push_back(std::move(s));
    }
  }
  std::sort(snaps.begin(), snaps.end(),
            [](auto& x, auto& y) { return x.path() < y.path(); });
  auto out = json::array();
  for (auto& s : snaps) {
    std::vector<records::JournalEntry> mb;
    (void) st.mailbox(s.path(), mb);
    std::vector<records::OutboxEntry> ob;
    (void) st.outbox(s.path(), ob);
    out.push_back(
      {{"path", s.path()},
       {"agent", s.agent()},
       {"durability", s.durability() == 2 ? "journal" : "snapshot"},
       {"seq", s.applied_seq()},
       {"next_seq", s.next_seq()},
       {"processed", s.processed()},
       {"pending", mb.size() + static_cast<size_t>(s.pending_size())},
       {"outbox", ob.size()},
       {"state", s.state_type().empty()
                   ? json(nullptr)
                   : payload_json(s.state_type(), s.state())}});
  }
  print_agents(out, as_json, std::cout);
  for (auto& q : bad)
    std::cerr << "vigil: unreadable snapshot: " << q.reason << "\n";
  return exit_ok;
}

/// `vigil inspect mailbox PATH`: the agent's pending envelopes.
int inspect_mailbox(store& st, const std::string& dir,
                    const std::string& path, bool as_json) {
  if (path.empty()) {
    std::cerr << "vigil inspect mailbox: give the agent's PATH, e.g. "
                 "`vigil inspect --data-dir DIR mailbox root/counter`\n";
    return exit_usage;
  }
  std::vector<records::JournalEntry> mb;
  if (auto s = st.mailbox(path, mb)) {
    std::cerr << "vigil: " << s.message() << "\n";
    return exit_error;
  }
  if (mb.empty() && !has_agent(st, path)) {
    std::cerr << "vigil: no durable agent at " << path << " in " << dir
              << "; `vigil inspect --data-dir " << dir
              << "` lists the agents\n";
    return exit_error;
  }
  auto out = json::array();
  for (auto& je : mb) {
    auto e = envelope_json(je.env());
    e["seq"] = je.seq();
    out.push_back(std::move(e));
  }
  print_mailbox(out, path, as_json, std::cout);
  return exit_ok;
}

/// `vigil inspect dead-letters`, and `vigil dead-letters list [SEQ...]`
/// (only those seqs; exit 1 if one is not found).
int inspect_dead_letters(store& st, bool as_json,
                         const std::vector<uint64_t>& seqs) {
  std::vector<records::DeadLetter> dls;
  if (auto s = st.dead_letters(dls)) {
    std::cerr << "vigil: " << s.message() << "\n";
    return exit_error;
  }
  size_t missing = 0;
  if (!seqs.empty()) {
    std::vector<records::DeadLetter> chosen;
    for (auto seq : seqs) {
      auto i = std::find_if(dls.begin(), dls.end(),
                            [&](auto& d) { return d.seq() == seq; });
      if (i == dls.end()) {
        std::cerr << "vigil: dead letter " << seq << " not found\n";
        ++missing;
      } else {
        chosen.push_back(*i);
      }
    }
    dls = std::move(chosen);
  }
  auto out = json::array();
  for (auto& d : dls) {
    json x{{"seq", d.seq()}, {"path", d.path()}, {"reason", d.reason()},
           {"unix_ms", d.unix_ms()}};
    if (d.repeats() > 0)
      x["repeats"] = d.repeats(); // more like it, counted (rate limit)
    if (!d.raw().empty() || !d.db().empty()) {
      x["quarantined"] = {{"db", d.db()}, {"key_bytes", d.key().size()},
                          {"raw_bytes", d.raw().size()}};
    } else {
      x["envelope"] = envelope_json(d.env());
    }
    out.push_back(std::move(x));
  }
  print_dead_letters(out, as_json, std::cout);
  return missing == 0 ? exit_ok : exit_error;
}

/// `vigil inspect sagas [PATH]`: the durable saga runs (of the saga at
/// PATH, or all): phase, the call in flight and its attempts, the outcome.
int inspect_sagas(store& st, const std::string& path, bool as_json) {
  std::string prefix = path;
  if (!prefix.empty())
    prefix.push_back('\0');
  std::vector<std::pair<std::string, std::string>> rows;
  if (auto s = st.scan_prefix(db::sagas, prefix, rows)) {
    std::cerr << "vigil: " << s.message() << "\n";
    return exit_error;
  }
  auto out = json::array();
  size_t bad = 0;
  for (auto& [key, raw] : rows) {
    std::string_view saga;
    uint64_t origin = 0, id = 0;
    records::SagaRun r;
    auto f = decode_record(raw, r);
    if (!split_guard_key(key, saga, origin, id) || f != record_fault::none) {
      std::cerr << "vigil: [sagas] \"" << printable_key(key)
                << "\": " << describe(f, raw, r) << "\n";
      ++bad;
      continue;
    }
    auto& o = r.outcome();
    auto steps = json::array();
    for (auto& x : o.steps())
      steps.push_back({{"path", x.path()},
                       {"status", x.status()},
                       {"compensation_attempts", x.compensation_attempts()},
                       {"error", x.error()}});
    std::string outcome = o.completed()            ? "completed"
                          : o.failed_step().empty() ? ""
                          : "failed at " + o.failed_step()
                              + (o.compensation_failed()
                                   ? ", compensation failed"
                                   : ", compensated");
    auto step = r.call_step() < static_cast<uint32_t>(o.steps_size())
                  ? o.steps(static_cast<int>(r.call_step())).path()
                  : std::string{};
    out.push_back({{"saga", std::string{saga}},
                   {"origin", hex64(origin)},
                   {"id", id},
                   {"phase", r.phase()},
                   {"call", r.call_kind() == 1   ? "execute"
                            : r.call_kind() == 2 ? "compensate"
                                                 : ""},
                   {"step", step},
                   {"attempts", r.call_attempts()},
                   {"resumes", r.resumes()},
                   {"outcome", outcome},
                   {"failure", o.failure()},
                   {"input", envelope_json(r.input())},
                   {"steps", steps},
                   {"started_ms", r.started_ms()},
                   {"finished_ms", r.finished_ms()}});
  }
  print_saga_runs(out, as_json, std::cout);
  return bad == 0 ? exit_ok : exit_error;
}

/// `vigil inspect tools`: the circuit breakers the node keeps in the data
/// dir (meta "breaker/<tool>", written whenever one opens or closes), so
/// that a breaker left open by a stopped node can be seen before it
/// starts again.
int inspect_tools(store& st, bool as_json) {
  std::vector<std::pair<std::string, std::string>> rows;
  if (auto s = st.scan_prefix(db::meta, "breaker/", rows)) {
    std::cerr << "vigil: " << s.message() << "\n";
    return exit_error;
  }
  auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
               .count();
  auto out = json::array();
  size_t bad = 0;
  for (auto& [key, raw] : rows) {
    records::BreakerState b;
    if (auto f = decode_record(raw, b); f != record_fault::none) {
      std::cerr << "vigil: [meta] \"" << printable_key(key)
                << "\": " << describe(f, raw, b) << "\n";
      ++bad;
      continue;
    }
    const char* state = b.state() == 0   ? "closed"
                        : b.state() == 1 ? "open"
                        : b.state() == 2 ? "half_open"
                                         : "?";
    bool open = b.state() != 0;
    out.push_back(
      {{"tool", b.tool().empty() ? key.substr(8) : b.tool()},
       {"state", state},
       {"open_until_unix_ms", open ? b.open_until_unix_ms() : 0},
       {"open_left_ms",
        open ? std::max<int64_t>(0, b.open_until_unix_ms() - now) : 0},
       {"trips", b.trips()},
       {"updated_unix_ms", b.updated_unix_ms()}});
  }
  print_breakers(out, as_json, std::cout);
  return bad == 0 ? exit_ok : exit_error;
}

} // namespace vigil::cli
