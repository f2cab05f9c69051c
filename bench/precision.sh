#!/usr/bin/env bash
# precision.sh: training throughput in fp32 and bf16, dtrain against PyTorch, in one run.
#
# Usage: bench/precision.sh [STEPS]
#   STEPS    timed steps of every run (default per model: 20 for ResNet-preact-20, 5 for WRN-16-4;
#            about 3 minutes in all on 2 idle cores)
#   env: TORCH_VENV  a virtual environment with a current PyTorch from PyPI, e.g. made by
#                    `python3 -m venv DIR && DIR/bin/pip install torch` (several GB); without it
#                    the PyPI rows are n/a and the exit status is 2
#        PYTHON      the system interpreter with the distribution's PyTorch (default /usr/bin/python3)
#        DTRAIN      dtrain binary (default ./dtrain, else build/dtrain)
#        THREADS     compute threads of every run (default 2: OMP_NUM_THREADS and
#                    torch.set_num_threads)
#        ROUNDS      runs of each row (default 2)
#        MODELS      space-separated subset of: resnet_preact20 wrn16_4 (default both)
#        MARKDOWN    where the table is written as markdown too (default
#                    ${TMPDIR:-/tmp}/dtrain-precision.md)
#
# Rows, for each model (the same model, batch and thread count on every row):
#   dtrain fp32, dtrain bf16 (`--set train.precision=bf16`): `dtrain --bench STEPS`, its `bench:`
#     line (model compute on one batch in memory) and its `activations:` line;
#   PyPI PyTorch fp32 channels_last, and bf16 under torch.autocast("cpu", torch.bfloat16),
#     channels_last (TORCH_VENV);
#   the system PyTorch fp32 NCHW, fp32 channels_last and bf16 autocast channels_last (PYTHON);
# the PyTorch rows by `tools/dtrain-tool torch-bench-models` (tools/dtrain_tools/torch_models.py
# builds the twins; their parameter counts are checked against `dtrain --dry-run`).
# Each round runs every row once, dtrain and PyTorch alternating, every other round in the
# reverse order, so slow phases of a shared machine fall on all rows; each run's line notes the
# load average. The table gives the means and the ratios, the CPU's model and its bf16 / AMX
# flags above it. Compare only numbers of one run of this script, on the CPU it names.
# Exit status: 0 when every row gave a number, 2 when only the PyPI rows are missing (no
# TORCH_VENV), 1 otherwise.
set -u

cd "$(dirname "$0")/.." || exit 1
source bench/common.sh
STEPS_ARG=${1:-}
[ -n "$STEPS_ARG" ] && bench_steps precision.sh "$STEPS_ARG"
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-2}
PYTHON=${PYTHON:-/usr/bin/python3}
MARKDOWN=${MARKDOWN:-${TMPDIR:-/tmp}/dtrain-precision.md}
case $ROUNDS in '' | *[!0-9]* | 0) echo "precision.sh: ROUNDS must be a positive integer, got '$ROUNDS'" >&2; exit 1 ;; esac
case $THREADS in '' | *[!0-9]* | 0) echo "precision.sh: THREADS must be a positive integer, got '$THREADS'" >&2; exit 1 ;; esac
bench_dtrain
if [ ! -x "$DTRAIN" ]; then echo "precision.sh: dtrain binary $DTRAIN not found (set DTRAIN)" >&2; exit 1; fi

# key | label | steps | dtrain settings (on configs/quickstart.ini) | torch-bench-models arguments
SPECS="resnet_preact20|ResNet-preact-20, 1x28x28, batch 128|20|data.dataset=fashion_mnist model.name=resnet_preact model.depth=20 model.block_type=basic model.initial_channels=16 train.batch_size=128|--family resnet_preact --set depth=20 --set block_type=basic --set initial_channels=16 --channels 1 --size 28 --classes 10 --batch 128
wrn16_4|WRN-16-4, 3x32x32, batch 64|5|data.dataset=cifar10 data.dir=@CIFAR@ model.name=wrn model.depth=16 model.widening_factor=4 model.drop_rate=0 train.batch_size=64|--family wrn --set depth=16 --set widening_factor=4 --set drop_rate=0 --channels 3 --size 32 --classes 10 --batch 64"
MODELS=${MODELS:-$(printf '%s\n' "$SPECS" | cut -d'|' -f1 | tr '\n' ' ')}
for m in $MODELS; do
  printf '%s\n' "$SPECS" | cut -d'|' -f1 | grep -qx "$m" || { echo "precision.sh: unknown model key '$m'" >&2; exit 1; }
done

