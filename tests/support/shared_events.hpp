#pragma once

// Checks the lines the shared-state race agents logged (see
// shared_agents.hpp): every task seen completed at most once, no two
// increments of a key at one version, no late completion accepted, no error.

#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace vigil::test {

struct event_summary {
  std::map<uint64_t, int> completes;            ///< by task
  std::map<std::string, std::set<uint64_t>> cas; ///< versions by key
  size_t late_rejected = 0;
};

inline event_summary check_events(const std::vector<std::string>& lines) {
  event_summary out;
  for (auto& l : lines) {
    std::istringstream in{l};
    std::string what;
    in >> what;
    if (what == "complete") {
      uint64_t id;
      in >> id;
      ++out.completes[id];
    } else if (what == "cas") {
      std::string key;
      uint64_t v;
      in >> key >> v;
      EXPECT_TRUE(out.cas[key].insert(v).second)
        << "two increments succeeded at version " << v << " of " << key;
    } else if (what == "late_rejected") {
      ++out.late_rejected;
    } else if (what == "late_accepted" || what == "cas_gave_up"
               || what.find("error") != std::string::npos
               || what == "enqueue_failed") {
      ADD_FAILURE() << l;
    }
  }
  for (auto& [id, n] : out.completes)
    EXPECT_EQ(n, 1) << "task " << id << " completed " << n << " times";
  return out;
}

} // namespace vigil::test
