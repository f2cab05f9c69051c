#!/usr/bin/env bash
# test_mpi.sh: dtrain over several MPI ranks. (a) closed-form all-reduce and broadcast on 1-4
# ranks (tools/allreduce_check); (b) world-size invariance: the same global batch split as
# 1 rank x 4 micro-batches, 2 x 2 and 4 x 1 trains to the same weights (relative error in norm
# <= 1e-5 per tensor, worst error printed); (c) evaluation counts every test image once: the
# three runs report the same test loss and top-1 (the test set size is not a multiple of the
# evaluation batch, and 4 ranks round the evaluation batch up); (d) a rank killed with SIGKILL
# ends the whole job quickly; (e) a fatal error or an input error on one rank ends the job
# with no run directory left behind; (f) SIGTERM on every rank: exit 143, a checkpoint, and
# --resume finishes bit-identical to an uninterrupted run, metrics rows included; (g)
# resuming with another world size (2 ranks -> 1 rank x 2 micro-batches) follows the
# uninterrupted trajectory; (h) ranks
# started with different configurations (one --set on rank 1 only: epochs, seed, lr, hflip,
# batch size, depth) or different dataset files (same data.dir, other working directories)
# all exit 1 quickly, with one message naming the key or the dataset property, both values
# and the ranks, and no run directory; so does --eval of ranks with different test images or
# configurations;
# (i) a training step on 2 ranks waits for the device once, as on one (test_step_syncs under
# mpirun: fp32, accumulation, Dual-Cutout, loss scaling with an overflow step, nonfinite=skip;
# a skipped step leaves weights, optimizer state and running statistics as they were).
# Usage: test_mpi.sh DTRAIN  (tools from $DTRAIN_TOOLS, else DTRAIN's directory/tools).
# Exit 77 (skipped) without mpirun or with a single-process (-DDT_MPI=OFF) build.
set -u
source "$(dirname "$0")/harness.sh"
DTRAIN=${1:-./dtrain}
if ! command -v mpirun >/dev/null 2>&1; then
  echo "skipped: mpirun not found"
  exit 77
fi
need_tools allreduce_check ckpt_compare
MPIRUN=(mpirun)
if mpirun --version 2>&1 | grep -q 'Open MPI'; then
  # More ranks than cores, and root in containers.
  MPIRUN+=(--oversubscribe)
  [ "$(id -u)" -eq 0 ] && MPIRUN+=(--allow-run-as-root)
fi
harness_tmp mpi
PY=/usr/bin/python3

out=$("${MPIRUN[@]}" -np 2 "$TOOLS/allreduce_check" 2>&1)
if printf '%s\n' "$out" | grep -q '^allreduce_check: 1 rank(s)'; then
  echo "skipped: this build's comm is single-process (-DDT_MPI=OFF)"
  exit 77
fi

# ---- (a) closed-form all-reduce and broadcast ----
for n in 1 2 3 4; do
  out=$(timeout 120 "${MPIRUN[@]}" -np $n "$TOOLS/allreduce_check" 2>&1)
  rc=$?
  if [ $rc -eq 0 ] && printf '%s\n' "$out" | grep -q "^allreduce_check: $n rank(s), all sums and broadcasts exact"; then
    ok "all-reduce (sizes 1, 7, 1000003, 100003 in 1031-float buckets), f64 sum, broadcast: -np $n"
  else
    bad "all-reduce -np $n (exit $rc)" "$out"
  fi
done

# ---- (b) world-size invariance, (c) evaluation over the ranks ----
# Global batch 64 in micro-batches of 16, 20 steps (one epoch of 1280 images). 250 test
# images in evaluation batches of 90 (4 ranks: 92): two full batches and a short one.
# train.threads=1 everywhere: oneDNN's own reductions depend on the thread count.
INV=(configs/quickstart.ini --set train.seed=7 --set train.batch_size=64
  --set data.train_limit=1280 --set data.test_limit=250 --set train.eval_batch_size=90
  --set train.epochs=1 --set train.max_steps=20 --set optim.lr=0.05 --set optim.reference_batch=64
  --set train.threads=1 --set output.log_every=10)
