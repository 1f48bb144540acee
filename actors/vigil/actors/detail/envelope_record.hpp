#pragma once

// An envelope as stored on disk (records::Envelope) and back, and the
// pieces of write items that every durable part builds. Internal to vigil:
// the durable agents, the durable saga runs and their outbox use them.

#include <cstdint>
#include <string>

#include "vigil/actors/envelope.hpp"
#include "vigil/persistence/store.hpp"
#include "vigil/store.pb.h"

namespace vigil::detail {

records::Envelope to_record(const envelope& e);
envelope from_record(const records::Envelope& r);

/// Wall-clock Unix milliseconds, as records keep their times.
int64_t unix_ms();

/// A put of record `m` (framed) under `key` in `where`.
mutation put_record(db where, std::string key,
                    const google::protobuf::Message& m);

/// An append of envelope `e`'s dead letter at `path` (see DeadLetter for
/// `consumed_seq`, `journal`, `refused` and `repeats`).
mutation dead_letter_record(const std::string& path, const envelope& e,
                            const std::string& reason,
                            uint64_t consumed_seq, bool journal,
                            bool refused = false, uint64_t repeats = 0);

/// Removes delivered outbox entry `seq` of `path`.
write_item outbox_done_item(const std::string& path, uint64_t seq);

} // namespace vigil::detail
