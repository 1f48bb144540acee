#pragma once

// The real `vigil approvals` binary (VIGIL_BIN) run against a data dir, for
// the tests in which a person decides.

#include <chrono>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/process.hpp"

namespace vigil::test {

/// Runs `vigil ARGS --data-dir DIR` (at most 30 s).
inline process_result vigil_cmd(const std::string& dir,
                                std::vector<std::string> args) {
  args.insert(args.begin(), VIGIL_BIN);
  args.push_back("--data-dir");
  args.push_back(dir);
  return run_process(args, std::chrono::seconds{30});
}

/// The pending approvals `vigil approvals list --json` shows.
inline std::vector<nlohmann::json> pending_approvals(const std::string& dir) {
  auto list = vigil_cmd(dir, {"approvals", "list", "--json"});
  std::vector<nlohmann::json> out;
  auto arr = nlohmann::json::parse(list.out, nullptr, false);
  if (list.exit_code != 0 || !arr.is_array())
    return out;
  for (auto& x : arr)
    if (x.value("state", "") == "pending")
      out.push_back(x);
  return out;
}

} // namespace vigil::test
