#!/usr/bin/env bash
# device_check.sh: the GPU check (docs/architecture.md "Build and test without a GPU"). Runs on
# the lent GPU machine, from the repository root, with the bundle of scripts/device_bundle.sh
# in .device/; writes one report, $OUT/device_report.md when $OUT is set, else
# ./device_report.md.
#
# Steps, each with its own time limit, recorded in the report whatever happens (a failing
# step never stops the script; one total budget, BUDGET = 450 s, skips what no longer fits).
# The report is rewritten after every step, so a run cut off by its caller's time limit
# still leaves every finished test and benchmark row in it. In this order:
#   1. unpack .device/bundle.tar.gz; find cuDNN / cuBLAS for the binaries: the CUDA toolkit's
#      lib64 and the lib directories of the Python environment's nvidia.* packages and torch
#   2. nvidia-smi
#   3. the cheap correctness tests: test_gpu_ops (every op against the double reference),
#      test_gpu_model (ResNet-preact-20 CPU vs GPU: one step, 20 SGD steps on the golden batch,
#      the optimizer updates, bf16 and fp16, asynchronous input, requested conv layouts, one
#      wait per step, also through the NCCL path),
#      test_gpu_half (16-bit storage: layout bytes, the once-per-step weight copy after
#      updates, the activation memory of ResNet-preact-20 and WRN-16-4 in fp32 / bf16 / fp16,
#      20 bf16 and fp16 steps against fp32 on the GPU), test_nccl (closed-form bucketed NCCL
#      all-reduce, the flag maximum, and their stream order)
#   4. throughput on CIFAR-shaped data (3x32x32, a synthetic CIFAR-10 binary dataset written
#      to /tmp), ResNet-preact-20 and WRN-28-10: the target rows of dtrain first (one
#      `dtrain --device cuda --bench` process per configuration), then ONE PyTorch process
#      (tools/dtrain-tool torch-bench-gpu --rows: one import, one CUDA context) for every PyTorch row
#      (eager channels_last fp32, tf32, bf16 and fp16 autocast with a GradScaler, and
#      torch.compile of the bf16 target rows last)
#   5. test_cross_device.sh: checkpoints GPU -> CPU -> GPU, GPU -> GPU resume byte-identical
#      (train.deterministic), NCCL path, injected overflows with NCCL, CUDA graphs over 3
#      epochs with evaluations (fp32, bf16) against op by op
#   6. the other dtrain rows: fp32, TF32, fp16, CUDA graphs, train.deterministic = false (the
#      cost of deterministic algorithms), batch 512; then test_cpu_ops (the bundle's CPU path)
# On a machine without a GPU the tests report "skipped" (exit 77) and the benchmarks fail;
# the report is still written.
#
# Usage: tests/gpu/device_check.sh      env: PYTHON (default python3), STEPS (default 50),
#        BUDGET (seconds, default 450)
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

# The benchmark table: ROWS (one per dtrain configuration, in the order measured) joined with
# dtrain's numbers (DTRAIN_TSV: key, bench, bench_with_data) and PyTorch's (TORCH_TSV: the
# torch key, images/s), whichever exist so far.
ROWS=$LOGS/rows.tsv # key, model label, batch, shown precision, torch key
: >"$ROWS"
DTRAIN_TSV=$LOGS/dtrain.tsv
: >"$DTRAIN_TSV"
TORCH_TSV=$LOGS/torch.tsv
: >"$TORCH_TSV"

lookup() { # FILE KEY COLUMN: the last value of COLUMN for KEY, or a dash
  awk -F'\t' -v k="$2" -v c="$3" '$1 == k { v = $c } END { print v == "" ? "-" : v }' "$1"
}

