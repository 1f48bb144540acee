// `vigil verify`, `vigil repair` and `vigil backup`: what an operator does
// about a damaged data dir (vigil/persistence/integrity.hpp).

#include "data_dir.hpp"

#include <iostream>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "inspect.hpp"
#include "vigil/persistence/integrity.hpp"

namespace vigil::cli {

namespace {

struct data_dir_args {
  std::string dir, out, db_name, key, reason = "moved aside by an operator";
  bool as_json = false;
};

std::string mib(uint64_t n) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f MiB",
                static_cast<double>(n) / (1 << 20));
  return buf;
}

nlohmann::json to_json(const verify_report& r) {
  nlohmann::json dbs = nlohmann::json::array();
  for (auto& d : r.dbs) {
    nlohmann::json bad = nlohmann::json::array();
    for (auto& [k, why] : d.bad)
      bad.push_back({{"key", printable_key(k)}, {"why", why}});
    dbs.push_back({{"name", d.name},
                   {"entries", d.entries},
                   {"records", d.records},
                   {"bad_records", d.bad_records},
                   {"bad", bad},
                   {"complete", d.complete}});
  }
  return {{"ok", r.ok()},
          {"problem", r.problem},
          {"signal", r.signal},
          {"file",
           {{"path", r.file.path},
            {"size", r.file.file_size},
            {"needed_size", r.file.needed_size},
            {"page_size", r.file.page_size},
            {"meta_page", r.file.used_meta}}},
          {"dbs", dbs},
          {"free_pages", r.free_pages},
          {"took_ms", r.took.count()}};
}

int cmd_verify(const data_dir_args& a) {
  verify_report r;
  if (auto st = verify_data_dir(a.dir, r)) {
    std::cerr << "vigil verify: " << st.message() << "\n";
    return exit_error;
  }
  if (a.as_json) {
    std::cout << to_json(r).dump(2) << "\n";
  } else {
    std::cout << r.file.path << ": " << mib(r.file.file_size);
    if (r.file.used_meta >= 0)
      std::cout << ", page size " << r.file.page_size << ", transaction "
                << r.file.meta[r.file.used_meta].txnid;
    std::cout << "\n";
    uint64_t records = 0;
    for (auto& d : r.dbs) {
      records += d.records;
      std::printf("  %-13s %llu records%s%s\n", d.name.c_str(),
                  static_cast<unsigned long long>(d.records),
                  d.complete ? "" : " (the walk stopped here)",
                  d.bad_records > 0
                    ? (", " + std::to_string(d.bad_records)
                       + " fail their checksum")
                        .c_str()
                    : "");
      std::fflush(stdout);
      for (auto& [k, why] : d.bad)
        std::cout << "      key \"" << printable_key(k) << "\": " << why
                  << "\n";
    }
    std::cout << "  free list     " << r.free_pages << " pages\n";
    if (r.ok())
      std::cout << "OK: " << r.dbs.size() << " databases, " << records
                << " records, every checksum matches (" << r.took.count()
                << " ms)\n";
  }
  if (r.ok())
    return exit_ok;
  std::cerr << "vigil verify: " << a.dir << " is damaged: "
            << (r.problem.empty() ? std::to_string(r.bad_records())
                                      + " records fail their checksum "
                                        "(recovery moves those of "
                                        "snapshots, journals and outboxes "
                                        "to the dead letters; the others "
                                        "stay, refused by their readers)"
                                  : r.problem)
            << "\nvigil verify: run `vigil repair --data-dir " << a.dir
            << " --out NEW_DIR` to salvage every record that still reads "
               "into a new data dir, or restore a backup\n";
  return exit_error;
}

int cmd_move_aside(const data_dir_args& a) {
  db which;
  if (!db_from_string(a.db_name, which)) {
    std::cerr << "vigil repair: --move-aside " << a.db_name
              << ": no such database; one of meta, snapshots, journal, "
                 "outbox, idempotency, dead_letters, sagas, tool_results, "
                 "approvals, shared\n";
    return exit_usage;
  }
  std::string key;
  if (!parse_printable_key(a.key, key)) {
    std::cerr << "vigil repair: --move-aside key \"" << a.key
              << "\": a backslash must start \\xNN (two hex digits)\n";
    return exit_usage;
  }
  upgrade_note upgraded;
  auto st = move_record_aside(a.dir, which, key, a.reason, &upgraded);
  if (upgraded.from != 0)
    std::cerr << "vigil: " << upgrade_line(a.dir, upgraded) << "\n";
  if (st) {
    std::cerr << "vigil repair: " << st.message() << "\n";
    return st.code() == store_errc::invalid ? exit_usage : exit_error;
  }
  std::cout << "moved " << a.db_name << " key \"" << printable_key(key)
            << "\" of " << a.dir << " to its dead letters (see `vigil "
            << "dead-letters list --data-dir " << a.dir << "`)\n";
  return exit_ok;
}

