#pragma once

// The script and the model of node/held_envelope_fuzz_test.cpp: what a
// seed makes a journal agent do with each envelope (a tree of tool calls,
// what the tool answers to each, what each callback does), and what must
// come of it, computed from the script alone:
// - an envelope whose callbacks all run is applied once, with every
//   effect of its handler and its callbacks;
// - one whose callback calls ctx.stop() is committed as handled with the
//   effects of the handler and of that callback's ancestors (the calls
//   still open then have callbacks without effects: which of them ran
//   first does not matter); one whose handler stops after its calls, with
//   the handler's effects alone (its calls' callbacks never run);
// - one whose callback (or handler, after its calls) throws fails every
//   delivery: no effect, one dead letter once its deliveries are spent;
// - an effect is a change to the state, a send to the sink or a
//   ctx.effect call, tagged with its call's request value (the handler's:
//   1000 x the envelope's number);
// - within one life of the agent, envelopes run in order and a callback
//   only ever runs for the envelope being handled (check_order).
// Pure functions of the seed: no clock, no threads.

#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "vigil/actors/tool.hpp"

namespace vigil::test::held {

/// What the tool does with a call (by its request value).
enum class answer : uint8_t { ok, transient_then_ok, permanent };

/// What a callback does after its effects and its own calls.
enum class ending : uint8_t { none, throws, stops };

/// One tool call of an envelope and what its callback does (the success
/// callback or the error one, whichever the answer calls).
struct call_node {
  int64_t n = 0;   ///< the request value; unique in the run
  int parent = -1; ///< the call whose callback makes it; -1: the handler
  answer ans = answer::ok;
  int transients = 0; ///< transient errors before the answer
  int delay_ms = 0;   ///< the tool takes this long
  bool add = false;   ///< adds n to the agent's state
  bool send = false;  ///< sends Add{n} to the sink
  bool effect = false; ///< ctx.effect("hook", Ping{n})
  ending end = ending::none;
  std::vector<int> children;
};

/// How an envelope ends.
enum class fate : uint8_t { handled, stopped, dead };

struct envelope_script {
  int64_t k = 0; ///< Ping{k}, message id 1000 + k
  bool add = false;
  bool send = false;
  bool effect = false;
  std::vector<int> roots;
  std::vector<call_node> calls;
  fate end = fate::handled;
  /// The call whose callback throws or stops (-1: the handler does, after
  /// making its calls).
  int special = -1;

  /// The handler's effect tag (callbacks use their call's n).
  int64_t tag() const {
    return k * 1000;
  }
  /// `i` and its ancestors.
  std::set<int> path_to(int i) const {
    std::set<int> out;
    for (; i >= 0; i = calls[i].parent)
      out.insert(i);
    return out;
  }
  /// Calls whose callbacks run before the envelope is consumed (so each
  /// executed at least once): all of them, or the path to the callback
  /// that stops or throws (none if the handler does). Others may not: a
  /// call left open by a stop or a failure is not retried, and the node
  /// stop that follows may give it up before it started.
  bool needed(int i) const {
    return end == fate::handled
           || (special >= 0 && path_to(special).count(i) != 0);
  }
  /// Calls never made: below a call made in the handler or callback that
  /// throws or stops (that call's own callback never runs).
  bool never(int i) const {
    if (end == fate::handled)
      return false;
    for (int p = calls[i].parent; p >= 0; p = calls[p].parent)
      if (calls[p].parent == special)
        return true;
    return false;
  }
};

/// Where the node (or the agent) stops: when call n first executes, that
/// execution kept running until the stop (`held`) or racing it (`racing`:
/// its record may be committed or not), or once n's callback first ran
/// (`after_callback`: its record is committed, the envelope's consume may
/// be or not).
enum class stop_kind : uint8_t { held, racing, after_callback };

struct stop_point {
  int64_t n = 0;
  stop_kind kind = stop_kind::held;
  /// Not the node: the agent alone, terminate_child then restart_child.
  bool agent_only = false;
};

struct script {
  uint32_t seed = 0;
  side_effect fx = side_effect::idempotent_write;
  uint32_t max_deliveries = 1;
  std::vector<envelope_script> envs;
  std::vector<stop_point> stops;

