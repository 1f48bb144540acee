// A document pipeline without cascades: extraction -> validation ->
// enrichment -> report, each an agent calling its own HTTP service, with
// the validation service slow on a share of the documents. Run once as
// plain synchronous calls and once as vigil agents with the policies of
// examples/policies/pipeline.yaml, on the same documents, seed and
// services. README.md, "A document pipeline without cascades".
//
//   pipeline_demo [--documents 600] [--seed 7] [--rate 60] [--workers 16]
//                 [--report FILE]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "pipeline/pipeline.pb.h"
#include "services.hpp"
#include "support/example_support.hpp"
#include "vigil/actors/agent.hpp"
#include "vigil/actors/error.hpp"
#include "vigil/cli/policy.hpp"
#include "vigil/node/node.hpp"

#ifndef PIPELINE_POLICY_DIR
#define PIPELINE_POLICY_DIR "examples/policies"
#endif

namespace {

using namespace std::chrono_literals;
using std::chrono::steady_clock;
using vigil::context;
using vigil::describe;

// -- the agents ---------------------------------------------------------------

std::string next_of(context& ctx, const char* stage) {
  auto& p = ctx.path();
  return p.substr(0, p.rfind('/') + 1) + stage;
}

/// "stage: why", short enough for a report line.
std::string missing(const char* stage, const caf::error& e) {
  auto why = describe(e);
  if (why.size() > 160)
    why = why.substr(0, 157) + "...";
  return std::string{stage} + ": " + why;
}

/// The answer for a document that got no report: which stage, and why.
pipeline::Report failed(const std::string& id, const char* stage,
                        const caf::error& e) {
  pipeline::Report r;
  r.set_id(id);
  r.set_failed(missing(stage, e));
  return r;
}

/// Hands `w` to the agent `stage` next to this one and answers its Report
/// through `reply`.
void pass_on(context& ctx, const char* stage, const pipeline::Work& w,
             vigil::deferred_reply reply) {
  ctx.request<pipeline::Report>(
    next_of(ctx, stage), w, 60s,
    [reply](vigil::reply<pipeline::Report> r) mutable {
      reply.deliver(r.value);
    },
    [reply, id = w.id(), stage](const caf::error& e) mutable {
      reply.deliver(failed(id, stage, e));
    });
}

/// Extraction (required: without it there is nothing to report).
class extractor : public vigil::agent<> {
public:
  static void define(vigil::handlers<extractor>& h) {
    h.on<pipeline::Document>([](extractor&, context& ctx,
                                const pipeline::Document& d) {
      auto reply = ctx.defer();
      ctx.call_tool<pipeline::Extracted>(
        "extract", d,
        [&ctx, reply, id = d.id()](pipeline::Extracted x) mutable {
          pipeline::Work w;
          w.set_id(id);
          *w.mutable_extracted() = std::move(x);
          pass_on(ctx, "validate", w, reply);
        },
        [reply, id = d.id()](const caf::error& e) mutable {
          reply.deliver(failed(id, "extract", e));
        });
    });
  }
};

/// Validation and enrichment: a part that does not come in time (or at
/// all) is left out, with why, and the document goes on.
template <class Part>
class stage : public vigil::agent<> {
public:
  explicit stage(const vigil::params& ps)
    : tool_(ps.at("tool")), next_(ps.at("next")) {
    // nop
  }

  static void define(vigil::handlers<stage>& h) {
    h.template on<pipeline::Work>([](stage& self, context& ctx,
                                     const pipeline::Work& w) {
      auto reply = ctx.defer();
      ctx.template call_tool<Part>(
        self.tool_, w.extracted(),
        [&ctx, &self, reply, work = pipeline::Work{w}](Part p) mutable {
          set(work, std::move(p));
          pass_on(ctx, self.next_.c_str(), work, reply);
        },
        [&ctx, &self, reply, work = pipeline::Work{w}](
          const caf::error& e) mutable {
          work.add_missing(missing(self.tool_.c_str(), e));
          pass_on(ctx, self.next_.c_str(), work, reply);
        });
    });
  }

private:
  static void set(pipeline::Work& w, pipeline::Validation v) {
    *w.mutable_validation() = std::move(v);
  }
  static void set(pipeline::Work& w, pipeline::Enrichment e) {
    *w.mutable_enrichment() = std::move(e);
  }