write_report() { # [quiet]: the report so far (quiet: not printed)
  local summary=$LOGS/summary.md
  {
    echo "# dtrain device check"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname), $(elapsed) s${1:+ (so far)}"
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
    echo "batch; equal to bench when the input pipeline hides); torch: tools/dtrain-tool torch-bench-gpu,"
    echo "eager, channels_last, cudnn.benchmark, $STEPS steps, all rows in one process (the same"
    echo "PyTorch row for dtrain's variants of a precision: CUDA graph, deterministic = false)."
    echo
    echo "| model | batch | precision | dtrain images/s | torch images/s | ratio | dtrain with data |"
    echo "|---|---|---|---|---|---|---|"
    local key label batch shown tkey d dw t ratio
    while IFS=$'\t' read -r key label batch shown tkey; do
      d=$(lookup "$DTRAIN_TSV" "$key" 2)
      dw=$(lookup "$DTRAIN_TSV" "$key" 3)
      t=$(lookup "$TORCH_TSV" "$tkey" 2)
      ratio="-"
      case "$d$t" in
        *[!0-9.]*) ;;
        *) ratio=$(awk -v a="$d" -v b="$t" 'BEGIN { if (b > 0) printf "%.2f", a / b }') ;;
      esac
      echo "| $label | $batch | $shown | $d | $t | $ratio | $dw |"
    done <"$ROWS"
    if grep -q '+compile' "$TORCH_TSV"; then
      echo
      echo "torch.compile (PyTorch only; compilation not timed):"
      echo
      echo "| torch row | images/s |"
      echo "|---|---|"
      awk -F'\t' '$1 ~ /\+compile$/ { printf "| %s | %s |\n", $1, $2 }' "$TORCH_TSV"
    fi
    echo
  } >"$summary"
  cat "$summary" "$BODY" >"$REPORT.tmp" && mv "$REPORT.tmp" "$REPORT"
  if [ -z "${1:-}" ]; then
    cat "$summary"
    echo "(full report with logs: $REPORT)"
  fi
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

# ---- 3. the cheap correctness tests ----
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

run_test() { # NAME LIMIT: one test binary of the bundle, a row of the test table
  local t=$1 lim=$2 res
  if [ ! -x "$BIN/$t" ]; then
    echo "| $t | missing from the bundle | 0 |" >>"$TESTS"
    return
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
      test_step_ops test_chain test_pool test_concat_pad test_dropout_sigmoid test_scale_shake \
      test_shift_bias; do
      run_step "$t.$one" 10 env OMP_NUM_THREADS=8 DT_TEST_FILTER="$one" "$BIN/$t"
      res=$(result_of "$RC")
      echo "| $t ($one alone) | $res | $SECS |" >>"$TESTS"
      [ "$RC" = 0 ] || log_section "$t ($one alone): $res" "$t.$one"
    done
  fi
  write_report quiet
}

run_test test_gpu_ops 60
run_test test_gpu_model 90
run_test test_gpu_half 60
run_test test_nccl 30

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
# dtrain_row MODEL BATCH VARIANT: one dtrain process for one configuration, one row of the
# table. VARIANT: fp32 | tf32 | bf16 | fp16, optionally +graphs (train.cuda_graphs = true) or
# +fastest (train.deterministic = false).
dtrain_row() {
  local model=$1 batch=$2 variant=$3 prec graphs=false det=true
  local key="${1}_${2}_$3" sets=() label=ResNet-preact-20
  prec=${variant%%+*}
  case $variant in *+graphs*) graphs=true ;; esac
  case $variant in *+fastest*) det=false ;; esac
  if [ "$model" = wrn28_10 ]; then
    sets=("${WRN_SETS[@]}")
    label=WRN-28-10
  fi
  local shown=$prec
  [ "$graphs" = true ] && shown="$shown, CUDA graph"
  [ "$det" = false ] && shown="$shown, deterministic = false"
  printf '%s\t%s\t%s\t%s\t%s\n' "$key" "$label" "$batch" "$shown" "$model:$batch:$prec" >>"$ROWS"
  if [ -x "$BIN/dtrain" ]; then
    local tf=0 verbose=0 precision=$prec
    [ "$prec" = tf32 ] && tf=1 precision=fp32
    [ "$key" = rnp20_128_bf16 ] && verbose=1 # the GPU and the algorithms, once
    run_step "dtrain_$key" 60 env DT_CUDA_TF32=$tf DT_CUDA_VERBOSE=$verbose \
      "$BIN/dtrain" "${DTRAIN_ARGS[@]}" "${sets[@]}" --set "train.batch_size=$batch" \
      --set "train.eval_batch_size=$batch" --set "train.precision=$precision" \
      --set "train.cuda_graphs=$graphs" --set "train.deterministic=$det"
    printf '%s\t%s\t%s\n' "$key" "$(value "dtrain_$key" "bench:")" \
      "$(value "dtrain_$key" "bench_with_data:")" >>"$DTRAIN_TSV"
    [ "$RC" = 0 ] || [ "$RC" = 125 ] ||
      note "dtrain bench $key failed (exit $RC): $(tail -n 2 "$LOGS/dtrain_$key.log" | tr '\n' ' ')"
    { echo "### dtrain $label batch $batch $shown"; echo; tail_block "dtrain_$key" 40; echo; } >>"$BODY"
  fi
  write_report quiet
}

