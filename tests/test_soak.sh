#!/usr/bin/env bash
# test_soak.sh: durability over many interruptions. A 2-rank training run is interrupted
# SOAK_CYCLES times (default 4; the full soak is SOAK_CYCLES=24), each time at a step drawn
# from SOAK_SEED (default 1, so a failure replays exactly): SIGKILL of one rank (the job dies,
# the steps since the last checkpoint are lost) or SIGTERM on every rank (exit 143 with a
# checkpoint of the steps done), alternating at random, and resumed with --resume after each.
# The end must equal an uninterrupted run of the same configuration: the final weights,
# batch-norm statistics and optimizer state byte for byte (ckpt_compare --exact --optimizer),
# and the metrics file: every epoch row (all columns but the timings seconds and
# images_per_s) and every step row (all but images_per_s).
# Usage: [SOAK_CYCLES=N] [SOAK_SEED=S] test_soak.sh DTRAIN  (tools as in test_resume.sh)
# Exit 77 (skipped) without mpirun or with a single-process (-DDT_MPI=OFF) build.
set -u
source "$(dirname "$0")/harness.sh"
DTRAIN=${1:-./dtrain}
CYCLES=${SOAK_CYCLES:-4}
SEED=${SOAK_SEED:-1}
if ! command -v mpirun >/dev/null 2>&1; then
  echo "skipped: mpirun not found"
  exit 77
fi
need_tools ckpt_compare allreduce_check
MPIRUN=(mpirun -np 2)
if mpirun --version 2>&1 | grep -q 'Open MPI'; then
  MPIRUN+=(--oversubscribe)
  [ "$(id -u)" -eq 0 ] && MPIRUN+=(--allow-run-as-root)
fi
harness_tmp soak
if "${MPIRUN[@]}" "$TOOLS/allreduce_check" 2>&1 | grep -q '^allreduce_check: 1 rank(s)'; then
  echo "skipped: this build's comm is single-process (-DDT_MPI=OFF)"
  exit 77
fi
step_of() { local b; b=$(basename "$1" .h5); echo $((10#${b#step_})); }

# 320 images in global batches of 32: 10 steps per epoch. A checkpoint every K = 2 steps
# (and at every epoch end), the last 3 kept. Each cycle moves at least one checkpoint on and
# at most 5 steps, so 5 x CYCLES steps leave room for every interruption.
K=2
STEPS=$(( (5 * CYCLES + 2 + 9) / 10 * 10 ))
CFG=(configs/quickstart.ini --set model.depth=8 --set train.seed=5 --set train.batch_size=32
  --set data.train_limit=320 --set data.test_limit=64 --set train.epochs=$((STEPS / 10))
  --set train.threads=1 --set optim.lr=0.05 --set optim.reference_batch=32
  --set output.log_every=1 --set output.checkpoint_steps=$K --set output.keep_last=3)
echo "soak: $CYCLES interruptions of a 2-rank run of $STEPS steps, seed $SEED"

REF=$T/ref
out=$(timeout 900 "${MPIRUN[@]}" "$DTRAIN" "${CFG[@]}" --set output.dir=$REF 2>&1)
if [ $? -ne 0 ] || [ ! -f "$(ckpt $REF $STEPS)" ]; then
  bad "uninterrupted 2-rank run of $STEPS steps" "$out"
  finish
  exit 1
fi
ok "uninterrupted 2-rank run of $STEPS steps"

# draw N: R, uniform in [0, N), from the seeded sequence (high bits: bash's low bits repeat).
RANDOM=$SEED
draw() { R=$(( (RANDOM >> 5) % $1 )); }
run=$T/soak
cur=0       # steps in the latest checkpoint (0: none yet)
kills=0 terms=0
for ((c = 1; c <= CYCLES; c++)); do
  # The first checkpoint after cur is complete before any step after it starts.
  next=$(( (cur / K + 1) * K ))
  draw $K
  s=$(( next + 1 + R ))
  if [ $cur -eq 0 ]; then args=("${CFG[@]}" --set output.dir=$run); else args=(--resume $run); fi
  draw 2
  if ((R)); then
    draw 2
    rank=$R
    out=$(DTRAIN_FAULT_KILL=$rank:$s timeout 900 "${MPIRUN[@]}" "$DTRAIN" "${args[@]}" 2>&1)
    rc=$?
    got=$(latest $run)
    got=${got:+$(step_of "$got")}
    # Killed right after a checkpoint step, rank 0 may still have been writing it.
    want=$(( s / K * K ))
    if [ $rc -ne 0 ] && [ $rc -ne 124 ] &&
       { [ "$got" = "$want" ] || { [ $((s % K)) -eq 0 ] && [ "$got" = "$((want - K))" ]; }; }; then
      kills=$((kills + 1))
      echo "     cycle $c: SIGKILL rank $rank before step $s (from $cur): exit $rc, resume from $got"
    else
      bad "cycle $c: SIGKILL rank $rank before step $s (from step $cur): exit $rc, latest ${got:-none}, wanted $want" "$out"
      break
    fi
  else
    out=$(DTRAIN_FAULT_SIGNAL=$s timeout 900 "${MPIRUN[@]}" "$DTRAIN" "${args[@]}" 2>&1)
    rc=$?
    got=$(latest $run)
    got=${got:+$(step_of "$got")}
    if [ $rc -eq 143 ] && [ "$got" = "$((s + 1))" ]; then
      terms=$((terms + 1))
      echo "     cycle $c: SIGTERM before step $s (from $cur): exit 143, resume from $got"
    else
      bad "cycle $c: SIGTERM before step $s (from step $cur): exit $rc, latest ${got:-none}, wanted $((s + 1))" "$out"
      break
    fi
  fi
  if [ "$got" -le "$cur" ]; then
    bad "cycle $c: no progress (latest checkpoint $got, before $cur)"
    break
  fi
  cur=$got
done
[ $((kills + terms)) -eq $CYCLES ] &&
  ok "$CYCLES interruptions ($kills SIGKILL, $terms SIGTERM), each resumable from a later checkpoint"

out=$(timeout 900 "${MPIRUN[@]}" "$DTRAIN" --resume $run 2>&1)
rc=$?
if [ $rc -ne 0 ] || [ ! -f "$(ckpt $run $STEPS)" ]; then
  bad "final --resume to step $STEPS (exit $rc)" "$out"
  finish
  exit 1
fi
ok "final --resume to step $STEPS"

cmp=$("$TOOLS/ckpt_compare" "$(ckpt $REF $STEPS)" "$(ckpt $run $STEPS)" --exact --optimizer 2>&1)
if [ $? -eq 0 ]; then
  ok "weights, running statistics and optimizer state identical to the uninterrupted run ($cmp)"
else
  bad "final checkpoint differs from the uninterrupted run" "$cmp"
fi

out=$(metrics_equal "$REF/metrics.h5" "$run/metrics.h5") &&
  ok "metrics equal to the uninterrupted run, all columns but timings ($out)" ||
  BAD_LINES=40 bad "metrics differ from the uninterrupted run" "$out"

finish "seed $SEED"
