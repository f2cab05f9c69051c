#!/usr/bin/env bash
# test_async_input.sh: the trainer's side of the GPU input pipeline, on the CPU. The test tool
# dtrain_async_input is dtrain with test scaffolding (tests/emulation/async_input.c): with
# DT_CPU_ASYNC_INPUT=1 its CPU backend offers the asynchronous-input ops (page-locked-style
# host buffers, prefetch copying the batch, upload taking the copy), so the
# trainer peeks at the loader's next batch and prefetches it while each step computes, as it
# does on a GPU.
# - A run of 2 epochs x 10 steps uploads 18 of its 20 training batches from prefetched copies
#   (the first batch of an epoch has no step before it), forgets none, frees every host buffer,
#   and ends byte-identical to a plain run (weights, running statistics, optimizer state): a
#   batch prefetched and then changed, or the wrong batch uploaded, would show.
# - Stopped by SIGTERM mid-epoch and resumed (both with prefetching): identical again.
# - --bench (its timed loop with data, then one batch stepped repeatedly after a loader
#   restart): the restart forgets the prefetch the first loop left behind.
# Usage: test_async_input.sh DTRAIN  (tools from $DTRAIN_TOOLS, else DTRAIN's directory/tools)
set -u
source "$(dirname "$0")/harness.sh"
DTRAIN=${1:-./dtrain}
need_tools ckpt_compare dtrain_async_input
ASYNC=$TOOLS/dtrain_async_input
harness_tmp async

N=20
CFG=(configs/quickstart.ini --set train.seed=9 --set train.batch_size=32
  --set data.train_limit=320 --set data.test_limit=64 --set train.epochs=2 --set train.threads=1
  --set optim.lr=0.05 --set optim.reference_batch=32 --set output.log_every=5
  --set output.keep_last=0 --set data.loader_threads=2)
report() { printf '%s\n' "$1" | grep 'emulated asynchronous input' | tail -1; }
same() { # NAME RUN
  local out
  out=$("$TOOLS/ckpt_compare" "$(ckpt "$REF" $N)" "$(ckpt "$2" $N)" --exact --optimizer 2>&1)
  if [ $? -eq 0 ]; then ok "$1: identical to the plain run ($out)"; else bad "$1" "$out"; fi
}

REF=$T/ref
out=$("$DTRAIN" "${CFG[@]}" --set output.dir=$REF 2>&1)
if [ $? -ne 0 ] || [ ! -f "$(ckpt $REF $N)" ]; then
  bad "plain run of $N steps" "$out"
  finish
  exit 1
fi
if printf '%s\n' "$out" | grep -q 'emulated asynchronous input'; then
  bad "the plain run reports emulated asynchronous input" "$out"
else
  ok "plain run of $N steps (no asynchronous input)"
fi

run=$T/async
out=$(DT_CPU_ASYNC_INPUT=1 "$ASYNC" "${CFG[@]}" --set output.dir=$run 2>&1)
rc=$?
line=$(report "$out")
if [ $rc -eq 0 ] && printf '%s\n' "$line" | grep -q ": 18 batches prefetched, 18 uploaded from their copies, 0 forgotten, 0 host buffers not freed"; then
  ok "prefetching run: ${line#*: }"
  same "prefetching run" $run
else
  bad "prefetching run (exit $rc): '$line'" "$out"
fi

run=$T/resume
out=$(DT_CPU_ASYNC_INPUT=1 DTRAIN_FAULT_SIGNAL=13 "$ASYNC" "${CFG[@]}" --set output.dir=$run 2>&1)
rc=$?
if [ $rc -eq 143 ]; then
  out=$(DT_CPU_ASYNC_INPUT=1 "$ASYNC" --resume $run 2>&1)
  rc=$?
  if [ $rc -eq 0 ]; then
    same "SIGTERM after step 14 and --resume, prefetching" $run
  else
    bad "--resume with prefetching (exit $rc)" "$out"
  fi
else
  bad "SIGTERM run with prefetching (exit $rc)" "$out"
fi

out=$(DT_CPU_ASYNC_INPUT=1 "$ASYNC" "${CFG[@]}" --bench 4 2>&1)
rc=$?
line=$(report "$out")
# 7 steps with data (3 warm-up + 4) prefetch their successors; the loader restart before the
# compute-only loop forgets the last one, which was never uploaded.
if [ $rc -eq 0 ] && printf '%s\n' "$line" | grep -q ": 7 batches prefetched, 6 uploaded from their copies, 1 forgotten, 0 host buffers not freed" &&
   printf '%s\n' "$out" | grep -q '^bench: '; then
  ok "--bench: ${line#*: }"
else
  bad "--bench with prefetching (exit $rc): '$line'" "$out"
fi

finish
