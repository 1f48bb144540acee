#!/usr/bin/env bash
# Installs what is missing, builds vigil's libraries and command in Release
# (no tests, examples or benchmarks) and packages them as
# build-package/vigil_<version>_amd64.deb. Install it with
#   apt-get install ./build-package/vigil_<version>_amd64.deb
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake --workflow --preset package
ls build-package/vigil_*_amd64.deb
