// The cell's directives beyond OTP: buffering while a child is between
// instances, deadlines, clear errors for undeliverable envelopes and poison
// messages. All on CAF's deterministic testing scheduler.

#include <mutex>
#include <string>
#include <vector>

#include "support/fixture.hpp"

using namespace std::chrono_literals;
using namespace vigil;
using namespace vigil::test;

namespace {

// -- an agent that records the delivery attempt of every Crash ----------------

std::mutex attempts_mtx;
std::vector<uint32_t> attempts_seen;

std::vector<uint32_t> attempts() {
  std::lock_guard<std::mutex> g{attempts_mtx};
  return attempts_seen;
}

/// Ping: like echo. Crash: records the attempt, then throws, unless `why` is
/// "once" and this is a retry (attempt > 1): then it replies Pong(attempt).
class poison : public agent<Counter> {
public:
  static void define(handlers<poison>& h) {
    h.on<Ping>([](poison& self, context& ctx, const Ping& m) {
      self.state().set_count(self.state().count() + 1);
      Pong p;
      p.set_n(m.n());
      p.set_from(ctx.path());
      p.set_attempt(ctx.current()->attempt);
      p.set_seen(self.state().count());
      return p;
    });
    h.on<Crash>([](poison&, context& ctx, const Crash& m) {
      auto attempt = ctx.current()->attempt;
      {
        std::lock_guard<std::mutex> g{attempts_mtx};
        attempts_seen.push_back(attempt);
      }
      if (m.why() == "once" && attempt > 1) {
        Pong p;
        p.set_from(ctx.path());
        p.set_attempt(attempt);
        return p;
      }
      throw std::runtime_error(m.why());
    });
  }
};

/// Answers a Ping with bytes declared as a Pong that do not parse.
class garbler : public agent<> {
public:
  static void define(handlers<garbler>& h) {
    h.on<Ping>([](garbler&, context& ctx, const Ping&) {
      ctx.defer().deliver_bytes(type_symbol<Pong>(), "\xff\xff\xff garbage");
    });
  }
};

/// Ping(n): records the envelope it handles; for n > 0 sends Ping(n - 1)
/// to itself, with attempt budget 9 when n is 2 and the inherited one
/// otherwise.
std::mutex traced_mtx;
std::vector<envelope> traced;

class tracer : public agent<> {
public:
  static void define(handlers<tracer>& h) {
    h.on<Ping>([](tracer&, context& ctx, const Ping& m) {
      {
        std::lock_guard<std::mutex> g{traced_mtx};
        traced.push_back(*ctx.current());
      }
      if (m.n() > 0) {
        Ping next;
        next.set_n(m.n() - 1);
        call_options opts;
        if (m.n() == 2)
          opts.attempt_budget = 9;
        ctx.send(ctx.path(), next, opts);
      }
    });
  }
};

registry cell_registry() {
  auto r = test_registry();
  r.add<poison>("poison");
  r.add<garbler>("garbler");
  r.add<tracer>("tracer");
  return r;
}

int64_t ns(caf::actor_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
           t.time_since_epoch())
    .count();
}

int64_t ns_of(std::chrono::milliseconds d) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
}

class cell_test : public runtime_fixture {
public:
  using request_handle = decltype(std::declval<caf::scoped_actor&>()->request(
    std::declval<caf::actor>(), caf::infinite, std::declval<envelope>()));

  cell_test() {
    rt = std::make_shared<runtime>(cell_registry());
    std::lock_guard<std::mutex> g{attempts_mtx};
    attempts_seen.clear();
  }

  /// A one_for_one supervisor "sup" with one worker "w"; restarts wait
  /// `backoff` (0 = immediately).
  caf::actor start_one(child_spec w, std::chrono::milliseconds backoff = 0ms) {
    auto spec = flags(strategy::one_for_one, 10, 60000);
    spec.flags.backoff.min = backoff;
    spec.flags.backoff.max = backoff * 10;
    spec.children.push_back(std::move(w));
    caf::actor sup;
    auto err = start("sup", spec, &sup);
    EXPECT_FALSE(err) << describe(err);
    return sup;
  }

