#!/usr/bin/env bash
# test_resume.sh: durability of a single-process run. An uninterrupted run of N steps is the
# reference; a run killed with SIGKILL (losing the steps since its last checkpoint), one
# stopped by SIGTERM (raised by the fault hook, and one sent from outside) and one killed in
# the middle of writing a checkpoint must all, after --resume, end with the same weights,
# batch-norm statistics and optimizer state byte for byte, and the same metrics: every epoch
# row (but seconds and images/s) and every step row (but images/s) exactly. Then bad
# checkpoints: --resume of a run whose latest checkpoint is truncated, from another model, of
# a newer format version, with a value out of its range or at odds with config.ini, a
# non-finite or negative-variance tensor, a link in place of a tensor or flipped bits in
# tensor data, and --init with a mismatched checkpoint, are refused with one message naming
# the file and the problem, exit 1, and the run directory left exactly as it was. A
# checkpoint of format 1 (no checksums, no metrics state) still resumes. The same run twice
# with SOURCE_DATE_EPOCH set writes checkpoints identical byte for byte, and every file a run
# replaces (config.ini, checkpoints) is fsync'ed, renamed and its directory fsync'ed (strace).
# Usage: test_resume.sh DTRAIN  (tools from $DTRAIN_TOOLS, else DTRAIN's directory/tools)
set -u
source "$(dirname "$0")/harness.sh"
DTRAIN=${1:-./dtrain}
need_tools ckpt_compare ckpt_patch ckpt_reseal
harness_tmp resume

# 320 images, batch 32: 10 steps per epoch, 2 epochs = 20 steps. A checkpoint every 4 steps
# and at each epoch end (steps 4, 8, 10, 12, 16, 20), all kept. Step rows every 3 steps of an
# epoch (3, 6, 9, 10), so that most checkpoints fall inside a window of the step rows.
N=20
CFG=(configs/quickstart.ini --set train.seed=11 --set train.batch_size=32
  --set data.train_limit=320 --set data.test_limit=64 --set train.epochs=2 --set train.threads=1
  --set optim.lr=0.05 --set optim.reference_batch=32 --set output.log_every=3
  --set output.checkpoint_steps=4 --set output.keep_last=0)
PY=/usr/bin/python3
# compare_final NAME RUN_DIR: the run's step-N checkpoint equals the reference byte for byte,
# and so do its metrics (compare_metrics).
compare_final() {
  local out
  out=$("$TOOLS/ckpt_compare" "$(ckpt "$REF" $N)" "$(ckpt "$2" $N)" --exact --optimizer 2>&1)
  if [ $? -eq 0 ]; then ok "$1: step $N identical to the uninterrupted run ($out)"; else bad "$1" "$out"; fi
  compare_metrics "$1" "$2"
}

# compare_metrics NAME RUN_DIR: the run's metrics.h5 holds the reference's rows (harness.sh).
compare_metrics() {
  local out
  out=$(metrics_equal "$REF/metrics.h5" "$2/metrics.h5" 2>&1)
  if [ $? -eq 0 ]; then ok "$1: metrics as the uninterrupted run's ($out)"; else bad "$1: metrics differ" "$out"; fi
}

# ---- the reference: N steps in one go ----
REF=$T/ref
out=$("$DTRAIN" "${CFG[@]}" --set output.dir=$REF 2>&1)
if [ $? -ne 0 ] || [ ! -f "$(ckpt $REF $N)" ]; then
  bad "uninterrupted run of $N steps" "$out"
  finish
  exit 1
fi
ok "uninterrupted run of $N steps"

# ---- SIGKILL: the steps after the last checkpoint are lost and recomputed ----
run=$T/kill
out=$(DTRAIN_FAULT_KILL=0:14 "$DTRAIN" "${CFG[@]}" --set output.dir=$run 2>&1)
rc=$?
if [ $rc -eq 137 ] && [ "$(latest $run)" = "$(ckpt $run 12)" ]; then
  ok "SIGKILL before step 14: exit 137, latest checkpoint step 12 (2 steps lost)"
