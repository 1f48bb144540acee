#!/usr/bin/env bash
# Installs what is missing, builds, and runs the main job: invoice
# processing (examples/invoices) with vigil's policies off and then on,
# against five local HTTP services with faults injected (chaos on), on a
# fresh local LMDB data dir (build/invoice-data), with progress and the
# side-by-side table at the end. Afterwards, the invoices waiting for a
# person: ./build/cli/vigil approvals list --data-dir build/invoice-data/on
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake --preset default
cmake --build --preset default --target invoice_demo vigil
rm -rf build/invoice-data
./build/examples/invoice_demo run --data-dir build/invoice-data