  /// Sends a request to `path` and returns its handle without running.
  request_handle request(const std::string& path, envelope e) {
    return self->request(handle(path), caf::infinite, std::move(e));
  }

  /// Receives the answer for `h`, which must already be in the mailbox.
  caf::expected<envelope> take(request_handle& h) {
    caf::expected<envelope> out{make_error(errc::not_found, "no reply")};
    if (self->mailbox().empty()) {
      ADD_FAILURE() << "no reply in the mailbox";
      return out;
    }
    std::move(h).receive([&](envelope& x) { out = std::move(x); },
                         [&](caf::error& e) { out = std::move(e); });
    return out;
  }

  uint64_t restarts_of(const caf::actor& sup, const std::string& id) {
    for (auto& ci : which(sup))
      if (ci.id == id)
        return ci.restarts;
    ADD_FAILURE() << "no child " << id;
    return 0;
  }

  std::vector<dead_letter> letters_since(size_t n) {
    auto all = rt->dead_letters();
    return {all.begin() + static_cast<std::ptrdiff_t>(std::min(n, all.size())),
            all.end()};
  }

  int64_t now_ns() {
    return ns(sched.clock().now());
  }
};

// -- buffering while restarting -----------------------------------------------

TEST_F(cell_test, buffers_during_restart_and_redelivers_in_order) {
  auto sup = start_one(worker("w", "echo"), 100ms);
  auto first = call("sup/w", ping(0));
  ASSERT_TRUE(first) << describe(first.error());
  EXPECT_EQ(pong_of(*first).seen(), 1);
  crash("sup/w");
  ASSERT_EQ(status_of(sup, "w"), "restarting");
  EXPECT_EQ(switches::get().start_count("sup/w"), 1);
  std::vector<request_handle> hs;
  for (int i = 1; i <= 4; ++i)
    hs.push_back(request("sup/w", wrap(ping(i))));
  run();
  EXPECT_TRUE(self->mailbox().empty()) << "answered while between instances";
  advance(99ms);
  EXPECT_EQ(switches::get().start_count("sup/w"), 1);
  EXPECT_TRUE(self->mailbox().empty());
  advance(1ms);
  EXPECT_EQ(switches::get().start_count("sup/w"), 2);
  ASSERT_EQ(self->mailbox().size(), 4u);
  for (int i = 1; i <= 4; ++i) {
    auto rep = take(hs[i - 1]);
    ASSERT_TRUE(rep) << describe(rep.error());
    auto p = pong_of(*rep);
    EXPECT_EQ(p.n(), i);
    // The new instance starts from a fresh state and sees them in order.
    EXPECT_EQ(p.seen(), i);
    EXPECT_EQ(p.attempt(), 1u);
    EXPECT_FALSE(rep->degraded());
  }
  EXPECT_EQ(status_of(sup, "w"), "running");
}

TEST_F(cell_test, buffer_overflow_rejects_requests_and_dead_letters_sends) {
  auto w = worker("w", "echo");
  w.buffer_cap = 2;
  auto sup = start_one(w, 100ms);
  crash("sup/w");
  ASSERT_EQ(status_of(sup, "w"), "restarting");
  auto dl_before = rt->dead_letter_count();
  auto h1 = request("sup/w", wrap(ping(1)));
  auto h2 = request("sup/w", wrap(ping(2)));
  auto h3 = request("sup/w", wrap(ping(3)));
  run();
  // Only the third is answered, at once, with buffer_overflow.
  ASSERT_EQ(self->mailbox().size(), 1u);
  auto r3 = take(h3);
  ASSERT_FALSE(r3);
  EXPECT_TRUE(is(r3.error(), errc::buffer_overflow)) << describe(r3.error());
  EXPECT_NE(describe(r3.error()).find("sup/w"), std::string::npos)
    << describe(r3.error());
  // A send beyond the cap becomes a dead letter.
  caf::anon_send(handle("sup/w"), wrap(ping(4)));
  run();
  auto dls = letters_since(dl_before);
  ASSERT_EQ(dls.size(), 1u);
  EXPECT_EQ(dls[0].path, "sup/w");
  EXPECT_EQ(dls[0].reason.rfind("buffer_overflow", 0), 0u) << dls[0].reason;
  Ping p4;
  ASSERT_TRUE(p4.ParseFromString(dls[0].env.payload));
  EXPECT_EQ(p4.n(), 4);
  // The two accepted ones are delivered to the new instance, in order.
  advance(100ms);
  ASSERT_EQ(self->mailbox().size(), 2u);
  auto r1 = take(h1);
  auto r2 = take(h2);
  ASSERT_TRUE(r1 && r2);
  EXPECT_EQ(pong_of(*r1).n(), 1);
  EXPECT_EQ(pong_of(*r1).seen(), 1);
  EXPECT_EQ(pong_of(*r2).n(), 2);
  EXPECT_EQ(pong_of(*r2).seen(), 2);
  // Once running again, the buffer is free.
  auto r5 = call("sup/w", ping(5));
  ASSERT_TRUE(r5) << describe(r5.error());
  EXPECT_EQ(pong_of(*r5).seen(), 3);
}

