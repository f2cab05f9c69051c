#!/usr/bin/env bash
# test_tensorboard.sh: output.tensorboard, read back with TensorBoard's own reader
# (tools/dtrain_tools/tensorboard_check.py in the .venv-tb of scripts/install_deps.sh). A short
# run's events hold every column of metrics.h5 as a scalar with the same steps and values
# (float32), and the first batch as a PNG with the pixels of `dtrain --dump-batch`; the
# reader checks each record's CRC-32Cs and refuses a file with one byte changed; a run killed
# and resumed writes a second file whose SessionLog START makes TensorBoard drop the steps the
# killed run logged after its checkpoint, so the curves again equal metrics.h5; an events
# directory that cannot be written is a warning, not a failed run; without the key, no events.
# Skipped (77) without .venv-tb (scripts/install_deps.sh makes it) or /usr/bin/python3's h5py
# and Pillow.
# Usage: test_tensorboard.sh DTRAIN
set -u
source "$(dirname "$0")/harness.sh"
DTRAIN=${1:-./dtrain}
VENV=${DTRAIN_TB_VENV:-$(dirname "$0")/../.venv-tb}
PY=$VENV/bin/python
if ! "$PY" -c 'import tensorboard, h5py, PIL, numpy' 2>/dev/null; then
  echo "SKIP: $VENV lacks tensorboard (scripts/install_deps.sh), or h5py / Pillow (python3-h5py python3-pil)"
  exit 77
fi
harness_tmp tensorboard
check() { PYTHONPATH=$(dirname "$0")/../tools "$PY" -m dtrain_tools.tensorboard_check "$@" 2>&1; }

# 256 images, batch 32: 8 steps an epoch, 2 epochs; step rows at steps 3, 6, 8 of each epoch.
CFG=(configs/quickstart.ini --set train.seed=5 --set train.batch_size=32 --set data.train_limit=256
  --set data.test_limit=64 --set train.epochs=2 --set train.threads=1 --set output.log_every=3)

# ---- a fresh run: every scalar and the batch picture ----
run=$T/fresh
out=$("$DTRAIN" "${CFG[@]}" --set output.dir=$run --set output.tensorboard=true 2>&1)
if [ $? -ne 0 ]; then
  bad "run with output.tensorboard=true" "$out"
  finish
  exit 1
fi
files=("$run"/tensorboard/events.out.tfevents.*)
if [ ${#files[@]} -eq 1 ] && [ -s "${files[0]}" ]; then
  ok "one events file: ${files[0]#$run/}"
else
  bad "one events file in $run/tensorboard" "$(ls -la "$run/tensorboard" 2>&1)"
fi
out2=$("$DTRAIN" "${CFG[@]}" --dump-batch "$T/batch.png" 2>&1) || bad "--dump-batch" "$out2"
out=$(check "$run" --batch-png "$T/batch.png")
if [ $? -eq 0 ]; then ok "events equal metrics.h5, picture equal --dump-batch's ($out)"; else bad "events vs metrics.h5" "$out"; fi

# ---- CRC-32C: TensorBoard's reader checks both of every record ----
out=$(check --records "${files[0]}")
if [ $? -eq 0 ]; then ok "TensorBoard's record reader: $out"; else bad "record reader" "$out"; fi
cp -r "$run" "$T/corrupt"
cfile=("$T"/corrupt/tensorboard/events.out.tfevents.*)
size=$(stat -c %s "${cfile[0]}")
# One byte two thirds into the file: inside some record's length, CRC or data.
/usr/bin/python3 -c '
import sys
p, at = sys.argv[1], int(sys.argv[2])
b = bytearray(open(p, "rb").read()); b[at] ^= 0x20; open(p, "wb").write(bytes(b))' "${cfile[0]}" $((size * 2 / 3))
out=$(check --records "${cfile[0]}")
if [ $? -ne 0 ] && printf '%s' "$out" | grep -q "crc32 check"; then
  ok "one changed byte at $((size * 2 / 3)) of $size: refused by the reader ($out)"
else
  bad "a changed byte is detected by TensorBoard's reader" "$out"
fi
out=$(check "$T/corrupt")
if [ $? -ne 0 ]; then ok "the corrupted run no longer matches metrics.h5"; else bad "corrupted events still match metrics.h5" "$out"; fi

# ---- killed and resumed: the steps after the checkpoint appear once ----
run=$T/resumed
out=$(DTRAIN_FAULT_KILL=0:7 "$DTRAIN" "${CFG[@]}" --set output.dir=$run --set output.tensorboard=true \
  --set output.checkpoint_steps=4 2>&1)
rc=$?
[ $rc -eq 137 ] || bad "SIGKILL before step 8 (exit $rc)" "$out"
out=$("$DTRAIN" --resume "$run" 2>&1)
rc=$?
files=($(ls "$run"/tensorboard/events.out.tfevents.* | sort))
if [ $rc -eq 0 ] && [ ${#files[@]} -eq 2 ]; then
  ok "resumed after SIGKILL at step 7: a second events file"
else
  bad "resume (exit $rc, ${#files[@]} events files)" "$out"
fi
out=$(check "$run")
if [ $? -eq 0 ]; then ok "resumed run: events equal metrics.h5 ($out)"; else bad "resumed run: events vs metrics.h5" "$out"; fi

# ---- an events directory that cannot be written: a warning, the run goes on ----
run=$T/blocked
mkdir -p "$run"
out=$("$DTRAIN" "${CFG[@]}" --set output.dir=$run --set output.tensorboard=true \
  --set train.epochs=1 2>&1 </dev/null)
rm -rf "$run/tensorboard"
echo "not a directory" >"$run/tensorboard"
out=$("$DTRAIN" --resume "$run" --set train.epochs=2 2>&1)
rc=$?
if [ $rc -eq 0 ] && printf '%s\n' "$out" | grep -q "warning: TensorBoard events file .*run goes on" &&
   [ "$(h5col "$run/metrics.h5" /epoch/epoch | wc -l)" -eq 2 ]; then
  ok "unwritable events directory: a warning, the run finished (exit 0, 2 epoch rows)"
else
  bad "unwritable events directory (exit $rc)" "$out"
fi

# ---- off by default ----
run=$T/off
out=$("$DTRAIN" "${CFG[@]}" --set output.dir=$run --set train.epochs=1 2>&1)
if [ $? -eq 0 ] && [ ! -e "$run/tensorboard" ]; then ok "output.tensorboard=false: no events"; else bad "default run" "$out"; fi

finish