else
  bad "SIGKILL before step 14 (exit $rc, latest $(latest $run))" "$out"
fi
out=$("$DTRAIN" --resume $run 2>&1)
rc=$?
if [ $rc -eq 0 ] && printf '%s\n' "$out" | grep -q "resuming from $(ckpt $run 12): .*step 12"; then
  ok "--resume after SIGKILL starts from step 12"
  compare_final "resume after SIGKILL" $run
else
  bad "--resume after SIGKILL (exit $rc)" "$out"
fi

# ---- SIGTERM from the fault hook: exit 143 with a checkpoint of the steps done ----
run=$T/term
out=$(DTRAIN_FAULT_SIGNAL=5 "$DTRAIN" "${CFG[@]}" --set output.dir=$run 2>&1)
rc=$?
# The signal arrives before (0-based) step 5; that step completes, so 6 steps are saved.
if [ $rc -eq 143 ] && [ "$(latest $run)" = "$(ckpt $run 6)" ] &&
   printf '%s\n' "$out" | grep -q "stopped by a signal after step 6.*--resume $run"; then
  ok "SIGTERM before step 5: exit 143, checkpoint of step 6, resume hint"
else
  bad "SIGTERM before step 5 (exit $rc, latest $(latest $run))" "$out"
fi
out=$("$DTRAIN" --resume $run 2>&1)
if [ $? -eq 0 ]; then compare_final "resume after SIGTERM" $run; else bad "--resume after SIGTERM" "$out"; fi

# ---- SIGTERM in the last step of an epoch: resumed at the boundary, before its evaluation ----
run=$T/boundary
out=$(DTRAIN_FAULT_SIGNAL=9 "$DTRAIN" "${CFG[@]}" --set output.dir=$run 2>&1)
rc=$?
[ $rc -eq 143 ] && [ "$(latest $run)" = "$(ckpt $run 10)" ] ||
  bad "SIGTERM in the last step of epoch 1 (exit $rc, latest $(latest $run))" "$out"
out=$("$DTRAIN" --resume $run 2>&1)
rc=$?
ref_line=$(grep -o '^epoch 1/2 train loss .* | test loss [0-9.]* top1 [0-9.]*% top5 [0-9.]*%' $REF/log.txt)
if [ $rc -eq 0 ] && [ -n "$ref_line" ] && printf '%s\n' "$out" | grep -qF "$ref_line"; then
  ok "resumed at an epoch boundary: epoch 1 trained and evaluated as uninterrupted ($ref_line)"
  compare_final "resume at an epoch boundary" $run
else
  bad "resume at an epoch boundary (exit $rc, wanted: $ref_line)" "$out"
fi

# ---- a run started over with output.overwrite does not keep the old run's checkpoints ----
run=$T/over
cp -a $REF $run
out=$("$DTRAIN" "${CFG[@]}" --set output.dir=$run --set output.overwrite=true --set train.max_steps=3 2>&1)
if [ $? -eq 0 ] && [ "$(ls $run/checkpoints)" = "step_000000003.h5" ]; then
  ok "output.overwrite removes the replaced run's checkpoints (left: step_000000003.h5)"
else
  bad "output.overwrite left the replaced run's checkpoints: $(ls $run/checkpoints | tr '\n' ' ')" "$out"
fi

