#!/usr/bin/env bash
# device_runs.sh: training runs on the lent GPU machine, with the bundle of
# scripts/device_bundle.sh and the real Fashion-MNIST in .device/fashion-mnist/ (copy
# /usr/share/datasets/fashion-mnist/*.gz there before the call). Writes each run's log and
# metrics under $OUT (or /tmp/dtrain-device-runs):
#   shake5  shake-shake-26 2x32d, Cutout 12, 5 epochs        (the families issue)
#   ricap5  ResNet-preact-20, RICAP, 5 epochs                (the families issue)
#   fp32_3 / bf16_3 / fp16_3  ResNet-preact-20, 3 epochs, fp32, bf16 and fp16 (dynamic loss
#                    scaling) (the GPU issue: each within 0.3 % of fp32's test top-1)
# Usage: tests/gpu/device_runs.sh [RUN...]   env: LIMIT seconds per run (default 150)
set -u
cd "$(dirname "$0")/../.." || exit 1
OUTDIR=${OUT:-/tmp/dtrain-device-runs}
LIMIT=${LIMIT:-150}
B=$(mktemp -d /tmp/dtrain-bundle-XXXXXX)
tar -C "$B" -xzf .device/bundle.tar.gz || exit 1
LIB="$B/lib:/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib"
for d in /opt/torch/.venv/lib/python3*/site-packages/nvidia/*/lib; do [ -d "$d" ] && LIB="$LIB:$d"; done
export LD_LIBRARY_PATH="$LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
DATA=.device/fashion-mnist
COMMON=(--device cuda --set data.dir=$DATA --set data.loader_threads=4 --set output.overwrite=true
        --set output.log_every=100)
run() { # NAME ARGS...
  local name=$1
  shift
  echo "== $name: dtrain $*" | tee "$OUTDIR/$name.log"
  timeout "$LIMIT" "$B/bin/dtrain" configs/quickstart.ini "${COMMON[@]}" --set output.dir=/tmp/runs/$name "$@" \
    >>"$OUTDIR/$name.log" 2>&1
  echo "   exit $?" | tee -a "$OUTDIR/$name.log"
  grep -E '^epoch [0-9]+/[0-9]+ train|^done|dtrain:' "$OUTDIR/$name.log"
  cp /tmp/runs/$name/metrics.h5 "$OUTDIR/$name.metrics.h5" 2>/dev/null
}
mkdir -p "$OUTDIR"
want=${*:-fp32_3 bf16_3 fp16_3 shake5 ricap5}
for r in $want; do
  case $r in
    shake5) run shake5 --set train.epochs=5 --set model.name=shake_shake --set model.depth=26 \
              --set model.initial_channels=32 --set augment.cutout=true --set augment.cutout_size=12 ;;
    ricap5) run ricap5 --set train.epochs=5 --set augment.ricap=true --set augment.random_crop=false ;;
    fp32_3) run fp32_3 --set train.epochs=3 ;;
    bf16_3) run bf16_3 --set train.epochs=3 --set train.precision=bf16 ;;
    fp16_3) run fp16_3 --set train.epochs=3 --set train.precision=fp16 ;;
  esac
done
rm -rf "$B"