// -- deadlines ------------------------------------------------------------------

TEST_F(cell_test, expired_deadline_is_not_processed) {
  auto sup = start_one(worker("w", "echo"));
  advance(1000ms);
  auto expired = now_ns() - 1;
  auto r = ask<envelope>(handle("sup/w"), wrap(ping(1), expired));
  ASSERT_FALSE(r);
  EXPECT_TRUE(is(r.error(), errc::expired)) << describe(r.error());
  // An expired send is not processed either; it is kept as a dead letter.
  auto dl_before = rt->dead_letter_count();
  caf::anon_send(handle("sup/w"), wrap(ping(2), expired));
  run();
  auto dls = letters_since(dl_before);
  ASSERT_EQ(dls.size(), 1u);
  EXPECT_EQ(dls[0].reason.rfind("expired", 0), 0u) << dls[0].reason;
  // Neither reached the handler, and the child did not fail.
  auto ok = call("sup/w", ping(3));
  ASSERT_TRUE(ok) << describe(ok.error());
  EXPECT_EQ(pong_of(*ok).seen(), 1);
  EXPECT_EQ(switches::get().start_count("sup/w"), 1);
  EXPECT_EQ(restarts_of(sup, "w"), 0u);
}

TEST_F(cell_test, deadline_passing_in_the_buffer_is_not_processed) {
  auto sup = start_one(worker("w", "echo"), 100ms);
  crash("sup/w");
  ASSERT_EQ(status_of(sup, "w"), "restarting");
  auto h1 = request("sup/w", wrap(ping(1), now_ns() + ns_of(50ms)));
  auto h2 = request("sup/w", wrap(ping(2), now_ns() + ns_of(500ms)));
  run();
  advance(100ms);
  ASSERT_EQ(self->mailbox().size(), 2u);
  auto r1 = take(h1);
  ASSERT_FALSE(r1);
  EXPECT_TRUE(is(r1.error(), errc::expired)) << describe(r1.error());
  auto r2 = take(h2);
  ASSERT_TRUE(r2) << describe(r2.error());
  EXPECT_EQ(pong_of(*r2).seen(), 1) << "the expired envelope was handled";
  EXPECT_EQ(switches::get().start_count("sup/w"), 2);
}

TEST_F(cell_test, handler_running_past_deadline_fails_the_child) {
  auto sup = start_one(worker("w", "echo"));
  ASSERT_TRUE(call("sup/w", ping(1)));
  Slow slow;
  slow.set_ms(200);
  auto r = ask<envelope>(handle("sup/w"),
                         wrap(slow, now_ns() + ns_of(100ms)));
  ASSERT_FALSE(r);
  EXPECT_TRUE(is(r.error(), errc::deadline_exceeded)) << describe(r.error());
  EXPECT_EQ(switches::get().start_count("sup/w"), 2);
  EXPECT_EQ(restarts_of(sup, "w"), 1u);
  EXPECT_EQ(status_of(sup, "w"), "running");
  // Its requester was told, and it is not redelivered: no dead letter.
  EXPECT_EQ(rt->dead_letter_count(), 0u);
  auto ok = call("sup/w", ping(2));
  ASSERT_TRUE(ok) << describe(ok.error());
  EXPECT_EQ(pong_of(*ok).seen(), 1) << "not a new instance";
  // Within its deadline the same handler is fine.
  slow.set_ms(10);
  auto fine = ask<envelope>(handle("sup/w"),
                            wrap(slow, now_ns() + ns_of(100ms)));
  ASSERT_TRUE(fine) << describe(fine.error());
  EXPECT_EQ(restarts_of(sup, "w"), 1u);
}