# The interpreters and their PyTorch versions; a missing PyPI environment is said, not fatal.
torch_version() { "$1" -c 'import torch; print(torch.__version__)' 2>/dev/null | tail -n 1; }
SYS_VER=$(torch_version "$PYTHON")
if [ -z "$SYS_VER" ]; then echo "precision.sh: $PYTHON cannot import torch (set PYTHON)" >&2; exit 1; fi
VENV_PY="" VENV_VER="" VENV_MISSING=""
if [ -z "${TORCH_VENV:-}" ]; then
  VENV_MISSING="TORCH_VENV is not set"
elif [ ! -x "$TORCH_VENV/bin/python" ]; then
  VENV_MISSING="TORCH_VENV=$TORCH_VENV has no bin/python"
else
  VENV_PY=$TORCH_VENV/bin/python
  VENV_VER=$(torch_version "$VENV_PY")
  [ -n "$VENV_VER" ] || VENV_MISSING="$VENV_PY cannot import torch"
fi
if [ -n "$VENV_MISSING" ]; then
  echo "precision.sh: no PyPI PyTorch: $VENV_MISSING; its rows are n/a. Make one with" \
    "'python3 -m venv DIR && DIR/bin/pip install torch' and set TORCH_VENV=DIR" >&2
  VENV_VER="PyPI"
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/dtrain-precision.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT
case " $MODELS " in
  *" wrn16_4 "*) bench_cifar_data "$TMP/cifar" || { echo "precision.sh: cannot write the synthetic data set" >&2; exit 1; } ;;
esac

# Rows: key | label. The order of a forward round; dtrain and PyTorch alternate.
ROWS="dt_fp32|dtrain fp32
pt_fp32|PyTorch $VENV_VER fp32 channels_last
sys_nchw|PyTorch $SYS_VER fp32 NCHW
dt_bf16|dtrain bf16
pt_bf16|PyTorch $VENV_VER bf16 autocast channels_last
sys_fp32|PyTorch $SYS_VER fp32 channels_last
sys_bf16|PyTorch $SYS_VER bf16 autocast channels_last"
ROW_KEYS=$(printf '%s\n' "$ROWS" | cut -d'|' -f1 | tr '\n' ' ')
row_label() { printf '%s\n' "$ROWS" | grep "^$1|" | cut -d'|' -f2; }

declare -A RES=() ACT=() PARAMS=() STEPS_OF=()
FAIL=0 MISSING=0 DTINFO=""

# run_row MODEL ROW: one run; its rate appended to RES[MODEL|ROW], a failure said with the
# output's tail.
run_row() {
  local model=$1 row=$2 out r py="" extra=()
  case $row in
    dt_*)
      local p=${row#dt_}
      out=$(OMP_NUM_THREADS=$THREADS "$DTRAIN" configs/quickstart.ini "${DARGS[@]}" \
        --set "train.precision=$p" --bench "$STEPS" 2>&1)
      r=$(printf '%s\n' "$out" | rate bench)
      ACT[$model|$p]=$(printf '%s\n' "$out" | sed -n 's/^activations: //p' | tail -n 1)
      # what dtrain says of its CPU backend's ISA and 16-bit mode, when it says it
      [ -n "$DTINFO" ] || DTINFO=$(printf '%s\n' "$out" | grep -iE '\bisa\b|\bnative\b|emulated' | head -n 2 | paste -sd ';' -)
      ;;
    pt_* | sys_*)
      case $row in pt_*) py=$VENV_PY ;; *) py=$PYTHON ;; esac
      if [ -z "$py" ]; then MISSING=1; return; fi
      case $row in *_nchw) ;; *) extra+=(--channels-last) ;; esac
      case $row in *_bf16) extra+=(--autocast-bf16) ;; esac
      # shellcheck disable=SC2086  # TARGS is a word list on purpose
      out=$(OMP_NUM_THREADS=$THREADS "$py" tools/dtrain-tool torch-bench-models $TARGS \
        --threads "$THREADS" --warmup 2 --steps "$STEPS" "${extra[@]}" 2>&1)
      r=$(printf '%s\n' "$out" | rate torch)
      local n
      n=$(printf '%s\n' "$out" | sed -n 's/^model .*, \([0-9]*\) params, .*/\1/p' | tail -n 1)
      [ -n "$n" ] && PARAMS[$model|torch]=$n
      ;;
  esac
  if [ -z "$r" ]; then
    echo "run $round  $(row_label "$row") failed; its output:"
    printf '%s\n' "$out" | tail -n 15 | sed 's/^/    /'
    FAIL=1
    return
  fi
  RES[$model|$row]="${RES[$model|$row]:-} $r"
  printf 'run %s  %-50s %9s images/s   (load %s)\n' "$round" "$(row_label "$row")" "$r" "$(bench_load)"
}

