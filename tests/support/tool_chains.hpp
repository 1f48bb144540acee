// Shared by the review tests of the tool-call hot path (tool_review19_test,
// thread_pool_review19_test, tool_churn_review_test): the seed of a
// randomized test, an agent that chains calls from its callbacks, and a
// node registry and tree around a tool "dep".
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <random>
#include <string>

#include "support/tool_fixture.hpp"
#include "vigil/node/node.hpp"

namespace vigil::test {

/// The seed of a randomized test: VIGIL_SEED, or a random one; printed
/// so that a failure can be replayed.
inline uint64_t seed_for(const char* what) {
  uint64_t s;
  if (auto* e = std::getenv("VIGIL_SEED"))
    s = std::strtoull(e, nullptr, 10);
  else
    s = std::random_device{}();
  std::cout << "[ seed ] " << what << ": VIGIL_SEED=" << s << std::endl;
  return s;
}

/// On Ping{n}: makes n calls of its tool (param `tool`, default "svc") one
/// after the other, each from the previous one's result callback (the
/// usual way to chain calls), and replies Pong{n: calls that succeeded}
/// or the first error.
class chainer : public agent<> {
public:
  explicit chainer(const params& ps) {
    if (auto i = ps.find("tool"); i != ps.end())
      tool_ = i->second;
  }

  static void define(handlers<chainer>& h) {
    h.on<Ping>(&chainer::ping);
    h.on<Crash>([](chainer&, context&, const Crash& c) {
      throw std::runtime_error(c.why());
    });
  }

  void ping(context& ctx, const Ping& req) {
    step(ctx, ctx.defer(), req.n(), 0);
  }

private:
  void step(context& ctx, deferred_reply rp, int64_t left, int64_t done) {
    if (left == 0) {
      Pong p;
      p.set_n(done);
      rp.deliver(p);
      return;
    }
    Ping q;
    q.set_n(done);
    ctx.call_tool<Pong>(
      tool_, q, tool_options{},
      [this, &ctx, rp, left, done](Pong) mutable {
        step(ctx, rp, left - 1, done + 1);
      },
      [rp](const caf::error& e) mutable { rp.fail(e); });
  }

  std::string tool_ = "svc";
};

/// tool_caller, chainer and the tool "dep" answered by Dep::get().
template <class Dep>
registry dep_types() {
  registry r;
  r.add<tool_caller>("tool_caller");
  r.add<chainer>("chainer");
  r.add_tool<Ping, Pong>("dep", [](const Ping& req, tool_call& c) {
    return Dep::get().call(req, c);
  });
  return r;
}

/// n children calling "dep": chainers, or (mixed) every other a
/// tool_caller.
inline supervisor_spec dep_tree(int n, bool mixed, uint32_t intensity,
                         std::chrono::milliseconds period
                         = std::chrono::milliseconds{5000}) {
  supervisor_spec spec;
  spec.flags.intensity = intensity;
  spec.flags.period = period;
  for (int i = 0; i < n; ++i) {
    child_spec c;
    c.id = "c" + std::to_string(i);
    c.agent = mixed && i % 2 == 0 ? "tool_caller" : "chainer";
    c.params = {{"tool", "dep"}};
    spec.children.push_back(c);
  }
  return spec;
}

/// Runs each task at once on the thread that submits it (a cell's).
class inline_executor final : public tool_executor {
public:
  void submit(std::function<void()> task) override {
    task();
  }
};

} // namespace vigil::test
