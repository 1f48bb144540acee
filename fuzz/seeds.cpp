// Writes seed inputs for the fuzz targets (checked in under corpus/):
//
//   fuzz_seeds envelope OUT        envelopes as CAF serializes them
//   fuzz_seeds records DATADIR OUT  every record of a data dir, in
//                                   fuzz_records' input layout
//
// The records seeds come from data dirs that real runs wrote (see
// fuzz/README.md).

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <caf/all.hpp>

#include "vigil/actors/envelope.hpp"
#include "vigil/persistence/store.hpp"

using namespace vigil;

namespace {

void write(const std::string& file, const std::string& bytes) {
  std::ofstream{file, std::ios::binary} << bytes;
}

int envelopes(const std::string& out) {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  std::vector<envelope> xs(4);
  xs[0].type = symbol{"vigil.builtin.Number"};
  xs[0].payload = std::string{"\x08\x2a", 2};
  xs[0].id = 7;
  xs[0].sender = "job/source";
  xs[1] = xs[0];
  xs[1].deadline = 123456789;
  xs[1].attempt = 3;
  xs[1].attempt_budget = 9;
  xs[1].idempotency_key = "invoice-42";
  xs[1].trace_id = 0x1234;
  xs[1].trace_id_high = 0x5678;
  xs[1].span_id = 0x9abc;
  xs[1].trace_flags = envelope::sampled_flag;
  xs[1].flags = envelope::keep_reply_flag | envelope::start_deadline_flag;
  xs[2].type = symbol{"vigil.test.Ping"};
  xs[3].flags = envelope::degraded_flag;
  xs[3].origin = 99;
  for (size_t i = 0; i < xs.size(); ++i) {
    std::vector<char> buf;
    caf::binary_serializer sink{sys, buf};
    if (sink(xs[i]))
      return 1;
    write(out + "/envelope-" + std::to_string(i),
          std::string{buf.begin(), buf.end()});
  }
  return 0;
}

int record_seeds(const std::string& dir, const std::string& out) {
  store_options so;
  so.dir = dir;
  std::unique_ptr<store> st;
  if (auto s = store::open_read_only(so, st)) {
    std::fprintf(stderr, "seeds: %s\n", s.message().c_str());
    return 1;
  }
  // fuzz_records' order of databases.
  const db dbs[] = {db::snapshots,    db::journal,      db::outbox,
                    db::idempotency,  db::dead_letters, db::sagas,
                    db::tool_results, db::approvals,    db::shared};
  size_t n = 0;
  for (uint8_t i = 0; i < std::size(dbs); ++i) {
    std::vector<std::pair<std::string, std::string>> rows;
    if (st->scan_prefix(dbs[i], "", rows, {}, 20))
      continue;
    for (auto& [key, value] : rows) {
      if (key.size() > 255)
        continue;
      std::string in;
      in.push_back(static_cast<char>(i));
      in.push_back(0); // the value as stored (framed already)
      in.push_back(static_cast<char>(key.size()));
      in += key;
      in += value;
      auto base = dir.substr(dir.find_last_of('/') + 1);
      write(out + "/" + base + "-" + to_string(dbs[i]) + "-"
              + std::to_string(n++),
            in);
    }
  }
  std::fprintf(stderr, "seeds: %zu records\n", n);
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  std::string what = argc > 1 ? argv[1] : "";
  if (what == "envelope" && argc == 3)
    return envelopes(argv[2]);
  if (what == "records" && argc == 4)
    return record_seeds(argv[2], argv[3]);
  std::fprintf(stderr, "usage: fuzz_seeds envelope OUT | records DATADIR OUT\n");
  return 64;
}
