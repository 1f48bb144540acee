#!/usr/bin/env bash
# Runs one fuzz target for SECONDS (default 30) from its seed corpus:
#
#   bash scripts/fuzz.sh TARGET [SECONDS]
#   bash scripts/fuzz.sh --bin PATH TARGET SECONDS   (ctest's form)
#
# TARGET: policy | envelope | records | cli. The binary is
# build-san/fuzz/fuzz_TARGET (cmake --workflow --preset sanitize builds it).
# New inputs go to a temp folder; a crash leaves its input in
# fuzz/regressions/TARGET/ (commit it: <target>_replay then runs it in every
# build) and exits 1. Progress: libFuzzer prints a status line every few
# seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=""
if [[ "${1:-}" == "--bin" ]]; then
  bin="$2"
  shift 2
fi
target="${1:-}"
seconds="${2:-30}"
case "$target" in
  policy|envelope|records|cli) ;;
  *) echo "usage: scripts/fuzz.sh TARGET [SECONDS]  (TARGET: policy, envelope, records or cli)" >&2
     exit 64 ;;
esac
bin="${bin:-build-san/fuzz/fuzz_$target}"
if [[ ! -x "$bin" ]]; then
  echo "fuzz: $bin not found; build it first: cmake --workflow --preset sanitize" >&2
  exit 1
fi
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:suppressions=$PWD/cmake/ubsan.supp}"
work="$(mktemp -d /tmp/vigil-fuzz-$target-XXXXXX)"
trap 'rm -rf "$work"' EXIT
mkdir -p "fuzz/regressions/$target"
echo "fuzz: $target for ${seconds}s (seed corpus fuzz/corpus/$target, new inputs in $work)" >&2
set +e
"$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
  -print_final_stats=1 -close_fd_mask=3 \
  -artifact_prefix="fuzz/regressions/$target/" \
  "$work" "fuzz/corpus/$target"
rc=$?
set -e
if [[ $rc -ne 0 ]]; then
  echo "fuzz: $target found a failure (exit $rc); its input is in fuzz/regressions/$target/ (newest file): fix it and commit the input" >&2
  exit 1
fi
echo "fuzz: $target ran ${seconds}s, nothing found" >&2
