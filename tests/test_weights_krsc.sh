#!/usr/bin/env bash
# test_weights_krsc.sh: the storage order of convolution weights is invisible outside the
# backend. The CPU backend keeps them in KRSC order, the CUDA backend's, under
# DT_WEIGHTS_KRSC=1 (backend.h weights_krsc); checkpoints, --init, --resume and --eval (and
# --predict, which loads a checkpoint through the same dt_predictor_init) see logical OIHW.
#   1. a fixed run of 20 steps (ResNet-preact-20: 3x3 and 1x1 convolutions, SGD with
#      momentum) with the switch writes every checkpoint byte-identical to the run without it:
#      weights, running statistics and optimizer state (ckpt_compare --exact --optimizer),
#      and the same metrics;
#   2. --resume across the orders: a run stopped by SIGTERM without the switch and resumed
#      with it (and the other way round) ends identical to the uninterrupted run;
#   3. --init from a checkpoint of the other order trains as --init in the same order;
#   4. --eval of the final checkpoint prints and writes the same with and without it;
#   5. Adam (two state arrays) with the switch: byte-identical checkpoints too.
# Usage: test_weights_krsc.sh DTRAIN  (tools from $DTRAIN_TOOLS, else DTRAIN's directory/tools)
set -u
source "$(dirname "$0")/harness.sh"
DTRAIN=${1:-./dtrain}
need_tools ckpt_compare
harness_tmp weights-krsc

# 320 images, batch 32: 10 steps per epoch, 2 epochs = 20 steps; a checkpoint every 4 steps.
N=20
CFG=(configs/quickstart.ini --set train.seed=5 --set train.batch_size=32
  --set data.train_limit=320 --set data.test_limit=64 --set train.epochs=2 --set train.threads=1
  --set optim.lr=0.05 --set optim.reference_batch=32 --set output.log_every=3
  --set output.checkpoint_steps=4 --set output.keep_last=0)

# same NAME REF_DIR RUN_DIR STEP...: the run's checkpoints of those steps equal the
# reference's byte for byte (weights, statistics, optimizer state).
same() {
  local name=$1 ref=$2 run=$3 s out
  shift 3
  for s in "$@"; do
    out=$("$TOOLS/ckpt_compare" "$(ckpt "$ref" "$s")" "$(ckpt "$run" "$s")" --exact --optimizer 2>&1)
    if [ $? -eq 0 ]; then ok "$name: step $s identical ($out)"; else bad "$name: step $s" "$out"; fi
  done
}

# ---- 1. the same run in both orders ----
REF=$T/oihw
out=$(DT_WEIGHTS_KRSC=0 "$DTRAIN" "${CFG[@]}" --set output.dir=$REF 2>&1)
if [ $? -ne 0 ] || [ ! -f "$(ckpt $REF $N)" ]; then
  bad "run of $N steps in OIHW order" "$out"
  finish
  exit 1
fi
ok "run of $N steps in OIHW order"
KRSC=$T/krsc
out=$(DT_WEIGHTS_KRSC=1 "$DTRAIN" "${CFG[@]}" --set output.dir=$KRSC 2>&1)
if [ $? -eq 0 ]; then
  same "KRSC run" $REF $KRSC 4 12 $N
  out=$(metrics_equal "$REF/metrics.h5" "$KRSC/metrics.h5" 2>&1)
  [ $? -eq 0 ] && ok "KRSC run: metrics as the OIHW run's ($out)" || bad "KRSC run: metrics" "$out"
else
  bad "run of $N steps in KRSC order" "$out"
fi

# ---- 2. --resume across the orders ----
for from in 0 1; do
  to=$((1 - from))
  run=$T/resume$from
  out=$(DT_WEIGHTS_KRSC=$from DTRAIN_FAULT_SIGNAL=5 "$DTRAIN" "${CFG[@]}" --set output.dir=$run 2>&1)
  rc=$?
  if [ $rc -ne 143 ]; then
    bad "SIGTERM with DT_WEIGHTS_KRSC=$from (exit $rc)" "$out"
    continue
  fi
  out=$(DT_WEIGHTS_KRSC=$to "$DTRAIN" --resume $run 2>&1)
  if [ $? -eq 0 ]; then same "stopped with DT_WEIGHTS_KRSC=$from, resumed with $to" $REF $run $N
  else bad "--resume with DT_WEIGHTS_KRSC=$to" "$out"; fi
done

# ---- 3. --init from the other order's checkpoint ----
INIT=(configs/quickstart.ini --set train.seed=6 --set train.batch_size=32
  --set data.train_limit=128 --set data.test_limit=32 --set train.epochs=1 --set train.threads=1
  --set optim.reference_batch=32 --init "$(ckpt $REF 12)")
for k in 0 1; do
  out=$(DT_WEIGHTS_KRSC=$k "$DTRAIN" "${INIT[@]}" --set output.dir=$T/init$k 2>&1) ||
    bad "--init with DT_WEIGHTS_KRSC=$k" "$out"
done
same "--init from an OIHW checkpoint, KRSC against OIHW" $T/init0 $T/init1 4

# ---- 4. --eval ----
for k in 0 1; do
  DT_WEIGHTS_KRSC=$k "$DTRAIN" --eval "$(ckpt $REF $N)" --csv $T/eval$k.csv >$T/eval$k.out 2>&1 ||
    bad "--eval with DT_WEIGHTS_KRSC=$k" "$(cat $T/eval$k.out)"
done
if [ -s $T/eval0.csv ] && cmp -s $T/eval0.csv $T/eval1.csv &&
   diff <(grep -v 'compute\|threads\|seconds\|[0-9] s$' $T/eval0.out) \
        <(grep -v 'compute\|threads\|seconds\|[0-9] s$' $T/eval1.out) >/dev/null; then
  ok "--eval: the same report and CSV in both orders ($(grep -m1 -o 'top1 [0-9.]*%' $T/eval0.out))"
else
  bad "--eval differs between the orders" "$(diff $T/eval0.out $T/eval1.out; diff $T/eval0.csv $T/eval1.csv)"
fi

# ---- 5. Adam ----
ADAM=("${CFG[@]}" --set optim.name=adam --set optim.lr=0.001 --set train.epochs=1)
for k in 0 1; do
  out=$(DT_WEIGHTS_KRSC=$k "$DTRAIN" "${ADAM[@]}" --set output.dir=$T/adam$k 2>&1) ||
    bad "Adam run with DT_WEIGHTS_KRSC=$k" "$out"
done
same "Adam, KRSC against OIHW" $T/adam0 $T/adam1 8

finish
