// libFuzzer target: an envelope from bytes, as CAF deserializes one that
// another node (or anything on the network) sent: `inspect(envelope)`
// through caf::binary_deserializer. A parsed envelope must serialize again
// to bytes that parse to the same envelope, and never hold a place in a
// queue (queued_flag is cleared on load). No actor system: an envelope
// holds no actor handles, so the deserializer needs no context.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include <caf/all.hpp>

#include "vigil/actors/envelope.hpp"

namespace {

bool same(const vigil::envelope& x, const vigil::envelope& y) {
  return x.type == y.type && x.payload == y.payload && x.id == y.id
         && x.origin == y.origin && x.idempotency_key == y.idempotency_key
         && x.deadline == y.deadline && x.attempt == y.attempt
         && x.attempt_budget == y.attempt_budget && x.budget_id == y.budget_id
         && x.trace_id == y.trace_id && x.trace_id_high == y.trace_id_high
         && x.span_id == y.span_id && x.trace_flags == y.trace_flags
         && x.sender == y.sender && x.flags == y.flags;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<char> buf(data, data + size);
  vigil::envelope e;
  caf::binary_deserializer src{nullptr, buf};
  if (src(e))
    return 0; // refused: fine
  if ((e.flags & vigil::envelope::queued_flag) != 0)
    std::abort(); // a queue place taken from bytes
  std::vector<char> again;
  caf::binary_serializer sink{nullptr, again};
  if (sink(e))
    std::abort();
  vigil::envelope f;
  caf::binary_deserializer src2{nullptr, again};
  if (src2(f) || !same(e, f))
    std::abort();
  return 0;
}
