#pragma once

// The fixture of the degrade tests (supervision/degrade_test.cpp and its
// reviews): a runtime on CAF's testing scheduler, a supervisor "sup" whose
// child `w` degrades (the stand-in answers Pong(from: "fallback"); probes
// after 100 ms, doubling up to 400 ms), an optional data dir and writer
// for durable children, and the checks those tests share.

#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "support/durable_agents.hpp"
#include "support/fixture.hpp"
#include "support/temp_dir.hpp"
#include "vigil/actors/writer.hpp"
#include "vigil/persistence/store.hpp"

namespace vigil::test {

/// A tally (as support/durable_agents.hpp's) that fails on purpose: its
/// Add throws for n < 0, while `fail_all` is set, and for n == 7 while
/// `fail_sevens` is positive (each such throw takes one off); Crash
/// throws. The switches are reset by each degrade_fixture.
class flaky_tally : public agent<Tally> {
public:
  static inline std::atomic<bool> fail_all{false};
  static inline std::atomic<int> fail_sevens{0};

  static void define(handlers<flaky_tally>& h) {
    h.on<Add>([](flaky_tally& self, context&, const Add& a) {
      if (a.n() < 0 || fail_all)
        throw std::runtime_error("flaky_tally");
      if (a.n() == 7 && fail_sevens.load() > 0) {
        --fail_sevens;
        throw std::runtime_error("flaky_tally: seven");
      }
      auto& st = self.state();
      st.set_count(st.count() + 1);
      st.set_sum(st.sum() + a.n());
      st.add_seen(a.n());
    });
    h.on<Get>(
      [](flaky_tally& self, context&, const Get&) { return self.state(); });
    h.on<Crash>([](flaky_tally&, context&, const Crash& c) {
      throw std::runtime_error(c.why());
    });
  }
};

/// The test agents (echo, relay), tally and flaky_tally.
inline registry degrade_registry() {
  registry r = test_registry();
  r.add<tally>("tally");
  r.add<flaky_tally>("flaky_tally");
  return r;
}

/// Holds the data dir; a base class, so that it outlives the runtime.
struct degrade_dir {
  temp_dir dir;
};

class degrade_fixture : public degrade_dir, public runtime_fixture {
public:
  static constexpr const char* path = "sup/w";

  degrade_fixture() {
    rt = std::make_shared<runtime>(degrade_registry());
    flaky_tally::fail_all = false;
    flaky_tally::fail_sevens = 0;
  }

  ~degrade_fixture() override {
    // The supervisors end first (the base class), then the writer.
    if (writer_)
      sups.push_back(writer_);
  }

  /// Attaches a store on `dir` and a writer (on the testing scheduler).
  void with_writer() {
    using namespace std::chrono_literals;
    store_options so;
    so.dir = dir.path();
    so.sync = sync_mode::nosync;
    std::unique_ptr<store> st;
    auto s = store::open(so, st);
    ASSERT_FALSE(s) << s.message();
    std::shared_ptr<store> shared{std::move(st)};
    writer_options wo;
    wo.detached = false;
    wo.idempotency_retention = 0ms;
    wo.tool_result_retention = 0ms;
    auto w = spawn_writer(sys, shared, wo, {}, rt->shared_stats());
    rt->attach_store(shared, w);
    writer_ = w;
  }

  /// The stand-in and the probe schedule of every degrading child here.
  static void set_fallback(child_spec& c) {
    using namespace std::chrono_literals;
    Pong fb;
    fb.set_from("fallback");
    c.degrade.set_fallback(fb);
    c.degrade.probe_min = 100ms;
    c.degrade.probe_max = 400ms;
  }

  /// A child `id` of type `agent` that degrades.
  static child_spec degrading_as(std::string id, std::string agent = "echo") {
    auto c = worker(std::move(id), std::move(agent))
               .with_failure(on_failure::degrade);
    set_fallback(c);
    return c;
  }

  /// The child `w` of type `agent`, which degrades.
  static child_spec degrading(std::string agent = "echo") {
    return degrading_as("w", std::move(agent));
  }

