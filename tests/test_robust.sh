#!/usr/bin/env bash
# test_robust.sh: dtrain against hostile surroundings: output paths that are devices, FIFOs or
# symbolic links, config files that never end, and files whose headers claim more than they
# hold. Each case wants one clear message, the documented exit status, bounded memory and
# nothing replaced or left behind.
set -u
source "$(dirname "$0")/harness.sh"
DTRAIN=${1:-./dtrain}
harness_tmp robust

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
out=$(ulimit -v 3000000; "$DTRAIN" /dev/zero --dry-run 2>&1 >/dev/null)
rc=$?
if [ $rc -eq 1 ] && printf '%s' "$out" | grep -q '/dev/zero:1: line longer than'; then
  ok "config /dev/zero: refused at the line limit (exit 1)"
else
  bad "config /dev/zero (exit $rc)" "$out"
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
out=$(ulimit -v 3000000; "$DTRAIN" $Q $S --set data.test_limit=32 --set train.eval_batch_size=1048576 \
      --set train.max_steps=1 --set output.dir=$T/eval 2>&1)
rc=$?
if [ $rc -eq 0 ] && printf '%s\n' "$out" | grep -q '^done: 1 steps'; then
  ok "train.eval_batch_size=1048576 on 32 test images runs in 3 GB of address space"
else
  bad "eval_batch_size larger than the test set (exit $rc)" "$out"
fi

finish
