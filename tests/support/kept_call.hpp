#pragma once

// A durable saga's calls, as a test makes them: a Ping under a fixed
// message id, asking for its reply to be kept (envelope::keep_reply_flag),
// sent to a path of a real node (tests/node/own_key_test.cpp,
// review20_test.cpp, review20b_test.cpp).

#include <chrono>
#include <string>

#include <caf/scoped_actor.hpp>

#include "proto/test.pb.h"
#include "vigil/actors/cell.hpp"
#include "vigil/node/node.hpp"

namespace vigil::test {

/// Ping `v` under message id `id`, its reply kept if `keep`.
inline envelope kept_envelope(node& n, int64_t v, uint64_t id,
                              bool keep = true) {
  Ping p;
  p.set_n(v);
  envelope e;
  e.type = type_symbol(p);
  p.SerializeToString(&e.payload);
  n.rt()->stamp(e, id, 0, nullptr);
  if (keep)
    e.flags |= envelope::keep_reply_flag;
  return e;
}

/// The Pong answering a request sent earlier (its response handle), or
/// the error.
template <class Handle>
caf::expected<Pong> receive_pong(Handle& h) {
  caf::expected<Pong> out{make_error(errc::not_found)};
  h.receive(
    [&](envelope& rep) {
      Pong r;
      if (!r.ParseFromString(rep.payload))
        out = make_error(errc::bad_payload, "not a Pong");
      else
        out = r;
    },
    [&](caf::error& err) { out = std::move(err); });
  return out;
}

/// Requests `e` of the agent at `path`; its Pong, or the error.
inline caf::expected<Pong> call_raw(node& n, const std::string& path,
                                    envelope e, std::chrono::seconds timeout) {
  auto dest = n.rt()->lookup(path);
  if (!dest)
    return make_error(errc::not_found, path);
  caf::scoped_actor self{n.system()};
  auto h = self->request(dest, caf::duration{timeout}, std::move(e));
  return receive_pong(h);
}

/// Returns once the cell at `path` has handled everything queued before
/// now (its state query is answered in its mailbox's order); false if it
/// is not there.
inline bool drain_cell(node& n, const std::string& path) {
  auto dest = n.rt()->lookup(path);
  if (!dest)
    return false;
  caf::scoped_actor self{n.system()};
  bool answered = false;
  self->request(dest, caf::duration{std::chrono::seconds{10}},
                state_atom::value)
    .receive([&](std::string&) { answered = true; },
             [&](caf::error&) { answered = true; });
  return answered;
}

} // namespace vigil::test
