#!/usr/bin/env bash
# test_cli.sh: the dtrain command line end to end: help texts, --dry-run, a short real training
# run, and bad input (CLI, config, dataset files, output directory): one clear message naming
# the file and the problem, a non-zero exit, and no run directory or partial file left behind.
set -u
source "$(dirname "$0")/harness.sh"
DTRAIN=${1:-./dtrain}
harness_tmp cli

# expect_error NAME PATTERN ARGS...: non-zero exit, one line on stderr matching PATTERN.
expect_error() {
  local name=$1 pattern=$2
  shift 2
  local out rc
  out=$("$DTRAIN" "$@" 2>&1 >/dev/null)
  rc=$?
  if [ $rc -ne 0 ] && printf '%s' "$out" | grep -q -- "$pattern" && ! printf '%s' "$out" | grep -qi 'segmentation\|abort\|fatal'; then
    ok "$name"
  else
    bad "$name (exit $rc, wanted /$pattern/)" "$out"
  fi
}

FM=/usr/share/datasets/fashion-mnist
SMALL="--set data.train_limit=1024 --set data.test_limit=500 --set train.batch_size=64 --set train.epochs=1"

# ---- help and dry run ----
"$DTRAIN" --help | grep -q -- '--dry-run' && ok "--help" || bad "--help"
"$DTRAIN" --help-config | grep -q 'batch_size' && ok "--help-config" || bad "--help-config"
"$DTRAIN" --version | grep -q '^dtrain ' && ok "--version" || bad "--version"
out=$("$DTRAIN" configs/quickstart.ini --dry-run 2>&1)
if [ $? -eq 0 ] && printf '%s\n' "$out" | grep -qx 'parameters: 271994' &&
   printf '%s\n' "$out" | grep -qx 'macs_per_image: [0-9]*' && [ ! -e runs/quickstart/config.ini.dryrun ]; then
  ok "--dry-run (271994 parameters = 272282 - 2*9*16)"
else
  bad "--dry-run" "$out"
fi
# The activation memory of the training graph at the micro-batch, its three parts adding up.
act='activations: [0-9.]* MiB (values [0-9.]*, gradients [0-9.]*, scratch [0-9.]*) at batch'
act_sum() { printf '%s\n' "$1" | sed -n 's/^activations: \([0-9.]*\) MiB (values \([0-9.]*\), gradients \([0-9.]*\), scratch \([0-9.]*\)).*/\1 \2 \3 \4/p' |
            awk 'NF == 4 && $1 > 0 { d = $1 - $2 - $3 - $4; if (d < 0) d = -d; if (d <= 0.15) print "ok" }'; }
line=$(printf '%s\n' "$out" | grep "^activations: ")
if printf '%s\n' "$line" | grep -qx "$act 128, fp32, cpu backend" && [ "$(act_sum "$line")" = ok ]; then
  ok "--dry-run: $line"
else
  bad "--dry-run activations line" "$out"
fi
out=$("$DTRAIN" configs/quickstart.ini --dry-run --set train.precision=bf16 --set train.accum_steps=2 2>&1)
printf '%s\n' "$out" | grep -qx "$act 64, bf16, cpu backend" && ok "--dry-run bf16, accum_steps 2: $(printf '%s\n' "$out" | grep '^activations: ')" ||
  bad "--dry-run bf16 activations line" "$out"
# --bench prints the same figure for the graph it allocated as --dry-run for the one it planned.
dry=$("$DTRAIN" configs/quickstart.ini $SMALL --dry-run 2>&1 | grep "^activations: ")
out=$("$DTRAIN" configs/quickstart.ini $SMALL --set output.dir=$T/bench --bench 1 2>&1)
line=$(printf '%s\n' "$out" | grep "^activations: ")
if printf '%s\n' "$line" | grep -qx "$act 64, fp32, cpu backend" && [ "$line" = "$dry" ]; then
  ok "--bench: $line, as --dry-run"
else
  bad "--bench activations line (--dry-run: '$dry')" "$out"
fi
# --bench writes no checkpoint: SIGTERM ends it at once (exit 143), not after its last step.
"$DTRAIN" configs/quickstart.ini $SMALL --set output.dir=$T/bench_term --bench 1000000 >"$T/bench_term.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do grep -q "^activations: " "$T/bench_term.log" 2>/dev/null && break; sleep 0.2; done
kill -TERM $pid
for _ in $(seq 1 50); do kill -0 $pid 2>/dev/null || break; sleep 0.2; done
if kill -0 $pid 2>/dev/null; then
  kill -KILL $pid; wait $pid 2>/dev/null
  bad "--bench ignored SIGTERM (still running 10 s later)" "$(cat "$T/bench_term.log")"
else
  wait $pid; rc=$?
  [ $rc -eq 143 ] && ok "--bench ended by SIGTERM at once (exit 143)" || bad "--bench after SIGTERM: exit $rc" "$(cat "$T/bench_term.log")"
fi
out=$("$DTRAIN" configs/quickstart.ini --dry-run --set data.dataset=cifar10 --set data.dir=$T/none 2>&1)
printf '%s\n' "$out" | grep -qx 'parameters: 272282' && ok "--dry-run cifar10 shapes: 272282" || bad "--dry-run cifar10" "$out"
out=$("$DTRAIN" configs/quickstart.ini --dry-run --set data.dataset=cifar10 --set data.dir=$T/none \
      --set model.depth=56 --set model.add_last_bn=true 2>&1)
