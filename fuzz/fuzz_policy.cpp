// libFuzzer target: the YAML policy loader (`vigil check` / `vigil run` on
// a file from anywhere). Every input must end in a list of errors or a
// loaded policy: never a crash, a hang or a sanitizer report.

#include <cstddef>
#include <cstdint>
#include <string>

#include "vigil/cli/app.hpp"
#include "vigil/cli/policy.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const vigil::registry types = [] {
    vigil::registry r;
    vigil::cli::add_builtin_agents(r);
    return r;
  }();
  std::string text{reinterpret_cast<const char*>(data), size};
  vigil::cli::loaded_policy out;
  auto errors = vigil::cli::load_policy_text(text, "fuzz.yaml", types, out);
  for (auto& e : errors)
    (void) e.to_string();
  return 0;
}
