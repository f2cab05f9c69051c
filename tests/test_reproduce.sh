#!/usr/bin/env bash
# test_reproduce.sh: scripts/reproduce.sh and its table (tools/dtrain_tools/results.py) on a
# tiny experiment of its own (--experiments, a rows file in the test's directory): two dtrain
# rows of different batch sizes and one PyTorch row (runner=torch), on a few hundred real
# Fashion-MNIST images, 1 epoch (each row on a different number of test images, so that their
# errors differ).
#   1. the first run finishes every row (reproduce.done with command, commit, device model,
#      wall time) and writes results/tiny/README.md, curves.png and batch_size.png (PNG);
#   2. a second run skips every row and changes nothing in the run directories; --slurm
#      --dry-run plans one array task for the one unfinished row;
#   3. a run interrupted by SIGTERM (to reproduce.sh, passed on to dtrain, which stops at a
#      checkpoint) exits 143 without reproduce.done; the next run resumes it (--resume) and
#      finishes it;
#   4. the table's row holds exactly the final test error of the run's metrics.h5 (100 - the
#      last test_top1, read with h5dump) and the published value of the config's header; the
#      PyTorch row's error is its own metrics.h5's;
#   5. bad input: an unknown experiment, a rows file with a bad token, a --rows name that is no
#      row ("a,b" for "a b"): exit 2 with one message, nothing run.
# Usage (from the repository root, as ctest runs it): bash tests/test_reproduce.sh ./dtrain
set -u
source "$(dirname "$0")/harness.sh"
DTRAIN=$(realpath "${1:-./dtrain}")
export DTRAIN
[[ -x scripts/reproduce.sh ]] || { echo "run from the repository root"; exit 1; }
command -v h5dump >/dev/null || { echo "SKIP: h5dump (hdf5-tools) not installed"; exit 77; }
/usr/bin/python3 -c 'import torch, h5py, matplotlib' 2>/dev/null ||
  { echo "SKIP: /usr/bin/python3 lacks torch, h5py or matplotlib"; exit 77; }
[[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]] ||
  { echo "SKIP: Fashion-MNIST not installed (dataset-fashion-mnist)"; exit 77; }
harness_tmp reproduce
export OMP_NUM_THREADS=1 # tiny runs: one thread each, no barrier waits on a busy machine

B128=resnet_preact20_cifar10_b128_lr0.1_cosine_e200.ini
B256=resnet_preact20_cifar10_b256_lr0.2_cosine_e200.ini
mkdir -p "$T/exp"
cat > "$T/exp/tiny.rows" <<EOF
# a tiny experiment for tests/test_reproduce.sh
b128  $B128 data.train_limit=256 data.test_limit=100
b256  $B256 data.train_limit=256 data.test_limit=90
torch $B128 runner=torch data.train_limit=256 data.test_limit=80
long  $B128 data.train_limit=640 data.test_limit=70 output.checkpoint_steps=1 output.keep_last=0
EOF
R=(scripts/reproduce.sh tiny --experiments "$T/exp" --runs "$T/runs" --results "$T/results"
   --epochs 1)
RUNS=$T/runs/tiny

# ---- 1. first run ----
out=$("${R[@]}" --rows "b128 b256 torch" 2>&1)
rc=$?
if [[ $rc -eq 0 && -f $RUNS/b128/seed0/reproduce.done && -f $RUNS/b256/seed0/reproduce.done &&
      -f $RUNS/torch/seed0/reproduce.done ]]; then
  ok "first run: every row finished (reproduce.done)"
else
  bad "first run: exit $rc" "$out"
fi
done_b128=$(cat "$RUNS/b128/seed0/reproduce.done" 2>/dev/null)
why=""
for key in command reproduce commit device device_name wall_s finished; do
  grep -q "^$key = ." <<<"$done_b128" || why+="$key missing; "
done
grep -q "^command = .*dtrain .*$B128 .*--set output.dir=$RUNS/b128/seed0" <<<"$done_b128" ||
  why+="command is not the row's dtrain command; "
grep -q "^reproduce = scripts/reproduce.sh tiny --rows b128 .*--epochs 1" <<<"$done_b128" ||
  why+="reproduce is not the row's command; "
grep -q "^command = .*dtrain_tools.torch_train" "$RUNS/torch/seed0/reproduce.done" 2>/dev/null ||
  why+="the torch row did not run torch_train; "
if [[ -z $why ]]; then ok "reproduce.done: command, reproduce, commit, device, device_name, wall_s"
else bad "reproduce.done: $why" "$done_b128"; fi
README=$T/results/tiny/README.md
for png in curves.png batch_size.png; do
  f=$T/results/tiny/$png
  if [[ -s $f && $(head -c 8 "$f" | od -An -tx1 | tr -d ' \n') == 89504e470d0a1a0a ]]; then
    ok "$png written, a PNG ($(stat -c %s "$f") bytes)"
  else
    bad "$png missing or not a PNG" "$(ls -l "$T/results/tiny" 2>&1)"
  fi
done

# ---- 2. second run: all skipped, nothing touched ----
before=$(snapshot "$RUNS")
out=$("${R[@]}" --rows "b128 b256 torch" 2>&1)
rc=$?
skips=$(grep -c 'finished, skipped' <<<"$out")
if [[ $rc -eq 0 && $skips -eq 3 && $(snapshot "$RUNS") == "$before" ]] &&
   ! grep -q 'dtrain \|torch_train' <<<"$out"; then
  ok "second run: 3 rows skipped, run directories unchanged"
else
  bad "second run: exit $rc, $skips skipped" "$out"
fi

