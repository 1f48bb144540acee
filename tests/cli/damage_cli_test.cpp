// The `vigil` command on a data dir written by the main job (chaos.yaml:
// a journal source, a flaky relay, a journal counter) and then damaged the
// way disks and operators damage files. Every tool runs as a child process:
// none may die from a signal; each exits 0 or with an error that names the
// file; what `repair` salvages is byte for byte what was there, and the
// main job runs on it.

#include <sys/file.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "support/cli_run.hpp"
#include "support/lmdb_dump.hpp"
#include "vigil/persistence/integrity.hpp"

using namespace vigil;
using namespace vigil::test;
using namespace std::chrono_literals;

namespace {

const std::string policy = VIGIL_CHAOS_POLICY;

std::string describe(const process_result& r) {
  return "exit " + std::to_string(r.exit_code) + " signal "
         + std::to_string(r.signal) + (r.timed_out ? " (timed out)" : "")
         + "\nstdout: " + r.out.substr(0, 2000)
         + "\nstderr: " + r.err.substr(0, 2000);
}

class damage_cli : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    root_ = new temp_dir;
    base_ = root_->path() + "/base";
    auto r = vigil_cmd({"run", policy, "--data-dir", base_, "--for", "3s",
                        "--progress", "0"},
                       60s);
    ASSERT_EQ(r.exit_code, 0) << describe(r);
    before_ = new dump_t{dump(base_)};
  }
  static void TearDownTestSuite() {
    delete before_;
    delete root_;
  }

  /// A copy of the main job's data dir, damaged by `damage(data.mdb)`.
  std::string damaged(const std::string& name,
                      const std::function<void(const std::string&)>& damage) {
    auto d = root_->path() + "/" + name;
    std::filesystem::create_directories(d);
    ::chmod(d.c_str(), 0700);
    std::filesystem::copy_file(base_ + "/data.mdb", d + "/data.mdb");
    damage(d + "/data.mdb");
    return d;
  }

  /// Runs every tool on `d`; none dies from a signal, each exits 0 or 1
  /// (3 for a run whose root escalated) with a message naming `d`.
  /// Returns repair's result; its output dir is `d`.out.
  process_result every_tool(const std::string& d) {
    auto ok_or_named = [&](const char* tool, const process_result& r) {
      SCOPED_TRACE(std::string{tool} + " on " + d);
      EXPECT_FALSE(r.timed_out) << describe(r);
      EXPECT_EQ(r.signal, 0) << describe(r);
      EXPECT_TRUE(r.exit_code == 0 || r.exit_code == 1 || r.exit_code == 3)
        << describe(r);
      if (r.exit_code != 0)
        EXPECT_NE(r.err.find(d), std::string::npos) << describe(r);
    };
    ok_or_named("verify", vigil_cmd({"verify", "--data-dir", d}));
    ok_or_named("inspect", vigil_cmd({"inspect", "--data-dir", d}));
    ok_or_named("dead-letters",
                vigil_cmd({"dead-letters", "list", "--data-dir", d}));
    ok_or_named("backup", vigil_cmd({"backup", "--data-dir", d, "--out",
                                     d + ".bak"}));
    auto repair = vigil_cmd({"repair", "--data-dir", d, "--out", d + ".out",
                             "--json"},
                            60s);
    EXPECT_EQ(repair.signal, 0) << describe(repair);
    // Run last: a write open moves records that fail their checksum aside.
    ok_or_named("run", vigil_cmd({"run", policy, "--data-dir", d, "--for",
                                  "1s", "--progress", "0"},
                                 60s));
    return repair;
  }

  /// What `repair` wrote into `out`: each record the original's, byte for
  /// byte (or a dead letter of the repair's own); the main job runs on it.
  /// `strict`: what was salvaged is the state `before_` (else an earlier
  /// commit's, after a newer meta page was lost: only verify and run).
  size_t check_salvage(const std::string& out, bool strict = true) {
    auto v = vigil_cmd({"verify", "--data-dir", out});
    EXPECT_EQ(v.exit_code, 0) << describe(v);
    auto after = dump(out);
    std::set<std::string> values;
    for (auto& [k, val] : *before_)
      values.insert(val);
    size_t same = 0;
    for (auto& [k, val] : after) {
      auto it = before_->find(k);
      if (it != before_->end() && it->second == val) {
        ++same;
        continue;
      }
      if (!strict)
        continue;
      // A damaged key (the checksum covers the value only), or a record
      // a damaged page showed in another database whose key layout is the
      // same: an original value, under another key.
      if (values.count(val) != 0)
        continue;
      // The new dir's own meta record, when the old one was not salvaged.
      if (k.first == "meta")
        continue;
      EXPECT_EQ(k.first, "dead_letters") << printable_key(k.second);
      records::DeadLetter dl;
      EXPECT_EQ(decode_record(val, dl), record_fault::none);
      EXPECT_NE(dl.reason().find("vigil repair"), std::string::npos)
        << dl.reason();
    }
    auto r = vigil_cmd({"run", policy, "--data-dir", out, "--for", "1s",
                        "--progress", "0"},
                       60s);
    EXPECT_EQ(r.exit_code, 0) << describe(r);
    EXPECT_EQ(r.signal, 0);
    return same;
  }

  static temp_dir* root_;
  static std::string base_;
  static dump_t* before_;
};