// Issue 11, case 2: an async envelope whose handler runs past its deadline
// fails the child, and nobody is told: it is a dead letter, as every async
// envelope that fails for good.
TEST_F(cell_test, async_envelope_past_its_deadline_is_a_dead_letter) {
  auto sup = start_one(worker("w", "echo"));
  Slow slow;
  slow.set_ms(600);
  caf::anon_send(handle("sup/w"), wrap(slow, now_ns() + ns_of(100ms)));
  run();
  EXPECT_EQ(restarts_of(sup, "w"), 1u);
  auto dls = rt->dead_letters();
  ASSERT_EQ(dls.size(), 1u);
  EXPECT_EQ(dls[0].path, "sup/w");
  EXPECT_EQ(dls[0].reason.rfind("deadline_exceeded", 0), 0u) << dls[0].reason;
}

// -- undeliverable envelopes ------------------------------------------------------

// context::request: a reply that does not parse as the expected type reaches
// the caller's on_error as bad_payload. The reply lambda used to copy
// on_error while the same call moved it away (GCC evaluated the move
// first), so the caller's caller got "the agent dropped this reply".
TEST_F(cell_test, a_reply_that_does_not_parse_is_bad_payload) {
  auto spec = flags(strategy::one_for_one, 10, 60000);
  spec.children.push_back(worker("g", "garbler"));
  spec.children.push_back(worker("r", "relay"));
  caf::actor sup;
  auto err = start("sup", spec, &sup);
  ASSERT_FALSE(err) << describe(err);
  Relay relay;
  relay.set_to("sup/g");
  relay.set_timeout_ms(1000);
  auto r = ask<envelope>(handle("sup/r"), wrap(relay));
  ASSERT_FALSE(r);
  EXPECT_TRUE(is(r.error(), errc::bad_payload)) << describe(r.error());
  EXPECT_EQ(restarts_of(sup, "r"), 0u);
}

// What a handler sends joins the trace of what it handles: same 128-bit
// trace id and flags, parent span = the handled delivery's span, origin =
// this node, and the attempt budget inherited unless the call sets one.
TEST_F(cell_test, sends_carry_the_trace_and_the_attempt_budget_on) {
  {
    std::lock_guard<std::mutex> g{traced_mtx};
    traced.clear();
  }
  start_one(worker("t", "tracer"));
  auto root = wrap(ping(3));
  root.trace_id = 77;
  root.trace_id_high = 0xabcdef;
  root.trace_flags = envelope::sampled_flag;
  root.attempt_budget = 4;
  caf::anon_send(handle("sup/t"), root);
  run();
  std::lock_guard<std::mutex> g{traced_mtx};
  ASSERT_EQ(traced.size(), 4u);
  // n = 3: the root; n = 2: inherits 4; n = 1: set to 9; n = 0: inherits 9.
  std::vector<uint32_t> budgets;
  for (auto& e : traced)
    budgets.push_back(e.attempt_budget);
  EXPECT_EQ(budgets, (std::vector<uint32_t>{4, 4, 9, 9}));
  for (size_t i = 1; i < traced.size(); ++i) {
    auto& e = traced[i];
    EXPECT_EQ(e.trace_id, 77u) << i;
    EXPECT_EQ(e.trace_id_high, 0xabcdefu) << i;
    EXPECT_EQ(e.trace_flags, envelope::sampled_flag) << i;
    EXPECT_EQ(e.span_id, traced[i - 1].handling_span()) << i;
    EXPECT_EQ(e.origin, rt->node_id()) << i;
    EXPECT_NE(e.id, traced[i - 1].id) << i;
  }
}