  const envelope_script& env(int64_t k) const {
    return envs.at(static_cast<size_t>(k - 1));
  }
  /// The call with request n, or null.
  const call_node* find(int64_t n) const {
    auto k = n / 1000;
    auto i = n % 1000 - 1;
    if (k < 1 || k > static_cast<int64_t>(envs.size()) || i < 0)
      return nullptr;
    auto& cs = env(k).calls;
    return i < static_cast<int64_t>(cs.size()) ? &cs[i] : nullptr;
  }
};

inline script make_script(uint32_t seed) {
  std::mt19937 rng{seed};
  auto pick = [&](std::initializer_list<int> weights) {
    int total = 0;
    for (int w : weights)
      total += w;
    int r = static_cast<int>(rng() % static_cast<uint32_t>(total));
    int i = 0;
    for (int w : weights) {
      if (r < w)
        return i;
      r -= w;
      ++i;
    }
    return i - 1;
  };
  auto chance = [&](int percent) {
    return static_cast<int>(rng() % 100) < percent;
  };
  static constexpr std::array<side_effect, 3> classes{
    side_effect::read_only, side_effect::idempotent_write,
    side_effect::non_idempotent_write};
  script s;
  s.seed = seed;
  s.fx = classes[rng() % 3];
  s.max_deliveries = 1 + rng() % 3;
  int envs = 3 + static_cast<int>(rng() % 6);
  for (int k = 1; k <= envs; ++k) {
    envelope_script e;
    e.k = k;
    e.add = chance(50);
    e.send = chance(30);
    e.effect = chance(20);
    // A tree of depth <= 3 and fan-out <= 3 (each call made once).
    auto grow = [&](auto& self, int parent, int depth) -> int {
      int i = static_cast<int>(e.calls.size());
      auto& c = e.calls.emplace_back();
      c.n = k * 1000 + i + 1;
      c.parent = parent;
      c.ans = static_cast<answer>(pick({11, 4, 5}));
      c.transients = c.ans == answer::transient_then_ok ? 1 + rng() % 2 : 0;
      c.delay_ms = chance(35) ? 1 + static_cast<int>(rng() % 8) : 0;
      c.add = chance(70);
      c.send = chance(40);
      c.effect = chance(20);
      int kids = depth < 3 ? pick({45, 30, 15, 10}) : 0;
      for (int j = 0; j < kids && e.calls.size() < 30; ++j) {
        int child = self(self, i, depth + 1);
        e.calls[i].children.push_back(child);
      }
      return i;
    };
    int roots = pick({1, 4, 3, 2});
    for (int j = 0; j < roots; ++j)
      e.roots.push_back(grow(grow, -1, 1));
    e.end = static_cast<fate>(pick({6, 2, 2}));
    if (e.end != fate::handled && !e.calls.empty() && !chance(20)) {
      e.special = static_cast<int>(rng() % e.calls.size());
      auto& c = e.calls[e.special];
      c.end = e.end == fate::dead ? ending::throws : ending::stops;
    }
    if (e.end == fate::stopped) {
      // Off the path to the stop, callbacks have no effect: how many of
      // them ran before it is a matter of timing.
      auto keep = e.path_to(e.special);
      for (int i = 0; i < static_cast<int>(e.calls.size()); ++i)
        if (keep.count(i) == 0)
          e.calls[i].add = e.calls[i].send = e.calls[i].effect = false;
    }
    s.envs.push_back(std::move(e));
  }
  // Node stops at calls certain to execute and be answered, in script
  // order.
  int stops = pick({2, 3, 3, 2, 1});
  std::map<int64_t, stop_kind> at;
  for (int j = 0; j < stops; ++j) {
    auto& e = s.envs[rng() % s.envs.size()];
    if (e.calls.empty())
      continue;
    int i = static_cast<int>(rng() % e.calls.size());
    auto kind = static_cast<stop_kind>(rng() % 3);
    if (e.needed(i))
      at.emplace(e.calls[i].n, kind);
  }
  for (auto [n, kind] : at)
    s.stops.push_back(stop_point{n, kind, chance(30)});
  return s;
}

/// What must be found once every envelope ran: the effects in the agent's
/// state and at the sink (each tag once, sorted), the ctx.effect calls
/// dispatched (at least once each), and the dead letters.
struct outcome {
  std::vector<int64_t> state;
  std::vector<int64_t> sent;
  std::set<int64_t> effects;
  std::set<int64_t> dead;
};

inline outcome expect(const script& s) {
  outcome out;
  for (auto& e : s.envs) {
    if (e.end == fate::dead) {
      out.dead.insert(e.k);
      continue;
    }
    if (e.add)
      out.state.push_back(e.tag());
    if (e.send)
      out.sent.push_back(e.tag());
    if (e.effect)
      out.effects.insert(e.tag());
    auto path = e.end == fate::stopped ? e.path_to(e.special) : std::set<int>{};
    for (int i = 0; i < static_cast<int>(e.calls.size()); ++i) {
      if (e.end == fate::stopped && path.count(i) == 0)
        continue;
      if (e.calls[i].add)
        out.state.push_back(e.calls[i].n);
      if (e.calls[i].send)
        out.sent.push_back(e.calls[i].n);
      if (e.calls[i].effect)
        out.effects.insert(e.calls[i].n);
    }
  }
  std::sort(out.state.begin(), out.state.end());
  std::sort(out.sent.begin(), out.sent.end());
  return out;
}

/// A handler (call -1) or a callback (call i) that ran, in the agent's
/// `life`: a new one at each node start and each restart by the test.
struct event {
  int life = 0;
  int64_t k = 0;
  int call = -1;
};

/// What check_order found: its problems, and the failed deliveries (the
/// throws) of each envelope.
struct order_report {
  std::vector<std::string> problems;
  std::map<int64_t, int> failed;
};

/// Checks the order of what ran. Within one life, each delivery is a
/// handler followed by callbacks of that envelope only, each at most once,
/// none after the callback that throws or stops; the next handler is the
/// same envelope again only after a throw, else the next envelope, and only
/// once the delivery is complete (every callback, the stop, or the throw).
/// A life starts at most one envelope past the last one the one before ran.
inline order_report check_order(const script& s,
                                const std::vector<event>& evs) {
  order_report out;
  auto& bad = out.problems;
  auto fail = [&](const event& x, const std::string& what) {
    if (bad.size() < 10)
      bad.push_back("life " + std::to_string(x.life) + ", envelope "
                    + std::to_string(x.k) + ", call "
                    + std::to_string(x.call) + ": " + what);
  };
  int life = 0;
  int64_t k = 0, last_k = 0;
  std::set<int> seen;
  bool over = false; // the delivery's throw or stop ran
  auto complete = [&]() {
    auto& e = s.env(k);
    switch (e.end) {
      case fate::handled:
        return seen.size() == e.calls.size();
      case fate::stopped:
        for (int i : e.path_to(e.special))
          if (seen.count(i) == 0)
            return false;
        return over;
      case fate::dead:
        return over;
    }
    return false;
  };
  // The throw or stop of the envelope being handled ran now.
  auto ends = [&](int call) {
    auto& e = s.env(k);
    if (e.end == fate::handled || call != e.special)
      return;
    over = true;
    if (e.end == fate::dead)
      ++out.failed[k];
  };
  for (auto& x : evs) {
    if (x.life != life) {
      // A new life: it may replay up to the last envelope, not skip one.
      if (k != 0 && x.call < 0 && x.k > k && !complete())
        fail(x, "a new life skipped envelope " + std::to_string(k)
                  + ", whose delivery was not complete");
      life = x.life;
      last_k = k;
      k = 0;
    }
    if (x.call < 0) {
      if (k == 0) {
        if (x.k > last_k + 1)
          fail(x, "started past envelope " + std::to_string(last_k + 1));
      } else if (x.k == k) {
        if (s.env(k).end != fate::dead || !over)
          fail(x, "delivered again without a failed delivery");
      } else if (x.k == k + 1) {
        if (!complete())
          fail(x, "ran while envelope " + std::to_string(k)
                    + " was held (its delivery not complete)");
      } else {
        fail(x, "out of order after envelope " + std::to_string(k));
      }
      k = x.k;
      seen.clear();
      over = false;
      ends(-1);
      continue;
    }
    if (x.k != k) {
      fail(x, "callback ran while envelope " + std::to_string(k)
                + " was being handled");
      continue;
    }
    auto& e = s.env(k);
    if (over)
      fail(x, "callback ran after the throw or stop");
    if (!seen.insert(x.call).second)
      fail(x, "callback ran twice in one delivery");
    ends(x.call);
  }
  if (k != static_cast<int64_t>(s.envs.size()) || !complete())
    bad.push_back("the last life did not end with the last envelope complete"
                  " (envelope " + std::to_string(k) + ")");
  return out;
}

/// One line per envelope, for a failure's message.
inline std::string describe(const script& s) {
  static const char* fates[] = {"handled", "stopped", "dead"};
  static const char* answers[] = {"ok", "transient", "permanent"};
  std::string out = "class " + std::string{to_string(s.fx)}
                    + ", max_deliveries " + std::to_string(s.max_deliveries)
                    + ", stops at";
  static const char* kinds[] = {"held", "racing", "after callback"};
  for (auto& p : s.stops)
    out += " " + std::to_string(p.n) + "(" + kinds[int(p.kind)]
           + (p.agent_only ? ", agent restart)" : ")");
  out += "\n";
  for (auto& e : s.envs) {
    out += "  envelope " + std::to_string(e.k) + " " + fates[int(e.end)]
           + (e.end != fate::handled && e.special < 0 ? " (by the handler)"
                                                      : "")
           + (e.add ? " +add" : "") + (e.send ? " +send" : "")
           + (e.effect ? " +effect" : "") + ":";
    for (auto& c : e.calls) {
      out += " " + std::to_string(c.n) + "<"
             + (c.parent < 0 ? std::string{"h"}
                             : std::to_string(e.calls[c.parent].n))
             + "," + answers[int(c.ans)]
             + (c.transients ? std::to_string(c.transients) : "")
             + (c.delay_ms ? ",d" + std::to_string(c.delay_ms) : "")
             + (c.add ? ",add" : "") + (c.send ? ",send" : "")
             + (c.effect ? ",effect" : "")
             + (c.end == ending::throws  ? ",THROW"
                : c.end == ending::stops ? ",STOP"
                                         : "");
    }
    out += "\n";
  }
  return out;
}

} // namespace vigil::test::held