int cmd_repair(const data_dir_args& a) {
  if (!a.db_name.empty() && !a.out.empty()) {
    std::cerr << "vigil repair: --move-aside and --out are two different "
                 "repairs: pass one of them\n";
    return exit_usage;
  }
  if (!a.db_name.empty())
    return cmd_move_aside(a);
  if (a.out.empty()) {
    std::cerr << "vigil repair: pass --out NEW_DIR (a new data dir to "
                 "salvage into) or --move-aside DB KEY\n";
    return exit_usage;
  }
  std::cerr << "vigil repair: salvaging " << a.dir << " into " << a.out
            << " ...\n";
  repair_report r;
  if (auto st = repair_data_dir(a.dir, a.out, r)) {
    std::cerr << "vigil repair: " << st.message() << "\n";
    return st.code() == store_errc::invalid ? exit_usage : exit_error;
  }
  if (a.as_json) {
    nlohmann::json dbs = nlohmann::json::array();
    for (auto& d : r.dbs)
      dbs.push_back({{"name", d.name},
                     {"entries", d.entries},
                     {"salvaged", d.salvaged},
                     {"bad_records", d.bad_records},
                     {"gaps", d.gaps}});
    std::cout << nlohmann::json{{"out", a.out},
                                {"notes", r.notes},
                                {"dbs", dbs},
                                {"salvaged", r.salvaged()},
                                {"bad_records", r.bad_records()},
                                {"lost", r.lost()}}
                   .dump(2)
              << "\n";
    return exit_ok;
  }
  for (auto& n : r.notes)
    std::cout << "note: " << n << "\n";
  for (auto& d : r.dbs) {
    std::printf("  %-13s %llu of %llu records", d.name.c_str(),
                static_cast<unsigned long long>(d.salvaged),
                static_cast<unsigned long long>(d.entries));
    if (d.bad_records > 0)
      std::printf("; %llu fail their checksum (kept as dead letters)",
                  static_cast<unsigned long long>(d.bad_records));
    std::printf("\n");
    std::fflush(stdout);
    for (auto& g : d.gaps)
      std::cout << "      " << g << "\n";
  }
  std::cout << "salvaged " << r.salvaged() << " records into " << a.out
            << " (it verifies); " << r.bad_records()
            << " failed their checksum and are dead letters there; about "
            << r.lost() << " could not be read\n"
            << "Start the node on it: vigil run FILE --data-dir " << a.out
            << "\n";
  return exit_ok;
}

int cmd_backup(const data_dir_args& a) {
  backup_report r;
  if (auto st = backup_data_dir(a.dir, a.out, r)) {
    std::cerr << "vigil backup: " << st.message() << "\n";
    return st.code() == store_errc::invalid ? exit_usage : exit_error;
  }
  std::cout << "backed up " << a.dir << " to " << a.out << ": "
            << mib(r.bytes) << ", " << r.records
            << " records, compacted and verified (" << r.took.count()
            << " ms)\nRestore: install -d -m 700 NEW_DIR && install -m 600 "
            << a.out << " NEW_DIR/data.mdb\n";
  return exit_ok;
}

} // namespace

std::function<int()> add_data_dir_commands(CLI::App& app) {
  auto a = std::make_shared<data_dir_args>();
  auto* verify = app.add_subcommand(
    "verify", "Walk every database of a data dir (also while a node runs) in "
              "a child process: the B-tree's structure and every record's "
              "checksum");
  verify->add_option("--data-dir", a->dir, "LMDB data dir")->required();
  verify->add_flag("--json", a->as_json, "Print JSON");
  verify->footer("Example:\n  vigil verify --data-dir ./vigil-data\n"
                 "Exit codes: 0 sound, 1 damaged or unreadable (the message "
                 "says what to do), 64 bad arguments.");
  auto* repair = app.add_subcommand(
    "repair", "Salvage every record of a damaged data dir that still reads "
              "into a new data dir, or move one record aside (the node must "
              "be stopped)");
  repair->add_option("--data-dir", a->dir, "The damaged data dir")
    ->required();
  repair->add_option("--out", a->out, "A new data dir to salvage into");
  auto* aside = repair->add_option(
    "--move-aside", a->db_name,
    "Move the record DB KEY to the dead letters instead (KEY as vigil "
    "prints it, \\xNN for other bytes)");
  aside->expected(1);
  repair->add_option("KEY", a->key, "The key, with --move-aside");
  repair->add_option("--reason", a->reason, "Why, with --move-aside");
  repair->add_flag("--json", a->as_json, "Print JSON");
  repair->footer(
    "Examples:\n  vigil repair --data-dir ./vigil-data --out ./vigil-data.new\n"
    "  vigil repair --data-dir ./vigil-data --move-aside snapshots "
    "chaos/counter\n"
    "Exit codes: 0 done (the report says what was lost), 1 error, 64 bad "
    "arguments.");
  auto* backup = app.add_subcommand(
    "backup", "Write a consistent, compacted copy of a data dir's database "
              "to a file, also while a node runs in it");
  backup->add_option("--data-dir", a->dir, "LMDB data dir")->required();
  backup->add_option("--out", a->out, "The backup file (must not exist)")
    ->required();
  backup->footer("Example:\n  vigil backup --data-dir ./vigil-data --out "
                 "./vigil-backup.mdb\nRestore:\n  install -d -m 700 NEW_DIR "
                 "&& install -m 600 ./vigil-backup.mdb NEW_DIR/data.mdb\n"
                 "Exit codes: 0 done, 1 error, 64 bad arguments.");
  return [a, verify, repair] {
    if (*verify)
      return cmd_verify(*a);
    if (*repair) {
      if (!a->db_name.empty() && a->key.empty()) {
        std::cerr << "vigil repair: --move-aside " << a->db_name
                  << " needs the KEY\n";
        return exit_usage;
      }
      return cmd_repair(*a);
    }
    return cmd_backup(*a);
  };
}

} // namespace vigil::cli