  std::string tool_;
  std::string next_;
};

/// The report: stored with what came in, and what is missing and why.
class reporter : public vigil::agent<> {
public:
  static void define(vigil::handlers<reporter>& h) {
    h.on<pipeline::Work>([](reporter&, context& ctx,
                            const pipeline::Work& w) {
      auto reply = ctx.defer();
      ctx.call_tool<pipeline::Stored>(
        "report", w,
        [reply, w](pipeline::Stored s) mutable {
          pipeline::Report r;
          r.set_id(w.id());
          r.set_report_id(s.report_id());
          r.set_complete(w.missing_size() == 0);
          *r.mutable_missing() = w.missing();
          reply.deliver(r);
        },
        [reply, id = w.id()](const caf::error& e) mutable {
          reply.deliver(failed(id, "report", e));
        });
    });
  }
};

// -- the runs -----------------------------------------------------------------

struct options {
  size_t documents = 600;
  uint64_t seed = 7;
  double rate = 60;
  size_t workers = 16;
  std::string policy_dir = PIPELINE_POLICY_DIR;
  std::string report;
};

struct run_stats {
  std::string name;
  size_t n = 0, complete = 0, partial = 0, failed = 0;
  std::vector<double> ms;
  double elapsed_s = 0;
  int64_t requests = 0;
  int64_t stored = 0; // reports the report service stored
  std::map<std::string, size_t> missing; // by stage
  std::map<std::string, std::string> example;