printf '%s\n' "$out" | grep -qx 'parameters: 857594' && ok "--dry-run preact-56 last BN: 857594" || bad "preact-56" "$out"
out=$("$DTRAIN" configs/quickstart.ini --dry-run --set data.dataset=cifar10 --set data.dir=$T/none \
      --set model.depth=164 --set model.block_type=bottleneck 2>&1)
printf '%s\n' "$out" | grep -qx 'parameters: 1619290' && ok "--dry-run preact-164 bottleneck: 1619290" || bad "preact-164" "$out"

# ---- a short real run ----
run=$T/run1
out=$("$DTRAIN" configs/quickstart.ini $SMALL --set output.dir=$run --set output.log_every=4 2>&1)
rc=$?
if [ $rc -eq 0 ] && [ -f $run/config.ini ] && [ -f $run/log.txt ] &&
   printf '%s\n' "$out" | grep -q '^epoch 1/1 step 16/16 lr' &&
   printf '%s\n' "$out" | grep -q '^epoch 1/1 train loss .* top1 .* top5 '; then
  ok "short training run writes config.ini and log.txt"
else
  bad "short training run (exit $rc)" "$out"
fi
"$DTRAIN" $run/config.ini --dry-run >/dev/null 2>&1 && ok "config.ini of a run loads back" || bad "config.ini reload"
expect_error "existing run directory is refused" "already holds a run" configs/quickstart.ini $SMALL \
  --set output.dir=$run --set output.overwrite=false

# ---- non-finite loss: stop naming the step (exit 2), or skip such steps ----
out=$("$DTRAIN" configs/quickstart.ini $SMALL --set optim.lr=1e6 --set optim.reference_batch=1 --set output.dir=$T/nan 2>&1)
rc=$?
if [ $rc -eq 2 ] && printf '%s' "$out" | grep -q 'non-finite .* at step [0-9]'; then
  ok "non-finite loss stops the run (exit 2) naming the step"
else
  bad "non-finite loss (exit $rc)" "$out"
fi
out=$("$DTRAIN" configs/quickstart.ini $SMALL --set optim.lr=1e6 --set optim.reference_batch=1 --set train.nonfinite=skip \
      --set output.dir=$T/nanskip 2>&1)
rc=$?
if [ $rc -eq 0 ] && printf '%s' "$out" | grep -q 'skipping step [0-9]*: non-finite'; then
  ok "train.nonfinite=skip skips such steps"
else
  bad "train.nonfinite=skip (exit $rc)" "$out"
fi

# ---- command line ----
expect_error "missing config argument" "missing CONFIG.ini"
expect_error "unknown option" "unknown or incomplete option '--frobnicate'" configs/quickstart.ini --frobnicate
expect_error "bad --device" "--device tpu: expected cpu or cuda" configs/quickstart.ini --device tpu
expect_error "bad --bench" "--bench x" configs/quickstart.ini --bench x
expect_error "cuda without a CUDA backend" "cuda" configs/quickstart.ini --device cuda $SMALL --set output.dir=$T/cuda
[ ! -e $T/cuda ] && ok "no run directory after a device error" || bad "run directory left after device error"

# ---- config files ----
expect_error "missing config file" "$T/nope.ini" $T/nope.ini
printf '[trian]\nepochs = 1\n' >$T/c1.ini
expect_error "unknown section" "$T/c1.ini:1.*trian" $T/c1.ini
printf '[train]\nepoch = 1\n' >$T/c2.ini
expect_error "unknown key" "$T/c2.ini:2.*epoch" $T/c2.ini
printf '[train]\nbatch_size = 12x\n' >$T/c3.ini
expect_error "malformed number" "$T/c3.ini:2.*batch_size" $T/c3.ini
printf '[train]\nbatch_size = 0\n' >$T/c4.ini
expect_error "out of range" "$T/c4.ini:2.*batch_size" $T/c4.ini
expect_error "bad --set" "train.epochs=abc" configs/quickstart.ini --set train.epochs=abc
expect_error "depth not 6n+2" "depth" configs/quickstart.ini --set model.depth=21

# ---- dataset files ----
mkdir -p $T/fm
cp $FM/*.gz $T/fm/
printf 'garbage' | gzip >$T/fm/t10k-labels-idx1-ubyte.gz
expect_error "corrupt labels file" "t10k-labels-idx1-ubyte" configs/quickstart.ini --set data.dir=$T/fm --set output.dir=$T/r2
[ ! -e $T/r2 ] && ok "no run directory after a dataset error" || bad "run directory left after dataset error"
cp $FM/t10k-labels-idx1-ubyte.gz $T/fm/
head -c 5000 $FM/train-images-idx3-ubyte.gz >$T/fm/train-images-idx3-ubyte.gz
expect_error "truncated images file" "train-images-idx3-ubyte" configs/quickstart.ini --set data.dir=$T/fm --set output.dir=$T/r3
expect_error "missing dataset directory" "$T/empty" configs/quickstart.ini --set data.dir=$T/empty --set output.dir=$T/r4
expect_error "dry run validates the dataset" "train-images-idx3-ubyte" configs/quickstart.ini --dry-run --set data.dir=$T/fm

# ---- output directory ----
touch $T/file
expect_error "output under a regular file" "output.dir $T/file/run" configs/quickstart.ini $SMALL --set output.dir=$T/file/run
expect_error "output in an unwritable place" "output.dir /proc/dtrain-test" configs/quickstart.ini $SMALL --set output.dir=/proc/dtrain-test
[ ! -e $T/file/run ] && [ ! -e /proc/dtrain-test ] && [ ! -s $T/file ] && ok "no partial files" || bad "partial files left"

finish