TEST_F(cell_test, unknown_message_type_is_an_error_not_a_crash) {
  auto sup = start_one(worker("w", "echo"));
  ASSERT_TRUE(call("sup/w", ping(1)));
  Relay relay; // a real message type that echo has no handler for
  relay.set_to("x");
  auto r = ask<envelope>(handle("sup/w"), wrap(relay));
  ASSERT_FALSE(r);
  EXPECT_TRUE(is(r.error(), errc::unknown_message_type))
    << describe(r.error());
  auto text = describe(r.error());
  EXPECT_NE(text.find("sup/w"), std::string::npos) << text;
  EXPECT_NE(text.find("vigil.test.Relay"), std::string::npos) << text;
  // A type nobody knows, sent without a reply: a dead letter.
  auto dl_before = rt->dead_letter_count();
  envelope e;
  e.type = "no.such.Type";
  e.payload = "abc";
  caf::anon_send(handle("sup/w"), e);
  run();
  auto dls = letters_since(dl_before);
  ASSERT_EQ(dls.size(), 1u);
  EXPECT_EQ(dls[0].reason.rfind("unknown_message_type", 0), 0u)
    << dls[0].reason;
  EXPECT_EQ(dls[0].env.type, "no.such.Type");
  // The child was not restarted and kept its state.
  auto ok = call("sup/w", ping(2));
  ASSERT_TRUE(ok) << describe(ok.error());
  EXPECT_EQ(pong_of(*ok).seen(), 2);
  EXPECT_EQ(switches::get().start_count("sup/w"), 1);
  EXPECT_EQ(restarts_of(sup, "w"), 0u);
}

TEST_F(cell_test, bad_payload_is_an_error_not_a_crash) {
  auto sup = start_one(worker("w", "echo"));
  ASSERT_TRUE(call("sup/w", ping(1)));
  envelope e = wrap(ping(7));
  e.payload = std::string("\x08", 1); // field 1 tag without its varint
  ASSERT_FALSE(Ping{}.ParseFromString(e.payload));
  auto r = ask<envelope>(handle("sup/w"), e);
  ASSERT_FALSE(r);
  EXPECT_TRUE(is(r.error(), errc::bad_payload)) << describe(r.error());
  auto text = describe(r.error());
  EXPECT_NE(text.find("sup/w"), std::string::npos) << text;
  EXPECT_NE(text.find("vigil.test.Ping"), std::string::npos) << text;
  auto ok = call("sup/w", ping(2));
  ASSERT_TRUE(ok) << describe(ok.error());
  EXPECT_EQ(pong_of(*ok).seen(), 2) << "bad bytes reached the handler";
  EXPECT_EQ(switches::get().start_count("sup/w"), 1);
  EXPECT_EQ(restarts_of(sup, "w"), 0u);
}

// -- poison messages --------------------------------------------------------------

TEST_F(cell_test, poison_message_is_retried_then_dead_lettered) {
  auto w = worker("w", "poison");
  w.max_deliveries = 3;
  auto sup = start_one(w);
  auto dl_before = rt->dead_letter_count();
  Crash c;
  c.set_why("always");
  auto r = ask<envelope>(handle("sup/w"), wrap(c));
  ASSERT_FALSE(r);
  EXPECT_TRUE(is(r.error(), errc::poison_message)) << describe(r.error());
  EXPECT_EQ(attempts(), (std::vector<uint32_t>{1, 2, 3}));
  auto dls = letters_since(dl_before);
  ASSERT_EQ(dls.size(), 1u);
  EXPECT_EQ(dls[0].path, "sup/w");
  EXPECT_EQ(dls[0].env.type, "vigil.test.Crash");
  EXPECT_EQ(dls[0].env.attempt, 3u);
  EXPECT_EQ(dls[0].reason.rfind("poison_message", 0), 0u) << dls[0].reason;
  EXPECT_NE(dls[0].reason.find("always"), std::string::npos) << dls[0].reason;
  // Each failure was a failure of the child; it keeps serving.
  EXPECT_EQ(restarts_of(sup, "w"), 3u);
  EXPECT_EQ(status_of(sup, "w"), "running");
  auto ok = call("sup/w", ping(1));
  ASSERT_TRUE(ok) << describe(ok.error());
  EXPECT_EQ(pong_of(*ok).attempt(), 1u);
  EXPECT_EQ(pong_of(*ok).seen(), 1);
}