# ---- checkpoints are reproducible byte for byte ----
# The same run twice in the same directory (a checkpoint holds the config text, which names
# it) with SOURCE_DATE_EPOCH fixing the 'created' stamp writes the same bytes: no object
# modification times, nothing else of the moment. The second run starts a second later, so a
# stamp of the clock would differ.
run=$T/repro
REPRO=(--set output.dir=$run --set output.overwrite=true --set train.epochs=1)
out=$(SOURCE_DATE_EPOCH=0 "$DTRAIN" "${CFG[@]}" "${REPRO[@]}" 2>&1) && mv $run/checkpoints $T/repro_first
rc1=$?
sleep 1
out2=$(SOURCE_DATE_EPOCH=0 "$DTRAIN" "${CFG[@]}" "${REPRO[@]}" 2>&1)
rc2=$?
first=$(cd $T/repro_first 2>/dev/null && ls step_*.h5 | tr '\n' ' ')
second=$(cd $run/checkpoints 2>/dev/null && ls step_*.h5 | tr '\n' ' ')
differ=""
for f in $first; do cmp -s $T/repro_first/$f $run/checkpoints/$f || differ="$differ $f"; done
if [ $rc1 -eq 0 ] && [ $rc2 -eq 0 ] && [ "$first" = "step_000000004.h5 step_000000008.h5 step_000000010.h5 " ] &&
   [ "$second" = "$first" ] && [ -z "$differ" ]; then
  ok "the same run twice with SOURCE_DATE_EPOCH=0: checkpoints ${first}identical byte for byte"
else
  bad "reproducible checkpoints (exit $rc1/$rc2; first run: $first; second run: $second; differ:$differ)" "$out$out2"
fi

# ---- every replaced file is durable: fsync'ed, renamed, its directory fsync'ed ----
# Traced with strace (skipped where it is missing or not permitted): after each rename of a
# temporary file over config.ini or a checkpoint, the directory holding it is opened and
# fsync'ed, so the rename survives a power failure; before it, the temporary file is fsync'ed.
if strace -o /dev/null true 2>/dev/null; then
  run=$T/durable
  out=$(strace -o $T/durable.trace -e trace=openat,fsync,rename,close \
    "$DTRAIN" "${CFG[@]}" --set output.dir=$run --set train.max_steps=1 2>&1)
  rc=$?
  verdict=$(/usr/bin/python3 - "$T/durable.trace" "$run" <<'PY'
import os, re, sys
trace, run = sys.argv[1], sys.argv[2]
fds, synced, renames, problems = {}, [], [], []
for line in open(trace):
    m = re.match(r'openat\(AT_FDCWD, "([^"]*)", [^)]*\) = (\d+)', line)
    if m: fds[m.group(2)] = m.group(1); continue
    m = re.match(r'fsync\((\d+)\) += 0', line)
    if m: synced.append(fds.get(m.group(1), '?')); continue
    m = re.match(r'rename\("([^"]*)", "([^"]*)"\) += 0', line)
    if m: renames.append((m.group(1), m.group(2), len(synced)))
targets = []
for tmp, path, at in renames:
    if not path.startswith(run): continue
    targets.append(os.path.relpath(path, run))
    if tmp not in synced[:at]: problems.append(f"{tmp} not fsync'ed before its rename")
    if os.path.dirname(path) not in synced[at:]:
        problems.append(f"directory of {os.path.relpath(path, run)} not fsync'ed after the rename")
want = ["config.ini", "checkpoints/step_000000001.h5"]
if sorted(targets) != sorted(want): problems.append(f"renamed: {targets}, wanted {want}")
print("; ".join(problems) if problems else "ok " + ", ".join(sorted(targets)))
PY
)
  if [ $rc -eq 0 ] && [ "${verdict#ok }" != "$verdict" ]; then
    ok "durable replacement (strace): ${verdict#ok }: temporary file fsync'ed, renamed, directory fsync'ed"
  else
    bad "durable replacement (exit $rc): $verdict" "$out"
  fi
else
  echo "skip durable replacement: strace is missing or not permitted here"
fi

# ---- SIGTERM sent from outside while the run is going ----
run=$T/extern
"$DTRAIN" "${CFG[@]}" --set output.dir=$run >$T/extern.out 2>&1 &
pid=$!
for _ in $(seq 600); do
  grep -q 'step 3/10' $run/log.txt 2>/dev/null && break
  kill -0 $pid 2>/dev/null || break
  sleep 0.05
