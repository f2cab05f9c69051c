#!/usr/bin/env bash
# test_robust.sh: dtrain against hostile surroundings: output paths that are devices, FIFOs or
# symbolic links, config files that never end, and files whose headers claim more than they
# hold. Each case wants one clear message, the documented exit status, bounded memory and
# nothing replaced or left behind.
set -u
source "$(dirname "$0")/harness.sh"
DTRAIN=${1:-./dtrain}
harness_tmp robust

# Address-space limits (ulimit -v) measure memory; AddressSanitizer reserves terabytes of it.
if ldd "$DTRAIN" 2>/dev/null | grep -q libasan; then limited() { echo "skip $1: built with AddressSanitizer"; return 1; }
else limited() { return 0; }; fi

Q=configs/quickstart.ini
S="--set data.train_limit=512 --set data.test_limit=256 --set train.batch_size=64"

# ---- --dump-batch never replaces what is not a regular file ----
mkfifo $T/fifo
out=$("$DTRAIN" $Q $S --dump-batch $T/fifo 2>&1 >/dev/null)
rc=$?
if [ $rc -eq 1 ] && [ -p $T/fifo ] && printf '%s' "$out" | grep -q 'is a FIFO, not a regular file'; then
  ok "--dump-batch FIFO: refused (exit 1), the FIFO kept"
else
  bad "--dump-batch FIFO (exit $rc)" "$out$(ls -l $T/fifo)"
fi
# A character device of our own (the one /dev/null is), never the real /dev/null.
if mknod $T/null c 1 3 2>/dev/null; then
  out=$("$DTRAIN" $Q $S --dump-batch $T/null 2>&1 >/dev/null)
  rc=$?
  if [ $rc -eq 1 ] && [ -c $T/null ] && [ ! -e $T/null.txt ] &&
     printf '%s' "$out" | grep -q 'is a character device'; then
    ok "--dump-batch character device: refused (exit 1), the device kept"
  else
    bad "--dump-batch character device (exit $rc)" "$out$(ls -l $T/null*)"
  fi
else
  echo "skip --dump-batch character device: mknod not permitted"
fi
# A symbolic link is written through: the link stays, its target gets the picture.
mkdir $T/pics
echo old >$T/pics/real.png
ln -s pics/real.png $T/link.png
out=$("$DTRAIN" $Q $S --dump-batch $T/link.png 2>&1)
rc=$?
if [ $rc -eq 0 ] && [ -L $T/link.png ] && [ "$(head -c 4 $T/pics/real.png | tail -c 3)" = PNG ] &&
   [ -f $T/link.txt ] && [ -z "$(ls $T/pics | grep -v '^real.png$')" ]; then
  ok "--dump-batch symbolic link: written through, the link kept"
else
  bad "--dump-batch symbolic link (exit $rc)" "$out$(ls -lR $T)"
fi

# ---- config files are read line by line up to the parser's limit ----
# An endless line (/dev/zero) is refused at the limit: today's reader must neither read it
# whole nor take a failed read for the end of the file.
if limited "config /dev/zero"; then
  out=$(ulimit -v 3000000; "$DTRAIN" /dev/zero --dry-run 2>&1 >/dev/null)
  rc=$?
  if [ $rc -eq 1 ] && printf '%s' "$out" | grep -q '/dev/zero:1: line longer than'; then
    ok "config /dev/zero: refused at the line limit (exit 1)"
  else
    bad "config /dev/zero (exit $rc)" "$out"
  fi
fi
# A line that never ends from a writer that stays open: refused without waiting for more.
mkfifo $T/slow.ini
(printf '[train]\n'; head -c 1000 /dev/zero | tr '\0' x; sleep 20) >$T/slow.ini &
writer=$!
out=$(timeout 10 "$DTRAIN" $T/slow.ini --dry-run 2>&1 >/dev/null)
rc=$?
kill $writer 2>/dev/null
wait $writer 2>/dev/null
if [ $rc -eq 1 ] && printf '%s' "$out" | grep -q 'slow.ini:2: line longer than'; then
  ok "config line refused while it is still being written"
else
  bad "config endless line from a FIFO (exit $rc)" "$out"
