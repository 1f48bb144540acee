#!/usr/bin/env bash
# Installs what is missing, builds, and runs the main demo on a local LMDB
# data dir (build/vigil-data; a second run continues its ledger).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake --preset default
cmake --build --preset default
./build/examples/demo build/vigil-data