done
kill -TERM $pid 2>/dev/null
wait $pid
rc=$?
if [ $rc -eq 143 ] && [ -n "$(latest $run)" ]; then
  ok "external SIGTERM: exit 143 with $(basename "$(latest $run)")"
  out=$("$DTRAIN" --resume $run 2>&1)
  if [ $? -eq 0 ]; then compare_final "resume after external SIGTERM" $run; else bad "--resume after external SIGTERM" "$out"; fi
else
  bad "external SIGTERM (exit $rc, wanted 143)" "$(cat $T/extern.out)"
fi

# ---- SIGKILL in the middle of writing a checkpoint ----
run=$T/ckptkill
out=$(DTRAIN_FAULT_SIGNAL=3 "$DTRAIN" "${CFG[@]}" --set output.dir=$run 2>&1)
rc=$?
[ $rc -eq 143 ] && [ "$(latest $run)" = "$(ckpt $run 4)" ] || bad "stop at step 4 before the checkpoint kill (exit $rc)" "$out"
sum4=$(sha256sum "$(ckpt $run 4)")
# The resumed run's first checkpoint (step 8) dies halfway through its temporary file.
out=$(DTRAIN_FAULT_CHECKPOINT=kill "$DTRAIN" --resume $run 2>&1)
rc=$?
partial=$(ls -a $run/checkpoints | grep -c '^\.step_000000008\.h5\.tmp\.')
if [ $rc -eq 137 ] && [ "$(latest $run)" = "$(ckpt $run 4)" ] && [ "$partial" -eq 1 ] &&
   [ "$(sha256sum "$(ckpt $run 4)")" = "$sum4" ]; then
  ok "SIGKILL while writing checkpoint 8: exit 137, partial temporary file only, step 4 unchanged"
else
  bad "SIGKILL while writing a checkpoint (exit $rc, latest $(latest $run), $partial partial file(s))" "$out"
fi
out=$("$DTRAIN" --resume $run 2>&1)
rc=$?
if [ $rc -eq 0 ] && printf '%s\n' "$out" | grep -q "resuming from $(ckpt $run 4)"; then
  compare_final "resume from the checkpoint before the interrupted write" $run
  partial=$(ls -a $run/checkpoints | grep -c '\.tmp\.')
  if [ "$partial" -eq 0 ] && grep -q "resuming from $(ckpt $run 4)" $run/log.txt; then
    ok "the resumed run removed the killed write's temporary file and logged where it resumed from"
  else
    bad "after the resume: $partial temporary file(s) left; log.txt: $(grep -c 'resuming from' $run/log.txt) resume line(s)"
  fi
else
  bad "--resume after a killed checkpoint write (exit $rc)" "$out"
fi

# ---- bad checkpoints are refused and leave the run directory as it was ----
# A finished-early run to copy: checkpoints 4 and 8, exit 143.
base=$T/base
DTRAIN_FAULT_SIGNAL=7 "$DTRAIN" "${CFG[@]}" --set output.dir=$base >/dev/null 2>&1
[ "$(latest $base)" = "$(ckpt $base 8)" ] || bad "base run for the bad-checkpoint cases" "$(ls -R $base)"
# A checkpoint of another model (ResNet-preact-8: stages of one block instead of three).
other=$T/other
"$DTRAIN" "${CFG[@]}" --set output.dir=$other --set model.depth=8 --set train.max_steps=1 >/dev/null 2>&1
# And one of the same depth with other widths (same names, other shapes).
wide=$T/wide
"$DTRAIN" "${CFG[@]}" --set output.dir=$wide --set model.initial_channels=32 --set train.max_steps=1 >/dev/null 2>&1

# expect_refusal NAME PATTERN DIR ARGS...: exit 1, exactly one line on stderr matching
# PATTERN, no crash, and DIR unchanged (listing, sizes, mtimes, checksums).
expect_refusal() {
  local name=$1 pattern=$2 dir=$3
  shift 3
  local before after err rc
  before=$(snapshot "$dir")
  err=$("$DTRAIN" "$@" 2>&1 >/dev/null)
  rc=$?
  after=$(snapshot "$dir")
  if [ $rc -eq 1 ] && [ "$(printf '%s\n' "$err" | wc -l)" -eq 1 ] &&
     printf '%s' "$err" | grep -q -- "$pattern" && [ "$before" = "$after" ]; then
    ok "$name: $err"
  else
    [ "$before" = "$after" ] || err="$err
(the run directory changed: $(diff <(echo "$before") <(echo "$after") | head -5))"
    bad "$name (exit $rc, wanted 1 and /$pattern/)" "$err"
  fi
}