fi
# A NUL byte (a binary file given as the config) is named, not parsed as the end of the line.
printf '[train]\nepochs = 3\0garbage\n' >$T/nul.ini
out=$("$DTRAIN" $T/nul.ini --dry-run 2>&1 >/dev/null)
rc=$?
[ $rc -eq 1 ] && printf '%s' "$out" | grep -q 'nul.ini:2: NUL byte' && ok "config NUL byte refused" ||
  bad "config NUL byte (exit $rc)" "$out"

# ---- buffers sized by the data present ----
# An evaluation batch of 2^20 on 32 test images: 3.3 GB of batch buffers before the fix, so
# under a 3 GB address-space limit it died out of memory.
if limited "eval_batch_size larger than the test set"; then
  out=$(ulimit -v 3000000; "$DTRAIN" $Q $S --set data.test_limit=32 --set train.eval_batch_size=1048576 \
        --set train.max_steps=1 --set output.dir=$T/eval 2>&1)
  rc=$?
  if [ $rc -eq 0 ] && printf '%s\n' "$out" | grep -q '^done: 1 steps'; then
    ok "train.eval_batch_size=1048576 on 32 test images runs in 3 GB of address space"
  else
    bad "eval_batch_size larger than the test set (exit $rc)" "$out"
  fi
fi

# ---- the run directory belongs to one process ----
# A tiny model on few images: steps of milliseconds.
TINY="--set data.train_limit=128 --set data.test_limit=32 --set train.batch_size=32 --set model.depth=8
  --set train.threads=1"
run=$T/locked
"$DTRAIN" $Q $TINY --set train.epochs=100000 --set output.checkpoint_steps=1 --set output.keep_last=2 \
  --set output.dir=$run >$T/holder.out 2>&1 &
holder=$!
for i in $(seq 600); do
  ls $run/checkpoints/step_*.h5 >/dev/null 2>&1 && break
  sleep 0.1
done
host=$(hostname)
out=$("$DTRAIN" $Q $TINY --set train.max_steps=1 --set output.overwrite=true --set output.dir=$run 2>&1 >/dev/null)
rc=$?
if [ $rc -eq 1 ] && printf '%s' "$out" | grep -q "in use by another dtrain process (pid $holder on host $host"; then
  ok "a second run on a live run's directory is refused, naming pid and host"
else
  bad "second run on a live run's directory (exit $rc, holder pid $holder)" "$out"
fi
out=$("$DTRAIN" --resume $run --set train.max_steps=1 2>&1 >/dev/null)
rc=$?
if [ $rc -eq 1 ] && printf '%s' "$out" | grep -q "pid $holder on host $host"; then
  ok "--resume of a live run is refused, naming pid and host"
else
  bad "--resume of a live run (exit $rc)" "$out"
