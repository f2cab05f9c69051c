#!/usr/bin/env bash
# compare.sh: dtrain vs PyTorch training throughput on the same model, batch and threads.
#
# Usage: bench/compare.sh [CONFIG=configs/quickstart.ini] [STEPS=20]
#   env: DTRAIN  dtrain binary (default ./dtrain, else build/dtrain)
#        THREADS compute threads for both sides (default 2; dtrain gets OMP_NUM_THREADS)
#        PYTHON  interpreter with torch (default /usr/bin/python3)
#
# Runs `dtrain CONFIG --bench STEPS` (its last line is `bench: X images/s`) and
# tools/dtrain-tool torch-bench (plain NCHW and channels_last) alternately, twice:
# dtrain, torch, dtrain, torch. Alternating spreads slow phases of a shared machine
# over both sides. Prints every number, the means and the ratios dtrain/torch.
# Exit status: 0 on success, 2 when dtrain is missing or fails (torch numbers are
# still printed), 1 on other errors.
set -u

cd "$(dirname "$0")/.." || exit 1
source bench/common.sh
CONFIG=${1:-configs/quickstart.ini}
STEPS=${2:-20}
THREADS=${THREADS:-2}
PYTHON=${PYTHON:-/usr/bin/python3}

bench_steps compare.sh "$STEPS"
if [ ! -r "$CONFIG" ]; then echo "compare.sh: cannot read config '$CONFIG'" >&2; exit 1; fi
bench_dtrain

# The model and batch that CONFIG describes, as torch-bench arguments. The INI is
# read with the same defaults as src/config.h (dataset fashion_mnist, depth 20, basic,
# 16 initial channels, batch 128).
TORCH_ARGS=$("$PYTHON" - "$CONFIG" "$THREADS" <<'EOF'
import configparser, sys
path, threads = sys.argv[1], int(sys.argv[2])
cp = configparser.ConfigParser(inline_comment_prefixes=(";", "#"))
cp.read(path)
def get(sec, key, default):
    return cp.get(sec, key, fallback=default).strip()
shapes = {"fashion_mnist": (1, 28, 10), "mnist": (1, 28, 10), "kmnist": (1, 28, 10),
          "cifar10": (3, 32, 10), "cifar100": (3, 32, 100)}
ds = get("data", "dataset", "fashion_mnist")
if ds not in shapes:
    sys.exit("compare.sh: %s: unknown [data] dataset = %s" % (path, ds))
if get("model", "name", "resnet_preact") != "resnet_preact":
    sys.exit("compare.sh: %s: only model.name = resnet_preact has a PyTorch twin" % path)
cfg_threads = int(get("train", "threads", "0"))
if cfg_threads not in (0, threads):
    print("compare.sh: %s sets [train] threads = %d; PyTorch uses %d too"
          % (path, cfg_threads, cfg_threads), file=sys.stderr)
    threads = cfg_threads
c, s, k = shapes[ds]
args = ["--depth", get("model", "depth", "20"), "--block", get("model", "block_type", "basic"),
        "--initial-channels", get("model", "initial_channels", "16"),
        "--channels", str(c), "--size", str(s), "--classes", str(k),
        "--batch", get("train", "batch_size", "128"), "--threads", str(threads)]
if get("model", "add_last_bn", "false").lower() in ("true", "yes", "on", "1"):
    args.append("--add-last-bn")
print(" ".join(args))
EOF
) || exit 1

echo "config $CONFIG, $STEPS timed steps, $THREADS threads"
bench_cpu
echo "torch-bench $TORCH_ARGS"

DT_RATES=()
PT_RATES=()
CL_RATES=()
DT_OK=1
if [ ! -x "$DTRAIN" ]; then
  echo "dtrain: binary $DTRAIN not found (set DTRAIN=path); running the PyTorch side only"
  DT_OK=0
fi

for round in 1 2; do
  if [ $DT_OK = 1 ]; then
    out=$(OMP_NUM_THREADS=$THREADS "$DTRAIN" "$CONFIG" --bench "$STEPS" 2>&1)
    r=$(printf '%s\n' "$out" | rate bench)
    if [ -z "$r" ]; then
      echo "dtrain run $round failed; its output:"
      printf '%s\n' "$out" | tail -n 20
      DT_OK=0
    else
      echo "run $round  dtrain               $r images/s   (load $(bench_load))"
      DT_RATES+=("$r")
    fi
  fi
  for layout in plain channels_last; do
    extra=""
    [ $layout = channels_last ] && extra="--channels-last"
    # shellcheck disable=SC2086  # TORCH_ARGS is a word list on purpose
    out=$(OMP_NUM_THREADS=$THREADS "$PYTHON" tools/dtrain-tool torch-bench $TORCH_ARGS \
      --warmup 3 --steps "$STEPS" $extra 2>&1)
    r=$(printf '%s\n' "$out" | rate torch)
    if [ -z "$r" ]; then
      echo "torch-bench ($layout) failed; its output:"
      printf '%s\n' "$out" | tail -n 20
      exit 1
    fi
    printf 'run %s  torch %-14s %s images/s   (load %s)\n' "$round" "$layout" "$r" "$(bench_load)"
    if [ $layout = plain ]; then PT_RATES+=("$r"); else CL_RATES+=("$r"); fi
  done
done

pt=$(mean "${PT_RATES[@]}")
cl=$(mean "${CL_RATES[@]}")
echo "mean  torch plain          $pt images/s"
echo "mean  torch channels_last  $cl images/s"
if [ $DT_OK = 1 ] && [ ${#DT_RATES[@]} -eq 2 ]; then
  dt=$(mean "${DT_RATES[@]}")
  echo "mean  dtrain               $dt images/s"
  echo "ratio dtrain/torch plain          $(ratio "$dt" "$pt")"
  echo "ratio dtrain/torch channels_last  $(ratio "$dt" "$cl")"
  exit 0
fi
echo "ratio dtrain/torch: n/a (no dtrain result)"
exit 2
