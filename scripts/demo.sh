#!/usr/bin/env bash
# Installs what is missing, builds, and runs the main job: a tree of built-in
# agents with chaos injected (examples/policies/chaos.yaml), on a fresh local
# LMDB data dir (build/chaos-data), for 8 seconds, with progress and a final
# report. Afterwards: ./build/cli/vigil inspect --data-dir build/chaos-data
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake --preset default
cmake --build --preset default
rm -rf build/chaos-data
./build/cli/vigil run examples/policies/chaos.yaml --data-dir build/chaos-data \
  --for 8s
