#!/usr/bin/env bash
# test_cross_device.sh: checkpoints move between the CUDA and CPU backends, and the NCCL path
# trains like the plain one. On a small synthetic CIFAR-10 set (written here), ResNet-preact-20,
# batch 32, 8 steps with a checkpoint every 4:
#   - a run on the GPU and one on the CPU from the same seed end within 1e-3 (relative norm per
#     tensor, weights, running statistics and momentum) of each other: the backends round
#     differently but compute the same training;
#   - GPU -> CPU: the GPU run's step-4 checkpoint resumed with --device cpu, and CPU -> GPU the
#     other way round, reach step 8 within the same 1e-3 of both plain runs;
#   - DT_NCCL=1 (the NCCL all-reduce with its bucket overlap, on one rank) ends within 1e-4 of
#     the plain GPU run (cuDNN picks algorithms by timing, so two GPU runs may round apart),
#     and says in its header that NCCL sums the gradients;
#   - DT_NCCL=1 with injected overflows at steps 3 and 6: both steps are skipped, the scale
#     halves twice (the injected infinity is not lost in an all-reduce running beside it);
#   - train.cuda_graphs=true (steps 3-8 replayed from one recording) ends within 1e-4 of the
#     plain GPU run, without falling back to op-by-op;
#   - GPU -> GPU: the GPU run's step-4 checkpoint resumed on the GPU reaches step 8 with
#     identical bytes (train.deterministic = true, the default: deterministic cuDNN algorithms,
#     the checkpoint's choices reused; the checkpoint holds them); the same with bf16;
#   - 3 epochs (train -> evaluate -> train ...) with graphs against op by op, fp32 and bf16: the
#     evaluation's bigger batch grows shared buffers (the upload staging, the 16-bit
#     operands a recording points into), so the step is recorded again after it (at least 2 recordings), and
#     the weights and every epoch's test accuracy agree with the op-by-op run.
# Exits 77 (skipped) when DTRAIN cannot start a CUDA backend.
# Usage: test_cross_device.sh DTRAIN   (ckpt_compare from $DTRAIN_TOOLS, else DTRAIN's
#        directory/tools or DTRAIN's directory)
set -u
source "$(dirname "$0")/../harness.sh"
DTRAIN=${1:-./dtrain}
need_tools ckpt_compare
harness_tmp cross

# CIFAR-10 binary files: 512 records of (label byte, 3072 pixel bytes) each.
DATA=$T/cifar
mkdir -p "$DATA"
for f in data_batch_1 data_batch_2 data_batch_3 data_batch_4 data_batch_5 test_batch; do
  for i in $(seq 0 511); do
    printf "\\x$(printf %02x $((i % 10)))"
    head -c 3072 /dev/urandom
  done >"$DATA/$f.bin"
done

CFG=(configs/quickstart.ini --set data.dataset=cifar10 --set "data.dir=$DATA" --set train.seed=3
  --set train.batch_size=32 --set optim.reference_batch=32 --set optim.lr=0.05
  --set data.train_limit=256 --set data.test_limit=64 --set train.max_steps=8
  --set output.checkpoint_steps=4 --set output.keep_last=0 --set train.threads=4)
close() { # NAME A B TOL
  local out
  out=$("$TOOLS/ckpt_compare" "$2" "$3" --rel "$4" --optimizer 2>&1)
  if [ $? -eq 0 ]; then ok "$1 ($out)"; else bad "$1" "$out"; fi
}

out=$("$DTRAIN" "${CFG[@]}" --device cuda --set output.dir=$T/gpu 2>&1)
rc=$?
if [ $rc -ne 0 ] && printf '%s\n' "$out" | grep -q "no CUDA device\|no CUDA backend"; then
  echo "SKIP: no CUDA backend or GPU: $(printf '%s\n' "$out" | tail -1)"
  exit 77
