#!/usr/bin/env bash
# reproduce.sh: run one experiment of experiments/*.rows, row by row and seed by seed, each in
# its own run directory; skip what has finished, resume what was interrupted.
#
#   scripts/reproduce.sh EXPERIMENT [--epochs N] [--dataset NAME] [--device cpu|cuda]
#                        [--seeds K] [--rows "ROW ..."] [--runs DIR] [--set KEY=VALUE]...
#                        [--dry-run]
#
# EXPERIMENT names experiments/EXPERIMENT.rows (one row per line: ROW CONFIG [seeds=K]
# [SECTION.KEY=VALUE ...]). Run directories: DIR/EXPERIMENT/ROW/seedS (DIR default
# runs/reproduce); seed S is the config's train.seed + S. A directory with reproduce.done has
# finished and is skipped; one with a checkpoint is continued with --resume; any other is started
# afresh. --dataset defaults to cifar10 when data/cifar10 exists, else fashion_mnist (the CPU
# campaign); --epochs defaults to each config's own; --set adds a dtrain override to every row
# (e.g. --set data.train_limit=30000 for a shortened campaign).
set -euo pipefail

die() { echo "reproduce.sh: $*" >&2; exit 2; }

root=$(cd "$(dirname "$0")/.." && pwd)
experiment=""
epochs=""
dataset=""
device=cpu
seeds=""
only_rows=""
runs=runs/reproduce
dry=0
extra_sets=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --epochs) epochs=$2; shift 2 ;;
    --dataset) dataset=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --rows) only_rows=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --set) extra_sets+=("$2"); shift 2 ;;
    --dry-run) dry=1; shift ;;
    -h|--help) sed -n '2,/^set -e/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [[ -z $experiment ]] || die "one experiment at a time"; experiment=$1; shift ;;
  esac
done
[[ -n $experiment ]] || die "usage: scripts/reproduce.sh EXPERIMENT [options] (see --help)"
rows_file=$root/experiments/$experiment.rows
[[ -f $rows_file ]] || die "$rows_file: no such experiment (have: $(cd "$root/experiments" && ls *.rows | sed 's/\.rows//' | tr '\n' ' '))"
if [[ -z $dataset ]]; then
  if [[ -d $root/data/cifar10 ]]; then dataset=cifar10; else dataset=fashion_mnist; fi
fi
dtrain=${DTRAIN:-$root/build/dtrain}
[[ -x $dtrain ]] || die "$dtrain: not built (run scripts/build.sh)"
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)

run_one() { # ROW SEED CONFIG SETS...
  local row=$1 s=$2 config=$3; shift 3
  local dir=$runs/$experiment/$row/seed$s
  if [[ -f $dir/reproduce.done ]]; then echo "reproduce.sh: $dir: finished, skipped"; return 0; fi
  local base_seed
  base_seed=$(sed -n 's/^seed *= *//p' "$root/configs/$config" | head -1)
  local args=("$root/configs/$config" --device "$device" --set "data.dataset=$dataset"
              --set "train.seed=$(( ${base_seed:-0} + s ))" --set "output.dir=$dir"
              --set output.overwrite=false)
  [[ -z $epochs ]] || args+=(--set "train.epochs=$epochs")
  local kv
  for kv in "${extra_sets[@]}" "$@"; do args+=(--set "$kv"); done
  local cmd
  if compgen -G "$dir/checkpoints/*.h5" >/dev/null; then
    cmd=("$dtrain" --resume "$dir")
  else
    rm -rf "$dir"
    cmd=("$dtrain" "${args[@]}")
  fi
  echo "reproduce.sh: ${cmd[*]}"
  (( dry )) && return 0
  mkdir -p "$(dirname "$dir")"
  local t0=$SECONDS rc=0
  "${cmd[@]}" || rc=$?
  if (( rc != 0 )); then echo "reproduce.sh: $dir: dtrain exited $rc" >&2; return $rc; fi
  printf 'command = %s\ncommit = %s\ndevice = %s\nwall_s = %d\nfinished = %s\n' \
    "$(printf '%q ' "$dtrain" "${args[@]}")" "$commit" "$device" $(( SECONDS - t0 )) \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)" > "$dir/reproduce.done.tmp"
  mv "$dir/reproduce.done.tmp" "$dir/reproduce.done"
}

while read -r row config rest; do
  [[ -z $row || $row == \#* ]] && continue
  if [[ -n $only_rows && " $only_rows " != *" $row "* ]]; then continue; fi
  [[ -f $root/configs/$config ]] || die "$rows_file: row $row: configs/$config not found"
  n=${seeds:-1}
  sets=()
  for tok in $rest; do
    case $tok in
      seeds=*) [[ -n $seeds ]] || n=${tok#seeds=} ;;
      *=*) sets+=("$tok") ;;
      *) die "$rows_file: row $row: '$tok' is neither seeds=K nor SECTION.KEY=VALUE" ;;
    esac
  done
  for (( s = 0; s < n; s++ )); do run_one "$row" "$s" "$config" "${sets[@]}"; done
done < "$rows_file"
