#!/usr/bin/env bash
# Tests in one command: installs the packages, builds with warnings as errors, runs ctest, then
# runs it again with oneDNN held to AVX2 (the oldest instruction set CI machines have: kernels
# chosen for AVX-512 or AMX must not be the only ones the suite has seen pass); then the C
# suites again under ASan + UBSan (scripts/test_sanitize.sh, build-asan/) and each fuzz harness
# for 20 s (tests/fuzz/run.sh, build-fuzz/).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh --with-torch
scripts/build.sh -DDT_WERROR=ON
(cd build && ctest --output-on-failure -j2 "$@")
echo "== the same suite with ONEDNN_MAX_CPU_ISA=AVX2"
(cd build && ONEDNN_MAX_CPU_ISA=AVX2 ctest --output-on-failure -j2 "$@")
scripts/test_sanitize.sh
tests/fuzz/run.sh 20