declare -A loss top1
for split in 1:4 2:2 4:1; do
  np=${split%:*} accum=${split#*:}
  run=$T/inv$np
  out=$(timeout 300 "${MPIRUN[@]}" -np $np "$DTRAIN" "${INV[@]}" --set train.accum_steps=$accum \
        --set output.dir=$run 2>&1)
  rc=$?
  line=$(grep '^epoch 1/1 train loss' $run/log.txt 2>/dev/null)
  if [ $rc -ne 0 ] || [ ! -f "$(ckpt $run 20)" ] || [ -z "$line" ]; then
    bad "-np $np accum $accum: 20 steps (exit $rc)" "$out"
    continue
  fi
  loss[$np]=$(printf '%s\n' "$line" | sed -n 's/.*test loss \([0-9.]*\) top1 \([0-9.]*\)%.*/\1/p')
  top1[$np]=$(printf '%s\n' "$line" | sed -n 's/.*test loss \([0-9.]*\) top1 \([0-9.]*\)%.*/\2/p')
  ok "-np $np accum $accum: 20 steps, test loss ${loss[$np]} top1 ${top1[$np]}%"
done
for np in 2 4; do
  [ -f "$(ckpt $T/inv$np 20)" ] && [ -f "$(ckpt $T/inv1 20)" ] || continue
  out=$("$TOOLS/ckpt_compare" "$(ckpt $T/inv1 20)" "$(ckpt $T/inv$np 20)" --rel 1e-5 --optimizer 2>&1)
  if [ $? -eq 0 ]; then
    ok "-np $np vs -np 1 accum 4 after 20 steps: $out"
  else
    bad "-np $np vs -np 1 accum 4 after 20 steps" "$out
$("$TOOLS/ckpt_compare" "$(ckpt $T/inv1 20)" "$(ckpt $T/inv$np 20)" --rel 1e-5 --verbose 2>&1 | head -8)"
  fi
  # Same weights, so the same loss and top-1 over the same 250 images: one image is 0.4%
  # of top-1 and typically ~4e-3 of the mean loss; the log prints 4 decimals.
  if [ -n "${loss[$np]:-}" ] && [ -n "${loss[1]:-}" ] &&
     awk -v a="${loss[1]}" -v b="${loss[$np]}" -v p="${top1[1]}" -v q="${top1[$np]}" \
       'BEGIN { d = a - b; e = p - q; exit !(d <= 2e-4 && -d <= 2e-4 && e < 0.2 && -e < 0.2) }'; then
    ok "evaluation on $np ranks = on 1 rank (every test image once): loss ${loss[$np]} top1 ${top1[$np]}%"
  else
    bad "evaluation on $np ranks: loss ${loss[$np]:-?} top1 ${top1[$np]:-?}%, 1 rank: ${loss[1]:-?} ${top1[1]:-?}%"
  fi
done

# ---- (d) a rank killed with SIGKILL ends the job ----
SMALL=(configs/quickstart.ini --set train.seed=3 --set train.batch_size=32
  --set data.train_limit=320 --set data.test_limit=64 --set train.epochs=2 --set train.threads=1
  --set optim.lr=0.05 --set optim.reference_batch=32 --set output.log_every=5)
t0=$(date +%s.%N)
out=$(DTRAIN_FAULT_KILL=1:5 timeout 60 "${MPIRUN[@]}" -np 2 "$DTRAIN" "${SMALL[@]}" --set output.dir=$T/kill 2>&1)
rc=$?
secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && awk -v s="$secs" 'BEGIN { exit !(s <= 30) }'; then
  ok "rank 1 SIGKILLed before step 5: job ended with exit $rc after $secs s (start-up included)"
else
  bad "rank 1 SIGKILLed: exit $rc after $secs s (wanted non-zero within 30 s)" "$out"
fi

# Small datasets (IDX, 320 training and 64 test images of 28x28) that ranks reach through the
# same relative data.dir = data from different working directories: wd0 and wd1 differ in one
# pixel, wd2 has 32 more training images, wd_empty none at all.
"$PY" - "$T" <<'PYEOF'
import os, struct, sys
def write(d, n_train, change):
    os.makedirs(d, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", 64)):
        pixels = bytearray((i * 7 + i // 784) % 256 for i in range(n * 784))
        if change and prefix == "train":
            pixels[5 * 784 + 400] ^= 1
        with open(os.path.join(d, prefix + "-images-idx3-ubyte"), "wb") as f:
            f.write(struct.pack(">IIII", 0x803, n, 28, 28) + pixels)
        with open(os.path.join(d, prefix + "-labels-idx1-ubyte"), "wb") as f:
            f.write(struct.pack(">II", 0x801, n) + bytes(i % 10 for i in range(n)))
t = sys.argv[1]
write(t + "/wd0/data", 320, False)
write(t + "/wd1/data", 320, True)
write(t + "/wd2/data", 352, False)
os.makedirs(t + "/wd_empty")
PYEOF
CFGABS=$(pwd)/configs/quickstart.ini
DS=(--set train.seed=3 --set train.batch_size=32 --set data.dir=data --set train.epochs=1
  --set train.threads=1)

# ---- (e) a fatal error, or an input error, on one rank ends the job ----
t0=$(date +%s.%N)
out=$(timeout 60 "${MPIRUN[@]}" -np 3 "$TOOLS/allreduce_check" --fatal-rank 1 2>&1)
rc=$?
secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && printf '%s\n' "$out" | grep -q 'fatal: injected fatal error on rank 1' &&
   ! printf '%s\n' "$out" | grep -q 'barrier passed'; then
  ok "DT_FATAL on rank 1 of 3 while the others wait in a barrier: exit $rc after $secs s"
else
  bad "DT_FATAL on one rank (exit $rc after $secs s)" "$out"
fi
# Rank 1 alone cannot read its dataset (MPMD launch; the same configuration, but rank 1's
# working directory has no data/): every rank stops with exit 1, the message comes from
# rank 1, and rank 0 has not created the run directory.
out=$(timeout 60 "${MPIRUN[@]}" -np 1 --wdir $T/wd0 "$DTRAIN" "$CFGABS" "${DS[@]}" --set output.dir=$T/input : \
      -np 1 --wdir $T/wd_empty "$DTRAIN" "$CFGABS" "${DS[@]}" --set output.dir=$T/input 2>&1)
rc=$?
if [ $rc -eq 1 ] && printf '%s\n' "$out" | grep -q "^dtrain (rank 1): dataset file not found: .*data/train-images" &&
   [ ! -e $T/input ]; then
  ok "input error on rank 1 only: exit 1, rank 1's message, no run directory"
else
  bad "input error on rank 1 only (exit $rc, run directory $( [ -e $T/input ] && echo left || echo absent))" "$out"
fi

# ---- (f) preemption: SIGTERM on every rank, --resume, bit-identical end ----
# 10 steps per epoch, 2 epochs; checkpoints at the epoch ends (10, 20).
full=$T/full
out=$(timeout 300 "${MPIRUN[@]}" -np 2 "$DTRAIN" "${SMALL[@]}" --set output.dir=$full 2>&1)
[ $? -eq 0 ] && [ -f "$(ckpt $full 20)" ] && ok "uninterrupted -np 2 run of 20 steps" || bad "uninterrupted -np 2 run" "$out"
pre=$T/pre
out=$(DTRAIN_FAULT_SIGNAL=7 timeout 300 "${MPIRUN[@]}" -np 2 "$DTRAIN" "${SMALL[@]}" --set output.dir=$pre 2>&1)
rc=$?
# The signal comes before (0-based) step 7; that step completes: 8 steps are saved.
if [ $rc -eq 143 ] && [ "$(latest $pre)" = "$(ckpt $pre 8)" ] &&
   grep -q "stopped by a signal after step 8" $pre/log.txt; then
  ok "SIGTERM on both ranks before step 7: exit 143, checkpoint of step 8"
else
  bad "SIGTERM on both ranks (exit $rc, latest $(latest $pre))" "$out"
fi
cp -a $pre $T/pre1
out=$(timeout 300 "${MPIRUN[@]}" -np 2 "$DTRAIN" --resume $pre 2>&1)
rc=$?
cmp=$("$TOOLS/ckpt_compare" "$(ckpt $full 20)" "$(ckpt $pre 20)" --exact --optimizer 2>&1)
crc=$?
if [ $rc -eq 0 ] && [ $crc -eq 0 ]; then
  ok "--resume on 2 ranks: step 20 identical to the uninterrupted run ($cmp)"
else
  bad "--resume on 2 ranks (exit $rc)" "$out
$cmp"
fi
mcmp=$(metrics_equal $full/metrics.h5 $pre/metrics.h5 2>&1)
[ $? -eq 0 ] && ok "--resume on 2 ranks: metrics as the uninterrupted run's ($mcmp)" ||
  bad "--resume on 2 ranks: metrics differ" "$mcmp"

# ---- (g) resume on another world size: 1 rank x 2 micro-batches ----
out=$(timeout 300 "${MPIRUN[@]}" -np 1 "$DTRAIN" --resume $T/pre1 --set train.accum_steps=2 2>&1)
rc=$?
if [ $rc -eq 0 ] && printf '%s\n' "$out" | grep -q "checkpoint of 2 rank(s)"; then
  cmp=$("$TOOLS/ckpt_compare" "$(ckpt $full 20)" "$(ckpt $T/pre1 20)" --rel 1e-5 --optimizer 2>&1)
  if [ $? -eq 0 ]; then
    ok "resume of a 2-rank checkpoint on 1 rank x 2 micro-batches: $cmp"
  else
    bad "resume on 1 rank x 2 micro-batches" "$cmp"
  fi
else
  bad "resume on 1 rank x 2 micro-batches (exit $rc)" "$out"
fi

# ---- (h) every rank must run the same configuration and dataset ----
# expect_mismatch NAME PATTERN RUN_DIR MPIRUN-ARGS...: exit 1 within 30 s, exactly one
# "dtrain" line on stderr/stdout and it matches PATTERN, no run directory.
expect_mismatch() {
  local name=$1 pattern=$2 dir=$3 out rc secs t0
  shift 3
  t0=$(date +%s.%N)
  out=$(timeout 60 "${MPIRUN[@]}" "$@" 2>&1)
  rc=$?
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  local lines
  lines=$(printf '%s\n' "$out" | grep -c '^dtrain')
  if [ $rc -eq 1 ] && [ "$lines" -eq 1 ] && printf '%s\n' "$out" | grep -q -- "$pattern" &&
     awk -v s="$secs" 'BEGIN { exit !(s <= 30) }' && [ ! -e "$dir" ]; then
    ok "$name: exit 1 after $secs s: $(printf '%s\n' "$out" | grep '^dtrain')"
  else
    bad "$name (exit $rc after $secs s, $lines dtrain line(s), run directory $( [ -e "$dir" ] && echo left || echo absent), wanted /$pattern/)" "$out"
  fi
}
for change in train.epochs=3:2 train.seed=4:3 optim.lr=0.1:0.05 augment.hflip=false:true \
              train.batch_size=64:32 model.depth=8:20; do
  set_arg=${change%:*} key=${change%%=*} rank0=${change##*:}
  rank1=${set_arg#*=}
  run=$T/mismatch_$key
  expect_mismatch "$key differs on rank 1" \
    "^dtrain: the ranks run different configurations: $key = $rank0 on rank 0 but $rank1 on rank 1;" $run \
    -np 1 "$DTRAIN" "${SMALL[@]}" --set output.dir=$run : \
    -np 1 "$DTRAIN" "${SMALL[@]}" --set output.dir=$run --set "$set_arg"
done
run=$T/mismatch_three
expect_mismatch "train.seed differs on ranks 1 and 2 of 3" \
  "the ranks run different configurations: train.seed = 3 on rank 0 but 5 on ranks 1, 2;" $run \
  -np 1 "$DTRAIN" "${SMALL[@]}" --set output.dir=$run : \
  -np 2 "$DTRAIN" "${SMALL[@]}" --set output.dir=$run --set train.seed=5

run=$T/mismatch_pixel
expect_mismatch "one pixel of rank 1's training images differs" \
  "^dtrain: the ranks loaded different datasets: training images (CRC-32) [0-9a-f]* on rank 0, [0-9a-f]* on rank 1 (rank 1 differs from rank 0); data.dir data must hold" $run \
  -np 1 --wdir $T/wd0 "$DTRAIN" "$CFGABS" "${DS[@]}" --set output.dir=$run : \
  -np 1 --wdir $T/wd1 "$DTRAIN" "$CFGABS" "${DS[@]}" --set output.dir=$run
run=$T/mismatch_count
expect_mismatch "rank 1 has more training images" \
  "^dtrain: the ranks loaded different datasets: training images (count) 320 on rank 0, 352 on rank 1" $run \
  -np 1 --wdir $T/wd0 "$DTRAIN" "$CFGABS" "${DS[@]}" --set output.dir=$run : \
  -np 1 --wdir $T/wd2 "$DTRAIN" "$CFGABS" "${DS[@]}" --set output.dir=$run
# The same files in both directories train.
cp $T/wd0/data/* $T/wd1/data/
run=$T/same_data
out=$(timeout 120 "${MPIRUN[@]}" -np 1 --wdir $T/wd0 "$DTRAIN" "$CFGABS" "${DS[@]}" --set output.dir=$run : \
      -np 1 --wdir $T/wd1 "$DTRAIN" "$CFGABS" "${DS[@]}" --set output.dir=$run 2>&1)
rc=$?
[ $rc -eq 0 ] && [ -f "$(ckpt $run 10)" ] && ok "equal datasets in two directories: the run trains" ||
  bad "equal datasets in two directories (exit $rc)" "$out"
# --eval of that run from the two directories once one test pixel of wd1 differs: the ranks
# would evaluate different test splits; exit 1 naming the test images, and no --csv file.
"$PY" - "$T/wd1/data/t10k-images-idx3-ubyte" <<'PYEOF'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(16 + 3 * 784 + 200)
    b = f.read(1)
    f.seek(-1, 1)
    f.write(bytes([b[0] ^ 1]))
PYEOF
expect_mismatch "--eval: one pixel of rank 1's test images differs" \
  "^dtrain: the ranks loaded different datasets: test images (CRC-32) [0-9a-f]* on rank 0, [0-9a-f]* on rank 1 (rank 1 differs from rank 0); data.dir data must hold" $T/eval.csv \
  -np 1 --wdir $T/wd0 "$DTRAIN" --eval $run --csv $T/eval.csv : \
  -np 1 --wdir $T/wd1 "$DTRAIN" --eval $run --csv $T/eval.csv

# --eval with another evaluation batch on rank 1: the ranks' slices of the test split would
# not tile it; refused like a training run's mismatch, naming the key, and no --csv file.
expect_mismatch "--eval: train.eval_batch_size differs on rank 1" \
  "^dtrain: the ranks run different configurations: train.eval_batch_size = 256 on rank 0 but 50 on rank 1;" $T/eval_cfg.csv \
  -np 1 --wdir $T/wd0 "$DTRAIN" --eval $run --csv $T/eval_cfg.csv : \
  -np 1 --wdir $T/wd0 "$DTRAIN" --eval $run --csv $T/eval_cfg.csv --set train.eval_batch_size=50

# (i) One wait per step on 2 ranks (the cmocka program checks every step of both ranks).
SYNCS="$(dirname "$DTRAIN")/test_step_syncs"
if [ -x "$SYNCS" ]; then
  out=$(timeout 300 "${MPIRUN[@]}" -np 2 "$SYNCS" 2>&1)
  rc=$?
  passed=$(printf '%s\n' "$out" | grep -c '^\[  PASSED  \] 4 test(s)')
  if [ $rc -eq 0 ] && [ "$passed" -eq 2 ]; then
    ok "2 ranks: one wait for the device per step (test_step_syncs on both ranks)"
  else
    bad "2 ranks: test_step_syncs under mpirun (exit $rc, $passed of 2 ranks passed)" "$out"
  fi
else
  bad "test_step_syncs not found next to $DTRAIN"
fi

finish