  /// "sup" (`s`, `intensity` restarts in 5 s, a constant `backoff`) with
  /// `children` in order.
  caf::actor start_group(strategy s, std::vector<child_spec> children,
                         int intensity = 1,
                         std::chrono::milliseconds backoff = {}) {
    auto spec = flags(s, intensity, 5000);
    spec.flags.backoff.min = backoff;
    spec.flags.backoff.max = backoff;
    for (auto& c : children)
      spec.children.push_back(std::move(c));
    caf::actor sup;
    auto err = start("sup", spec, &sup);
    EXPECT_FALSE(err) << describe(err);
    return sup;
  }

  /// "sup" with `w` and a sibling `peer` that answers Pings (first with
  /// `peer_first`).
  caf::actor start_sup(child_spec w, int intensity = 1,
                       std::chrono::milliseconds backoff = {},
                       strategy s = strategy::one_for_one,
                       bool peer_first = false) {
    std::vector<child_spec> children;
    if (peer_first)
      children.push_back(worker("peer", "echo"));
    children.push_back(std::move(w));
    if (!peer_first)
      children.push_back(worker("peer", "echo"));
    return start_group(s, std::move(children), intensity, backoff);
  }

  /// Starts `sup` and spends its budget: the second crash degrades `w`.
  caf::actor start_degraded() {
    auto sup = start_sup(degrading());
    crash(path);
    crash(path);
    EXPECT_EQ(status_of(sup, "w"), "degraded");
    EXPECT_EQ(cell_state(), "degraded");
    return sup;
  }

  int starts(const std::string& p = path) {
    return switches::get().start_count(p);
  }

  std::string cell_state(const std::string& p = path) {
    auto r = ask<std::string>(handle(p), state_atom::value);
    return r ? *r : "error: " + describe(r.error());
  }

  void expect_fallback(const google::protobuf::Message& m) {
    auto r = call(path, m);
    ASSERT_TRUE(r) << describe(r.error());
    EXPECT_TRUE(r->degraded());
    EXPECT_EQ(pong_of(*r).from(), "fallback");
  }

  /// Asserts that the next instance of `w` starts after exactly `d`.
  void expect_start_after(std::chrono::milliseconds d) {
    using namespace std::chrono_literals;
    auto before = starts();
    advance(d - 1ms);
    EXPECT_EQ(starts(), before) << "started before " << d.count() << "ms";
    advance(1ms);
    EXPECT_EQ(starts(), before + 1)
      << "not started after " << d.count() << "ms";
  }

  /// The supervisor and the cell of `w` tell the same state.
  void expect_agree(const caf::actor& sup, const std::string& state) {
    EXPECT_EQ(status_of(sup, "w"), state);
    EXPECT_EQ(cell_state(), state);
  }

  /// Dead letters of `p` whose reason starts with `prefix`.
  size_t letters(const std::string& p, const std::string& prefix) {
    size_t n = 0;
    for (auto& d : rt->dead_letters())
      if (d.path == p && d.reason.rfind(prefix, 0) == 0)
        ++n;
    return n;
  }

  size_t letters(const std::string& prefix) {
    return letters(path, prefix);
  }

  /// Recovers: clears the start switches, waits for the probe at `after`
  /// and checks that the first call is answered by the agent.
  void expect_recovery(const caf::actor& sup,
                       std::chrono::milliseconds after) {
    switches::get().start_calls.clear();
    expect_start_after(after);
    EXPECT_EQ(cell_state(), "half_open");
    auto r = call(path, ping(7));
    ASSERT_TRUE(r) << describe(r.error());
    EXPECT_FALSE(r->degraded());
    EXPECT_EQ(pong_of(*r).from(), path);
    expect_agree(sup, "running");
  }

  /// An actor bound at "silent" that takes envelopes and never answers.
  void bind_silent() {
    auto held = std::make_shared<std::vector<caf::response_promise>>();
    auto a = sys.spawn([held](caf::event_based_actor* self) -> caf::behavior {
      return {[=](envelope&) -> caf::result<envelope> {
        held->push_back(self->make_response_promise());
        return caf::delegated<envelope>{};
      }};
    });
    sups.push_back(a); // ended with the fixture
    rt->bind("silent", a);
  }

  /// The test clock `d` from now, in nanoseconds (an envelope deadline).
  int64_t ns_in(std::chrono::milliseconds d) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
             (sched.clock().now() + d).time_since_epoch())
      .count();
  }

  caf::actor writer_;
};

inline Add add(int64_t n) {
  Add a;
  a.set_n(n);
  return a;
}

} // namespace vigil::test
