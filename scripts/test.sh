#!/usr/bin/env bash
# Tests in one command: installs the packages, builds with warnings as errors, runs ctest; then
# the C suites again under ASan + UBSan (scripts/test_sanitize.sh, build-asan/) and each fuzz
# harness for 20 s (tests/fuzz/run.sh, build-fuzz/).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh --with-torch
scripts/build.sh -DDT_WERROR=ON
(cd build && ctest --output-on-failure -j2 "$@")
scripts/test_sanitize.sh
tests/fuzz/run.sh 20
