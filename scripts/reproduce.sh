#!/usr/bin/env bash
# reproduce.sh: run one experiment of experiments/*.rows, row by row and seed by seed, each in
# its own run directory; skip what has finished, resume what was interrupted, then write the
# experiment's table and plots (results/EXPERIMENT/, tools/dtrain_tools/results.py).
#
#   scripts/reproduce.sh EXPERIMENT [--epochs N] [--dataset NAME] [--device cpu|cuda]
#                        [--seeds K] [--rows "ROW ..."] [--runs DIR] [--results DIR]
#                        [--experiments DIR] [--set KEY=VALUE]... [--slurm] [--dry-run]
#                        [-- SBATCH_OPTIONS...]
#
# EXPERIMENT names EXPERIMENTS/EXPERIMENT.rows (EXPERIMENTS = --experiments, default
# experiments/; one row per line: ROW CONFIG [seeds=K] [runner=dtrain|torch]
# [SECTION.KEY=VALUE ...], CONFIG relative to configs/). Run directories:
# DIR/EXPERIMENT/ROW/seedS (DIR = --runs, default runs/reproduce); seed S is the config's
# train.seed + S. A directory with reproduce.done has finished and is skipped; one with a
# checkpoint is continued with --resume; any other is started afresh. reproduce.done records
# the command, reproduce (this script's command for the row), commit, device, device_name (the
# CPU or GPU model), wall_s and finished. --dataset defaults to each config's own, where a
# CIFAR config falls back to fashion_mnist when data/cifar10 (data/cifar100) is missing (the CPU
# campaign); --epochs defaults to each config's own. So on a machine with CIFAR-10 in
# data/cifar10, `scripts/reproduce.sh EXPERIMENT` runs the published protocol.
# runner=torch trains the row with tools/dtrain_tools/torch_train.py (PyTorch, same protocol).
# --set adds a dtrain override to every row, before the row's own (e.g. data.dir=DIR,
# data.loader_threads=4, or data.train_limit=30000 for a shortened campaign).
# The table goes to --results DIR/EXPERIMENT/README.md (default results/); it is written after
# every run, and again at the end.
#
# --slurm: one Slurm array task per unfinished row x seed through slurm/single_node.sbatch
# (DTRAIN_ARRAY_FILE, as slurm/sweep_batch_lr.sh does), one rank per task, each task's config
# passed as --set options over an empty base config. SBATCH_OPTIONS after -- go to sbatch (e.g.
# --partition=gpu, --wait). With --wait the finished runs are marked and the table written at
# once; without it, run the same command again when the array has ended (finished runs are then
# marked, the table written, unfinished ones submitted again and resumed). runner=torch rows
# are not submitted (run them without --slurm).
# Exit status: 0 done, 2 usage or a bad rows file, else the failing run's status (143: a run
# was interrupted by SIGTERM/SIGINT after writing its checkpoint; run again to resume).
set -euo pipefail

die() { echo "reproduce.sh: $*" >&2; exit 2; }

root=$(cd "$(dirname "$0")/.." && pwd)
invocation=("$@")
experiment=""
epochs=""
dataset=""
device=cpu
seeds=""
only_rows=""
extra_sets=()
runs=runs/reproduce
results=$root/results
expdir=$root/experiments
dry=0
slurm=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --epochs) epochs=${2:?}; shift 2 ;;
    --dataset) dataset=${2:?}; shift 2 ;;
    --device) device=${2:?}; shift 2 ;;
    --seeds) seeds=${2:?}; shift 2 ;;
    --rows) only_rows=${2:?}; shift 2 ;;
    --runs) runs=${2:?}; shift 2 ;;
    --results) results=${2:?}; shift 2 ;;
    --experiments) expdir=${2:?}; shift 2 ;;
    --set) [[ ${2:-} =~ ^[a-z_]+\.[a-z_0-9]+=[^[:space:]]*$ ]] || die "--set '${2:-}': expected section.key=value without spaces"
           extra_sets+=("$2"); shift 2 ;;
    --slurm) slurm=1; shift ;;
    --dry-run) dry=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [[ -z $experiment ]] || die "one experiment at a time"; experiment=$1; shift ;;
  esac