  double pct(size_t k) const {
    return n == 0 ? 0 : 100.0 * double(k) / double(n);
  }
  double p(double q) const {
    if (ms.empty())
      return 0;
    auto v = ms;
    auto k = static_cast<size_t>(std::ceil(q * double(v.size()))) - 1;
    std::nth_element(v.begin(), v.begin() + long(k), v.end());
    return v[k];
  }
  double per_s() const {
    return elapsed_s <= 0 ? 0 : double(complete + partial) / elapsed_s;
  }
  void count(const pipeline::Report& r, bool ok, const std::string& why) {
    if (!ok) {
      ++failed;
      auto stage = why.substr(0, why.find(':'));
      ++missing["failed at " + stage];
      example.emplace("failed at " + stage, why);
      return;
    }
    ++(r.complete() ? complete : partial);
    for (auto& m : r.missing()) {
      auto stage = m.substr(0, m.find(':'));
      ++missing["missing " + stage];
      example.emplace("missing " + stage, m);
    }
  }
};

std::string doc_id(size_t i) {
  char b[32];
  std::snprintf(b, sizeof b, "DOC-%04zu", i + 1);
  return b;
}

/// Runs `one(i)` for documents 0..n-1, document i arriving at t0 + i/rate,
/// on `threads` threads, with progress; returns the seconds taken.
template <class One>
double arrivals(const options& o, size_t threads, const char* name,
                run_stats& st, One one) {
  std::atomic<size_t> next{0}, finished{0};
  auto t0 = steady_clock::now();
  std::vector<std::thread> ts;
  for (size_t t = 0; t < threads; ++t)
    ts.emplace_back([&] {
      for (size_t i = next++; i < o.documents; i = next++) {
        auto arrival = t0 + std::chrono::duration_cast<steady_clock::duration>(
                              std::chrono::duration<double>(double(i) / o.rate));
        std::this_thread::sleep_until(arrival);
        one(i);
        st.ms[i] = std::chrono::duration<double, std::milli>(
                     steady_clock::now() - arrival)
                     .count();
        ++finished;
      }
    });
  auto last = t0;
  while (finished < o.documents) {
    std::this_thread::sleep_for(50ms);
    if (steady_clock::now() - last >= 1s) {
      last = steady_clock::now();
      std::fprintf(stderr, "pipeline: %-6s %5.1fs  %zu/%zu reports\n", name,
                   std::chrono::duration<double>(last - t0).count(),
                   finished.load(), o.documents);
    }
  }
  for (auto& t : ts)
    t.join();
  return std::chrono::duration<double>(steady_clock::now() - t0).count();
}

/// This thread's keep-alive client of the service at `addr` (a plain
/// client: a 10 s read timeout, no retries).
httplib::Client& plain_client(const std::string& addr) {
  thread_local std::map<std::string, std::unique_ptr<httplib::Client>> clients;
  auto& c = clients[addr];
  if (!c) {
    c = std::make_unique<httplib::Client>("http://" + addr);
    c->set_keep_alive(true);
    c->set_read_timeout(10s);
  }
  return *c;
}

/// Plain synchronous calls: `workers` threads, each taking a document
/// through the four services one call after the other (one attempt, a
/// 10 s timeout each, as a plain HTTP client has), failing it on an error.
run_stats run_plain(const options& o, pipeline::services& svc) {
  run_stats st;
  st.name = "plain";
  st.n = o.documents;
  st.ms.assign(o.documents, 0);
  auto addr = svc.addresses();
  auto r0 = svc.requests();
  auto s0 = svc.reports();
  std::mutex mtx;
  auto client = [&](const std::string& name) -> httplib::Client& {
    return plain_client(addr.at(name));
  };
  st.elapsed_s = arrivals(o, o.workers, "plain", st, [&](size_t i) {
    auto id = doc_id(i);
    pipeline::Report rep;
    rep.set_id(id);
    std::string why;
    auto step = [&](const char* name, bool get) {
      auto path = "/" + std::string{name} + "/" + id;
      auto res = get ? client(name).Get(path)
                     : client(name).Post(path, "{}", "application/json");
      if (!res || res->status != 200) {
        why = std::string{name} + ": "
              + (res ? "status " + std::to_string(res->status)
                     : httplib::to_string(res.error()));
        return false;
      }
      return true;
    };
    bool ok = step("extract", true) && step("validate", false)
              && step("enrich", false) && step("report", false);
    rep.set_complete(ok);
    std::lock_guard<std::mutex> g{mtx};
    st.count(rep, ok, why);
  });
  st.requests = svc.requests() - r0;
  st.stored = svc.reports() - s0;
  return st;
}

/// The same pipeline as vigil agents under examples/policies/pipeline.yaml.
run_stats run_vigil(const options& o, pipeline::services& svc) {
  run_stats st;
  st.name = "vigil";
  st.n = o.documents;
  st.ms.assign(o.documents, 0);
  vigil::registry types;
  types.add<extractor>("extractor");
  types.add<stage<pipeline::Validation>>("validator");
  types.add<stage<pipeline::Enrichment>>("enricher");
  types.add<reporter>("reporter");
  auto file = o.policy_dir + "/pipeline.yaml";
  auto lp = examples::load_policy(file, svc.addresses(), types);
  // As many calls in flight per tool as the plain pipeline has threads.
  for (auto& t : lp.node.tools)
    t.policy.bulkhead.max_concurrent = static_cast<uint32_t>(o.workers);
  vigil::node n{std::move(types), lp.node};
  if (auto err = n.start(lp.name, std::move(lp.tree))) {
    std::cerr << "pipeline: the node did not start: " << describe(err)
              << "\n";
    std::exit(1);
  }
  auto first = lp.name + "/extract";
  auto r0 = svc.requests();
  auto s0 = svc.reports();
  std::mutex mtx;
  st.elapsed_s = arrivals(o, 256, "vigil", st, [&](size_t i) {
    pipeline::Document d;
    d.set_id(doc_id(i));
    auto r = n.call<pipeline::Report>(first, d, 60s);
    std::lock_guard<std::mutex> g{mtx};
    if (!r)
      st.count({}, false, "extract: " + describe(r.error()));
    else
      st.count(r->value, r->value.failed().empty(), r->value.failed());
  });
  (void)n.stop();
  st.requests = svc.requests() - r0;
  st.stored = svc.reports() - s0;
  return st;
}

void print(const std::vector<run_stats>& runs, const options& o) {
  std::printf("\n== document pipeline: %zu documents arriving at %.0f/s, "
              "seed %llu; validation slow (2 to 6 s) on 15%%\n",
              o.documents, o.rate, static_cast<unsigned long long>(o.seed));
  std::printf("%-30s%18s%18s\n", "", "plain sync calls", "vigil");
  auto row = [&](const char* name, auto f) {
    std::printf("%-30s", name);
    for (auto& r : runs)
      std::printf("%18s", f(r).c_str());
    std::printf("\n");
  };
  auto fmt = [](const char* f, double v) {
    char b[64];
    std::snprintf(b, sizeof b, f, v);
    return std::string{b};
  };
  row("reports delivered", [&](auto& r) {
    return fmt("%.1f%%", r.pct(r.complete + r.partial));
  });
  row("  complete", [&](auto& r) { return fmt("%.1f%%", r.pct(r.complete)); });
  row("  with parts missing", [&](auto& r) {
    return fmt("%.1f%%", r.pct(r.partial));
  });
  row("failed", [&](auto& r) { return fmt("%.1f%%", r.pct(r.failed)); });
  row("throughput", [&](auto& r) { return fmt("%.1f docs/s", r.per_s()); });
  row("p50 time to report", [&](auto& r) { return fmt("%.0f ms", r.p(0.5)); });
  row("p99 time to report", [&](auto& r) {
    return fmt("%.0f ms", r.p(0.99));
  });
  row("wall time", [&](auto& r) { return fmt("%.1f s", r.elapsed_s); });
  row("service requests", [&](auto& r) {
    return std::to_string(r.requests);
  });
  row("reports stored", [&](auto& r) { return std::to_string(r.stored); });
  std::printf("\nwhat the reports lack, and why (documents):\n");
  for (auto& r : runs)
    for (auto& [what, k] : r.missing)
      std::printf("  %-6s %-22s %5zu  e.g. %s\n", r.name.c_str(), what.c_str(),
                  k, r.example.at(what).substr(0, 100).c_str());
}

void write_report(const std::vector<run_stats>& runs, const options& o) {
  nlohmann::json j;
  j["documents"] = o.documents;
  j["rate"] = o.rate;
  for (auto& r : runs)
    j["runs"][r.name] = {{"complete", r.complete},
                         {"partial", r.partial},
                         {"failed", r.failed},
                         {"delivered_pct", r.pct(r.complete + r.partial)},
                         {"per_s", r.per_s()},
                         {"p50_ms", r.p(0.5)},
                         {"p99_ms", r.p(0.99)},
                         {"elapsed_s", r.elapsed_s},
                         {"requests", r.requests},
                         {"stored", r.stored},
                         {"missing", r.missing}};
  std::ofstream out{o.report};
  out << j.dump(2) << "\n";
  if (!out)
    throw std::runtime_error("cannot write the report to " + o.report);
}

} // namespace

