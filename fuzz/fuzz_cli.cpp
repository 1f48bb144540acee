// libFuzzer target: the `vigil` command line. The input is split at NUL
// bytes into at most 32 arguments after "vigil"; parse_only parses them as
// `vigil` does, without running the command (which would start nodes and
// open data dirs named by the fuzzer).

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "vigil/cli/app.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::string> args{"vigil"};
  std::string cur;
  for (size_t i = 0; i < size && args.size() < 33; ++i) {
    if (data[i] == 0) {
      args.push_back(std::move(cur));
      cur.clear();
    } else {
      cur.push_back(static_cast<char>(data[i]));
    }
  }
  if (args.size() < 33)
    args.push_back(std::move(cur));
  std::vector<char*> argv;
  for (auto& a : args)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  (void) vigil::cli::parse_only(static_cast<int>(args.size()), argv.data());
  return 0;
}
