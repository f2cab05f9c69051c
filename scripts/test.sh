#!/usr/bin/env bash
# Tests in one command: installs the packages, builds with warnings as errors, runs ctest,
# then runs it again with oneDNN held to AVX2 (the oldest instruction set CI machines have:
# kernels chosen for AVX-512 or AMX must not be the only ones the suite has seen pass).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh --with-torch
scripts/build.sh -DDT_WERROR=ON
cd build
ctest --output-on-failure -j2 "$@"
echo "== the same suite with ONEDNN_MAX_CPU_ISA=AVX2"
ONEDNN_MAX_CPU_ISA=AVX2 ctest --output-on-failure -j2 "$@"
