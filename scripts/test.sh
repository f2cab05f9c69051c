#!/usr/bin/env bash
# Tests in one command: installs the packages, builds with warnings as errors, runs ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh --with-torch
scripts/build.sh -DDT_WERROR=ON
cd build
ctest --output-on-failure -j2 "$@"