echo "precision.sh: $THREADS threads, $ROUNDS rounds, dtrain $DTRAIN, PyTorch $SYS_VER ($PYTHON) and ${VENV_PY:+$VENV_VER ($VENV_PY)}${VENV_MISSING:+none from PyPI ($VENV_MISSING)}"
CPU=$(bench_cpu)
echo "$CPU"
echo "start: $(uptime)"
for model in $MODELS; do
  IFS='|' read -r _ label steps dsets TARGS <<<"$(printf '%s\n' "$SPECS" | grep "^$model|")"
  STEPS=${STEPS_ARG:-$steps}
  STEPS_OF[$model]=$STEPS
  DARGS=(--set "output.dir=$TMP/run" --set output.overwrite=true)
  for kv in ${dsets//@CIFAR@/$TMP/cifar}; do DARGS+=(--set "$kv"); done
  echo "== $label, $STEPS timed steps"
  PARAMS[$model|dtrain]=$("$DTRAIN" configs/quickstart.ini "${DARGS[@]}" --dry-run 2>/dev/null |
    sed -n 's/^parameters: //p')
  for round in $(seq 1 "$ROUNDS"); do
    keys=$ROW_KEYS
    # shellcheck disable=SC2086  # ROW_KEYS is a word list on purpose
    [ $((round % 2)) = 0 ] && keys=$(printf '%s\n' $ROW_KEYS | tac | tr '\n' ' ')
    for row in $keys; do run_row "$model" "$row"; done
  done
done
echo "end: $(uptime)"
echo

# ---- the table: markdown, on stdout and in $MARKDOWN ----
# shellcheck disable=SC2086  # RES holds a word list of rates
m() { mean ${RES[$1|$2]:-}; }
act_mib() { printf '%s\n' "${ACT[$1|$2]:-}" | awk 'NF { print $1 } !NF { print "n/a" }'; }
# shellcheck disable=SC2317  # r, a and p are called through line
table() {
  local model head="| images/s (means of $ROUNDS) |" sep="|---|"
  echo "**CPU**: ${CPU#cpu: }"
  echo
  echo "dtrain: ${DTINFO:-no oneDNN ISA line in its --bench output}; $THREADS threads on every row; $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  for model in $MODELS; do
    head="$head $(printf '%s\n' "$SPECS" | grep "^$model|" | cut -d'|' -f2), ${STEPS_OF[$model]} steps |"
    sep="$sep---:|"
  done
  echo "$head"
  echo "$sep"
  line() { # LABEL then one cell per model from the command "$@" MODEL
    local label=$1 out
    shift
    out="| $label |"
    for model in $MODELS; do out="$out $("$@" "$model") |"; done
    echo "$out"
  }
  for row in dt_fp32 dt_bf16 pt_fp32 pt_bf16 sys_nchw sys_fp32 sys_bf16; do # dtrain first
    local cells
    cells="| $(row_label "$row") |"
    for model in $MODELS; do cells="$cells $(m "$model" "$row") |"; done
    echo "$cells"
  done
  r() { ratio "$(m "$3" "$1")" "$(m "$3" "$2")"; }
  line "dtrain bf16 / dtrain fp32" r dt_bf16 dt_fp32
  line "dtrain bf16 / PyTorch $VENV_VER bf16 autocast" r dt_bf16 pt_bf16
  line "dtrain fp32 / PyTorch $VENV_VER fp32 channels_last" r dt_fp32 pt_fp32
  line "dtrain bf16 / PyTorch $SYS_VER bf16 autocast" r dt_bf16 sys_bf16
  line "dtrain fp32 / PyTorch $SYS_VER fp32 channels_last" r dt_fp32 sys_fp32
  line "PyTorch $VENV_VER bf16 autocast / fp32" r pt_bf16 pt_fp32
  a() { act_mib "$2" "$1"; }
  line "dtrain activations fp32 (MiB)" a fp32
  line "dtrain activations bf16 (MiB)" a bf16
  p() {
    local d=${PARAMS[$1|dtrain]:-?} t=${PARAMS[$1|torch]:-?}
    if [ "$d" = "$t" ] || [ "$t" = "?" ]; then echo "$d"; else echo "dtrain $d, PyTorch $t: DIFFER"; fi
  }
  line "parameters (dtrain = PyTorch)" p
}
table | tee "$MARKDOWN"
echo
echo "(markdown written to $MARKDOWN)"
for model in $MODELS; do
  d=${PARAMS[$model|dtrain]:-?} t=${PARAMS[$model|torch]:-?}
  if [ "$t" != "?" ] && [ "$d" != "$t" ]; then echo "precision.sh: $model: dtrain has $d parameters, PyTorch $t" >&2; FAIL=1; fi
done
[ $FAIL = 1 ] && exit 1
[ $MISSING = 1 ] && exit 2
exit 0