fi
kill -9 $holder
wait $holder 2>/dev/null
last=$(ls $run/checkpoints/step_*.h5 | sort | tail -1)
last=$(basename $last .h5)
last=$((10#${last#step_}))
n=$((last + 2))
out=$("$DTRAIN" --resume $run --set train.max_steps=$n 2>&1)
rc=$?
if [ $rc -eq 0 ] && printf '%s' "$out" | grep -q "^done: $n steps"; then
  ok "after kill -9 of the holder, --resume takes the directory (steps $last -> $n)"
else
  bad "--resume after kill -9 of the holder (exit $rc)" "$out"
fi

# ---- --resume --set is recorded; what cannot change mid-run is refused ----
# A finished 1-epoch run (4 steps) is extended to 3 epochs and stopped by SIGTERM at step 6;
# the requeued job resumes without the --set and must go on to step 12, not stop at once.
ext=$T/extended
"$DTRAIN" $Q $TINY --set train.epochs=1 --set output.dir=$ext >/dev/null 2>&1
out=$(DTRAIN_FAULT_SIGNAL=6 "$DTRAIN" --resume $ext --set train.epochs=3 2>&1)
rc=$?
if [ $rc -eq 143 ] && grep -qx "epochs = 3" $ext/config.ini &&
   grep -q "configuration changed on resume (--set): train.epochs = 1 -> 3; config.ini rewritten" $ext/log.txt; then
  ok "--resume --set: config.ini rewritten (epochs = 3), the change in log.txt"
else
  bad "--resume --set not recorded (exit $rc)" "$out$(grep -n 'epochs =\|configuration changed' $ext/config.ini $ext/log.txt)"
fi
out=$("$DTRAIN" --resume $ext 2>&1)
rc=$?
if [ $rc -eq 0 ] && printf '%s' "$out" | grep -q "^done: 12 steps"; then
  ok "--resume without the --set keeps the recorded override (runs to step 12)"
else
  bad "--resume without the --set (exit $rc)" "$out"
fi
before=$(snapshot $run)
for set in model.depth=14 train.batch_size=16 data.dataset=mnist train.seed=5 optim.name=adam; do
  out=$("$DTRAIN" --resume $run --set $set 2>&1 >/dev/null)
  rc=$?
  key=${set%%=*}
  if [ $rc -eq 1 ] && printf '%s' "$out" | grep -q "$key cannot change in the middle of a run" &&
     [ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ] && [ "$(snapshot $run)" = "$before" ]; then
    ok "--resume --set $set refused (exit 1), run directory untouched"
  else
    bad "--resume --set $set (exit $rc)" "$out"
  fi
done

# ---- runtime errors: one message on stderr, in log.txt too ----
out=$(DTRAIN_FAULT_OVERFLOW=1 "$DTRAIN" $Q $TINY --set output.dir=$T/nonfinite 2>$T/err)
rc=$?
err=$(cat $T/err)
if [ $rc -eq 2 ] && [ "$(wc -l <$T/err)" -eq 1 ] && printf '%s' "$err" | grep -q '^dtrain: non-finite gradient at step 2' &&
   ! printf '%s' "$out" | grep -q 'non-finite' && grep -q '^dtrain: non-finite gradient' $T/nonfinite/log.txt; then
  ok "non-finite gradient: exit 2, one message on stderr and in log.txt"
else
  bad "non-finite gradient (exit $rc)" "stderr: $err"
fi
# Out of memory is exit 3, as the README says.
if limited "out of memory"; then
  out=$(ulimit -v 3000000; "$DTRAIN" $Q $TINY --set model.initial_channels=4096 --set model.depth=110 \
        --set output.dir=$T/oom 2>&1 >/dev/null)
  rc=$?
  if [ $rc -eq 3 ] && printf '%s' "$out" | grep -q 'fatal: out of memory' &&
     grep -q '^| 3 | a fatal runtime error: out of memory' README.md; then
    ok "out of memory: exit 3, documented in README.md"
  else
    bad "out of memory (exit $rc)" "$out"
  fi
fi

# ---- a full disk (a small tmpfs; needs mount, as root) ----
disk=$T/disk
mkdir $disk
if mount -t tmpfs -o size=4m tmpfs $disk 2>/dev/null; then
  trap 'umount $disk 2>/dev/null; rm -rf "$T"' EXIT
  # A fresh run on a full disk: exit 1, one message, no directory left.
  dd if=/dev/zero of=$disk/fill bs=4k 2>/dev/null
  out=$("$DTRAIN" $Q $TINY --set output.dir=$disk/runs/fresh 2>&1 >/dev/null)
  rc=$?
  if [ $rc -eq 1 ] && [ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ] &&
     printf '%s' "$out" | grep -q 'No space left on device' && [ ! -e $disk/runs ]; then
    ok "fresh run on a full disk: exit 1, one message, nothing left behind"
  else
    bad "fresh run on a full disk (exit $rc)" "$out$(ls -laR $disk/runs 2>&1)"
  fi
  # A resumed run whose next checkpoint does not fit: exit 2, one message from dtrain only.
  rm -f $disk/fill
  DTRAIN_FAULT_KILL=0:2 "$DTRAIN" $Q $TINY --set train.max_steps=3 --set output.checkpoint_steps=2 \
    --set output.dir=$disk/r >/dev/null 2>&1 &
  wait $! 2>/dev/null # killed by its fault hook after checkpoint 2
  dd if=/dev/zero of=$disk/fill bs=1k 2>/dev/null
  out=$("$DTRAIN" --resume $disk/r 2>&1 >/dev/null)
  rc=$?
  if [ $rc -eq 2 ] && [ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ] &&
     printf '%s' "$out" | grep -q '^dtrain: checkpoint .*step_000000003.h5: .*No space left on device'; then
    ok "resumed run on a full disk: exit 2, one message (no HDF5 noise)"
  else
    bad "resumed run on a full disk (exit $rc)" "$out"
  fi
  umount $disk
else
  echo "skip full-disk cases: mounting a tmpfs is not permitted here"
fi

finish
