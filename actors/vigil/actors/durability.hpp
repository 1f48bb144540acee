#pragma once

#include <chrono>
#include <cstdint>

namespace vigil {

/// How much of an agent survives a crash of its node (a field of the child
/// spec). See README, "Durability".
enum class durability_mode : uint8_t {
  /// Memory only: a crash loses the state and every pending envelope.
  none,
  /// State and pending mailbox are saved every `every_messages` envelopes or
  /// `every` of time, whichever comes first, and on an orderly stop. A crash
  /// loses at most the envelopes and state changes since the last save.
  snapshot,
  /// Each envelope is durable before the agent accepts it, and the new
  /// state, the consumption of the envelope and the handler's sends (the
  /// outbox) are committed in one transaction: nothing acknowledged is lost
  /// and nothing is applied twice, even across kill -9.
  journal,
};

const char* to_string(durability_mode x) noexcept;

struct durability_spec {
  durability_mode mode = durability_mode::none;
  /// Snapshot mode: save after this many processed envelopes (0 = never by
  /// count).
  uint32_t every_messages = 100;
  /// Snapshot mode: save this long after the first unsaved change (0 = never
  /// by time).
  std::chrono::milliseconds every{1000};
};

} // namespace vigil
