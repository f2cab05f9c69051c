#!/usr/bin/env bash
# test_slurm.sh: the Slurm scripts end to end on a one-node cluster started on this machine
# (scripts/slurm_local.sh), with CPU ranks and a tiny Fashion-MNIST run:
#   1. slurm/single_node.sbatch, 2 ranks under mpirun, run directory derived from the job
#      (DTRAIN_RUNS/<job name>_<job id>), sbatch --wait, each rank bound to its core and running
#      the one thread dtrain decides; slurm/multi_node.sbatch on this one node, 2 ranks under
#      srun --mpi=pmix --cpu-bind=cores, 1 epoch;
#   2. slurm/sweep_batch_lr.sh over a 2-point grid (batch 32 and 64, linear lr rule), one rank
#      per array task under srun --mpi=pmix, sbatch --wait;
#   3. preemption: scancel --batch --signal=USR1 in the middle of a run, the job requeues
#      itself, is released at once, resumes from its checkpoint and finishes.
# Each run's metrics.h5 (read with h5dump) must hold one row per epoch with finite losses and
# accuracies in (0, 100]. Skipped (77) when the cluster cannot be started here (no root or
# sudo, no slurm packages and no way to install them, another slurm.conf).
# Usage (from the repository root, as ctest runs it): bash tests/test_slurm.sh ./dtrain
set -u
source "$(dirname "$0")/harness.sh"
BAD_LINES=30
DTRAIN=$(realpath "${1:-./dtrain}")
[[ -f slurm/single_node.sbatch ]] || { echo "run from the repository root"; exit 1; }
[[ -x $DTRAIN ]] || { echo "dtrain binary $DTRAIN not found"; exit 1; }
command -v h5dump >/dev/null || { echo "SKIP: h5dump (hdf5-tools) not installed"; exit 77; }

T=$(mktemp -d /tmp/dtrain-slurm-XXXXXX)
chmod 755 "$T"
JOBS=()
STARTED=0
cleanup() {
  ((${#JOBS[@]})) && timeout 10 scancel "${JOBS[@]}" 2>/dev/null
  ((STARTED)) && scripts/slurm_local.sh stop >/dev/null 2>&1 9>&-
  rm -rf "$T"
}
trap cleanup EXIT
T0=$SECONDS

# ---- the cluster ----
# One test at a time on this machine's cluster (ctest of several build directories may run this
# file at once): a second copy would see the cluster up, and the first would stop it under it.
if [[ $(id -u) -ne 0 ]] && ! sudo -n true 2>/dev/null; then
  echo "SKIP: starting a local Slurm cluster needs root or password-less sudo"
  exit 77
fi
LOCK=/tmp/dtrain-test-slurm.lock
if { exec 9>>"$LOCK"; } 2>/dev/null; then
  chmod 666 "$LOCK" 2>/dev/null
  if ! flock -w 100 9; then
    echo "SKIP: another tests/test_slurm.sh held $LOCK for 100 s"
    exit 77
  fi
fi
if scripts/slurm_local.sh status >/dev/null 2>&1; then
  echo "using the Slurm cluster that is already running"
else
  # 9>&-: the daemons must not inherit the lock.
  out=$(scripts/slurm_local.sh start 2>&1 9>&-)
  rc=$?
  case $rc in
    0) STARTED=1; echo "local Slurm cluster started ($((SECONDS - T0)) s)" ;;
    2 | 3) echo "SKIP: cannot start a local Slurm cluster: $out"; exit 77 ;;
    *) echo "FAIL: scripts/slurm_local.sh start (exit $rc)"; printf '%s\n' "$out"; exit 1 ;;
  esac
fi

# ---- helpers ----
# check_metrics NAME FILE EPOCHS [MAX_LR]: EPOCHS epoch rows numbered 1..EPOCHS, finite losses,
# accuracies in (0, 100], lr in (0, MAX_LR].
check_metrics() {
  local name=$1 f=$2 n=$3 max_lr=${4:-1e9} why=""
  if [[ ! -f $f ]]; then
    bad "$name: $f missing"
    return
  fi
  local epochs
  epochs=$(h5col "$f" /epoch/epoch | tr '\n' ' ')
  [[ $epochs == "$(seq -s ' ' 1 "$n") " ]] || why+="epoch column '$epochs', want 1..$n; "
  for col in train_loss test_loss train_top1 test_top1 lr; do
    local vals
    vals=$(h5col "$f" /epoch/$col)
    [[ $(wc -l <<<"$vals") -eq $n ]] || why+="$col has $(wc -l <<<"$vals") rows; "
    case $col in
      *loss) lo=0 hi=1e30 ;;
      *top1) lo=0 hi=100 ;;
      lr) lo=0 hi=$max_lr ;;
    esac
    # Finite (a plain number, not nan/inf) and in (lo, hi].
    awk -v lo="$lo" -v hi="$hi" '!/^-?[0-9.]+([eE][-+]?[0-9]+)?$/ || $1 + 0 <= lo || $1 + 0 > hi * 1.000001 { exit 1 }' \
      <<<"$vals" || why+="$col out of range: $(tr '\n' ' ' <<<"$vals"); "
  done
  if [[ -z $why ]]; then
    ok "$name: $n epoch rows, finite losses, top-1 $(h5col "$f" /epoch/test_top1 | tr '\n' ' ')"
  else
    bad "$name: $f" "$why"
  fi
}