temp_dir* damage_cli::root_ = nullptr;
std::string damage_cli::base_;
dump_t* damage_cli::before_ = nullptr;

TEST_F(damage_cli, the_main_jobs_dir_verifies_and_is_owner_only) {
  auto r = vigil_cmd({"verify", "--data-dir", base_, "--json"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  auto j = parse(r.out);
  EXPECT_TRUE(j["ok"].get<bool>());
  uint64_t records = 0;
  for (auto& d : j["dbs"])
    records += d["records"].get<uint64_t>();
  EXPECT_EQ(records, before_->size());
  EXPECT_EQ(mode_of(base_), 0700u);
  EXPECT_EQ(mode_of(base_ + "/data.mdb"), 0600u);
}

TEST_F(damage_cli, truncation_is_refused_by_every_tool_and_repair_salvages) {
  for (int pct : {10, 50, 90}) {
    SCOPED_TRACE("truncated to " + std::to_string(pct) + "%");
    auto d = damaged("trunc" + std::to_string(pct), [&](const auto& f) {
      ASSERT_EQ(::truncate(f.c_str(),
                           static_cast<off_t>(file_size(f) * pct / 100)),
                0);
    });
    auto repair = every_tool(d);
    auto v = vigil_cmd({"inspect", "--data-dir", d});
    EXPECT_NE(v.err.find(d + "/data.mdb is truncated"), std::string::npos)
      << describe(v);
    ASSERT_EQ(repair.exit_code, 0) << describe(repair);
    auto same = check_salvage(d + ".out");
    std::printf("truncated to %d%%: salvaged %zu of %zu records\n", pct, same,
                before_->size());
  }
}

TEST_F(damage_cli, byte_damage_never_kills_a_tool) {
  int seeds = 4;
  if (auto* e = std::getenv("VIGIL_DAMAGE_SEEDS"))
    seeds = std::atoi(e);
  for (int seed = 1; seed <= seeds; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed)
                 + " (VIGIL_DAMAGE_SEEDS=N runs seeds 1..N)");
    // Light damage (salvage has something to do) and heavy damage (the
    // issue's 2,000 bytes).
    for (int bytes : {8, 2000}) {
      auto d = damaged("bytes" + std::to_string(seed) + "_"
                         + std::to_string(bytes),
                       [&](const auto& f) {
                         damage_bytes(f, static_cast<uint32_t>(seed), bytes);
                       });
      auto repair = every_tool(d);
      ASSERT_EQ(repair.exit_code, 0) << describe(repair);
      auto same = check_salvage(d + ".out");
      std::printf("seed %d, %d bytes: salvaged %zu of %zu records\n", seed,
                  bytes, same, before_->size());
    }
  }
}

