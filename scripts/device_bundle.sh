#!/usr/bin/env bash
# device_bundle.sh: build dtrain with the CUDA backend and pack what the lent GPU machine needs
# into .device/ (ignored through .git/info/exclude), for tests/gpu/device_check.sh to run there.
#
# Usage: scripts/device_bundle.sh
#   env: BUILD_DIR  build directory (default build-device; configured with -DDT_CUDA=ON
#                   -DDT_MPI=OFF unless it already has a CMakeCache.txt)
#        JOBS       parallel build jobs (default: nproc)
#
# The GPU machine has the NVIDIA driver, cuDNN, cuBLAS and NCCL (in its Python environment)
# but not oneDNN, HDF5, inih or Open MPI. So the bundle holds the binaries (dtrain and the test
# binaries device_check.sh runs, stripped) and every shared library they need except the
# CUDA libraries (libcuda, libcudart, libcudnn*, libcublas*, libnccl*) and the base system
# (glibc, libstdc++, libgcc_s, libm, libpthread, ld-linux, libdl, librt), found with ldd.
# The build is single-process (DT_MPI=OFF): Open MPI loads its components from its install
# tree at MPI_Init, which the GPU machine lacks, and the device check uses one GPU.
# The CUDA runtime is linked statically into the binaries (see CMakeLists.txt).
#
# Output: .device/bundle.tar.gz (bin/, lib/, MANIFEST.txt) and .device/MANIFEST.txt. A device
# call carries at most 64 MiB, the tracked files of the checkout included: the bundle plus the
# tracked files must stay under 56 MiB (checked below), which leaves room for untracked files.
# Carry it with the device call (run ... carry [".device"]) and run
# tests/gpu/device_check.sh there (about 8 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD_DIR=${BUILD_DIR:-build-device}
JOBS=${JOBS:-$(nproc)}
OUT=.device
LIMIT_MB=56 # the bundle and the tracked files together
TARGETS="dtrain test_gpu_ops test_gpu_model test_gpu_half test_nccl test_cpu_ops ckpt_compare"

if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
  echo "device_bundle: configuring $BUILD_DIR (CUDA on, MPI off)"
  mkdir -p "$BUILD_DIR"
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DDT_CUDA=ON -DDT_MPI=OFF \
    >"$BUILD_DIR/configure.log" 2>&1 || { cat "$BUILD_DIR/configure.log"; exit 1; }
else
  # Again, so that targets added since (new GPU tests) exist.
  cmake -S . -B "$BUILD_DIR" >"$BUILD_DIR/configure.log" 2>&1 || { cat "$BUILD_DIR/configure.log"; exit 1; }
fi
echo "device_bundle: building $TARGETS in $BUILD_DIR"
# shellcheck disable=SC2086
cmake --build "$BUILD_DIR" -j"$JOBS" --target $TARGETS
# The built file of a target: test tools live in BUILD_DIR/tools.
built() { if [ -x "$BUILD_DIR/$1" ]; then echo "$BUILD_DIR/$1"; else echo "$BUILD_DIR/tools/$1"; fi; }
for t in $TARGETS; do
  [ -x "$(built "$t")" ] || { echo "device_bundle: $(built "$t") was not built" >&2; exit 1; }
done
if ! nm "$BUILD_DIR/dtrain" | grep -c dt_backend_cuda_create >/dev/null; then
  echo "device_bundle: $BUILD_DIR/dtrain has no CUDA backend (configure with -DDT_CUDA=ON)" >&2
  exit 1
fi

# .device/ stays out of git without touching .gitignore.
EXCLUDE="$(git rev-parse --git-dir)/info/exclude"
mkdir -p "$(dirname "$EXCLUDE")"
grep -qxF '/.device/' "$EXCLUDE" 2>/dev/null || echo '/.device/' >>"$EXCLUDE"

STAGE=$(mktemp -d /tmp/dtrain-bundle-XXXXXX)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/bin" "$STAGE/lib"
for t in $TARGETS; do
  cp "$(built "$t")" "$STAGE/bin/"
  strip --strip-unneeded "$STAGE/bin/$t"
done

# Shared libraries: everything ldd resolves, minus what the GPU machine provides.
# glibc's own parts (libresolv, libutil, libanl, libnss_*) must match the machine's libc.
BASE='linux-vdso|ld-linux|libc\.so|libm\.so|libpthread\.so|libdl\.so|librt\.so|libresolv\.so'
BASE="$BASE|libutil\\.so|libanl\\.so|libnss_|libstdc\\+\\+\\.so|libgcc_s\\.so"
SKIP="^($BASE|libcuda\\.so|libcudart\\.so|libcudnn|libcublas|libnccl)"
missing=0
for t in $TARGETS; do
  while read -r name _ path _; do
    case "$name" in */*) continue ;; esac # the loader itself
    if [[ $name =~ $SKIP ]]; then continue; fi
    if [ "$path" = "not" ] || [ ! -e "$path" ]; then
      echo "device_bundle: $t needs $name, which ldd cannot find here" >&2
      missing=1
      continue
    fi
    [ -e "$STAGE/lib/$name" ] || cp -L "$path" "$STAGE/lib/$name"
  done < <(ldd "$(built "$t")" | sed 's/^[[:space:]]*//')
done
[ "$missing" = 0 ] || exit 1

{
  echo "dtrain device bundle"
  echo "built:    $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname) from $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "build:    $ROOT/$BUILD_DIR ($(grep -E '^(DT_CUDA|DT_MPI|CMAKE_BUILD_TYPE|CMAKE_CUDA_ARCHITECTURES):' "$BUILD_DIR/CMakeCache.txt" | tr '\n' ' '))"
  echo "binaries: $TARGETS"
  echo "from the GPU machine: libcudnn.so.9, libcublas.so.13 (+ libcublasLt), libnccl.so.2, the driver"
  echo "libraries:"
  find "$STAGE/lib" -type f -printf '  %-36f %12s\n' | sort
} >"$STAGE/MANIFEST.txt"

rm -rf "$OUT"
mkdir -p "$OUT"
tar -C "$STAGE" -czf "$OUT/bundle.tar.gz" bin lib MANIFEST.txt
cp "$STAGE/MANIFEST.txt" "$OUT/MANIFEST.txt"
raw=$(du -sb "$STAGE" | cut -f1)
packed=$(du -sb "$OUT" | cut -f1)
tracked=$(git ls-files -z | xargs -0 cat 2>/dev/null | wc -c)
carry=$((packed + tracked))
awk -v o="$OUT" -v p="$packed" -v r="$raw" -v t="$tracked" -v l="$LIMIT_MB" 'BEGIN {
  printf "device_bundle: %s: %.1f MiB packed (%.1f MiB unpacked); with the tracked files (%.1f MiB) %.1f MiB of the %d MiB limit\n",
    o, p / 1048576, r / 1048576, t / 1048576, (p + t) / 1048576, l }'
if [ "$carry" -gt $((LIMIT_MB * 1048576)) ]; then
  echo "device_bundle: the bundle and the tracked files exceed $LIMIT_MB MiB" >&2
  exit 1
fi
