#!/usr/bin/env bash
# sweep_batch_lr.sh: the batch-size / learning-rate experiment of docs/reference-experiments.md
# "Published results" (ResNet-preact-20,
# CIFAR-10) as one Slurm job array, one array task per grid point, each with its own run
# directory. Run from the repository root.
#
#   slurm/sweep_batch_lr.sh [options] [-- SBATCH_OPTIONS...]
#
# Default grid: the first table of 6.9, 200 epochs, batches 8..4096, linear scaling
# lr = 0.1 x batch / 128 (passed as --set optim.lr=0.1 --set optim.reference_batch=128 so dtrain
# applies the rule), cosine and multistep schedules: 20 tasks. With --lrs the initial lr is
# given directly (each batch x each lr, --set optim.reference_batch=B), which is the
# "effect of the initial LR at fixed batch" table.
#
# Options:
#   --config FILE        base configuration (default
#                        configs/resnet_preact20_cifar10_b128_lr0.1_cosine_e200.ini, the 6.9
#                        settings: weight decay 1e-4, seed 7, crop + flip; else
#                        configs/quickstart.ini)
#   --dataset NAME       data.dataset (default cifar10)
#   --epochs N           train.epochs (default 200; use 400 / 800 for the longer tables)
#   --batches "B ..."    batch sizes (default "8 16 32 64 128 256 512 1024 2048 4096")
#   --base-lr X          lr at batch 128 for the linear rule (default 0.1)
#   --lrs "L ..."        initial lrs instead of the linear rule
#   --schedules "S ..."  schedule types (default "cosine multistep"). Cosine decays to 0 (original
#   reference code,
#                        docs/reference-experiments.md "Code generations"); multistep divides by 10
#                        at 50% and 75% of the epochs (the
#                        README does not state its milestones; 160 epochs used 80,120)
#   --set KEY=VALUE      extra dtrain override for every task (repeatable; no spaces)
#   --runs DIR           parent of the run directories (default runs/sweep_batch_lr_<time>)
#   --script FILE        batch script (default slurm/single_node.sbatch)
#   --max-parallel N     at most N tasks at a time (--array=...%N)
#   --dry-run            print the grid and the sbatch command; write and submit nothing
# SBATCH_OPTIONS after -- go to sbatch after the defaults (one GPU per task, as the README
# table was made on one GTX 1080 Ti: --ntasks-per-node=1 --gpus-per-node=1 --cpus-per-task=8),
# e.g. -- --partition=gpu --time=4:00:00, or --wait to return when every task has ended.
# Each task's rank is bound to its --cpus-per-task cores by the batch script
# (single_node.sbatch: srun --cpu-bind=cores, or mpirun --map-by ...:pe=K --bind-to core), and
# dtrain sizes its threads to them.
# Tiny CPU try-out (see tests/test_slurm.sh):
#   DTRAIN_LAUNCH=mpirun DTRAIN_DEVICE=cpu slurm/sweep_batch_lr.sh --dataset fashion_mnist \
#     --epochs 1 --batches "32 64" --schedules cosine --set data.train_limit=512 \
#     -- --gpus-per-node=0 --cpus-per-task=1
set -euo pipefail

die() { echo "sweep_batch_lr.sh: $*" >&2; exit 2; }

config=configs/resnet_preact20_cifar10_b128_lr0.1_cosine_e200.ini
[[ -f $config ]] || config=configs/quickstart.ini
dataset=cifar10
epochs=200
batches="8 16 32 64 128 256 512 1024 2048 4096"
base_lr=0.1
lrs=""
schedules="cosine multistep"
sets=()
runs=""
script=slurm/single_node.sbatch
max_parallel=""
dry_run=0
while (($#)); do
  case $1 in
    --config) config=${2:?}; shift 2 ;;
    --dataset) dataset=${2:?}; shift 2 ;;
    --epochs) epochs=${2:?}; shift 2 ;;
    --batches) batches=${2:?}; shift 2 ;;
    --base-lr) base_lr=${2:?}; shift 2 ;;
    --lrs) lrs=${2:?}; shift 2 ;;
    --schedules) schedules=${2:?}; shift 2 ;;
    --set) sets+=("${2:?}"); shift 2 ;;
    --runs) runs=${2:?}; shift 2 ;;
    --script) script=${2:?}; shift 2 ;;
    --max-parallel) max_parallel=${2:?}; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
