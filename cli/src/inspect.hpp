#pragma once

// `vigil inspect`: what a data dir holds (agents, mailboxes, saga runs,
// dead letters, tool breakers), as text or JSON. Internal to vigil_cli.

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "vigil/persistence/store.hpp"

namespace vigil::cli {

// Exit codes.
constexpr int exit_ok = 0;
constexpr int exit_error = 1;      // a runtime or storage error
constexpr int exit_invalid = 2;    // an invalid policy file
constexpr int exit_usage = 64;     // bad arguments (sysexits' EX_USAGE)
constexpr int exit_escalated = 3;  // the root supervisor escalated

/// A Protobuf payload as JSON if its type is linked into this binary.
nlohmann::json payload_json(const std::string& type,
                            const std::string& bytes);

nlohmann::json envelope_json(const records::Envelope& e);

/// True if the data dir holds a record of an agent at `path`.
bool has_agent(store& st, const std::string& path);

int inspect_agents(store& st, bool as_json);
int inspect_mailbox(store& st, const std::string& dir,
                    const std::string& path, bool as_json);
int inspect_dead_letters(store& st, bool as_json,
                         const std::vector<uint64_t>& seqs);
int inspect_sagas(store& st, const std::string& path, bool as_json);
int inspect_tools(store& st, bool as_json);
/// Shared state: stores and queues; with `name`, that store's key
/// histories (src/inspect_shared.cpp).
int inspect_shared(store& st, const std::string& name, bool as_json);

} // namespace vigil::cli
