#!/usr/bin/env bash
# device_check.sh: the GPU check (DESIGN "Build and test on a machine without a GPU"). Runs on
# the lent GPU machine, from the repository root, with the bundle of scripts/device_bundle.sh
# in .device/; writes one report, $OUT/device_report.md when $OUT is set, else
# ./device_report.md.
#
# Steps, each with its own time limit, recorded in the report whatever happens (a failing
# step never stops the script; one total budget of 7.5 minutes skips what no longer fits):
#   1. unpack .device/bundle.tar.gz; find cuDNN / cuBLAS for the binaries: the CUDA toolkit's
#      lib64 and the lib directories of the Python environment's nvidia.* packages and torch
#   2. nvidia-smi
#   3. test_gpu_ops (every op against the double reference), test_gpu_model (ResNet-preact-20
#      CPU vs GPU: one step, 20 SGD steps on the golden batch, the optimizer updates, bf16 and
#      fp16 convolutions), test_nccl (closed-form bucketed NCCL all-reduce and its stream
#      order), test_cpu_ops (the bundle's CPU path on this machine), test_cross_device.sh
#      (checkpoints GPU -> CPU and CPU -> GPU, the NCCL training path against the plain one)
#   4. throughput on CIFAR-shaped data (3x32x32, a synthetic CIFAR-10 binary dataset written
#      to /tmp): ResNet-preact-20 at batch 128 and 512, WRN-28-10 at batch 128:
#      `dtrain --device cuda --bench` (strict fp32, TF32 with DT_CUDA_TF32=1,
#      train.precision=bf16 and fp16) against bench/torch_bench_gpu.py (fp32, tf32, bf16 and
#      fp16 autocast, fp16 with a GradScaler; channels_last) on the same GPU
# On a machine without a GPU the tests report "skipped" (exit 77) and the benchmarks fail;
# the report is still written.
#
# Usage: tests/gpu/device_check.sh      env: PYTHON (default python3), STEPS (default 50)
set -u

cd "$(dirname "$0")/../.." || exit 1
ROOT=$(pwd)
REPORT=${OUT:+$OUT/device_report.md}
REPORT=${REPORT:-$ROOT/device_report.md}
PYTHON=${PYTHON:-python3}
STEPS=${STEPS:-50}
BUDGET=${BUDGET:-450} # seconds for everything; the caller allows 8 minutes
START=$(date +%s)
LOGS=$(mktemp -d /tmp/dtrain-device-check-XXXXXX)
DATA=/tmp/dtrain-cifar10-synthetic
BUNDLE=$LOGS/bundle
mkdir -p "$BUNDLE"
BIN=$BUNDLE/bin

# ---- report helpers ----
BODY=$LOGS/body.md   # sections, in order
: >"$BODY"
TESTS=$LOGS/tests.md # rows of the test table
: >"$TESTS"
BENCH=$LOGS/bench.tsv # model batch precision dtrain torch
: >"$BENCH"
NOTES=$LOGS/notes.md
: >"$NOTES"

elapsed() { echo $(($(date +%s) - START)); }
left() { echo $((BUDGET - $(elapsed))); }
note() { echo "- $*" >>"$NOTES"; echo "device_check: $*" >&2; }

# run_step NAME LIMIT CMD...: run with a time limit (cut to the budget), output to
# $LOGS/NAME.log; sets RC (124: timed out, 125: skipped for lack of time) and SECS.
run_step() {
  local name=$1 limit=$2
  shift 2
  local l
  l=$(left)
  if [ "$l" -lt 15 ]; then
    RC=125 SECS=0
    echo "skipped: no time left in the ${BUDGET} s budget" >"$LOGS/$name.log"
    note "$name skipped: the time budget was spent"
    return
  fi
  [ "$limit" -gt "$l" ] && limit=$l
  echo "device_check: $name (limit ${limit} s)" >&2
  local t0
  t0=$(date +%s)
  timeout --kill-after=5 "$limit" "$@" >"$LOGS/$name.log" 2>&1
  RC=$?
  SECS=$(($(date +%s) - t0))
}

tail_block() { # NAME LINES: the end of a step's log as a fenced block
  echo '```'
  tail -n "$2" "$LOGS/$1.log" 2>/dev/null
  echo '```'
}