int main(int argc, char** argv) {
  // vigil's log lines go to stderr: stdout is the table, for scripts.
  spdlog::set_default_logger(spdlog::stderr_logger_mt("vigil"));
  CLI::App app{"pipeline_demo: a document pipeline with a slow validation "
               "service, as plain synchronous calls and as vigil agents"};
  options o;
  app.add_option("--documents", o.documents, "documents in the batch")
    ->check(CLI::Range(size_t{1}, size_t{100000}));
  app.add_option("--seed", o.seed, "the faults' seed");
  app.add_option("--rate", o.rate, "documents arriving per second")
    ->check(CLI::Range(1.0, 10000.0));
  app.add_option("--workers", o.workers,
                 "threads of the plain pipeline, and calls in flight per "
                 "tool of the vigil one")
    ->check(CLI::Range(size_t{1}, size_t{256}));
  app.add_option("--policy-dir", o.policy_dir, "where pipeline.yaml is");
  app.add_option("--report", o.report, "write the figures as JSON to FILE");
  CLI11_PARSE(app, argc, argv);
  try {
    if (!o.report.empty()) { // an unwritable path fails now, not after
      std::ofstream probe{o.report};
      if (!probe)
        throw std::runtime_error("cannot write the report to " + o.report);
    }
    pipeline::fault_model f;
    // Each service sees the plain pipeline's threads, then the tool's
    // calls in flight (its pool's threads, one more than max_concurrent).
    pipeline::services svc{o.seed, f, o.workers + 1};
    std::vector<run_stats> runs;
    runs.push_back(run_plain(o, svc));
    runs.push_back(run_vigil(o, svc));
    print(runs, o);
    if (!o.report.empty())
      write_report(runs, o);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "pipeline_demo: " << e.what() << "\n";
    return 1;
  }
}
