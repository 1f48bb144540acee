// `vigil approvals`: list and show the calls that wait for a person, and
// approve or reject them, also while a node runs in the data dir.
//
// A decision is validated against the data dir (read-only, as `vigil
// inspect` reads it), then dropped as a file into DIR/approvals/. If no
// node holds the data dir, this command takes the file in itself, as a
// node would at its start; otherwise it waits for the node to take it in.
// Either way it reports what the record says afterwards.

#include "approvals.hpp"

#include <algorithm>
#include <pwd.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <thread>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "duration.hpp"
#include "inspect.hpp"
#include "report.hpp"
#include "vigil/persistence/approvals.hpp"

namespace vigil::cli {

namespace {

using nlohmann::json;

struct approvals_args {
  std::string dir;
  std::string id;
  bool all = false;
  bool as_json = false;
  std::string by;
  std::string reason;
  std::string wait = "10s";
};

int64_t now_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch())
    .count();
}

std::string list_hint(const std::string& dir, bool all) {
  return "Run `vigil approvals list --data-dir " + dir
         + (all ? " --all" : "") + "`";
}

int fail(const std::string& what, int rc = exit_error) {
  std::cerr << "vigil approvals: " << what << "\n";
  return rc;
}

int open_read_only(const std::string& dir, std::unique_ptr<store>& st) {
  store_options so;
  so.dir = dir;
  if (auto s = store::open_read_only(so, st))
    return fail(s.message());
  return exit_ok;
}

/// The approval `a.id` names, with an error that says what to do.
int find_or_fail(store& st, const approvals_args& a, approval_entry& e) {
  auto s = find_approval(st, a.id, e);
  if (!s)
    return exit_ok;
  if (s.code() == store_errc::not_found)
    return fail(s.message() + ". " + list_hint(a.dir, true)
                + " for the ids");
  if (s.code() == store_errc::invalid)
    return fail(s.message(), exit_usage);
  return fail(s.message());
}

std::string state_name(const approval_entry& e) {
  if (!e.fault.empty())
    return "damaged";
  bool known = true;
  auto st = state_of(e.rec, &known);
  return known ? to_string(st)
               : "in state " + std::to_string(e.rec.state())
                   + " (unknown to this vigil)";
}

bool is_pending(const records::ApprovalRecord& r) {
  bool known = true;
  return state_of(r, &known) == approval_state::pending && known;
}

/// A pending approval whose expiry passed: its call times out when it
/// next runs; no decision can help it.
bool overdue(const records::ApprovalRecord& r, int64_t now) {
  return is_pending(r) && r.expires_unix_ms() != 0
         && static_cast<int64_t>(r.expires_unix_ms()) <= now;
}

json entry_json(const approval_entry& e, int64_t now) {
  json j{{"id", e.id},
         {"key", hex_encode(e.key)},
         {"key_text", printable_key(e.key)},
         {"state", state_name(e)}};
  if (!e.fault.empty()) {
    j["fault"] = e.fault;
    return j;
  }
  auto& r = e.rec;
  auto request = json::parse(r.request_json(), nullptr, false);
  auto requested = static_cast<int64_t>(r.requested_unix_ms());
  auto expires = static_cast<int64_t>(r.expires_unix_ms());
  j.update({{"path", r.path()},
            {"tool", r.tool()},
            {"kind", r.kind() == static_cast<uint32_t>(approval_kind::envelope)
                       ? "envelope"
                       : "tool_call"},
            {"request_type", r.request_type()},
            {"request", request.is_discarded() ? json(r.request_json())
                                               : request},
            {"requested_unix_ms", requested},
            {"age_ms", std::max<int64_t>(0, now - requested)},
            {"expires_unix_ms", expires},
            {"expires_in_ms",
             expires == 0 ? json(nullptr)
                          : json(std::max<int64_t>(0, expires - now))},
            {"overdue", overdue(r, now)},
            {"decided_unix_ms", r.decided_unix_ms()},
            {"decided_by", r.decided_by()},
            {"reason", r.reason()}});
  return j;
}

/// `s` padded to `n` columns, and at least one space after it, so that a
/// long value (a 168h expiry) never runs into the next column.
std::string pad(std::string s, size_t n) {
  s.resize(std::max(n, s.size() + 1), ' ');
  return s;
}

