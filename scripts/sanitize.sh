#!/usr/bin/env bash
# Installs what is missing, builds everything with clang-14 under
# AddressSanitizer and UndefinedBehaviorSanitizer (the `sanitize` preset, in
# build-san/), and runs every test there, including each libFuzzer target for
# VIGIL_FUZZ_SECONDS (default 30) from its seed corpus. CI runs it after
# scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
seconds="${VIGIL_FUZZ_SECONDS:-30}"
cmake --preset sanitize -DVIGIL_FUZZ_SECONDS="$seconds"
cmake --build --preset sanitize
ctest --preset sanitize