// With the default max_deliveries (1) a failing envelope is never retried.
// A requester is told at once and owns the retry (no dead letter: commit
// 7443a05, "dead-letter a failed request only when no requester is told");
// a send, whose failure nobody would see, is a dead letter at once.
TEST_F(cell_test, default_max_deliveries_fails_at_once) {
  auto sup = start_one(worker("w", "poison"));
  auto dl_before = rt->dead_letter_count();
  Crash c;
  c.set_why("always");
  auto r = ask<envelope>(handle("sup/w"), wrap(c));
  ASSERT_FALSE(r);
  EXPECT_TRUE(is(r.error(), errc::handler_failed)) << describe(r.error());
  EXPECT_NE(describe(r.error()).find("always"), std::string::npos);
  EXPECT_EQ(attempts(), (std::vector<uint32_t>{1}));
  EXPECT_EQ(rt->dead_letter_count(), dl_before);
  EXPECT_EQ(restarts_of(sup, "w"), 1u);
  c.set_why("async");
  cast("sup/w", c);
  EXPECT_EQ(attempts(), (std::vector<uint32_t>{1, 1}));
  auto dls = letters_since(dl_before);
  ASSERT_EQ(dls.size(), 1u);
  EXPECT_EQ(dls[0].path, "sup/w");
  EXPECT_EQ(dls[0].env.attempt, 1u);
  EXPECT_EQ(dls[0].reason.rfind("handler_failed", 0), 0u) << dls[0].reason;
  EXPECT_NE(dls[0].reason.find("async"), std::string::npos) << dls[0].reason;
  EXPECT_EQ(restarts_of(sup, "w"), 2u);
  auto ok = call("sup/w", ping(1));
  ASSERT_TRUE(ok) << describe(ok.error());
  EXPECT_EQ(pong_of(*ok).seen(), 1);
}

// A poison message sent without a reply is dead-lettered the same way.
TEST_F(cell_test, async_poison_message_is_dead_lettered) {
  auto w = worker("w", "poison");
  w.max_deliveries = 2;
  auto sup = start_one(w);
  auto dl_before = rt->dead_letter_count();
  Crash c;
  c.set_why("always");
  cast("sup/w", c);
  EXPECT_EQ(attempts(), (std::vector<uint32_t>{1, 2}));
  auto dls = letters_since(dl_before);
  ASSERT_EQ(dls.size(), 1u);
  EXPECT_EQ(dls[0].env.attempt, 2u);
  EXPECT_EQ(dls[0].reason.rfind("poison_message", 0), 0u) << dls[0].reason;
  EXPECT_EQ(restarts_of(sup, "w"), 2u);
  EXPECT_EQ(status_of(sup, "w"), "running");
}

TEST_F(cell_test, retried_envelope_goes_first_to_the_new_instance) {
  auto w = worker("w", "poison");
  w.max_deliveries = 3;
  auto sup = start_one(w, 100ms);
  auto dl_before = rt->dead_letter_count();
  Crash c;
  c.set_why("once");
  auto hc = request("sup/w", wrap(c));
  run();
  ASSERT_EQ(status_of(sup, "w"), "restarting");
  auto hp = request("sup/w", wrap(ping(1)));
  run();
  EXPECT_TRUE(self->mailbox().empty());
  advance(100ms);
  ASSERT_EQ(self->mailbox().size(), 2u);
  auto rc = take(hc);
  ASSERT_TRUE(rc) << describe(rc.error());
  EXPECT_EQ(pong_of(*rc).attempt(), 2u);
  auto rp = take(hp);
  ASSERT_TRUE(rp) << describe(rp.error());
  EXPECT_EQ(pong_of(*rp).seen(), 1);
  EXPECT_EQ(attempts(), (std::vector<uint32_t>{1, 2}));
  EXPECT_EQ(rt->dead_letter_count(), dl_before);
  EXPECT_EQ(restarts_of(sup, "w"), 1u);
}

} // namespace