# ---- 2b. --slurm --dry-run: one array task per unfinished row x seed, the config as --set ----
out=$("${R[@]}" --slurm --dry-run -- --partition=debug 2>&1)
rc=$?
task=$(grep '^  0 long: ' <<<"$out")
if [[ $rc -eq 0 && $out == *"1 array tasks"* && -n $task && $task == *"--set train.batch_size=128 "* &&
      $task == *"--set data.train_limit=640 "* && $task == *"--set train.epochs=1"* &&
      $out == *"sbatch --job-name=reproduce_tiny --array=0-0 "*"--partition=debug "*"slurm/single_node.sbatch "* ]]; then
  ok "--slurm --dry-run: 1 array task (the unfinished row), its config as --set options"
else
  bad "--slurm --dry-run: exit $rc" "$out"
fi

# ---- 3. interrupted and resumed ----
"${R[@]}" --rows long >"$T/long1.log" 2>&1 &
pid=$!
for ((i = 0; i < 600; i++)); do
  compgen -G "$RUNS/long/seed0/checkpoints/step_*.h5" >/dev/null && break
  kill -0 $pid 2>/dev/null || break
  sleep 0.1
done
kill -TERM $pid 2>/dev/null
wait $pid
rc=$?
# dtrain itself must have stopped at a checkpoint (reproduce.sh passes the signal on; a
# reproduce.sh that just died would leave dtrain running on its own).
if [[ $rc -eq 143 && ! -f $RUNS/long/seed0/reproduce.done ]] &&
   grep -q '^stopped by a signal after step' "$RUNS/long/seed0/log.txt" 2>/dev/null &&
   compgen -G "$RUNS/long/seed0/checkpoints/step_*.h5" >/dev/null; then
  ok "SIGTERM: reproduce.sh exits 143, dtrain stopped at a checkpoint ($(basename "$(latest "$RUNS/long/seed0")")), no reproduce.done"
else
  bad "SIGTERM: exit $rc (want 143, dtrain stopped at a checkpoint, no reproduce.done)" "$(cat "$T/long1.log")"
fi
out=$("${R[@]}" --rows long 2>&1)
rc=$?
steps=$(h5col "$RUNS/long/seed0/metrics.h5" /epoch/step | tail -1)
if [[ $rc -eq 0 && -f $RUNS/long/seed0/reproduce.done && ${steps%%.*} == 5 ]] &&
   grep -q -- "--resume $RUNS/long/seed0" <<<"$out"; then
  ok "rerun: resumed with --resume, finished (5 steps), reproduce.done"
else
  bad "rerun after SIGTERM: exit $rc, last step '$steps'" "$out"
fi
rerun_out=$out

# ---- 4. the table ----
pub=$(sed -n 's/^; Published test error (%, last epoch): \([0-9.]*\).*/\1/p' "configs/$B128" | head -1)
for row in b128 torch long; do
  # Full precision (h5dump prints 6 digits by default).
  top1=$(h5dump -m %.17g -y -w 0 -d /epoch/test_top1 "$RUNS/$row/seed0/metrics.h5" |
         awk '/DATA \{/ { f = 1; next } f && /^ *\}/ { f = 0 } f' | tr ',' '\n' | tr -d ' \t' |
         grep -v '^$' | tail -1)
  err=$(awk -v t="$top1" 'BEGIN { printf "%.2f", 100 - t }')
  line=$(grep "^| $row |" "$README")
  if [[ -n $top1 && $line == *"| $err |"* && $line == *"| $pub ("* ]]; then
    ok "table row $row: test error $err (= 100 - $top1 from metrics.h5), published $pub"
  else
    bad "table row $row: want error $err (top1 $top1) and published $pub" "$line
$rerun_out"
  fi
done
head1=$(head -1 "$README")
if [[ $head1 == "Fashion-MNIST, 1 epoch instead of 200, only the first 256–640 training and 70–100 test images: CIFAR-10 is not obtainable"* ]]; then
  ok "first line: $head1"
else
  bad "first line does not name the data and the shortening" "$head1"
fi
grep -q '^  `scripts/reproduce.sh tiny --rows b256 ' "$README" &&
  ok "the table prints each row's command" || bad "no command for row b256" "$(cat "$README")"

# ---- 5. bad input ----
out=$(scripts/reproduce.sh no_such_experiment --experiments "$T/exp" 2>&1)
rc=$?
[[ $rc -eq 2 && $out == *"no_such_experiment.rows: no such experiment"* ]] &&
  ok "unknown experiment: exit 2, one message" || bad "unknown experiment: exit $rc" "$out"
echo "b128 $B128 seeds=1 bogus" > "$T/exp/bad.rows"
out=$(scripts/reproduce.sh bad --experiments "$T/exp" --runs "$T/runs" 2>&1)
rc=$?
[[ $rc -eq 2 && $out == *"bad.rows: row b128: 'bogus'"* && ! -d $T/runs/bad/b128 ]] &&
  ok "bad token in a rows file: exit 2, names the file and the row" || bad "bad rows file: exit $rc" "$out"
out=$(scripts/reproduce.sh tiny --experiments "$T/exp" --runs "$T/runs_typo" --results "$T/res_typo" \
  --rows "b128,b256" 2>&1)
rc=$?
[[ $rc -eq 2 && $out == *"--rows: b128,b256 is not a row of"*"tiny.rows"* && ! -e $T/runs_typo &&
   ! -e $T/res_typo ]] &&
  ok "--rows naming no row: exit 2, names it and the file, runs and writes nothing" ||
  bad "--rows typo: exit $rc" "$out"
finish
