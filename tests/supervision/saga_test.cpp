// The compensate directive: a saga supervisor runs its children as ordered
// steps and undoes the completed ones in reverse order when one fails.

#include "support/fixture.hpp"
#include "vigil/actors/saga_step.hpp"
#include "vigil/supervision/saga.hpp"

using namespace std::chrono_literals;
using namespace vigil;
using namespace vigil::test;

namespace {

/// What the steps did, in order, across restarts.
struct saga_log {
  static saga_log& get() {
    static saga_log inst;
    return inst;
  }
  std::vector<std::string> events;
  std::map<std::string, int> compensate_failures; // path -> failures left
};

/// A step that records what it does. Params: fail_execute=1 throws in
/// execute; compensate failures come from saga_log.
class recording_step : public saga_step<recording_step, Order, Receipt> {
public:
  explicit recording_step(const params& ps)
    : fail_execute_(ps.count("fail_execute") > 0) {
  }

  Receipt execute(context& ctx, const Order& order) {
    saga_log::get().events.push_back("execute " + ctx.path());
    if (fail_execute_)
      throw std::runtime_error("card declined");
    Receipt r;
    r.set_step(ctx.path());
    r.set_order(order.id());
    return r;
  }

  void compensate(context& ctx, const Order& order, const Receipt& r) {
    auto& left = saga_log::get().compensate_failures[ctx.path()];
    if (left > 0) {
      --left;
      saga_log::get().events.push_back("compensate-fail " + ctx.path());
      throw std::runtime_error("refund service down");
    }
    // The step sees its own execute's output and the saga's input.
    EXPECT_EQ(r.step(), ctx.path());
    EXPECT_EQ(r.order(), order.id());
    saga_log::get().events.push_back("compensate " + ctx.path());
  }

private:
  bool fail_execute_;
};

class saga_test : public runtime_fixture {
public:
  saga_test() {
    registry types;
    types.add<recording_step>("step");
    rt = std::make_shared<runtime>(std::move(types));
    saga_log::get() = saga_log{};
  }

  /// Starts a saga "shop/checkout" with steps reserve, charge, ship.
  void start_saga(const std::string& failing_step, saga_spec opts = {}) {
    std::vector<child_spec> steps;
    for (auto* id : {"reserve", "charge", "ship"}) {
      auto s = worker(id, "step");
      if (failing_step == id)
        s.with_param("fail_execute", "1");
      steps.push_back(s);
    }
    supervisor_spec root;
    root.children.push_back(saga("checkout", std::move(steps), opts));
    ASSERT_FALSE(start("shop", root));
  }

  /// Runs the saga on one order; advances the clock for retries.
  SagaOutcome run_saga(int advance_steps = 0) {
    Order order;
    order.set_id("o-1");
    order.set_amount(42);
    auto h = self->request(handle("shop/checkout"), caf::infinite, wrap(order));
    run();
    for (int i = 0; i < advance_steps; ++i)
      advance(1000ms);
    SagaOutcome out;
    std::move(h).receive(
      [&](envelope& e) {
        EXPECT_EQ(e.type, "vigil.SagaOutcome");
        EXPECT_TRUE(out.ParseFromString(e.payload));
      },
      [&](caf::error& err) { ADD_FAILURE() << describe(err); });
    return out;
  }
};

TEST_F(saga_test, all_steps_execute_in_order) {
  start_saga("");
  auto out = run_saga();
  EXPECT_TRUE(out.completed());
  EXPECT_FALSE(out.compensation_failed());
  ASSERT_EQ(out.steps_size(), 3);
  for (auto& s : out.steps())
    EXPECT_EQ(s.status(), "executed") << s.path();
  EXPECT_EQ(saga_log::get().events,
            (std::vector<std::string>{"execute shop/checkout/reserve",
                                      "execute shop/checkout/charge",
                                      "execute shop/checkout/ship"}));
}

TEST_F(saga_test, failed_step_compensates_completed_steps_in_reverse) {
  start_saga("ship");
  auto out = run_saga();
  EXPECT_FALSE(out.completed());
  EXPECT_EQ(out.failed_step(), "shop/checkout/ship");
  EXPECT_NE(out.failure().find("card declined"), std::string::npos)
    << out.failure();
  EXPECT_EQ(out.steps(0).status(), "compensated");
  EXPECT_EQ(out.steps(1).status(), "compensated");
  EXPECT_EQ(out.steps(2).status(), "failed");
  EXPECT_EQ(saga_log::get().events,
            (std::vector<std::string>{"execute shop/checkout/reserve",
                                      "execute shop/checkout/charge",
                                      "execute shop/checkout/ship",
                                      "compensate shop/checkout/charge",
                                      "compensate shop/checkout/reserve"}));
}

TEST_F(saga_test, first_step_failing_compensates_nothing) {
  start_saga("reserve");
  auto out = run_saga();
  EXPECT_FALSE(out.completed());
  EXPECT_EQ(out.steps(0).status(), "failed");
  EXPECT_EQ(out.steps(1).status(), "not_run");
  EXPECT_EQ(out.steps(2).status(), "not_run");
  EXPECT_EQ(saga_log::get().events.size(), 1u);
}

TEST_F(saga_test, failed_compensation_is_retried) {
  saga_log::get().compensate_failures["shop/checkout/reserve"] = 2;
  start_saga("ship");
  auto out = run_saga(3);
  EXPECT_FALSE(out.completed());
  EXPECT_FALSE(out.compensation_failed());
  EXPECT_EQ(out.steps(0).status(), "compensated");
  EXPECT_EQ(out.steps(0).compensation_attempts(), 2u);
  EXPECT_EQ(saga_log::get().events.back(), "compensate shop/checkout/reserve");
  // Every failure had a requester (the saga) that was told: nothing is lost,
  // so nothing is a dead letter.
  EXPECT_EQ(rt->dead_letter_count(), 0u);
}

TEST_F(saga_test, exhausted_compensation_is_dead_letter_and_rest_still_run) {
  saga_spec opts;
  opts.compensation_retries = 2;
  // charge can never be undone; reserve must still be compensated after it.
  saga_log::get().compensate_failures["shop/checkout/charge"] = 100;
  start_saga("ship", opts);
  auto out = run_saga(4);
  EXPECT_FALSE(out.completed());
  EXPECT_TRUE(out.compensation_failed());
  EXPECT_EQ(out.steps(1).status(), "compensation_failed");
  EXPECT_EQ(out.steps(1).compensation_attempts(), 3u);
  EXPECT_EQ(out.steps(0).status(), "compensated");
  bool found = false;
  for (auto& dl : rt->dead_letters())
    if (dl.path == "shop/checkout/charge"
        && dl.reason.find("compensation_failed after 3 failed attempts")
             != std::string::npos)
      found = true;
  EXPECT_TRUE(found) << "no compensation_failed dead letter";
  EXPECT_EQ(saga_log::get().events.back(), "compensate shop/checkout/reserve");
}

} // namespace