export DTRAIN_BIN=$DTRAIN DTRAIN_DEVICE=cpu
if [[ $(id -u) -eq 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
# No GPUs on the test cluster: override the scripts' GPU and core requests.
CPU_RES=(--gpus-per-node=0 --cpus-per-task=1)

cat >"$T/tiny.ini" <<EOF
; tiny run for tests/test_slurm.sh
[data]
dataset = fashion_mnist
train_limit = 512
test_limit = 256
[train]
epochs = 2
batch_size = 64
threads = 1
[output]
dir = $T/unused
log_every = 4
EOF

# ---- 1. single_node.sbatch: 2 CPU ranks under mpirun, run directory from the job ----
# The threads are dtrain's own decision here (train.threads = 0): the script binds each rank to
# its one core (mpirun --map-by ppr:2:socket:pe=1 --bind-to core on this one-socket node), so
# each rank owns its core: 1 thread, and the OpenMP runtime's default waiting (2 ranks x 1 core
# masks fit the CPUs; unbound, 2 x 2 would not, and dtrain would choose passive). sbatch passes
# on this shell's environment: OMP_NUM_THREADS (ctest sets it) would override the decision.
out=$(env -u OMP_NUM_THREADS DTRAIN_LAUNCH=mpirun DTRAIN_RUNS=$T/runs timeout 120 sbatch --wait --parsable --job-name=dt_single \
      --ntasks-per-node=2 "${CPU_RES[@]}" --output="$T/single-%j.out" slurm/single_node.sbatch "$T/tiny.ini" \
      --set train.threads=0 2>&1)
rc=$?
jid=$(grep -o '^[0-9]*' <<<"$out" | head -1)
[[ -n $jid ]] && JOBS+=("$jid")
run=$T/runs/dt_single_$jid
if [[ $rc -eq 0 && -f $run/config.ini && -f $run/log.txt ]] && grep -q 'ranks: 2 ' "$run/log.txt"; then
  ok "single_node.sbatch: job $jid, 2 ranks, run directory runs/dt_single_$jid ($((SECONDS - T0)) s)"
else
  bad "single_node.sbatch (sbatch exit $rc)" "$out
$(cat "$T"/single-*.out 2>/dev/null)"
fi
if grep -q -- '--bind-to core' "$T"/single-*.out 2>/dev/null &&
   grep -q '^ranks: 2 x 1 thread (2 cores, 2 local ranks), OpenMP wait spin, then sleep' "$run/log.txt" 2>/dev/null; then
  ok "single_node.sbatch: mpirun binds each rank to its core; dtrain runs 1 thread per rank"
else
  bad "single_node.sbatch: binding and threads" "$(grep -h 'mpirun\|^ranks' "$T"/single-*.out "$run/log.txt" 2>&1)"
fi
check_metrics "single_node.sbatch" "$run/metrics.h5" 2

# ---- 1b. multi_node.sbatch (on the one node here): runs single_node.sbatch, srun launcher ----
out=$(DTRAIN_LAUNCH=srun timeout 120 sbatch --wait --parsable --nodes=1 --ntasks-per-node=2 "${CPU_RES[@]}" \
      --output="$T/multi-%j.out" slurm/multi_node.sbatch "$T/tiny.ini" --set "output.dir=$T/multi" \
      --set train.epochs=1 2>&1)
rc=$?
jid=$(grep -o '^[0-9]*' <<<"$out" | head -1)
[[ -n $jid ]] && JOBS+=("$jid")
if [[ $rc -eq 0 ]] && grep -q 'srun --mpi=pmix .*--cpu-bind=cores' "$T"/multi-*.out &&
   grep -q 'ranks: 2 ' "$T/multi/log.txt"; then
  ok "multi_node.sbatch --nodes=1: job $jid, 2 ranks under srun ($((SECONDS - T0)) s)"
else
  bad "multi_node.sbatch (sbatch exit $rc)" "$out
$(cat "$T"/multi-*.out 2>/dev/null)"
fi
check_metrics "multi_node.sbatch" "$T/multi/metrics.h5" 1

# ---- 2. sweep_batch_lr.sh: a 2-point grid, one srun rank per array task ----
out=$(slurm/sweep_batch_lr.sh --dry-run --batches "32 64" --schedules cosine --runs "$T/sweep" 2>&1)
if [[ $? -eq 0 && ! -e $T/sweep ]] && grep -q -- '--array=0-1 ' <<<"$out" &&
   grep -q 'b64_lr0.05_cosine_e200 --set train.batch_size=64 --set optim.lr=0.1 --set optim.reference_batch=128' <<<"$out"; then
  ok "sweep_batch_lr.sh --dry-run: 2 tasks, nothing written"
else
  bad "sweep_batch_lr.sh --dry-run" "$out"
fi
out=$(DTRAIN_LAUNCH=srun timeout 120 slurm/sweep_batch_lr.sh --config "$T/tiny.ini" --dataset fashion_mnist \
      --epochs 2 --batches "32 64" --schedules cosine --runs "$T/sweep" --set data.train_limit=512 \
      --set data.test_limit=256 --set train.threads=1 -- --wait "${CPU_RES[@]}" 2>&1)
rc=$?
jid=$(grep -o 'Submitted batch job [0-9]*' <<<"$out" | grep -o '[0-9]*$')
[[ -n $jid ]] && JOBS+=("$jid")
if [[ $rc -eq 0 ]] && grep -q '^ *1 *64 *0.05 cosine' <<<"$out"; then
  ok "sweep_batch_lr.sh: array job $jid ($((SECONDS - T0)) s)"
else
  bad "sweep_batch_lr.sh (exit $rc)" "$out
$(cat "$T"/sweep/slurm-*.out 2>/dev/null)"
fi
for b in 32 64; do
  d=$T/sweep/b${b}_lr$(awk -v b=$b 'BEGIN { printf "%g", 0.1 * b / 128 }')_cosine_e2
  if [[ -f $d/config.ini ]] && grep -qx "batch_size = $b" "$d/config.ini" &&
     grep -qx 'reference_batch = 128' "$d/config.ini" && grep -qx 'min_factor = 0' "$d/config.ini"; then
    ok "sweep task batch $b: config.ini has batch_size $b, reference_batch 128, cosine to 0"
  else
    bad "sweep task batch $b: $d/config.ini" "$(ls "$T/sweep" 2>&1)"
  fi
  check_metrics "sweep task batch $b" "$d/metrics.h5" 2 "$(awk -v b=$b 'BEGIN { print 0.1 * b / 128 }')"
done

# ---- 3. preemption: USR1 to the batch shell, requeue, resume ----
run=$T/preempt
jid=$(DTRAIN_LAUNCH=mpirun timeout 20 sbatch --parsable --job-name=dt_preempt --ntasks-per-node=2 "${CPU_RES[@]}" \
      --output="$T/preempt.out" slurm/single_node.sbatch "$T/tiny.ini" --set "output.dir=$run" \
      --set data.train_limit=3072 --set output.log_every=1 2>&1)
if [[ $jid =~ ^[0-9]+$ ]]; then
  JOBS+=("$jid")
  # Signal once the first epoch row is in metrics.h5: training is under way (signal handlers
  # installed) and the stop falls inside epoch 2.
  deadline=$((SECONDS + 60))
  while ((SECONDS < deadline)); do
    [[ -n $(h5col "$run/metrics.h5" /epoch/epoch 2>/dev/null) ]] && break
    sleep 0.1
  done
  timeout 10 scancel --batch --signal=USR1 "$jid"
  deadline=$((SECONDS + 30))
  info=""
  while ((SECONDS < deadline)); do
    info=$(timeout 5 scontrol show job "$jid" -o 2>/dev/null)
    [[ $info == *JobState=PENDING* && $info == *Restarts=1* ]] && break
    [[ $info =~ JobState=(COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL) ]] && break
    sleep 0.1
  done
  # Slurm holds a requeued job back for two minutes; release it after 2 s (slurmd refuses to
  # launch a job whose credential was created in the same second as the revocation of the
  # previous run's: "Job credential revoked").
  if [[ $info == *JobState=PENDING* ]]; then
    sleep 2
    timeout 10 scontrol update jobid="$jid" StartTime=now
  fi
  deadline=$((SECONDS + 60))
  while ((SECONDS < deadline)); do
    info=$(timeout 5 scontrol show job "$jid" -o 2>/dev/null)
    [[ $info =~ JobState=(COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL) ]] && break
    sleep 0.2
  done
  log=$(cat "$T/preempt.out" 2>/dev/null)
  ckpts=$(ls "$run/checkpoints" 2>/dev/null | tr '\n' ' ')
  if [[ $info == *JobState=COMPLETED* && $info == *Restarts=1* ]] && grep -q 'preempted: checkpoint' <<<"$log" &&
     grep -q "resuming from $run (restart 1)" <<<"$log" &&
     grep -q 'finished: ' <<<"$log" && grep -q -- "--resume $run" <<<"$log"; then
    ok "preemption: USR1 -> checkpoint, exit 143, requeue, --resume, finished (checkpoints: $ckpts)"
  else
    bad "preemption" "$(grep -o 'JobState=[A-Z_]*\|Restarts=[0-9]*\|ExitCode=[0-9:]*' <<<"$info" | tr '\n' ' ')
$log"
  fi
  check_metrics "preempted and resumed run" "$run/metrics.h5" 2
else
  bad "preemption: sbatch failed" "$jid"
fi

finish "$((SECONDS - T0)) s"