# The targets first: ResNet-preact-20 bf16 batch 128 (>= 1.5x eager AMP), WRN-28-10 bf16.
dtrain_row rnp20 128 bf16
dtrain_row wrn28_10 128 bf16

# Every PyTorch row in one process, recorded as it prints them (a timeout keeps those done).
TORCH_ROWS="rnp20:128:bf16,wrn28_10:128:bf16,rnp20:128:fp32,rnp20:128:fp16,rnp20:128:tf32"
TORCH_ROWS="$TORCH_ROWS,wrn28_10:128:fp16,wrn28_10:128:fp32,rnp20:512:bf16,rnp20:512:fp32"
TORCH_ROWS="$TORCH_ROWS,rnp20:512:fp16,rnp20:128:bf16+compile,wrn28_10:128:bf16+compile"
run_step torch_rows 150 "$PYTHON" tools/dtrain-tool torch-bench-gpu --channels 3 --size 32 --warmup 10 \
  --steps "$STEPS" --rows "$TORCH_ROWS"
grep '^torch_row: ' "$LOGS/torch_rows.log" 2>/dev/null |
  awk '{ printf "%s:%s:%s\t%s\n", $2, $3, $4, $5 }' >>"$TORCH_TSV"
[ "$RC" = 0 ] || note "torch rows: exit $RC after $(grep -c '^torch_row: ' "$LOGS/torch_rows.log" 2>/dev/null) rows: $(grep -v '^torch_row' "$LOGS/torch_rows.log" 2>/dev/null | tail -n 2 | tr '\n' ' ')"
{ echo "### torch (every row, one process)"; echo; tail_block torch_rows 60; echo; } >>"$BODY"
write_report quiet

# ---- 5. training-level correctness ----
if [ -x "$BIN/dtrain" ]; then
  run_step test_cross_device 170 env DTRAIN_TOOLS="$BIN" bash tests/gpu/test_cross_device.sh "$BIN/dtrain"
  res=$(result_of "$RC")
  echo "| test_cross_device.sh | $res | $SECS |" >>"$TESTS"
  [ "$RC" = 0 ] || note "test_cross_device.sh: $res"
  log_section "test_cross_device.sh: $res" test_cross_device
  write_report quiet
fi

# ---- 6. the other rows, then the CPU path ----
dtrain_row rnp20 128 bf16+fastest
dtrain_row wrn28_10 128 bf16+fastest
dtrain_row rnp20 128 bf16+graphs
dtrain_row rnp20 128 fp32
dtrain_row rnp20 128 fp16
dtrain_row rnp20 128 tf32
dtrain_row wrn28_10 128 fp16
dtrain_row wrn28_10 128 fp32
dtrain_row rnp20 512 bf16
dtrain_row rnp20 512 fp32
dtrain_row rnp20 512 fp16
run_test test_cpu_ops 30
echo "device_check: done in $(elapsed) s" >&2