std::string expires_text(const json& j) {
  if (j["expires_in_ms"].is_null())
    return "never";
  if (j["overdue"].get<bool>())
    return "overdue";
  if (j["state"] != "pending")
    return "-";
  return span(j["expires_in_ms"].get<int64_t>());
}

int cmd_list(const approvals_args& a) {
  std::unique_ptr<store> st;
  if (auto rc = open_read_only(a.dir, st))
    return rc;
  std::vector<approval_entry> all;
  if (auto s = list_approvals(*st, all))
    return fail(s.message());
  auto now = now_ms();
  auto out = json::array();
  size_t damaged = 0;
  for (auto& e : all) {
    if (!e.fault.empty()) {
      ++damaged;
      std::cerr << "vigil approvals: " << a.dir << ": approval " << e.id
                << " is damaged: " << e.fault << "\n";
    } else if (!a.all && !is_pending(e.rec)) {
      continue;
    }
    out.push_back(entry_json(e, now));
  }
  if (a.as_json) {
    std::cout << dump_json(out) << std::endl;
    return damaged == 0 ? exit_ok : exit_error;
  }
  size_t wp = 4, wt = 4;
  for (auto& j : out) {
    wp = std::max(wp, j.value("path", std::string{}).size());
    wt = std::max(wt, j.value("tool", std::string{}).size());
  }
  if (!out.empty()) {
    std::cout << pad("ID", approval_id_size + 2) << pad("PATH", wp + 2)
              << pad("TOOL", wt + 2) << pad("AGE", 10) << pad("EXPIRES IN", 12)
              << (a.all ? "STATE" : "") << "\n";
  }
  for (auto& j : out) {
    std::cout << pad(j["id"], approval_id_size + 2);
    if (j.contains("fault")) {
      std::cout << "(damaged: see above)\n";
      continue;
    }
    std::cout << pad(j["path"], wp + 2) << pad(j["tool"], wt + 2)
              << pad(span(j["age_ms"].get<int64_t>()), 10)
              << pad(expires_text(j), 12);
    if (a.all) {
      std::cout << j["state"].get<std::string>();
      if (!j["decided_by"].get<std::string>().empty())
        std::cout << " by " << j["decided_by"].get<std::string>();
    }
    std::cout << "\n";
  }
  auto n = out.size() - damaged;
  std::cout << n << (a.all ? "" : " pending") << " approval"
            << (n == 1 ? "" : "s") << " in " << a.dir;
  if (!a.all)
    std::cout << " (--all shows decided ones too)";
  if (n > 0 && !a.all)
    std::cout << "; decide with `vigil approvals approve|reject ID "
                 "--data-dir "
              << a.dir << "`";
  std::cout << "\n";
  return damaged == 0 ? exit_ok : exit_error;
}

int cmd_show(const approvals_args& a) {
  std::unique_ptr<store> st;
  if (auto rc = open_read_only(a.dir, st))
    return rc;
  approval_entry e;
  if (auto rc = find_or_fail(*st, a, e))
    return rc;
  auto j = entry_json(e, now_ms());
  if (a.as_json) {
    std::cout << dump_json(j) << std::endl;
    return e.fault.empty() ? exit_ok : exit_error;
  }
  std::cout << "approval  " << e.id << "\n"
            << "key       " << printable_key(e.key) << "\n";
  if (!e.fault.empty())
    return fail(a.dir + ": approval " + e.id + " is damaged: " + e.fault);
  auto& r = e.rec;
  std::cout << "state     " << j["state"].get<std::string>() << "\n"
            << "path      " << r.path() << "\n"
            << (j["kind"] == "envelope" ? "envelope  " : "tool      ")
            << r.tool() << "\n"
            << "asked     " << utc(j["requested_unix_ms"].get<int64_t>())
            << " (" << span(j["age_ms"].get<int64_t>()) << " ago)\n"
            << "expires   "
            << (r.expires_unix_ms() == 0
                  ? std::string{"never"}
                  : utc(j["expires_unix_ms"].get<int64_t>()) + " ("
                      + expires_text(j) + ")")
            << "\n";
  if (r.decided_unix_ms() != 0)
    std::cout << "decided   " << utc(j["decided_unix_ms"].get<int64_t>())
              << (r.decided_by().empty() ? "" : " by " + r.decided_by())
              << "\n";
  if (!r.reason().empty())
    std::cout << "reason    " << r.reason() << "\n";
  std::cout << "request   " << r.request_type() << "\n"
            << (j["request"].is_string() ? j["request"].get<std::string>()
                                         : dump_json(j["request"]))
            << "\n";
  return exit_ok;
}