write_report() {
  local summary=$LOGS/summary.md
  {
    echo "# dtrain device check"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname), $(elapsed) s"
    echo
    if [ -s "$NOTES" ]; then
      echo "## Problems"
      echo
      cat "$NOTES"
      echo
    fi
    echo "## Tests"
    echo
    echo "| test | result | seconds |"
    echo "|---|---|---|"
    cat "$TESTS"
    echo
    echo "## Throughput (CIFAR-10 shape 3x32x32, synthetic data)"
    echo
    echo "dtrain: \`--bench $STEPS\`, the compute-only 'bench:' line (one batch in memory, upload"
    echo "included), and 'bench_with_data:' (the loader and the asynchronous copy of each next"
    echo "batch; equal to bench when the input pipeline hides); torch: bench/torch_bench_gpu.py,"
    echo "channels_last, cudnn.benchmark, $STEPS steps."
    echo
    echo "| model | batch | precision | dtrain images/s | torch images/s | ratio | dtrain with data |"
    echo "|---|---|---|---|---|---|---|"
    while IFS=$'\t' read -r model batch prec d t dw; do
      local ratio="-"
      case "$d$t" in
        *[!0-9.]*) ;;
        *) ratio=$(awk -v a="$d" -v b="$t" 'BEGIN { if (b > 0) printf "%.2f", a / b }') ;;
      esac
      echo "| $model | $batch | $prec | $d | $t | $ratio | $dw |"
    done <"$BENCH"
    echo
  } >"$summary"
  cat "$summary" "$BODY" >"$REPORT"
  cat "$summary"
  echo "(full report with logs: $REPORT)"
}
trap 'write_report; rm -rf "$BUNDLE"' EXIT

# ---- 1. bundle and libraries ----
# Unpacked outside the checkout, so that .device stays small enough to carry.
if [ -f .device/bundle.tar.gz ]; then
  tar -C "$BUNDLE" -xzf .device/bundle.tar.gz ||
    "$PYTHON" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
      .device/bundle.tar.gz "$BUNDLE" || note "unpacking .device/bundle.tar.gz failed"
else
  note "no bundle: .device/bundle.tar.gz is missing (run scripts/device_bundle.sh, carry .device)"
fi

# Library directories of the Python environment, without importing torch (slow).
PYLIBS=$("$PYTHON" - <<'EOF' 2>/dev/null
import glob, importlib.util, os
dirs = []
for mod in ("nvidia", "torch"):
    try:
        spec = importlib.util.find_spec(mod)
    except Exception:
        spec = None
    if not spec or not spec.submodule_search_locations:
        continue
    for base in spec.submodule_search_locations:
        if mod == "torch":
            dirs.append(os.path.join(base, "lib"))
        else:
            dirs += sorted(glob.glob(os.path.join(base, "*", "lib")))
            dirs += sorted(glob.glob(os.path.join(base, "*", "lib64")))
print(":".join(d for d in dict.fromkeys(dirs) if os.path.isdir(d)))
EOF
)
LIBPATH="$BUNDLE/lib"
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  [ -d "$d" ] && LIBPATH="$LIBPATH:$d"
done
[ -n "$PYLIBS" ] && LIBPATH="$LIBPATH:$PYLIBS"
export LD_LIBRARY_PATH="$LIBPATH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# Anything still unresolved: look for it once on the file system.
for lib in libcublas.so.13 libcublasLt.so.13 libcudnn.so.9 libnccl.so.2; do
  if [ -x "$BIN/dtrain" ] && ldd "$BIN/dtrain" 2>/dev/null | grep -q "$lib => not found"; then
    found=$(timeout 30 find / -xdev -name "$lib" -not -path '/proc/*' 2>/dev/null | head -n 1)
    if [ -n "$found" ]; then
      LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$(dirname "$found")"
    fi
  fi
done
{
  echo "## Libraries"
  echo
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  echo
  echo '```'
  if [ -x "$BIN/dtrain" ]; then
    ldd "$BIN/dtrain" 2>&1 | grep -E 'cudnn|cublas|nccl|not found' || true
  fi
  echo '```'
  echo
} >>"$BODY"
if [ -x "$BIN/dtrain" ] && ldd "$BIN/dtrain" 2>&1 | grep -q 'not found'; then
  note "libraries not found for dtrain: $(ldd "$BIN/dtrain" 2>&1 | grep 'not found' | awk '{print $1}' | tr '\n' ' ')"
