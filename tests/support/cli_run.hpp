#pragma once

// What the end-to-end tests of the `vigil` command share: writing a policy
// file into a temp dir, running the real binary (VIGIL_BIN) as a child, and
// reading its JSON output.

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "support/process.hpp"
#include "support/temp_dir.hpp"

namespace vigil::test {

/// Writes `text` to `d`/`name` and returns the file's path.
inline std::string write(const temp_dir& d, const std::string& name,
                         const std::string& text) {
  auto path = d.path() + "/" + name;
  std::ofstream{path} << text;
  return path;
}

/// Runs `vigil ARGS...` (see run_process for `limit`, `sig`, `wait_for`).
inline process_result vigil_cmd(std::vector<std::string> args,
                                std::chrono::milliseconds limit
                                = std::chrono::seconds{30},
                                int sig = 0, std::string wait_for = {}) {
  args.insert(args.begin(), VIGIL_BIN);
  return run_process(args, limit, sig, std::move(wait_for));
}

/// `out` parsed as JSON; a test failure naming the text when it is not.
inline nlohmann::json parse(const std::string& out) {
  auto j = nlohmann::json::parse(out, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << "not JSON: " << out;
  return j;
}

/// The child called `name` in a report's `tree`, or null.
inline const nlohmann::json* child(const nlohmann::json& tree,
                                   const std::string& name) {
  for (auto& c : tree["children"])
    if (c["name"] == name)
      return &c;
  return nullptr;
}

} // namespace vigil::test
