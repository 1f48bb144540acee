// Shared state: ten editors add a field each to one shared config by
// compare-and-swap (none is lost, as a read-modify-write of a file loses
// them), and three workers drain a leased task queue (each document is
// completed once, however the workers interleave).
//
//   shared_jobs DATA_DIR

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <set>
#include <sstream>
#include <thread>

#include "jobs.pb.h"
#include "vigil/node/node.hpp"
#include "vigil/persistence/shared.hpp"

using namespace vigil;
using namespace std::chrono_literals;

// [editor]
/// Adds a field to the shared config "settings/config": read it, then
/// compare-and-swap from the version read; on a conflict, again from what
/// the conflict returns (the value another editor just wrote).
class editor : public agent<> {
public:
  static void define(handlers<editor>& h) {
    h.on<jobs::Edit>([](editor& self, context& ctx, const jobs::Edit& e) {
      ctx.kv_get("settings", "config",
                 [&self, &ctx, field = e.field()](kv_entry cur) {
                   self.add(ctx, field, cur);
                 },
                 [](const caf::error& err) {
                   throw std::runtime_error(describe(err));
                 });
    });
  }

  void add(context& ctx, std::string field, const kv_entry& cur) {
    auto next = cur.found ? cur.value + "," + field : field;
    ctx.kv_put("settings", "config", next, cur.found ? cur.version : 0,
               [this, &ctx, field](kv_result r) {
                 if (r.conflict())
                   add(ctx, field, r.entry); // retry from what is there now
               },
               [](const caf::error& err) {
                 throw std::runtime_error(describe(err));
               });
  }
};
// [editor]

/// Enqueues Feed.docs documents in one handler (one transaction).
class feeder : public agent<> {
public:
  static void define(handlers<feeder>& h) {
    h.on<jobs::Feed>([](feeder&, context& ctx, const jobs::Feed& f) {
      for (int i = 1; i <= f.docs(); ++i) {
        enqueue_options o;
        o.dedupe_key = "doc-" + std::to_string(i); // a resent Feed adds none
        ctx.enqueue_task("docs", "doc-" + std::to_string(i), o,
                         [](uint64_t) {}, [](const caf::error&) {});
      }
    });
  }
};

// [worker]
/// Claims a document under a 5 s lease, works it in a handler of its own
/// (for a journal agent, the completion then commits with the state that
/// counts it), and claims the next.
class doc_worker : public agent<jobs::Worked> {
public:
  static void define(handlers<doc_worker>& h) {
    h.on<jobs::Poll>([](doc_worker&, context& ctx, const jobs::Poll&) {
      ctx.claim_task(
        "docs", 5s,
        [&ctx](std::optional<claimed_task> t) {
          if (!t) {
            ctx.send_after(20ms, ctx.path(), jobs::Poll{}); // empty: later
            return;
          }
          jobs::Doc d;
          d.set_task(t->lease.task);
          d.set_lease(t->lease.number);
          d.set_expires_ms(t->lease.expires_ms);
          d.set_name(t->payload);
          ctx.send(ctx.path(), d);
        },
        [](const caf::error& err) { throw std::runtime_error(describe(err)); });
    });
    h.on<jobs::Doc>([](doc_worker& self, context& ctx, const jobs::Doc& d) {
      self.state().set_docs(self.state().docs() + 1); // the work itself
      ctx.complete_task(lease{"docs", d.task(), d.lease(), d.expires_ms()},
                        [] {},
                        [](const caf::error& err) {
                          // lease_expired: another worker has it now.
                          std::fprintf(stderr, "%s\n", describe(err).c_str());
                        });
      ctx.send(ctx.path(), jobs::Poll{});
    });
  }

  void on_start(context& ctx) override {
    ctx.send(ctx.path(), jobs::Poll{});
  }
};
// [worker]

int main(int argc, char** argv) {
  std::string dir = argc > 1 ? argv[1] : "shared_jobs-data";
  std::filesystem::remove_all(dir); // a fresh run each time
  {
    registry types;
    types.add<editor>("editor").add<feeder>("feeder").add<doc_worker>("doc_worker");
    node_config nc;
    nc.data_dir = dir;
    node nd{std::move(types), nc};
    supervisor_spec spec;
    for (int i = 0; i < 10; ++i)
      spec.children.push_back(worker("e" + std::to_string(i), "editor"));
    spec.children.push_back(worker("feeder", "feeder")
                              .with_durability(durability_mode::journal));
    for (int i = 0; i < 3; ++i)
      spec.children.push_back(worker("w" + std::to_string(i), "doc_worker")
                                .with_durability(durability_mode::journal));
    if (auto err = nd.start("jobs", spec)) {
      std::fprintf(stderr, "shared_jobs: %s\n", describe(err).c_str());
      return 1;
    }
    for (int i = 0; i < 10; ++i) {
      jobs::Edit e;
      e.set_field("f" + std::to_string(i));
      (void) nd.send("jobs/e" + std::to_string(i), e);
    }
    jobs::Feed f;
    f.set_docs(30);
    (void) nd.send("jobs/feeder", f);
    // Wait (bounded) until every document is done and every field is in.
    auto& st = *nd.rt()->storage();
    auto until = std::chrono::steady_clock::now() + 30s;
    for (;;) {
      std::vector<queue_listing> qs;
      records::KvRecord cfg;
      bool found = false;
      (void) queue_list(st, qs);
      (void) kv_read(st, "settings", "config", cfg, found);
      bool docs_done = !qs.empty() && qs[0].done == 30;
      bool fields_in = found && cfg.version() == 10;
      if (docs_done && fields_in)
        break;
      if (std::chrono::steady_clock::now() > until) {
        std::fprintf(stderr, "shared_jobs: not done in 30 s\n");
        return 1;
      }
      std::this_thread::sleep_for(10ms);
    }
    (void) nd.stop();
  }
  // Read back: ten distinct fields in the config, 30 documents done.
  std::unique_ptr<store> st;
  store_options so;
  so.dir = dir;
  if (auto s = store::open_read_only(so, st)) {
    std::fprintf(stderr, "shared_jobs: %s\n", s.message().c_str());
    return 1;
  }
  records::KvRecord cfg;
  bool found = false;
  (void) kv_read(*st, "settings", "config", cfg, found);
  std::set<std::string> fields;
  std::istringstream in{cfg.value()};
  for (std::string x; std::getline(in, x, ',');)
    fields.insert(x);
  std::vector<records::TaskRecord> docs;
  (void) queue_tasks(*st, "docs", docs);
  size_t done = 0;
  for (auto& d : docs)
    done += d.state() == "done";
  std::printf("config v%llu: %s (%zu distinct fields, last writer %s)\n"
              "docs: %zu of %zu done\n",
              static_cast<unsigned long long>(cfg.version()),
              cfg.value().c_str(), fields.size(), cfg.writer().c_str(), done,
              docs.size());
  return fields.size() == 10 && done == 30 ? 0 : 1;
}