fi
[ -f "$BUNDLE/MANIFEST.txt" ] && { echo "## Bundle"; echo; echo '```'; cat "$BUNDLE/MANIFEST.txt"; echo '```'; echo; } >>"$BODY"

# ---- 2. the GPU ----
run_step nvidia_smi 20 nvidia-smi
{
  echo "## nvidia-smi"
  echo
  tail_block nvidia_smi 30
  echo
} >>"$BODY"
[ "$RC" = 0 ] || note "nvidia-smi failed (exit $RC)"
# The binaries carry the CUDA 13 runtime: a driver older than CUDA 13 needs the toolkit's
# forward-compatibility libcuda (data-centre GPUs), when the machine has one.
drv=$(grep -o 'CUDA Version: *[0-9]*' "$LOGS/nvidia_smi.log" 2>/dev/null | grep -o '[0-9]*$')
if [ -n "$drv" ] && [ "$drv" -lt 13 ]; then
  compat=""
  for d in /usr/local/cuda*/compat; do
    for f in "$d"/libcuda.so.*; do [ -e "$f" ] && compat=$d; done
  done
  if [ -n "$compat" ]; then
    export LD_LIBRARY_PATH="$compat:$LD_LIBRARY_PATH"
    note "the driver supports CUDA $drv only: using the forward-compatibility libcuda in $compat"
  else
    note "the driver supports CUDA $drv only and no forward-compatibility libcuda was found: the CUDA 13 binaries cannot start"
  fi
fi

# ---- 3. tests ----
result_of() { # exit status -> the words of the test table
  case $1 in
    0) echo "passed" ;;
    77) echo "skipped (no GPU)" ;;
    124 | 137) echo "TIMED OUT" ;;
    125) echo "not run (time budget)" ;;
    *) echo "FAILED (exit $1)" ;;
  esac
}

log_section() { # TITLE LOG: a collapsed block with the end of a step's log
  {
    echo "## $1"
    echo
    echo "<details><summary>last lines of the output</summary>"
    echo
    tail_block "$2" 120
    echo
    echo "</details>"
    echo
  } >>"$BODY"
}

