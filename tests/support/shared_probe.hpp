#pragma once

// A probe agent for the shared-state tests on a real node: it runs the
// ProbeOp it gets (get, put, delete, enqueue, claim, extend, complete,
// fail) and answers with its outcome from the operation's callback.

#include <atomic>
#include <optional>
#include <stdexcept>
#include <string>

#include "proto/shared_test.pb.h"
#include "vigil/actors/agent.hpp"
#include "vigil/actors/registry.hpp"

namespace vigil::test {

/// The injected wall clock of the probes' nodes (node_config::wall_ms).
inline std::atomic<uint64_t> probe_wall{1'000'000};

/// An error as the probe answers it: its code's name, and its text.
inline ProbeResult probe_failed(const caf::error& e) {
  ProbeResult r;
  r.set_error(e.category() == caf::atom("vigil")
                ? to_string(static_cast<errc>(e.code()))
                : "other");
  r.set_value(describe(e));
  return r;
}

/// Runs the ProbeOp it gets and answers with its outcome.
class probe : public agent<ProbeState> {
public:
  static void define(handlers<probe>& h) {
    h.on<ProbeOp>(&probe::run);
  }

  void run(context& ctx, const ProbeOp& op) {
    state().set_handled(state().handled() + 1);
    auto rp = ctx.defer();
    auto err = [rp](const caf::error& e) mutable { rp.deliver(probe_failed(e)); };
    auto counted = [this] { state().set_callbacks(state().callbacks() + 1); };
    auto on_kv = [rp, counted](kv_result k) mutable {
      counted();
      ProbeResult r;
      r.set_applied(k.applied);
      r.set_version(k.entry.version);
      r.set_value(k.entry.value);
      r.set_found(k.entry.found);
      r.set_writer(k.entry.writer);
      rp.deliver(r);
    };
    lease l{"jobs", op.task(), op.lease(), 0};
    auto& o = op.op();
    if (o == "get") {
      ctx.kv_get("s", op.key(),
                 [rp, counted](kv_entry e) mutable {
                   counted();
                   ProbeResult r;
                   r.set_version(e.version);
                   r.set_value(e.value);
                   r.set_found(e.found);
                   r.set_writer(e.writer);
                   rp.deliver(r);
                 },
                 err);
    } else if (o == "put") {
      ctx.kv_put("s", op.key(), op.value(), op.expected(), on_kv, err);
    } else if (o == "delete") {
      ctx.kv_delete("s", op.key(), op.expected(), on_kv, err);
    } else if (o == "enqueue") {
      ctx.enqueue_task("jobs", op.value(), {},
                       [rp](uint64_t id) mutable {
                         ProbeResult r;
                         r.set_task(id);
                         rp.deliver(r);
                       },
                       err);
    } else if (o == "claim") {
      ctx.claim_task("jobs", std::chrono::milliseconds{op.lease_ms()},
                     [rp](std::optional<claimed_task> t) mutable {
                       ProbeResult r;
                       r.set_empty(!t);
                       if (t) {
                         r.set_task(t->lease.task);
                         r.set_lease(t->lease.number);
                         r.set_attempts(t->attempts);
                         r.set_expires_ms(t->lease.expires_ms);
                         r.set_value(t->payload);
                       }
                       rp.deliver(r);
                     },
                     err);
    } else if (o == "extend") {
      ctx.extend_lease(l, std::chrono::milliseconds{op.lease_ms()},
                       [rp](lease n) mutable {
                         ProbeResult r;
                         r.set_expires_ms(n.expires_ms);
                         rp.deliver(r);
                       },
                       err);
    } else if (o == "complete") {
      ctx.complete_task(l, [rp]() mutable { rp.deliver(ProbeResult{}); },
                        err);
    } else if (o == "fail") {
      ctx.fail_task(l, "probe failed it",
                    [rp](bool dead) mutable {
                      ProbeResult r;
                      r.set_dead(dead);
                      rp.deliver(r);
                    },
                    err);
    }
    if (op.throw_first() && ctx.current()->attempt == 1)
      throw std::runtime_error("probe: thrown after the call");
  }
};

inline registry probe_registry() {
  registry r;
  r.add<probe>("probe");
  return r;
}

} // namespace vigil::test