std::string default_by() {
  if (auto* u = std::getenv("USER"); u != nullptr && *u != '\0')
    return u;
  if (auto* pw = ::getpwuid(::geteuid()); pw != nullptr && pw->pw_name)
    return pw->pw_name;
  return "uid " + std::to_string(::geteuid());
}

/// Whether `d` can be made: the approval exists and is pending.
int check_decision(const approvals_args& a, const approval_entry& e) {
  auto& r = e.rec;
  if (!e.fault.empty())
    return fail(a.dir + ": approval " + e.id + " is damaged, so it cannot "
                "be decided: " + e.fault);
  if (!is_pending(r)) {
    std::string by = r.decided_by().empty() ? "" : " by " + r.decided_by();
    return fail("approval " + e.id + " in " + a.dir + " is "
                + state_name(e) + by
                + (r.decided_unix_ms() == 0
                     ? std::string{}
                     : " since "
                         + utc(static_cast<int64_t>(r.decided_unix_ms())))
                + "; a decision is final. " + list_hint(a.dir, false)
                + " for the pending ones");
  }
  if (overdue(r, now_ms()))
    return fail("approval " + e.id + " in " + a.dir + " expired at "
                + utc(static_cast<int64_t>(r.expires_unix_ms()))
                + " (its approval timeout passed): its call fails when "
                  "it next runs, and it can no longer be decided");
  return exit_ok;
}

/// Waits until the node took `file` in (deleted it, or renamed it *.bad).
bool wait_taken(const std::string& file, std::chrono::milliseconds limit) {
  namespace fs = std::filesystem;
  auto until = std::chrono::steady_clock::now() + limit;
  std::error_code ec;
  while (fs::exists(file, ec)) {
    if (std::chrono::steady_clock::now() >= until)
      return false;
    std::this_thread::sleep_for(std::chrono::milliseconds{20});
  }
  return true;
}

/// What the record says after `d` was taken in.
int report(const approvals_args& a, const approval_decision& d,
           const std::string& file) {
  std::unique_ptr<store> st;
  if (auto rc = open_read_only(a.dir, st))
    return rc;
  approval_entry e;
  bool found = false;
  if (auto s = get_approval(*st, d.key, e, found))
    return fail(s.message());
  if (std::filesystem::exists(file + ".bad"))
    return fail("the node refused the decision file and renamed it "
                + file + ".bad; its log says why");
  auto& r = e.rec;
  if (found && e.fault.empty() && state_of(r) == d.to
      && r.decided_by() == d.by && r.decided_unix_ms() == d.unix_ms) {
    std::cout << to_string(d.to) << " " << e.id << " (" << r.path() << ", "
              << r.tool() << ") by " << d.by << "\n";
    return exit_ok;
  }
  if (!found || !e.fault.empty())
    return fail("approval " + d.id + " cannot be read after the decision: "
                + (found ? e.fault : "it is gone"));
  return fail("the decision was not applied: approval " + d.id + " is "
              + state_name(e)
              + (r.decided_by().empty() ? "" : " by " + r.decided_by())
              + (r.reason().empty() ? "" : " (" + r.reason() + ")"));
}

/// Longest --by and --reason: a decision file stays far below the 64 KiB
/// a node reads.
constexpr size_t max_by = 200;
constexpr size_t max_reason = 4000;