TEST_F(damage_cli, a_zeroed_meta_page_is_refused_and_repaired_whole) {
  for (int page : {0, 1}) {
    auto d = damaged("zero" + std::to_string(page),
                     [&](const auto& f) { zero_page(f, page); });
    auto repair = every_tool(d);
    auto v = vigil_cmd({"verify", "--data-dir", d});
    EXPECT_NE(v.err.find("meta page " + std::to_string(page)
                         + " is damaged (it is all zeros)"),
              std::string::npos)
      << describe(v);
    ASSERT_EQ(repair.exit_code, 0) << describe(repair);
    // The other meta page holds the newer or the previous commit: with the
    // older one zeroed, nothing is lost; with the newer one, the dir is the
    // previous commit's (not observable here: it verifies and runs).
    data_file_info info;
    ASSERT_TRUE(read_data_file(base_, info).ok());
    bool older = info.used_meta != page;
    auto same = check_salvage(d + ".out", older);
    if (older)
      EXPECT_EQ(same, before_->size());
  }
}

TEST_F(damage_cli, a_file_that_is_not_lmdb_is_named) {
  auto d = damaged("junk", [](const auto& f) {
    std::ofstream o{f, std::ios::trunc | std::ios::binary};
    std::mt19937 rng{7};
    for (int i = 0; i < 300000; ++i)
      o.put(static_cast<char>(rng() & 0xff));
  });
  auto repair = every_tool(d);
  EXPECT_EQ(repair.exit_code, 1) << describe(repair);
  EXPECT_NE(repair.err.find("neither meta page of data.mdb is valid"),
            std::string::npos)
    << describe(repair);
  auto r = vigil_cmd({"run", policy, "--data-dir", d, "--for", "1s"});
  EXPECT_NE(r.err.find(d + "/data.mdb has no valid LMDB meta page"),
            std::string::npos)
    << describe(r);
}

TEST_F(damage_cli, an_unreadable_file_is_named_to_an_unprivileged_user) {
  // CI runs as root, for whom chmod 000 means nothing: run the tools as
  // nobody (setpriv), on a dir nobody may enter and a file nobody may read.
  auto d = damaged("unreadable", [](const auto& f) { ::chmod(f.c_str(), 0); });
  ::chmod(root_->path().c_str(), 0755);
  ::chmod(d.c_str(), 0777);
  auto as_nobody = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"/usr/bin/setpriv", "--reuid=65534",
                               "--regid=65534", "--clear-groups", VIGIL_BIN});
    return run_process(args, 60s);
  };
  for (auto& args : std::vector<std::vector<std::string>>{
         {"verify", "--data-dir", d},
         {"inspect", "--data-dir", d},
         {"dead-letters", "list", "--data-dir", d},
         {"run", policy, "--data-dir", d, "--for", "1s"}}) {
    auto r = as_nobody(args);
    SCOPED_TRACE(args[0]);
    EXPECT_EQ(r.signal, 0) << describe(r);
    EXPECT_EQ(r.exit_code, 1) << describe(r);
    EXPECT_NE(r.err.find("cannot open " + d + "/data.mdb: Permission denied"),
              std::string::npos)
      << describe(r);
  }
  ::chmod(d.c_str(), 0700);
}

TEST_F(damage_cli, a_full_disk_is_an_error_and_loses_nothing_committed) {
  // RLIMIT_FSIZE in the child: a write past it fails with EFBIG (vigil
  // ignores SIGXFSZ) instead of killing the process.
  // Only journal agents and no chaos, so that the limit is what stops the
  // tree (the main job's flaky pipeline may escalate first under load).
  temp_dir files;
  auto full_policy = write(files, "full.yaml", R"(node:
  name: full
tree:
  strategy: one_for_one
  intensity: 3
  period: 5s
  children:
    - name: counter
      agent: counter
      durability: journal
    - name: source
      agent: source
      durability: journal
      params: {to: full/counter, count: 1000000, rate: 0, batch: 100}
)");
  auto d = root_->path() + "/full";
  auto r = run_process({"/usr/bin/prlimit", "--fsize=300000", VIGIL_BIN, "run",
                        full_policy, "--data-dir", d, "--for", "10s",
                        "--progress", "0"},
                       60s);
  EXPECT_EQ(r.signal, 0) << describe(r);
  EXPECT_NE(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.err.find("file size limit"), std::string::npos) << describe(r);
  EXPECT_NE(r.err.find(d), std::string::npos) << describe(r);
  auto v = vigil_cmd({"verify", "--data-dir", d});
  EXPECT_EQ(v.exit_code, 0) << describe(v);
  // Without the limit the tree runs on from what was committed.
  auto again = vigil_cmd({"run", full_policy, "--data-dir", d, "--for", "1s",
                          "--progress", "0"},
                         60s);
  EXPECT_EQ(again.exit_code, 0) << describe(again);
}