done
user_sbatch=("$@")
[[ -n $experiment ]] || die "usage: scripts/reproduce.sh EXPERIMENT [options] (see --help)"
[[ $device == cpu || $device == cuda ]] || die "--device $device: expected cpu or cuda"
[[ -z $epochs || $epochs =~ ^[1-9][0-9]*$ ]] || die "--epochs $epochs: expected a positive integer"
[[ -z $seeds || $seeds =~ ^[1-9][0-9]*$ ]] || die "--seeds $seeds: expected a positive integer"
rows_file=$expdir/$experiment.rows
[[ -f $rows_file ]] || die "$rows_file: no such experiment (have: $(cd "$expdir" 2>/dev/null && ls *.rows 2>/dev/null | sed 's/\.rows//' | tr '\n' ' '))"
# Every name of --rows must be a row of the file: a typo (or "a,b" for "a b") would otherwise
# run nothing and still write the table.
if [[ -n $only_rows ]]; then
  known=" $(awk '!/^[[:space:]]*(#|$)/ {printf "%s ", $1}' "$rows_file")"
  for r in $only_rows; do
    [[ $known == *" $r "* ]] || die "--rows: $r is not a row of $rows_file (rows:$known)"
  done
fi

dtrain=${DTRAIN:-$root/build/dtrain}
[[ -x $dtrain ]] || die "$dtrain: not built (run scripts/build.sh)"
python=${DTRAIN_PYTHON:-/usr/bin/python3}
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
mkdir -p "$runs"
runs=$(cd "$runs" && pwd)

