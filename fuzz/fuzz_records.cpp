// libFuzzer target: records read back from a data dir. Each input is one
// record written into a real LMDB data dir (opened once, in a temp dir):
//
//     byte 0         which database (snapshots, journal, outbox,
//                    idempotency, dead letters, sagas, tool results,
//                    approvals, shared)
//     byte 1         bit 0: frame the value with a correct format byte and
//                    CRC-32C (so that the bytes reach the Protobuf parser
//                    and what reads the record); else the value is written
//                    as given (so that the frame check is fuzzed too)
//     byte 2         the key's length k
//     bytes 3..3+k   the key
//     the rest       the value
//
// Then everything that reads records reads it: recovery (which moves what
// does not parse aside as a dead letter), the snapshot, dead-letter and
// outbox readers, and every `vigil inspect` view (its output discarded).
// The record is removed again before the next input.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "inspect.hpp"
#include "vigil/persistence/record.hpp"
#include "vigil/persistence/store.hpp"

using namespace vigil;

namespace {

constexpr db dbs[] = {db::snapshots,    db::journal,      db::outbox,
                      db::idempotency,  db::dead_letters, db::sagas,
                      db::tool_results, db::approvals,    db::shared};

struct fixture {
  std::string dir;
  std::unique_ptr<store> st;
  fixture() {
    char tmpl[] = "/tmp/vigil-fuzz-records-XXXXXX";
    if (mkdtemp(tmpl) == nullptr)
      std::abort();
    dir = tmpl;
    store_options so;
    so.dir = dir;
    so.sync = sync_mode::nosync;
    if (store::open(so, st))
      std::abort();
  }
  ~fixture() {
    st.reset();
    std::string cmd = "rm -rf '" + dir + "'";
    (void) std::system(cmd.c_str());
  }
};

fixture& fx() {
  static fixture f;
  return f;
}

void apply(store& st, mutation m) {
  write_item item;
  item.muts.push_back(std::move(m));
  write_item* items[] = {&item};
  write_result res[1];
  (void) st.apply(items, 1, res);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3)
    return 0;
  auto where = dbs[data[0] % std::size(dbs)];
  bool framed = (data[1] & 1) != 0;
  size_t k = data[2];
  if (3 + k > size)
    return 0;
  std::string key{reinterpret_cast<const char*>(data + 3), k};
  std::string_view rest{reinterpret_cast<const char*>(data + 3 + k),
                        size - 3 - k};
  std::string value = framed ? frame_record(rest) : std::string{rest};
  if (key.empty() && where != db::dead_letters)
    return 0; // LMDB refuses empty keys
  auto& st = *fx().st;
  mutation put;
  put.what = where == db::dead_letters ? mutation::op::append_dead_letter
                                       : mutation::op::put;
  put.where = where;
  put.key = key;
  put.value = value;
  apply(st, put);
  // Everything that reads records.
  std::map<std::string, recovered_agent> agents;
  std::vector<quarantined> bad;
  (void) st.recover(agents, bad);
  std::vector<records::Snapshot> snaps;
  (void) st.snapshots(snaps);
  std::vector<records::DeadLetter> letters;
  (void) st.dead_letters(letters);
  for (auto& [path, a] : agents) {
    std::vector<records::OutboxEntry> out;
    (void) st.outbox(path, out);
    recovered_agent one;
    (void) st.load(path, one);
  }
  std::ostringstream sink;
  auto* old = std::cout.rdbuf(sink.rdbuf());
  auto* old_err = std::cerr.rdbuf(sink.rdbuf());
  (void) cli::inspect_agents(st, true);
  (void) cli::inspect_dead_letters(st, true, {});
  (void) cli::inspect_sagas(st, "", true);
  (void) cli::inspect_tools(st, true);
  (void) cli::inspect_shared(st, "", true);
  for (auto& [path, a] : agents)
    (void) cli::inspect_mailbox(st, fx().dir, path, true);
  std::cout.rdbuf(old);
  std::cerr.rdbuf(old_err);
  // Back to empty: the key, and every dead letter (recovery's too).
  if (where != db::dead_letters) {
    mutation del;
    del.what = mutation::op::del;
    del.where = where;
    del.key = key;
    apply(st, del);
  }
  size_t removed = 0;
  (void) st.remove_dead_letters({}, true, removed);
  return 0;
}
