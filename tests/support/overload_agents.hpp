#pragma once

// Pieces shared by the bounded-queue tests (tests/node/overload_test.cpp,
// review21_test.cpp): a producer that floods its receiver without looking
// at it, and a child with a queue_cap and an overflow policy.

#include <string>

#include "proto/test.pb.h"
#include "vigil/actors/agent.hpp"
#include "vigil/supervision/child_spec.hpp"

namespace vigil::test {

/// On Start{n, to}: sends n Pings (0..n-1) to `to` in one handler, and
/// answers Pong{n}.
class flooder : public agent<> {
public:
  explicit flooder(const params&) {
  }
  static void define(handlers<flooder>& h) {
    h.on<Start>([](flooder&, context& ctx, const Start& s) {
      auto to = ctx.resolve(s.to());
      Ping p;
      for (int64_t i = 0; i < s.n(); ++i) {
        p.set_n(i);
        ctx.send(to, p);
      }
      Pong out;
      out.set_n(s.n());
      return out;
    });
  }
};

/// A worker child `id` of agent type `agent` with its queue settings.
inline child_spec queue_child(std::string id, std::string agent,
                              size_t cap = 10000,
                              overflow_policy o = overflow_policy::shed) {
  child_spec c;
  c.id = std::move(id);
  c.agent = std::move(agent);
  c.queue_cap = cap;
  c.overflow = o;
  return c;
}

} // namespace vigil::test