# The model of the device the runs use: the GPU's name under cuda, else the CPU's.
device_name() {
  local name=""
  if [[ $device == cuda ]] && command -v nvidia-smi >/dev/null; then
    name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
  fi
  if [[ -z $name && -r /proc/cpuinfo ]]; then
    # Virtual machines often report a bare "AMD EPYC": add family, model and the widest ISA.
    name=$(awk -F': *' '/^model name/ { n = $2 } /^cpu family/ { f = $2 } /^model[ \t]*:/ { m = $2 }
             /^flags/ { isa = $2 ~ /avx512f/ ? "AVX-512" : $2 ~ /avx2/ ? "AVX2" : "no AVX2" }
             /^$/ { exit } END { printf "%s (family %s, model %s, %s)", n, f, m, isa }' /proc/cpuinfo)
  fi
  echo "${name:-unknown}"
}
device_model=$(device_name)

# This script's command line for one row (what the table prints beside it).
row_command() { # ROW
  local c=(scripts/reproduce.sh "$experiment" --rows "$1")
  [[ -z $dataset ]] || c+=(--dataset "$dataset")
  c+=(--device "$device")
  [[ -z $epochs ]] || c+=(--epochs "$epochs")
  [[ -z $seeds ]] || c+=(--seeds "$seeds")
  [[ $expdir == "$root/experiments" ]] || c+=(--experiments "$expdir")
  local kv
  for kv in "${extra_sets[@]}"; do c+=(--set "$kv"); done
  printf '%q ' "${c[@]}" | sed 's/ $//'
}

# mark_done DIR CMD ROW SECONDS: write DIR/reproduce.done (atomically).
mark_done() {
  printf 'command = %s\nreproduce = %s\ncommit = %s\ndevice = %s\ndevice_name = %s\nwall_s = %d\nfinished = %s\n' \
    "$2" "$(row_command "$3")" "$commit" "$device" "$device_model" "$4" \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$1/reproduce.done.tmp"
  mv "$1/reproduce.done.tmp" "$1/reproduce.done"
}

# finished_epochs DIR: the last epoch in DIR/metrics.h5 and train.epochs of DIR/config.ini
# ("E N"), or nothing.
finished_epochs() {
  [[ -f $1/metrics.h5 && -f $1/config.ini ]] || return 0
  local last n
  last=$(h5dump -y -w 0 -d /epoch/epoch "$1/metrics.h5" 2>/dev/null |
         awk '/DATA \{/ { f = 1; next } f && /^ *\}/ { f = 0 } f' | tr ',' '\n' | tr -d ' \t' |
         grep -v '^$' | tail -1)
  n=$(awk '/^\[/ { s = $0 } s == "[train]" && $1 == "epochs" { print $3 }' "$1/config.ini" | head -1)
  [[ -n $last && -n $n ]] && echo "${last%%.*} $n"
}

table() {
  (( dry )) && return 0
  PYTHONPATH=$root/tools "$python" -m dtrain_tools.results "$experiment" --runs "$runs" \
    --experiments "$expdir" --out "$results" ||
    echo "reproduce.sh: the table of $experiment was not written (see above)" >&2
}

child=""
forward() { [[ -n $child ]] && kill -TERM "$child" 2>/dev/null; stop=1; }
stop=0
trap forward TERM INT

# run_one ROW SEED RUNNER CONFIG SETS...: one run, in the foreground (local mode), or one line
# of the Slurm array file (--slurm).
run_one() {
  local row=$1 s=$2 runner=$3 config=$4; shift 4
  local dir=$runs/$experiment/$row/seed$s
  if [[ -f $dir/reproduce.done ]]; then echo "reproduce.sh: $dir: finished, skipped"; return 0; fi
  local base_seed
  base_seed=$(sed -n 's/^seed *= *//p' "$root/configs/$config" | head -1)
  # The dataset: --dataset, else the config's own; CIFAR from data/ when it is there, else
  # Fashion-MNIST in its place.
  local ds=$dataset data_dir=()
  if [[ -z $ds ]]; then
    ds=$(awk '/^\[/ { s = $0 } s == "[data]" && $1 == "dataset" { print $3 }' "$root/configs/$config" | head -1)
    ds=${ds:-fashion_mnist}
  fi
  if [[ $ds == cifar10 || $ds == cifar100 ]]; then
    if [[ -d $root/data/$ds ]]; then
      [[ " ${extra_sets[*]} " == *" data.dir="* ]] || data_dir=(--set "data.dir=$root/data/$ds")
    elif [[ -z $dataset ]]; then
      ds=fashion_mnist
    fi
  fi
  local sets=(--set "data.dataset=$ds" "${data_dir[@]}" --set "train.seed=$(( ${base_seed:-0} + s ))"
              --set "output.dir=$dir" --set output.overwrite=false)
  [[ -z $epochs ]] || sets+=(--set "train.epochs=$epochs")
  local kv
  for kv in "$@"; do sets+=(--set "$kv"); done
  local args=("$root/configs/$config" --device "$device" "${sets[@]}")
  local prog=("$dtrain") pattern="$dir/checkpoints/*.h5"
  if [[ $runner == torch ]]; then
    prog=(env "PYTHONPATH=$root/tools" "$python" -m dtrain_tools.torch_train)
    pattern="$dir/checkpoints/torch_epoch_*.pt"
  fi
  local fresh=("${prog[@]}" "${args[@]}") cmd resume=0
  if compgen -G "$pattern" >/dev/null; then
    resume=1
    cmd=("${prog[@]}" --resume "$dir" --device "$device")
  else
    cmd=("${fresh[@]}")
  fi
  local fresh_q
  fresh_q=$(printf '%q ' "${fresh[@]}")
  if (( slurm )); then
    # A run the array finished (all epochs in metrics.h5) is marked; the rest is submitted.
    local fe
    fe=$(finished_epochs "$dir")
    if [[ -n $fe && ${fe% *} == "${fe#* }" ]]; then
      if (( ! dry )); then
        local wall
        wall=$(PYTHONPATH=$root/tools "$python" -m dtrain_tools.results --wall "$dir" 2>/dev/null || echo 0)
        mark_done "$dir" "$fresh_q" "$row" "${wall%.*}"
      fi
      echo "reproduce.sh: $dir: finished by Slurm, marked"
      return 0
    fi
    if [[ $runner == torch ]]; then
      echo "reproduce.sh: $dir: runner=torch rows are not submitted to Slurm (run without --slurm)"
      return 0
    fi
    (( resume || dry )) || rm -rf "$dir"
    local line=("$dir") k v
    # The row's config as --set options (the array task starts from an empty base config).
    while IFS='=' read -r k v; do
      line+=(--set "$k=$v")
    done < <(awk '/^\[/ { gsub(/[][ \t]/, ""); s = $0; next }
                  /^[ \t]*[;#]/ || !/=/ { next }
                  { k = $0; sub(/=.*/, "", k); gsub(/[ \t]/, "", k); v = $0; sub(/^[^=]*=[ \t]*/, "", v);
                    sub(/[ \t]+$/, "", v); if (s != "output" || k != "dir") print s "." k "=" v }' \
             "$root/configs/$config")
    for kv in "${sets[@]}"; do [[ $kv == --set || $kv == output.dir=* ]] || line+=(--set "$kv"); done
    for kv in "${line[@]}"; do
      [[ $kv != *[[:space:]]* ]] || die "configs/$config: '$kv' has a space (an array line cannot carry it)"
    done
    array_lines+=("${line[*]}")
    array_rows+=("$row")
    return 0
  fi
  (( resume || dry )) || rm -rf "$dir"
  echo "reproduce.sh: ${cmd[*]}"
  (( dry )) && return 0
  mkdir -p "$(dirname "$dir")"
  local t0=$SECONDS rc=0
  "${cmd[@]}" &
  child=$!
  (( stop )) && kill -TERM "$child" 2>/dev/null
  while :; do
    rc=0
    wait "$child" || rc=$?
    kill -0 "$child" 2>/dev/null || break
  done
  child=""
  if (( rc != 0 )); then echo "reproduce.sh: $dir: $runner exited $rc" >&2; return $rc; fi
  mark_done "$dir" "$fresh_q" "$row" $(( SECONDS - t0 ))
  table
  tabled=1
}

tabled=0 # the table is up to date (written after the last run)
array_lines=()
array_rows=()
rc=0
while read -r row config rest; do
  [[ -z $row || $row == \#* ]] && continue
  if [[ -n $only_rows && " $only_rows " != *" $row "* ]]; then continue; fi
  [[ -f $root/configs/$config ]] || die "$rows_file: row $row: configs/$config not found"
  n=${seeds:-1}
  runner=dtrain
  sets=()
  for tok in $rest; do
    case $tok in
      seeds=*) [[ -n $seeds ]] || n=${tok#seeds=} ;;
      runner=dtrain|runner=torch) runner=${tok#runner=} ;;
      runner=*) die "$rows_file: row $row: $tok: expected runner=dtrain or runner=torch" ;;
      *=*) sets+=("$tok") ;;
      *) die "$rows_file: row $row: '$tok' is neither seeds=K, runner=R nor SECTION.KEY=VALUE" ;;
    esac
  done
  sets=("${extra_sets[@]}" "${sets[@]}")
  for (( s = 0; s < n; s++ )); do
    run_one "$row" "$s" "$runner" "$config" "${sets[@]}" || { rc=$?; break 2; }
  done
done < "$rows_file"
if (( rc != 0 )); then
  table
  exit "$rc"
fi

if (( slurm )); then
  n=${#array_lines[@]}
  if (( n == 0 )); then
    echo "reproduce.sh: $experiment: nothing to submit"
  elif [[ -n ${DTRAIN_REPRODUCE_COLLECT:-} ]]; then
    echo "reproduce.sh: $n runs did not finish in the array (see $runs/$experiment/slurm/slurm-*.out)" >&2
    table
    exit 1
  else
    dir=$runs/$experiment/slurm
    array_file=$dir/array.txt
    base=$dir/empty.ini
    gpus=0
    [[ $device == cuda ]] && gpus=1
    sbatch_cmd=(sbatch "--job-name=reproduce_$experiment" "--array=0-$((n - 1))"
                "--output=$dir/slurm-%A_%a.out" --ntasks-per-node=1 "--gpus-per-node=$gpus"
                --cpus-per-task=8
                "--export=ALL,DTRAIN_ARRAY_FILE=$array_file,DTRAIN_BIN=$dtrain,DTRAIN_DEVICE=$device"
                "${user_sbatch[@]}" "$root/slurm/single_node.sbatch" "$base")
    echo "reproduce.sh: $n array tasks:"
    for (( i = 0; i < n; i++ )); do echo "  $i ${array_rows[i]}: ${array_lines[i]}"; done
    if (( dry )); then
      echo "dry run; would write $array_file and run:"
      printf '%q ' "${sbatch_cmd[@]}"
      echo
      exit 0
    fi
    mkdir -p "$dir"
    printf '; empty base config: each array task passes its row config as --set options\n' > "$base"
    printf '%s\n' "${array_lines[@]}" > "$array_file"
    printf '%q ' "${sbatch_cmd[@]}"
    echo
    (cd "$root" && "${sbatch_cmd[@]}") || exit $?
    if [[ " ${user_sbatch[*]} " == *" --wait "* ]]; then
      # The array has ended: mark what finished and write the table (submitting nothing).
      DTRAIN_REPRODUCE_COLLECT=1 exec "$0" "${invocation[@]}"
    fi
    echo "reproduce.sh: submitted; run the same command again when the array has ended to mark the runs and write the table"
  fi
fi
(( tabled )) || table