for spec in test_gpu_ops:200 test_gpu_model:150 test_nccl:60 test_cpu_ops:60; do
  t=${spec%%:*}
  lim=${spec##*:}
  if [ ! -x "$BIN/$t" ]; then
    echo "| $t | missing from the bundle | 0 |" >>"$TESTS"
    continue
  fi
  run_step "$t" "$lim" env OMP_NUM_THREADS=8 "$BIN/$t"
  res=$(result_of "$RC")
  echo "| $t | $res | $SECS |" >>"$TESTS"
  [ "$RC" = 0 ] || note "$t: $res"
  log_section "$t: $res" "$t"
  # A backend error is fatal to the whole binary: after a failure, run each op test alone so
  # that one failing op does not hide the others.
  if [ "$t" = test_gpu_ops ] && [ "$RC" != 0 ] && [ "$RC" != 77 ] && [ "$RC" != 125 ]; then
    for one in test_memory test_conv test_bn test_eltwise test_gap test_linear test_xent \
      test_chain test_pool test_concat_pad test_dropout_sigmoid test_scale_shake \
      test_shift_bias; do
      run_step "$t.$one" 60 env OMP_NUM_THREADS=8 DT_TEST_FILTER="$one" "$BIN/$t"
      res=$(result_of "$RC")
      echo "| $t ($one alone) | $res | $SECS |" >>"$TESTS"
      [ "$RC" = 0 ] || log_section "$t ($one alone): $res" "$t.$one"
    done
  fi
done

if [ -x "$BIN/dtrain" ]; then
  run_step test_cross_device 150 env DTRAIN_TOOLS="$BIN" bash tests/gpu/test_cross_device.sh "$BIN/dtrain"
  res=$(result_of "$RC")
  echo "| test_cross_device.sh | $res | $SECS |" >>"$TESTS"
  [ "$RC" = 0 ] || note "test_cross_device.sh: $res"
  log_section "test_cross_device.sh: $res" test_cross_device
fi

# ---- 4. throughput ----
# Synthetic CIFAR-10 binary dataset: 1024 records (label byte + 3072 pixels) per file.
"$PYTHON" - "$DATA" <<'EOF' >"$LOGS/data.log" 2>&1 || note "writing the synthetic CIFAR-10 files failed: $(tail -n 3 "$LOGS/data.log")"
import os, random, sys
d = sys.argv[1]
os.makedirs(d, exist_ok=True)
rng = random.Random(0)
names = ["data_batch_%d.bin" % i for i in range(1, 6)] + ["test_batch.bin"]
for name in names:
    with open(os.path.join(d, name), "wb") as f:
        for _ in range(1024):
            f.write(bytes([rng.randrange(10)]) + os.urandom(3072))
print("wrote", len(names), "files to", d)
EOF

value() { # LOG PREFIX: the number after PREFIX on the last matching line, or a dash
  local v
  v=$(grep -E "^$2" "$LOGS/$1.log" 2>/dev/null | tail -n 1 | awk '{print $2}')
  [ -n "$v" ] && echo "$v" || echo "-"
}

DTRAIN_ARGS=(configs/quickstart.ini --device cuda --bench "$STEPS" --set data.dataset=cifar10
  --set "data.dir=$DATA" --set data.loader_threads=4 --set output.dir=/tmp/dtrain-device-bench)
WRN_SETS=(--set model.name=wrn --set model.depth=28 --set model.widening_factor=10)
# bench_row MODEL BATCH PRECISION: one dtrain and one torch measurement, a row of the table.
bench_row() {
  local model=$1 batch=$2 prec=$3 d="-" dw="-" t tag="${1}_${2}_$3" graphs=false
  local sets=() targs=()
  case $prec in *+graphs) prec=${prec%+graphs} graphs=true ;; esac
  if [ "$model" = wrn28_10 ]; then
    sets=("${WRN_SETS[@]}")
    targs=(--model wrn --depth 28 --widening-factor 10)
  fi
  if [ -x "$BIN/dtrain" ]; then
    local tf=0 verbose=0 precision=$prec
    [ "$prec" = tf32 ] && tf=1 precision=fp32
    [ "$batch" = 128 ] && [ "$prec" = fp32 ] && verbose=1 # the GPU and algorithms, once each
    run_step "dtrain_$tag" 90 env DT_CUDA_TF32=$tf DT_CUDA_VERBOSE=$verbose \
      "$BIN/dtrain" "${DTRAIN_ARGS[@]}" "${sets[@]}" --set "train.batch_size=$batch" \
      --set "train.eval_batch_size=$batch" --set "train.precision=$precision" \
      --set "train.cuda_graphs=$graphs"
    d=$(value "dtrain_$tag" "bench:")
    dw=$(value "dtrain_$tag" "bench_with_data:")
    [ "$RC" = 0 ] || note "dtrain bench $model batch $batch $prec failed (exit $RC): $(tail -n 2 "$LOGS/dtrain_$tag.log" | tr '\n' ' ')"
    { echo "### dtrain $model batch $batch $prec"; echo; tail_block "dtrain_$tag" 40; echo; } >>"$BODY"
  fi
  run_step "torch_$tag" 100 "$PYTHON" bench/torch_bench_gpu.py "${targs[@]}" --channels 3 \
    --size 32 --batch "$batch" --precision "$prec" --warmup 10 --steps "$STEPS"
  t=$(value "torch_$tag" "torch:")
  [ "$RC" = 0 ] || note "torch bench $model batch $batch $prec failed (exit $RC): $(tail -n 2 "$LOGS/torch_$tag.log" | tr '\n' ' ')"
  { echo "### torch $model batch $batch $prec"; echo; tail_block "torch_$tag" 6; echo; } >>"$BODY"
  local label=ResNet-preact-20
  [ "$model" = wrn28_10 ] && label=WRN-28-10
  local shown=$prec
  [ "$graphs" = true ] && shown="$prec, CUDA graph"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$batch" "$shown" "$d" "$t" "$dw" >>"$BENCH"
}
# The targets first (bf16 at batch 128, WRN-28-10 bf16), so that a short budget keeps them.
bench_row rnp20 128 bf16
bench_row wrn28_10 128 bf16
bench_row rnp20 128 fp32
bench_row rnp20 128 bf16+graphs
bench_row rnp20 128 fp16
bench_row rnp20 128 tf32
bench_row wrn28_10 128 fp16
bench_row wrn28_10 128 fp32
bench_row rnp20 512 bf16
bench_row rnp20 512 fp32
bench_row rnp20 512 fp16
echo "device_check: done in $(elapsed) s" >&2
