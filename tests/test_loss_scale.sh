#!/usr/bin/env bash
# test_loss_scale.sh: loss scaling (train.loss_scale) end to end on the CPU.
# - Exactness: with a power-of-two scale the loss gradient, every backward op and the unscaling
#   in the update commute with the scale, so fixed and dynamic scaling without overflow give
#   weights, running statistics and optimizer state identical byte for byte to an unscaled run.
# - Dynamic scaling: the scale doubles after loss_scale_growth good steps; a step whose
#   gradients overflow (injected: DTRAIN_FAULT_OVERFLOW) is skipped and halves the scale. The
#   per-step scale in metrics.h5, the epoch's skipped_steps, and the scale and good-step count
#   in the checkpoint are checked against the rule, simulated here independently.
# - Resume: a run stopped by SIGTERM and resumed continues with the checkpoint's scale and
#   count and ends identical to the uninterrupted run, attributes included.
# - Failure paths: a fixed scale with an overflow follows train.nonfinite (stop: exit 2); a
#   dynamic scale that keeps overflowing down to 2^-24 stops as diverged (exit 2).
# - fp16 (emulated on the CPU): a scale far too large (2^28) overflows for real in the rounded fp16
#   operands and backs off by itself, and the run trains on.
# Usage: test_loss_scale.sh DTRAIN  (tools from $DTRAIN_TOOLS, else DTRAIN's directory/tools)
set -u
source "$(dirname "$0")/harness.sh"
DTRAIN=${1:-./dtrain}
need_tools ckpt_compare
command -v h5dump >/dev/null || { echo "SKIP: h5dump (hdf5-tools) not installed"; exit 77; }
harness_tmp scale

# 320 images, batch 32: 10 steps per epoch, 2 epochs = 20 steps; checkpoints every 5 steps.
N=20
CFG=(configs/quickstart.ini --set train.seed=5 --set train.batch_size=32
  --set data.train_limit=320 --set data.test_limit=64 --set train.epochs=2 --set train.threads=1
  --set optim.lr=0.05 --set optim.reference_batch=32 --set output.log_every=1
  --set output.checkpoint_steps=5 --set output.keep_last=0)
# same NAME RUN: RUN's step-N checkpoint equals the unscaled reference byte for byte.
same() {
  local out
  out=$("$TOOLS/ckpt_compare" "$(ckpt "$REF" $N)" "$(ckpt "$2" $N)" --exact --optimizer 2>&1)
  if [ $? -eq 0 ]; then ok "$1: identical to the unscaled run ($out)"; else bad "$1" "$out"; fi
}
# simulate INIT GROWTH STEPS OVERFLOWS: the scale after each step, one per line, then
# "final SCALE GOOD" (the rule of loss_scale.h, written out again here).
simulate() {
  awk -v s="$1" -v g="$2" -v n="$3" -v ov=",$4," 'BEGIN {
    good = 0
    for (i = 0; i < n; i++) {
      if (index(ov, "," i ",")) { s /= 2; good = 0 }
      else if (++good >= g) { s *= 2; good = 0 }
      printf "%.17g\n", s
    }
    printf "final %.17g %d\n", s, good
  }'
}

# ---- the reference: no scaling ----
REF=$T/ref
out=$("$DTRAIN" "${CFG[@]}" --set train.loss_scale=off --set output.dir=$REF 2>&1)
if [ $? -ne 0 ] || [ ! -f "$(ckpt $REF $N)" ]; then
  bad "unscaled run of $N steps" "$out"
  finish
  exit 1
fi
ok "unscaled run of $N steps"

# ---- exactness ----
run=$T/fixed
out=$("$DTRAIN" "${CFG[@]}" --set train.loss_scale=fixed --set train.loss_scale_init=1024 \
  --set output.dir=$run 2>&1)
if [ $? -eq 0 ] && printf '%s\n' "$out" | grep -q "fixed loss scale 1024"; then
  same "fixed scale 1024" $run
else
  bad "fixed scale 1024 run" "$out"
fi

run=$T/dyn
out=$("$DTRAIN" "${CFG[@]}" --set train.loss_scale=dynamic --set train.loss_scale_init=256 \
  --set train.loss_scale_growth=4 --set output.dir=$run 2>&1)
if [ $? -eq 0 ]; then
  same "dynamic scale 256, x2 every 4 steps" $run
  want=$(simulate 256 4 $N "")
  got=$(h5col $run/metrics.h5 /steps/loss_scale)
  if [ "$(printf '%s\n' "$want" | grep -v final)" = "$got" ]; then
    ok "dynamic: metrics steps/loss_scale follows the rule (256 ... $(printf '%s\n' "$got" | tail -1))"
  else
    bad "dynamic: steps/loss_scale" "$(paste <(printf '%s\n' "$want") <(printf '%s\n' "$got"))"
  fi
else
  bad "dynamic scale run" "$out"
fi

# ---- overflows: skipped updates, halved scale ----
OV=5,6,13
run=$T/over
out=$(DTRAIN_FAULT_OVERFLOW=$OV "$DTRAIN" "${CFG[@]}" --set train.loss_scale=dynamic \
  --set train.loss_scale_init=256 --set train.loss_scale_growth=4 --set output.dir=$run 2>&1)
rc=$?
want=$(simulate 256 4 $N $OV)
if [ $rc -eq 0 ] && [ "$(printf '%s\n' "$out" | grep -c 'gradients overflow at loss scale')" -eq 3 ] &&
   printf '%s\n' "$out" | grep -q "step 6: gradients overflow at loss scale 512: update skipped, scale now 256"; then
  ok "overflow at steps 6, 7, 14: three skipped updates, reported with their scales"
