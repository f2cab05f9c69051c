#!/usr/bin/env bash
# Configures and builds dtrain into build/ (extra arguments go to cmake), leaving ./dtrain.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@" >build.log 2>&1 || { cat build.log; exit 1; }
grep -- '--   ' build.log || true
cmake --build build -j"$(nproc)" 2>&1 | grep -v '^\[' || true
test -x build/dtrain
