#!/usr/bin/env bash
# device_runs.sh: training runs on the lent GPU machine, with the bundle of
# scripts/device_bundle.sh and the real Fashion-MNIST in .device/fashion-mnist/ (copy
# /usr/share/datasets/fashion-mnist/*.gz there before the call). Writes each run's log and
# metrics under $OUT (or /tmp/dtrain-device-runs):
#   shake5  shake-shake-26 2x32d, Cutout 12, 5 epochs        (the families issue)
#   ricap5  ResNet-preact-20, RICAP, 5 epochs                (the families issue)
#   fp32_3 / bf16_3 / fp16_3  ResNet-preact-20, 3 epochs, fp32, bf16 and fp16 (dynamic loss
#                    scaling) (the GPU issue: each within 0.3 % of fp32's test top-1)
#   fmnist   the Fashion-MNIST rows of the published table 6.4 at full length through
#            scripts/reproduce.sh fashion_mnist --device cuda (experiments/fashion_mnist.rows;
#            default ROWS=resnet_preact20: ResNet-preact-20, 200 epochs, 3 seeds, published
#            5.04 %, 26 minutes on a GTX 1080 Ti)
#   batch_lr the batch-size / learning-rate sweep (experiments/batch_lr.rows) through
#            scripts/reproduce.sh batch_lr --device cuda, the configs' own 200 epochs on
#            Fashion-MNIST (CIFAR-10 when data/cifar10 is there)
# The reproduce runs keep their run directories in RUNS (default .device/runs): a run stopped by
# the time limit (RLIMIT, SIGTERM: checkpoint, exit 143) continues where it stopped when the
# same command runs again with .device carried; finished runs are skipped. The experiment's
# table and plots (results/EXPERIMENT/) and every run's metrics.h5 and reproduce.done are
# copied to $OUT/reproduce/.
# Usage: tests/gpu/device_runs.sh [RUN...]   env: LIMIT seconds per short run (default 150),
#   RLIMIT seconds per reproduce call (default 540), ROWS, EPOCHS, SEEDS (passed to reproduce.sh
#   as --rows, --epochs, --seeds; empty: every row, the configs' epochs, the rows' seeds)
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
# reproduce EXPERIMENT [DEFAULT_ROWS]: scripts/reproduce.sh EXPERIMENT --device cuda with the
# bundle's dtrain, the data above and RUNS, under RLIMIT; results and metrics to $OUTDIR.
reproduce() {
  local exp=$1 rows=${ROWS:-${2:-}}
  local args=("$exp" --device cuda --runs "${RUNS:-.device/runs}" --results "$OUTDIR/reproduce/results"
              --set "data.dir=$DATA" --set data.loader_threads=4)
  [[ -z $rows ]] || args+=(--rows "$rows")
  [[ -z ${EPOCHS:-} ]] || args+=(--epochs "$EPOCHS")
  [[ -z ${SEEDS:-} ]] || args+=(--seeds "$SEEDS")
  echo "== $exp: scripts/reproduce.sh ${args[*]}" | tee "$OUTDIR/$exp.log"
  DTRAIN=$B/bin/dtrain DTRAIN_PYTHON=${DTRAIN_PYTHON:-python3} timeout "${RLIMIT:-540}" \
    scripts/reproduce.sh "${args[@]}" >>"$OUTDIR/$exp.log" 2>&1
  echo "   exit $? (124 or 143: stopped by RLIMIT with a checkpoint; run again to continue)" |
    tee -a "$OUTDIR/$exp.log"
  grep -E '^epoch [0-9]+/[0-9]+ train|^done|finished, skipped|dtrain:|reproduce.sh:' "$OUTDIR/$exp.log" | tail -40
  (cd "${RUNS:-.device/runs}" && find "$exp" \( -name metrics.h5 -o -name reproduce.done -o -name log.txt \) \
     -exec cp --parents {} "$OUTDIR/reproduce/" \;) 2>/dev/null
}
mkdir -p "$OUTDIR/reproduce"
want=${*:-fp32_3 bf16_3 fp16_3 shake5 ricap5}
for r in $want; do
  case $r in
    shake5) run shake5 --set train.epochs=5 --set model.name=shake_shake --set model.depth=26 \
              --set model.initial_channels=32 --set augment.cutout=true --set augment.cutout_size=12 ;;
    ricap5) run ricap5 --set train.epochs=5 --set augment.ricap=true --set augment.random_crop=false ;;
    fp32_3) run fp32_3 --set train.epochs=3 ;;
    bf16_3) run bf16_3 --set train.epochs=3 --set train.precision=bf16 ;;
    fp16_3) run fp16_3 --set train.epochs=3 --set train.precision=fp16 ;;
    fmnist) reproduce fashion_mnist resnet_preact20 ;;
    batch_lr) reproduce batch_lr ;;
    *) echo "device_runs.sh: unknown run '$r'" >&2 ;;
  esac
done
rm -rf "$B"
