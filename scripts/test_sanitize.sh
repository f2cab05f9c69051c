#!/usr/bin/env bash
# The test suites under AddressSanitizer + UndefinedBehaviorSanitizer (scripts/test.sh runs it
# after the normal suite): builds a second tree, build-asan/ (gcc, -DDT_ASAN=ON -DDT_UBSAN=ON,
# no CUDA backend), and runs its ctest suites (default: the C unit suites, label "unit";
# extra arguments go to ctest, e.g. -L shell or -R test_resume). A UBSan report aborts the
# test (-fno-sanitize-recover); LeakSanitizer stays on, with the leaks of Open MPI, hwloc,
# PMIx, libevent and HDF5 themselves suppressed by tests/sanitizers/lsan.supp.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
mkdir -p build-asan
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Release -DDT_ASAN=ON -DDT_UBSAN=ON -DDT_CUDA=OFF \
  -DDT_WERROR=ON >build-asan/configure.log 2>&1 || { cat build-asan/configure.log; exit 1; }
cmake --build build-asan -j"$(nproc)" 2>&1 | grep -v '^\[' || true
test -x build-asan/dtrain
export ASAN_OPTIONS="detect_leaks=1:fast_unwind_on_malloc=0:strict_string_checks=1:detect_stack_use_after_return=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export LSAN_OPTIONS="suppressions=$root/tests/sanitizers/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
cd build-asan
(($#)) || set -- -L unit
ctest --output-on-failure -j2 "$@"