fi
if [ $rc -ne 0 ] || [ ! -f "$(ckpt $T/gpu 8)" ]; then
  bad "8 steps on the GPU (exit $rc)" "$out"
  finish
  exit 1
fi
ok "8 steps on the GPU"
out=$("$DTRAIN" "${CFG[@]}" --device cpu --set output.dir=$T/cpu 2>&1) || bad "8 steps on the CPU" "$out"
close "GPU and CPU runs agree at step 8" "$(ckpt $T/gpu 8)" "$(ckpt $T/cpu 8)" 1e-3

# GPU -> CPU and CPU -> GPU: resume from the other backend's step-4 checkpoint.
for way in gpu:cpu cpu:gpu; do
  from=${way%%:*} to=${way##*:}
  run=$T/$from-$to
  cp -r "$T/$from" "$run"
  rm -f "$(ckpt "$run" 8)"
  dev=$to
  [ "$to" = gpu ] && dev=cuda
  out=$("$DTRAIN" --resume "$run" --device $dev 2>&1)
  rc=$?
  if [ $rc -eq 0 ] && printf '%s\n' "$out" | grep -q "resuming from $(ckpt "$run" 4)"; then
    ok "$from checkpoint of step 4 resumed on the $to"
    close "$from -> $to agrees with the $to run at step 8" "$(ckpt "$run" 8)" "$(ckpt "$T/$to" 8)" 1e-3
    close "$from -> $to agrees with the $from run at step 8" "$(ckpt "$run" 8)" "$(ckpt "$T/$from" 8)" 1e-3
  else
    bad "$from -> $to resume (exit $rc)" "$out"
  fi
done

# GPU -> GPU resume, bit for bit (train.deterministic = true), fp32 and bf16.
exact() { # NAME A B
  local out
  out=$("$TOOLS/ckpt_compare" "$2" "$3" --exact --optimizer 2>&1)
  if [ $? -eq 0 ]; then ok "$1 ($out)"; else bad "$1" "$out"; fi
}
for prec in fp32 bf16; do
  base=$T/det-$prec
  if [ $prec = fp32 ]; then base=$T/gpu; fi
  if [ ! -d "$base" ]; then
    out=$("$DTRAIN" "${CFG[@]}" --device cuda --set train.precision=$prec --set output.dir=$base 2>&1) ||
      { bad "$prec: 8 steps on the GPU" "$out"; continue; }
  fi
  n=$(h5dump -H -d /backend/conv_algorithms "$(ckpt $base 4)" 2>/dev/null | grep -o 'DATASPACE *SIMPLE { ( [0-9]*' | grep -o '[0-9]*$')
  if [ "${n:-0}" -gt 0 ]; then ok "$prec: the checkpoint holds $n convolution algorithm choices"
  else bad "$prec: no /backend/conv_algorithms in $(ckpt $base 4)"; fi
  run=$T/det-$prec-resumed
  cp -r "$base" "$run"
  rm -f "$(ckpt "$run" 8)"
  out=$("$DTRAIN" --resume "$run" --device cuda 2>&1)
  rc=$?
  if [ $rc -eq 0 ] && [ -f "$(ckpt "$run" 8)" ]; then
    exact "$prec: GPU -> GPU resume at step 4 is byte-identical at step 8" "$(ckpt "$run" 8)" "$(ckpt "$base" 8)"
  else
    bad "$prec: GPU -> GPU resume (exit $rc)" "$out"
  fi
done
out=$("$DTRAIN" "${CFG[@]}" --device cuda --set train.deterministic=false --set output.dir=$T/fastest 2>&1)
if [ $? -eq 0 ]; then close "train.deterministic=false trains like the default" "$(ckpt $T/fastest 8)" "$(ckpt $T/gpu 8)" 1e-3
else bad "train.deterministic=false run" "$out"; fi

# The NCCL path on one rank.
out=$(DT_NCCL=1 "$DTRAIN" "${CFG[@]}" --device cuda --set output.dir=$T/nccl 2>&1)
rc=$?
if [ $rc -eq 0 ] && printf '%s\n' "$out" | grep -q "all-reduce: NCCL"; then
  ok "DT_NCCL=1: 8 steps with the NCCL all-reduce ($(printf '%s\n' "$out" | grep 'all-reduce: NCCL'))"
  close "NCCL path agrees with the plain GPU run" "$(ckpt $T/nccl 8)" "$(ckpt $T/gpu 8)" 1e-4
else
  bad "DT_NCCL=1 run (exit $rc)" "$out"
fi
# An injected overflow with NCCL: the infinity must survive the all-reduce of its bucket (it is
# written after the join), so that step is skipped and the scale halves, like on the CPU.
out=$(DTRAIN_FAULT_OVERFLOW=2,5 DT_NCCL=1 "$DTRAIN" "${CFG[@]}" --device cuda \
  --set train.loss_scale=dynamic --set output.dir=$T/nccl-overflow 2>&1)
n=$(printf '%s\n' "$out" | grep -c "gradients overflow at loss scale")
if [ "$n" -eq 2 ] && printf '%s\n' "$out" | grep -q "step 6: gradients overflow at loss scale 32768"; then
  ok "DT_NCCL=1: both injected overflows skipped their steps (scale 65536 -> 32768 -> 16384)"
else
  bad "DT_NCCL=1: injected overflows at steps 3 and 6 ($n seen)" "$out"
fi

# Replayed steps.
out=$("$DTRAIN" "${CFG[@]}" --device cuda --set train.cuda_graphs=true --set output.dir=$T/graphs 2>&1)
rc=$?
if [ $rc -eq 0 ] && ! printf '%s\n' "$out" | grep -q "could not be recorded"; then
  ok "train.cuda_graphs=true: 8 steps, 6 of them replayed"
  close "CUDA graph replay agrees with the plain GPU run" "$(ckpt $T/graphs 8)" "$(ckpt $T/gpu 8)" 1e-4
else
  bad "train.cuda_graphs=true run (exit $rc)" "$out"
fi

# Three epochs with evaluations between them (8 steps each, test batch 64 > 32).
EPOCHS=(--set train.max_steps=0 --set train.epochs=3 --set output.checkpoint_every=1)
for prec in fp32 bf16; do
  run() { "$DTRAIN" "${CFG[@]}" "${EPOCHS[@]}" --device cuda --set train.precision=$prec "$@" 2>&1; }
  out=$(run --set output.dir=$T/e3-$prec-plain) || { bad "$prec: 3 epochs op by op" "$out"; continue; }
  out=$(run --set train.cuda_graphs=true --set output.dir=$T/e3-$prec-graphs)
  rc=$?
  rec=$(printf '%s\n' "$out" | sed -n 's/.*replayed from \([0-9]*\) CUDA graph recordings.*/\1/p')
  if [ $rc -eq 0 ] && [ "${rec:-0}" -ge 2 ] && ! printf '%s\n' "$out" | grep -q "could not be recorded"; then
    ok "$prec: 3 epochs with graphs, recorded $rec times (again after an evaluation moved memory)"
  else
    bad "$prec: 3 epochs with graphs (exit $rc, ${rec:-no} recordings; expected >= 2)" "$out"
    continue
  fi
  close "$prec: 3 epochs, graphs agree with op by op" "$(ckpt $T/e3-$prec-graphs 24)" \
    "$(ckpt $T/e3-$prec-plain 24)" 1e-4
  a=$(h5col $T/e3-$prec-graphs/metrics.h5 /epoch/test_top1 | tr '\n' ' ')
  b=$(h5col $T/e3-$prec-plain/metrics.h5 /epoch/test_top1 | tr '\n' ' ')
  if [ -n "$a" ] && [ "$a" = "$b" ]; then ok "$prec: test accuracy of every epoch equal ($a)"
  else bad "$prec: test accuracy per epoch differs" "graphs: $a; op by op: $b"; fi
done

finish