else
  bad "overflow run (exit $rc)" "$out"
fi
got=$(h5col $run/metrics.h5 /steps/loss_scale)
if [ "$(printf '%s\n' "$want" | grep -v final)" = "$got" ]; then
  ok "overflow: steps/loss_scale halves at each overflow and regrows (ends at $(printf '%s\n' "$got" | tail -1))"
else
  bad "overflow: steps/loss_scale" "$(paste <(printf '%s\n' "$want") <(printf '%s\n' "$got"))"
fi
skips=$(h5col $run/metrics.h5 /epoch/skipped_steps | tr '\n' ' ')
if [ "$skips" = "2 1 " ]; then ok "overflow: epoch skipped_steps 2 and 1"; else bad "epoch skipped_steps: '$skips'"; fi
read -r _ fs fg <<<"$(printf '%s\n' "$want" | grep final)"
s=$(h5attr "$(ckpt $run $N)" loss_scale) g=$(h5attr "$(ckpt $run $N)" loss_scale_good_steps)
o=$(h5attr "$(ckpt $run $N)" optimizer_steps)
if [ "$(awk -v a="$s" -v b="$fs" 'BEGIN { print (a == b) }')" = 1 ] && [ "$g" = "$fg" ] && [ "$o" = $((N - 3)) ]; then
  ok "overflow: checkpoint holds loss_scale $s, good steps $g, $o optimizer steps"
else
  bad "overflow checkpoint: scale '$s' (want $fs), good '$g' (want $fg), optimizer steps '$o' (want $((N - 3)))"
fi

# ---- resume keeps the scale ----
res=$T/resume
out=$(DTRAIN_FAULT_OVERFLOW=$OV DTRAIN_FAULT_SIGNAL=11 "$DTRAIN" "${CFG[@]}" \
  --set train.loss_scale=dynamic --set train.loss_scale_init=256 --set train.loss_scale_growth=4 \
  --set output.dir=$res 2>&1)
rc=$?
if [ $rc -eq 143 ]; then
  out=$(DTRAIN_FAULT_OVERFLOW=$OV "$DTRAIN" --resume $res 2>&1)
  rc=$?
  cmp=$("$TOOLS/ckpt_compare" "$(ckpt $run $N)" "$(ckpt $res $N)" --exact --optimizer 2>&1)
  crc=$?
  a1="$(h5attr "$(ckpt $run $N)" loss_scale) $(h5attr "$(ckpt $run $N)" loss_scale_good_steps)"
  a2="$(h5attr "$(ckpt $res $N)" loss_scale) $(h5attr "$(ckpt $res $N)" loss_scale_good_steps)"
  if [ $rc -eq 0 ] && [ $crc -eq 0 ] && [ "$a1" = "$a2" ] &&
     [ "$(h5col $res/metrics.h5 /steps/loss_scale)" = "$(h5col $run/metrics.h5 /steps/loss_scale)" ]; then
    ok "SIGTERM after step 12 and --resume: identical weights, scale and count ($a2), same metrics"
  else
    bad "resume (exit $rc, compare $crc: $cmp; attributes '$a1' vs '$a2')" "$out"
  fi
else
  bad "SIGTERM run (exit $rc)" "$out"
fi

# ---- failure paths ----
out=$(DTRAIN_FAULT_OVERFLOW=3 "$DTRAIN" "${CFG[@]}" --set train.loss_scale=fixed \
  --set train.loss_scale_init=256 --set output.dir=$T/fixed_over 2>&1)
rc=$?
if [ $rc -eq 2 ] && printf '%s\n' "$out" | grep -q "non-finite gradient at step 4"; then
  ok "fixed scale and an overflow: train.nonfinite=stop stops at step 4 (exit 2)"
else
  bad "fixed scale overflow (exit $rc)" "$out"
fi
out=$(DTRAIN_FAULT_OVERFLOW=0,1,2,3,4,5,6,7 "$DTRAIN" "${CFG[@]}" --set train.loss_scale=dynamic \
  --set train.loss_scale_init=2e-07 --set output.dir=$T/diverged 2>&1)
rc=$?
if [ $rc -eq 2 ] && printf '%s\n' "$out" | grep -q "at every loss scale down to .*diverged"; then
  ok "overflow at every scale down to 2^-24: stops as diverged (exit 2)"
else
  bad "diverged (exit $rc)" "$out"
fi

# ---- fp16: a real overflow in the rounded operands ----
run=$T/fp16
out=$("$DTRAIN" "${CFG[@]}" --set train.precision=fp16 --set train.loss_scale_init=268435456 \
  --set output.dir=$run 2>&1)
rc=$?
n_over=$(printf '%s\n' "$out" | grep -c 'gradients overflow at loss scale')
last=$(h5col $run/metrics.h5 /steps/loss_scale | tail -1)
if [ $rc -eq 0 ] && printf '%s\n' "$out" | grep -q "precision: fp16 convolutions (emulated" &&
   [ "$n_over" -ge 1 ] && awk -v s="$last" 'BEGIN { exit !(s < 268435456 && s > 0) }' &&
   printf '%s\n' "$out" | grep -Eq "epoch 2/2 train loss [0-9.]+ "; then
  ok "fp16 (emulated) from scale 2^28: $n_over real overflows, scale backed off to $last, finite training loss"
else
  bad "fp16 overflow run (exit $rc, $n_over overflows, last scale '$last')" "$out"
fi

finish