run=$T/truncated
cp -a $base $run
f=$(ckpt $run 8)
truncate -s $(($(stat -c %s $f) / 2)) $f
expect_refusal "--resume with a truncated latest checkpoint" \
  "checkpoint $f: .*truncated or corrupt" $run --resume $run

# The seal (a whole-file CRC-32 in the user block, checked before HDF5 reads the file): bytes
# of HDF5's own metadata flipped (its superblock and root object header, right after the
# 512-byte user block: corruption there can crash HDF5 itself), one byte cut off the end, and
# the same flips given to --init. The file is never handed to HDF5.
flip_bytes() { # FILE OFFSET COUNT: invert COUNT bytes from OFFSET
  "$PY" - "$@" <<'PYEOF'
import sys
path, off, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, "r+b") as f:
    f.seek(off)
    b = bytes(x ^ 0xFF for x in f.read(n))
    f.seek(off)
    f.write(b)
PYEOF
}
run=$T/sealflip
cp -a $base $run
f=$(ckpt $run 8)
flip_bytes $f 520 16 && flip_bytes $f 600 8
expect_refusal "--resume with flipped bytes in HDF5's superblock and object header" \
  "checkpoint $f: the file's checksum does not match (truncated or corrupt)" $run --resume $run
expect_refusal "--init with flipped bytes in HDF5's superblock and object header" \
  "checkpoint $f: the file's checksum does not match (truncated or corrupt)" $run \
  "${CFG[@]}" --set output.dir=$T/init_sealflip --init $f
[ ! -e $T/init_sealflip ] && ok "no run directory after a refused --init of a corrupt file" ||
  bad "a refused --init of a corrupt file left a run directory"
run=$T/sealshort
cp -a $base $run
f=$(ckpt $run 8)
truncate -s $(($(stat -c %s $f) - 1)) $f
expect_refusal "--resume with a checkpoint one byte short" \
  "checkpoint $f: the file's checksum does not match (truncated or corrupt)" $run --resume $run

run=$T/othermodel
cp -a $base $run
cp $(ckpt $other 1) $(ckpt $run 9)
expect_refusal "--resume with a checkpoint of another model" \
  "checkpoint $(ckpt $run 9): stage1\.block2\.[a-z0-9_.]* is missing from the file" $run --resume $run

run=$T/future
cp -a $base $run
if "$TOOLS/ckpt_patch" $(ckpt $run 8) set-attr format_version 99; then
  expect_refusal "--resume with a checkpoint of a newer format" \
    "checkpoint $(ckpt $run 8): written by a newer dtrain (format 99" $run --resume $run
else
  bad "ckpt_patch set-attr format_version"
fi