user_sbatch=("$@")

is_uint() { [[ $1 =~ ^[1-9][0-9]*$ ]]; }
is_num() { [[ $1 =~ ^[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$ ]]; }
[[ -f $config ]] || die "--config $config: no such file"
[[ -f $script ]] || die "--script $script: no such file"
is_uint "$epochs" || die "--epochs $epochs: expected a positive integer"
is_num "$base_lr" || die "--base-lr $base_lr: expected a number"
[[ -z $max_parallel ]] || is_uint "$max_parallel" || die "--max-parallel $max_parallel: expected a positive integer"
for b in $batches; do is_uint "$b" || die "--batches: '$b' is not a positive integer"; done
for l in $lrs; do is_num "$l" || die "--lrs: '$l' is not a number"; done
for s in $schedules; do [[ $s =~ ^(cosine|multistep|constant)$ ]] || die "--schedules: '$s' is not cosine, multistep or constant"; done
for s in "${sets[@]}"; do [[ $s =~ ^[a-z_]+\.[a-z_0-9]+=[^[:space:]]*$ ]] || die "--set '$s': expected section.key=value without spaces"; done
[[ -n $batches && -n $schedules ]] || die "empty grid"

[[ -n $runs ]] || runs=runs/sweep_batch_lr_$(date +%Y%m%d-%H%M%S)
runs=$(realpath -m "$runs")
grid_file=$runs/grid.txt

# One line per task: RUN_DIR then its dtrain options (the format single_node.sbatch reads).
lines=()
table=()
for sched in $schedules; do
  for b in $batches; do
    if [[ -z $lrs ]]; then
      lr=$(awk -v l="$base_lr" -v b="$b" 'BEGIN { printf "%.10g", l * b / 128 }')
      opt="--set train.batch_size=$b --set optim.lr=$base_lr --set optim.reference_batch=128"
      lr_list=$lr
    else
      lr_list=$lrs
    fi
    for lr in $lr_list; do
      [[ -n $lrs ]] && opt="--set train.batch_size=$b --set optim.lr=$lr --set optim.reference_batch=$b"
      o="$opt --set schedule.type=$sched"
      case $sched in
        cosine) o+=" --set schedule.min_factor=0" ;;
        multistep)
          m1=$((epochs / 2 > 0 ? epochs / 2 : 1))
          m2=$((epochs * 3 / 4 > m1 ? epochs * 3 / 4 : m1 + 1))
          o+=" --set schedule.milestones=$m1,$m2 --set schedule.gamma=0.1" ;;
      esac
      name=b${b}_lr${lr}_${sched}_e${epochs}
      lines+=("$runs/$name $o")
      table+=("$(printf '%4d %6d %10s %-9s %6d  %s' ${#table[@]} "$b" "$lr" "$sched" "$epochs" "$runs/$name")")
    done
  done
done
n=${#lines[@]}

common=(--set "data.dataset=$dataset" --set model.name=resnet_preact --set model.depth=20
        --set model.block_type=basic --set "train.epochs=$epochs")
for s in "${sets[@]}"; do common+=(--set "$s"); done
array=0-$((n - 1))${max_parallel:+%$max_parallel}
sbatch_cmd=(sbatch --job-name=sweep_batch_lr "--array=$array" "--output=$runs/slurm-%A_%a.out"
            --ntasks-per-node=1 --gpus-per-node=1 --cpus-per-task=8
            "--export=ALL,DTRAIN_ARRAY_FILE=$grid_file" "${user_sbatch[@]}"
            "$script" "$config" "${common[@]}")

echo "batch-size / learning-rate grid (docs/reference-experiments.md \"Published results\"): $n tasks (lr = initial learning rate)"
printf '%4s %6s %10s %-9s %6s  %s\n' task batch lr schedule epochs run_dir
printf '%s\n' "${table[@]}"
if ((dry_run)); then
  echo "dry run; would write $grid_file:"
  printf '  %s\n' "${lines[@]}"
  echo "and run:"
  printf '%q ' "${sbatch_cmd[@]}"
  echo
  exit 0
fi
mkdir -p "$runs"
printf '%s\n' "${lines[@]}" >"$grid_file"
printf '%q ' "${sbatch_cmd[@]}"
echo
"${sbatch_cmd[@]}"