TEST_F(damage_cli, verify_and_backup_work_while_the_node_runs) {
  auto d = root_->path() + "/live";
  std::filesystem::create_directories(d);
  std::filesystem::copy_file(base_ + "/data.mdb", d + "/data.mdb");
  process_result run;
  std::thread node{[&] {
    run = vigil_cmd({"run", policy, "--data-dir", d, "--for", "5s",
                     "--progress", "0"},
                    60s);
  }};
  // The node holds vigil.lock once its store is open.
  auto held = [&] {
    auto fd = ::open((d + "/vigil.lock").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      return false;
    bool h = ::flock(fd, LOCK_EX | LOCK_NB) != 0;
    ::close(fd);
    return h;
  };
  auto until = std::chrono::steady_clock::now() + 30s;
  while (!held() && std::chrono::steady_clock::now() < until)
    std::this_thread::yield();
  ASSERT_TRUE(held()) << "the node never took its data dir";
  auto v = vigil_cmd({"verify", "--data-dir", d});
  EXPECT_EQ(v.exit_code, 0) << describe(v);
  auto b = vigil_cmd({"backup", "--data-dir", d, "--out", d + ".bak"});
  EXPECT_EQ(b.exit_code, 0) << describe(b);
  EXPECT_NE(b.out.find("compacted and verified"), std::string::npos);
  auto rep = vigil_cmd({"repair", "--data-dir", d, "--out", d + ".out"});
  EXPECT_EQ(rep.exit_code, 1) << describe(rep);
  EXPECT_NE(rep.err.find("held by a running node"), std::string::npos);
  node.join();
  EXPECT_EQ(run.exit_code, 0) << describe(run);
  // Restore as the README says, and run the main job on the copy.
  auto restored = root_->path() + "/restored";
  ASSERT_EQ(std::system(("install -d -m 700 " + restored + " && install -m "
                         + "600 " + d + ".bak " + restored + "/data.mdb")
                          .c_str()),
            0);
  auto rv = vigil_cmd({"verify", "--data-dir", restored});
  EXPECT_EQ(rv.exit_code, 0) << describe(rv);
  auto rr = vigil_cmd({"run", policy, "--data-dir", restored, "--for", "1s",
                       "--progress", "0"},
                      60s);
  EXPECT_EQ(rr.exit_code, 0) << describe(rr);
}

TEST_F(damage_cli, one_record_is_moved_aside_by_name) {
  auto d = damaged("aside", [](const auto&) {});
  auto r = vigil_cmd({"repair", "--data-dir", d, "--move-aside", "snapshots",
                      "chaos/counter", "--reason", "a bad state"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  auto l = vigil_cmd({"dead-letters", "list", "--data-dir", d});
  EXPECT_NE(l.out.find("moved aside: a bad state"), std::string::npos)
    << describe(l);
  auto again = vigil_cmd({"repair", "--data-dir", d, "--move-aside",
                          "snapshots", "chaos/counter"});
  EXPECT_EQ(again.exit_code, 1) << describe(again);
  EXPECT_NE(again.err.find("has no key \"chaos/counter\""), std::string::npos)
    << describe(again);
  auto bad = vigil_cmd({"repair", "--data-dir", d, "--move-aside", "nope",
                        "k"});
  EXPECT_EQ(bad.exit_code, 64) << describe(bad);
  auto esc = vigil_cmd({"repair", "--data-dir", d, "--move-aside",
                        "journal", "a\\x4"});
  EXPECT_EQ(esc.exit_code, 64) << describe(esc);
  // The main job starts without it (the counter starts from nothing).
  auto run = vigil_cmd({"run", policy, "--data-dir", d, "--for", "1s",
                        "--progress", "0"},
                       60s);
  EXPECT_EQ(run.exit_code, 0) << describe(run);
}

} // namespace