# mutate FILE CODE: run CODE (Python) on checkpoint FILE opened for writing as f, with
# attr(NAME, VALUE) to rewrite a root attribute (int64 for ints, float64 otherwise),
# set_tensor(PATH, INDEX, VALUE) to change one value and rewrite the tensor's checksum so
# that only the value is wrong, and flip_bits(PATH, N) to flip N bits of its stored data.
# The file is resealed afterwards (ckpt_reseal), so that dtrain reaches the check that the
# edit is about rather than the whole-file checksum.
mutate() {
  mutate_unsealed "$@" && "$TOOLS/ckpt_reseal" "$1"
}
mutate_unsealed() {
  "$PY" - "$1" "$2" <<'PYEOF'
import sys, zlib, random, h5py, numpy as np
path = sys.argv[1]
f = h5py.File(path, "r+")
flips = []
def attr(name, value):
    del f.attrs[name]
    f.attrs[name] = np.int64(value) if isinstance(value, int) else np.float64(value)
def set_tensor(name, index, value):
    d = f[name]
    x = d[...]
    x.flat[index] = value
    d[...] = x
    d.attrs["crc32"] = np.int64(zlib.crc32(x.astype("<f4").tobytes()))
def flip_bits(name, n):
    d = f[name]
    flips.append((d.id.get_offset(), d.id.get_storage_size(), n))
exec(sys.argv[2])
f.close()
rng = random.Random(5)
for off, size, n in flips:
    with open(path, "r+b") as raw:
        for bit in rng.sample(range(8 * size), n):
            raw.seek(off + bit // 8)
            b = raw.read(1)[0] ^ (1 << (bit % 8))
            raw.seek(off + bit // 8)
            raw.write(bytes([b]))
PYEOF
}

# bad_value NAME PATTERN CODE: a copy of the base run whose latest checkpoint (step 8 of
# epoch 0, 8 steps into it) CODE has changed is refused with PATTERN.
bad_value() {
  local run=$T/bad$((++n_bad))
  cp -a $base $run
  if mutate "$(ckpt $run 8)" "$3"; then
    expect_refusal "--resume with $1" "checkpoint $(ckpt $run 8): $2" $run --resume $run
  else
    bad "mutating a checkpoint for: $1"
  fi
}
n_bad=0
bad_value "step_in_epoch = -1" "attribute step_in_epoch = -1 is out of range" 'attr("step_in_epoch", -1)'
bad_value "loss_scale = inf" "loss_scale = inf .* is out of range" 'attr("loss_scale", float("inf"))'
bad_value "loss_scale = 0" "loss_scale = 0 .* is out of range" 'attr("loss_scale", 0.0)'
bad_value "a negative step" "attribute step = -5 is out of range" 'attr("step", -5)'
bad_value "a huge step" "attribute step = 10000000000000 is out of range" 'attr("step", 10**13)'
bad_value "a negative epoch" "attribute epoch = -1 is out of range" 'attr("epoch", -1)'
bad_value "a huge epoch" "attribute epoch = 1000000000 is out of range" 'attr("epoch", 10**9)'
bad_value "an epoch beyond train.epochs" "epoch 4 (in progress) is beyond \[train\] epochs = 2" \
  'attr("epoch", 3); attr("step", 38)'
bad_value "step_in_epoch beyond step" "step_in_epoch = 9 exceeds step = 8" 'attr("step_in_epoch", 9)'
bad_value "step_in_epoch beyond the epoch" "step_in_epoch = 11 is beyond the 10 steps of an epoch" \
  'attr("step_in_epoch", 11); attr("step", 11)'
bad_value "a step that the epoch does not give" "step = 9, but epoch 0 x 10 steps per epoch + step_in_epoch 8 = 8" \
  'attr("step", 9)'
bad_value "world_size = 0" "attribute world_size = 0 is out of range" 'attr("world_size", 0)'
bad_value "world_size = -3" "attribute world_size = -3 is out of range" 'attr("world_size", -3)'
bad_value "world_size beyond an int" "attribute world_size = 4294967297 is out of range" 'attr("world_size", 2**32 + 1)'
bad_value "another seed than config.ini" "seed 12, but the configuration has \[train\] seed = 11" 'attr("seed", 12)'
bad_value "NaN in the optimizer state" "optimizer state momentum/fc.weight holds a non-finite value (NaN at index 3)" \
  'set_tensor("optimizer/momentum/fc.weight", 3, float("nan"))'
bad_value "inf in the weights" "conv.weight holds a non-finite value (inf at index 0)" \
  'set_tensor("model/conv.weight", 0, float("inf"))'
bad_value "a negative running_var" "stage1.block1.bn2.running_var holds a negative variance (-0.5 at index 2)" \
  'set_tensor("model/stage1.block1.bn2.running_var", 2, -0.5)'
bad_value "NaN in running_var" "bn.running_var holds a non-finite value (NaN at index 7)" \
  'set_tensor("model/bn.running_var", 7, float("nan"))'
bad_value "an external link in /model" "fc.bias is an external link (to another file)" \
  "del f['model/fc.bias']; f['model/fc.bias'] = h5py.ExternalLink('$(ckpt $REF $N)', '/model/fc.bias')"
bad_value "a soft link in /model" "fc.bias is a soft link" \
  "del f['model/fc.bias']; f['model/fc.bias'] = h5py.SoftLink('/model/stage1.block1.bn1.bias')"
bad_value "an external link for the optimizer state" "/optimizer is an external link" \
  "del f['optimizer']; f['optimizer'] = h5py.ExternalLink('$(ckpt $REF $N)', '/optimizer')"
bad_value "20 flipped bits in a tensor" "stage2.block1.conv1.weight: checksum mismatch" \
  'flip_bits("model/stage2.block1.conv1.weight", 20)'
bad_value "a tensor without its checksum" "fc.weight has no checksum" 'del f["model/fc.weight"].attrs["crc32"]'
bad_value "a NaN metrics sum" "attribute epoch_loss_sum = nan is not a finite sum" 'attr("epoch_loss_sum", float("nan"))'
bad_value "more epoch images than steps give" "epoch_images = 1000 exceeds the 256 images of 8 steps" \
  'attr("epoch_images", 1000.0); attr("window_images", 0.0); attr("window_correct", 0.0)'

# A checkpoint of format 1 (no checksums, no metrics state) still resumes to the same weights.
run=$T/format1
cp -a $base $run
if mutate "$(ckpt $run 8)" '
f.visititems(lambda n, o: o.attrs.__delitem__("crc32") if "crc32" in o.attrs else None)
for a in ("epoch_loss_sum", "epoch_correct", "epoch_images", "window_loss_sum",
          "window_correct", "window_images", "epoch_skipped_steps"):
    del f.attrs[a]
attr("format_version", 1)'; then
  out=$("$DTRAIN" --resume $run 2>&1)
  if [ $? -eq 0 ]; then
    out=$("$TOOLS/ckpt_compare" "$(ckpt "$REF" $N)" "$(ckpt $run $N)" --exact --optimizer 2>&1) &&
      ok "a checkpoint of format 1 (no checksums) resumes: step $N identical ($out)" ||
      bad "resume from a format 1 checkpoint: final checkpoint differs" "$out"
  else
    bad "resume from a format 1 checkpoint" "$out"
  fi
else
  bad "making a format 1 checkpoint"
fi

run=$T/nockpt
cp -a $base $run
rm $run/checkpoints/*.h5
expect_refusal "--resume of a run without checkpoints" "no checkpoint in $run/checkpoints" $run --resume $run

expect_refusal "--init with a checkpoint of another depth names the tensor" \
  "checkpoint $(ckpt $other 1): stage1\.block2\.[a-z0-9_.]* is missing from the file" $T \
  "${CFG[@]}" --set output.dir=$T/init1 --init $(ckpt $other 1)
expect_refusal "--init with other widths names the tensor and both shapes" \
  "checkpoint $(ckpt $wide 1): [a-z0-9_.]*weight: shape ([0-9,]*) in the file, ([0-9,]*) in the model" $T \
  "${CFG[@]}" --set output.dir=$T/init2 --init $(ckpt $wide 1)
[ ! -e $T/init1 ] && [ ! -e $T/init2 ] && ok "no run directory after a refused --init" ||
  bad "a refused --init left a run directory"

# --init with a matching checkpoint starts from its weights (the optimizer starts afresh).
out=$("$DTRAIN" "${CFG[@]}" --set output.dir=$T/init3 --init $(ckpt $REF $N) --set train.max_steps=1 2>&1)
if [ $? -eq 0 ] && printf '%s\n' "$out" | grep -q "initial weights from $(ckpt $REF $N)"; then
  ok "--init with a matching checkpoint"
else
  bad "--init with a matching checkpoint" "$out"
fi

finish