int cmd_decide(const approvals_args& a, approval_state to) {
  std::chrono::milliseconds limit{};
  if (!parse_duration(a.wait, limit))
    return fail("--wait \"" + a.wait + "\": " + duration_hint, exit_usage);
  if (a.by.size() > max_by)
    return fail("--by has " + std::to_string(a.by.size())
                  + " bytes; at most " + std::to_string(max_by),
                exit_usage);
  if (a.reason.size() > max_reason)
    return fail("--reason has " + std::to_string(a.reason.size())
                  + " bytes; at most " + std::to_string(max_reason)
                  + ": say more elsewhere and point to it",
                exit_usage);
  approval_decision d;
  {
    std::unique_ptr<store> st;
    if (auto rc = open_read_only(a.dir, st))
      return rc;
    approval_entry e;
    if (auto rc = find_or_fail(*st, a, e))
      return rc;
    if (auto rc = check_decision(a, e))
      return rc;
    d.id = e.id;
    d.key = e.key;
  } // closed: LMDB allows one environment per file and process
  d.to = to;
  d.by = a.by.empty() ? default_by() : a.by;
  d.reason = a.reason;
  d.unix_ms = static_cast<uint64_t>(now_ms());
  std::string file;
  if (auto s = write_decision_file(a.dir, d, file))
    return fail(s.message());
  store_options so;
  so.dir = a.dir;
  std::unique_ptr<store> st;
  auto s = store::open(so, st);
  if (s.code() == store_errc::locked) {
    // A node runs in the data dir: it takes the file in.
    if (!wait_taken(file, limit))
      return fail("the node in " + a.dir + " did not take the decision in "
                  "within " + a.wait + "; it stays in " + file + ", taken "
                  "in when a node runs in " + a.dir + " (see `vigil "
                  "approvals show " + d.id + " --data-dir " + a.dir + "`)");
    return report(a, d, file);
  }
  if (s)
    return fail(s.message() + "; the decision stays in " + file
                + ", taken in when a node next starts in " + a.dir);
  std::vector<std::string> log;
  auto taken = take_decisions(*st, log);
  for (auto& line : log)
    if (line.find(file) == std::string::npos) // others waiting, taken too
      std::cerr << "vigil approvals: " << line << "\n";
  st.reset();
  if (taken)
    return fail(taken.message());
  return report(a, d, file);
}

} // namespace

std::function<int()> add_approvals_command(CLI::App& app) {
  auto a = std::make_shared<approvals_args>();
  auto* cmd = app.add_subcommand(
    "approvals", "List, show, approve or reject the tool calls and envelopes "
                 "that wait for a person's approval in a data dir (also "
                 "while a node runs in it)");
  cmd->require_subcommand(1);
  auto data_dir = [&](CLI::App* sub) {
    sub->add_option("--data-dir", a->dir, "LMDB data dir")->required();
  };
  auto* list = cmd->add_subcommand("list", "The pending approvals: id, "
                                           "path, tool, age, expiry");
  data_dir(list);
  list->add_flag("--all", a->all, "Decided and expired ones too");
  list->add_flag("--json", a->as_json, "Print JSON");
  auto* show = cmd->add_subcommand("show", "One approval, its request "
                                           "included");
  auto id = [&](CLI::App* sub) {
    sub->add_option("ID", a->id,
                    "The approval's id, or enough of its first digits")
      ->required();
  };
  id(show);
  data_dir(show);
  show->add_flag("--json", a->as_json, "Print JSON");
  auto* approve = cmd->add_subcommand("approve", "Let the call go ahead");
  auto* reject = cmd->add_subcommand("reject", "Fail the call");
  for (auto* sub : {approve, reject}) {
    id(sub);
    data_dir(sub);
    sub->add_option("--by", a->by, "Who decides (default: $USER)");
    sub->add_option("--wait", a->wait,
                    "How long to wait for a running node to take the "
                    "decision in (default 10s)");
  }
  approve->add_option("--reason", a->reason, "Why (optional)");
  reject->add_option("--reason", a->reason, "Why (required)")->required();
  cmd->footer("Examples:\n"
              "  vigil approvals list --data-dir ./vigil-data\n"
              "  vigil approvals show 3fa9c0 --data-dir ./vigil-data\n"
              "  vigil approvals approve 3fa9c0 --data-dir ./vigil-data "
              "--reason \"checked the invoice\"\n"
              "  vigil approvals reject 3fa9c0 --data-dir ./vigil-data "
              "--reason \"duplicate payment\"\n"
              "Exit codes: 0 done, 1 not done (the message says why), "
              "64 bad arguments or id.");
  return [a, list, show, approve] {
    if (*list)
      return cmd_list(*a);
    if (*show)
      return cmd_show(*a);
    return cmd_decide(*a, *approve ? approval_state::approved
                                   : approval_state::rejected);
  };
}

} // namespace vigil::cli
