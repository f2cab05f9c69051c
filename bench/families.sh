#!/usr/bin/env bash
# families.sh: dtrain vs PyTorch training throughput of one model of each family on the CPU,
# CIFAR-10 shape (3x32x32, 10 classes), same batch and threads, in one run.
#
# Usage: bench/families.sh [STEPS=10]
#   env: DTRAIN  dtrain binary (default ./dtrain, else build/dtrain)
#        THREADS compute threads for both sides (default 2: OMP_NUM_THREADS and
#                torch.set_num_threads)
#        BATCH   batch size (default 64)
#        MODELS  space-separated subset of the model keys below (default: all)
#        PYTHON  interpreter with torch (default /usr/bin/python3)
#
# Models (key: dtrain [model] settings = tools/dtrain_tools/torch_models.py keywords):
#   resnet_preact20  ResNet-preact-20            depth 20, basic, 16 initial channels
#   wrn16_4          WRN-16-4                    depth 16, widening factor 4
#   densenet_bc100   DenseNet-BC-100 (k = 12)    depth 100, bottleneck, compression 0.5
#   resnext29_2x16d  ResNeXt-29 2x16d            cardinality 2, 16 channels per group, stem 64
#   shake26_2x32d    shake-shake-26 2x32d        initial channels 32
#   pyramid110_a84   PyramidNet-110 (alpha 84)   depth 110, basic
#
# dtrain reads a small synthetic CIFAR-10 binary set written to a temporary directory (random
# pixels; `bench:` times model compute on one batch in memory, so the data do not matter).
# For each model the runs alternate dtrain, torch NCHW, torch channels_last, twice, so slow
# phases of a shared machine fall on both sides; each line notes the load average. The table
# gives the means and the ratios dtrain / torch. Compare only numbers of one run of this script.
# Exit status: 0 when every run gave a number, 1 otherwise.
set -u

cd "$(dirname "$0")/.." || exit 1
source bench/common.sh
STEPS=${1:-10}
THREADS=${THREADS:-2}
BATCH=${BATCH:-64}
PYTHON=${PYTHON:-/usr/bin/python3}
bench_steps families.sh "$STEPS"
bench_dtrain
if [ ! -x "$DTRAIN" ]; then echo "families.sh: dtrain binary $DTRAIN not found (set DTRAIN)" >&2; exit 1; fi

# key | label | dtrain model.name | dtrain settings | torch family | torch keywords
SPECS="resnet_preact20|ResNet-preact-20|resnet_preact|depth=20 block_type=basic initial_channels=16|resnet_preact|depth=20 block_type=basic initial_channels=16
wrn16_4|WRN-16-4|wrn|depth=16 widening_factor=4 drop_rate=0|wrn|depth=16 widening_factor=4 drop_rate=0
densenet_bc100|DenseNet-BC-100 k12|densenet|depth=100 block_type=bottleneck growth_rate=12 compression_rate=0.5 drop_rate=0|densenet|depth=100 block_type=bottleneck growth_rate=12 compression_rate=0.5 drop_rate=0
resnext29_2x16d|ResNeXt-29 2x16d|resnext|depth=29 cardinality=2 base_channels=16 initial_channels=64|resnext|depth=29 cardinality=2 base_channels=16 initial_channels=64
shake26_2x32d|shake-shake-26 2x32d|shake_shake|depth=26 initial_channels=32|shake_shake|depth=26 initial_channels=32
pyramid110_a84|PyramidNet-110 a84|pyramidnet|depth=110 block_type=basic alpha=84 initial_channels=16|pyramidnet|depth=110 block_type=basic alpha=84 initial_channels=16"
MODELS=${MODELS:-$(printf '%s\n' "$SPECS" | cut -d'|' -f1 | tr '\n' ' ')}
for m in $MODELS; do
  printf '%s\n' "$SPECS" | cut -d'|' -f1 | grep -qx "$m" || { echo "families.sh: unknown model key '$m'" >&2; exit 1; }
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/dtrain-families.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT
bench_cifar_data "$TMP/cifar" || { echo "families.sh: cannot write the synthetic data set" >&2; exit 1; }

echo "families.sh: $STEPS timed steps, batch $BATCH, $THREADS threads, dtrain $DTRAIN"
bench_cpu
echo "start: $(uptime)"
FAIL=0
TABLE=()
for key in $MODELS; do
  IFS='|' read -r _ label dname dsets tfam tsets <<<"$(printf '%s\n' "$SPECS" | grep "^$key|")"
  dargs=(--set data.dataset=cifar10 --set "data.dir=$TMP/cifar" --set "train.batch_size=$BATCH"
         --set "output.dir=$TMP/run" --set output.overwrite=true --set "model.name=$dname")
  for kv in $dsets; do dargs+=(--set "model.$kv"); done
  targs=(--family "$tfam" --channels 3 --size 32 --classes 10 --batch "$BATCH" --threads "$THREADS"
         --warmup 3 --steps "$STEPS")
  for kv in $tsets; do targs+=(--set "$kv"); done
  echo "== $label"
  D=() P=() C=()
  for round in 1 2; do
    out=$(OMP_NUM_THREADS=$THREADS "$DTRAIN" configs/quickstart.ini "${dargs[@]}" --bench "$STEPS" 2>&1)
    r=$(printf '%s\n' "$out" | rate bench)
    if [ -z "$r" ]; then
      echo "dtrain failed; its output:"; printf '%s\n' "$out" | tail -n 20; FAIL=1
    else
      D+=("$r")
      printf 'run %s  dtrain               %8s images/s   (load %s)\n' "$round" "$r" "$(bench_load)"
    fi
    for layout in nchw channels_last; do
      extra=()
      [ $layout = channels_last ] && extra=(--channels-last)
      out=$(OMP_NUM_THREADS=$THREADS "$PYTHON" tools/dtrain-tool torch-bench-models "${targs[@]}" "${extra[@]}" 2>&1)
      r=$(printf '%s\n' "$out" | rate torch)
      if [ -z "$r" ]; then
        echo "torch ($layout) failed; its output:"; printf '%s\n' "$out" | tail -n 20; FAIL=1
        continue
      fi
      printf 'run %s  torch %-14s %8s images/s   (load %s)\n' "$round" "$layout" "$r" "$(bench_load)"
      if [ $layout = nchw ]; then P+=("$r"); else C+=("$r"); fi
    done
  done
  d=$(mean "${D[@]+"${D[@]}"}") p=$(mean "${P[@]+"${P[@]}"}") c=$(mean "${C[@]+"${C[@]}"}")
  TABLE+=("$(printf '%-22s %10s %12s %14s %9s %9s' "$label" "$d" "$p" "$c" "$(ratio "$d" "$p")" \
    "$(ratio "$d" "$c")")")
done
echo "end: $(uptime)"
echo
printf '%-22s %10s %12s %14s %9s %9s\n' "model (batch $BATCH)" "dtrain" "torch NCHW" "torch ch_last" \
  "vs NCHW" "vs ch_last"
printf '%s\n' "${TABLE[@]}"
echo "(images/s, means of 2 runs each; ratios dtrain / torch)"
exit $FAIL
