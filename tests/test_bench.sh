#!/usr/bin/env bash
# test_bench.sh: the logic of the bench/ scripts, not their timings: bench/precision.sh,
# bench/compare.sh and bench/families.sh run against a stand-in dtrain and stand-in Python
# interpreters (written here) that log every call and print made-up images/s, so the test takes
# seconds and checks
#   precision.sh: every row of each model run ROUNDS times, dtrain and PyTorch alternating, the
#     second round in the reverse order; the same thread count on every run (OMP_NUM_THREADS and
#     --threads); the steps (per-model defaults, or STEPS); means, ratios, activation memory and
#     the parameter check in the table, which is also written as markdown with the CPU's name
#     and bf16 / AMX flags; a missing PyPI environment said on stderr, its rows n/a, exit 2;
#     differing parameter counts or a failing run exit 1; bad STEPS / ROUNDS / MODELS refused;
#   compare.sh and families.sh (which share bench/common.sh with it): their means and ratios.
# Usage (from the repository root, as ctest runs it): bash tests/test_bench.sh [DTRAIN, unused]
set -u
source "$(dirname "$0")/harness.sh"
harness_tmp bench
LOG=$T/calls.log
export LOG

# ---- the stand-ins ----
# dtrain: --dry-run prints the parameter count of the model its --set arguments name; --bench
# prints an activations line (bf16 half of fp32), an ISA line and `bench:` with 100, 110, 120...
# images/s for fp32 and 150, 170, 190... for bf16 (counted per precision in $T/n_*).
cat >"$T/dtrain" <<'EOF'
#!/usr/bin/env bash
args="$*"
params=271994
case $args in *model.name=wrn*) params=2748890 ;; esac
case $args in *--dry-run*) echo "parameters: $params"; exit 0 ;; esac
p=fp32
case $args in *train.precision=bf16*) p=bf16 ;; esac
steps=$(printf '%s\n' "$args" | sed -n 's/.*--bench \([0-9]*\).*/\1/p')
echo "dtrain $p steps=$steps OMP=${OMP_NUM_THREADS:-} $(case $args in *wrn*) echo wrn ;; *) echo preact ;; esac)" >>"$LOG"
if [ "$p" = bf16 ] && [ -n "${FAKE_DT_FAIL_BF16:-}" ]; then echo "dtrain: bf16 refused (stand-in)" >&2; exit 1; fi
n=$(($(cat "$(dirname "$0")/n_$p" 2>/dev/null || echo 0) + 1))
echo $n >"$(dirname "$0")/n_$p"
if [ $p = fp32 ]; then r=$((90 + 10 * n)); a="100.0 MiB (values 48.0, gradients 50.0, scratch 2.0)"
else r=$((130 + 20 * n)); a="50.0 MiB (values 24.0, gradients 25.0, scratch 1.0)"; fi
echo "onednn: ISA avx512_core_bf16 (stand-in), bf16 native"
echo "activations: $a at batch 128, $p, cpu backend"
echo "bench_with_data: 1.0 images/s"
echo "bench: $r.0 images/s"
EOF
# python: `-c` prints the torch version of its kind (WHO: sys 1.13.1, venv 2.99.0); `-` runs the
# real interpreter (the scripts' small inline programs); `tools/dtrain-tool TASK ...` logs the
# call and prints a model line and `torch: X images/s`, X by kind, layout and autocast.
cat >"$T/fakepy" <<'EOF'
#!/usr/bin/env bash
case $1 in
  -c) [ "$WHO" = sys ] && echo 1.13.1 || echo 2.99.0; exit 0 ;;
  -) exec /usr/bin/python3 "$@" ;;
esac
shift
task=$1 args="$*" cl=nchw bf=fp32
case $args in *--channels-last*) cl=cl ;; esac
case $args in *--autocast-bf16*) bf=bf16 ;; esac
threads=$(printf '%s\n' "$args" | sed -n 's/.*--threads \([0-9]*\).*/\1/p')
steps=$(printf '%s\n' "$args" | sed -n 's/.*--steps \([0-9]*\).*/\1/p')
params=271994
case $args in *wrn*) params=2748890 ;; esac
params=$((params + ${FAKE_PT_PARAMS_OFFSET:-0}))
echo "torch $WHO $task $cl $bf steps=$steps threads=$threads OMP=${OMP_NUM_THREADS:-}" >>"$LOG"
case $WHO-$cl-$bf in
  sys-nchw-fp32) r=40 ;; sys-cl-fp32) r=50 ;; sys-cl-bf16) r=60 ;;
  venv-cl-fp32) r=80 ;; venv-cl-bf16) r=120 ;; *) r=1 ;;
esac
echo "model stand-in, $params params, input 1x28x28, batch 128, threads $threads, $cl, $bf, torch x"
echo "torch: $r.0 images/s"
EOF
mkdir -p "$T/venv/bin"
printf '#!/usr/bin/env bash\nWHO=venv exec %s "$@"\n' "$T/fakepy" >"$T/venv/bin/python"
printf '#!/usr/bin/env bash\nWHO=sys exec %s "$@"\n' "$T/fakepy" >"$T/syspy"
printf 'processor\t: 0\ncpu family\t: 6\nmodel\t\t: 143\nmodel name\t: Stand-in CPU 9000\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile\n' >"$T/cpuinfo"
chmod +x "$T/dtrain" "$T/fakepy" "$T/venv/bin/python" "$T/syspy"

# precision ARGS...: bench/precision.sh with the stand-ins (environment overrides before it).
precision() {
  rm -f "$LOG" "$T"/n_*
  DTRAIN=$T/dtrain PYTHON=$T/syspy CPUINFO=$T/cpuinfo MARKDOWN=$T/table.md bash bench/precision.sh "$@" 2>"$T/err"
}
# cell LABEL COLUMN: the table cell of row LABEL (exact) in column COLUMN (1 = first model).
cell() { awk -F' [|] ' -v l="| $1" -v c="$2" '$1 == l { v = $(c + 1); sub(/ *[|]$/, "", v); print v }' "$T/table.md"; }

# ---- precision.sh: both models, 2 rounds, 3 threads ----
out=$(THREADS=3 TORCH_VENV=$T/venv precision)
rc=$?
[ $rc -eq 0 ] && ok "precision.sh with every interpreter: exit 0" || bad "precision.sh exit $rc" "$out$(cat "$T/err")"
order=$(awk '{ k = $1 == "dtrain" ? "dt_" $2 : ($2 == "venv" ? "pt_" : "sys_") ($4 == "nchw" ? "nchw" : $5) } { printf "%s ", k }' "$LOG")
round="dt_fp32 pt_fp32 sys_nchw dt_bf16 pt_bf16 sys_fp32 sys_bf16"
back=$(printf '%s\n' $round | tac | tr '\n' ' ')
want="$round $back$round $back"
[ "$order" = "$want" ] && ok "precision.sh: rows in order, reversed every other round, both models" ||
  bad "precision.sh run order" "got:  $order
want: $want"
prev="" adjacent=0
for k in $order; do
  case $prev-$k in dt_*-dt_*) adjacent=$((adjacent + 1)) ;; esac
  prev=$k
done
# Two dtrain runs meet only where one model's runs end and the next one's begin.
[ $adjacent -eq 1 ] && ok "precision.sh: dtrain and PyTorch alternate (two dtrain runs in a row only between models)" ||
  bad "precision.sh: $adjacent adjacent dtrain runs" "$order"
if [ "$(grep -c 'OMP=3' "$LOG")" = 28 ] && [ "$(grep -c '^torch' "$LOG")" = 20 ] &&
   [ "$(grep '^torch' "$LOG" | grep -c 'threads=3 ')" = 20 ]; then
  ok "precision.sh: 28 runs, all with OMP_NUM_THREADS=3, PyTorch with --threads 3"
else
  bad "precision.sh thread counts" "$(cat "$LOG")"
fi
if [ "$(grep ' preact$' "$LOG" | grep -c 'steps=20 ')" = 4 ] && [ "$(grep ' wrn$' "$LOG" | grep -c 'steps=5 ')" = 4 ]; then
  ok "precision.sh: default steps 20 (ResNet-preact-20) and 5 (WRN-16-4)"
else
  bad "precision.sh default steps" "$(cat "$LOG")"
fi
# fp32: 100, 110 (preact), 120, 130 (wrn); bf16: 150, 170, 190, 210.
expect_cell() {
  local got
  got=$(cell "$1" "$2")
  [ "$got" = "$3" ] && ok "table: $1 [$2] = $3" || bad "table: $1 [$2] = '$got', want $3" "$(cat "$T/table.md")"
}
expect_cell "dtrain fp32" 1 105.0
expect_cell "dtrain bf16" 1 160.0
expect_cell "dtrain fp32" 2 125.0
expect_cell "dtrain bf16" 2 200.0
expect_cell "PyTorch 2.99.0 bf16 autocast channels_last" 1 120.0
expect_cell "PyTorch 1.13.1 fp32 NCHW" 2 40.0
expect_cell "PyTorch 1.13.1 bf16 autocast channels_last" 2 60.0
expect_cell "dtrain bf16 / dtrain fp32" 1 1.52
expect_cell "dtrain bf16 / dtrain fp32" 2 1.60
expect_cell "dtrain bf16 / PyTorch 2.99.0 bf16 autocast" 1 1.33
expect_cell "dtrain fp32 / PyTorch 2.99.0 fp32 channels_last" 2 1.56
expect_cell "dtrain bf16 / PyTorch 1.13.1 bf16 autocast" 2 3.33
expect_cell "dtrain fp32 / PyTorch 1.13.1 fp32 channels_last" 1 2.10
expect_cell "PyTorch 2.99.0 bf16 autocast / fp32" 1 1.50
expect_cell "dtrain activations fp32 (MiB)" 1 100.0
expect_cell "dtrain activations bf16 (MiB)" 2 50.0
expect_cell "parameters (dtrain = PyTorch)" 2 2748890
head=$(head -n 1 "$T/table.md")
[ "$head" = "**CPU**: Stand-in CPU 9000 (family 6, model 143), $(nproc) cores; avx512_bf16 yes, avx512_fp16 no, amx_bf16 no, amx_tile yes" ] &&
  ok "markdown names the CPU and its flags: $head" || bad "markdown CPU line" "$head"
grep -q "ISA avx512_core_bf16 (stand-in)" "$T/table.md" && ok "markdown quotes dtrain's ISA line" || bad "no ISA line" "$(cat "$T/table.md")"
grep -q "| images/s (means of 2) | ResNet-preact-20, 1x28x28, batch 128, 20 steps | WRN-16-4, 3x32x32, batch 64, 5 steps |" "$T/table.md" &&
  ok "markdown header names both models, batches and steps" || bad "markdown header" "$(cat "$T/table.md")"
printf '%s\n' "$out" | grep -qF "$(sed -n 5p "$T/table.md")" && ok "the table is printed too" || bad "table not on stdout" "$out"

# ---- STEPS, one model, one round; no PyPI environment ----
out=$(ROUNDS=1 MODELS=wrn16_4 precision 2)
rc=$?
[ $rc -eq 2 ] && ok "no TORCH_VENV: exit 2" || bad "no TORCH_VENV: exit $rc" "$out"
grep -q "TORCH_VENV is not set" "$T/err" && grep -q "pip install torch" "$T/err" &&
  ok "no TORCH_VENV: said on stderr: $(head -n 1 "$T/err" | cut -c1-90)..." || bad "no TORCH_VENV message" "$(cat "$T/err")"
[ "$(cell "PyTorch PyPI bf16 autocast channels_last" 1)" = n/a ] && [ "$(cell "dtrain bf16 / PyTorch PyPI bf16 autocast" 1)" = n/a ] &&
  [ "$(cell "dtrain bf16" 1)" = 150.0 ] && ok "no TORCH_VENV: its rows and ratios n/a, the others measured" ||
  bad "no TORCH_VENV table" "$(cat "$T/table.md")"
[ "$(grep -c 'steps=2 ' "$LOG")" = 5 ] && ! grep -q preact "$LOG" && ok "STEPS 2 and MODELS=wrn16_4: 5 runs of 2 steps" ||
  bad "STEPS / MODELS" "$(cat "$LOG")"
out=$(TORCH_VENV=$T/none ROUNDS=1 MODELS=wrn16_4 precision 2)
[ $? -eq 2 ] && grep -q "TORCH_VENV=$T/none has no bin/python" "$T/err" && ok "TORCH_VENV without bin/python: said, exit 2" ||
  bad "bad TORCH_VENV" "$(cat "$T/err")"

# ---- failures ----
out=$(FAKE_PT_PARAMS_OFFSET=1 TORCH_VENV=$T/venv ROUNDS=1 MODELS=resnet_preact20 precision 1)
[ $? -eq 1 ] && grep -q "dtrain has 271994 parameters, PyTorch 271995" "$T/err" && [ "$(cell "parameters (dtrain = PyTorch)" 1)" = "dtrain 271994, PyTorch 271995: DIFFER" ] &&
  ok "differing parameter counts: exit 1, said in the table and on stderr" || bad "parameter mismatch" "$out$(cat "$T/err")"
out=$(FAKE_DT_FAIL_BF16=1 TORCH_VENV=$T/venv ROUNDS=1 MODELS=resnet_preact20 precision 1)
[ $? -eq 1 ] && printf '%s\n' "$out" | grep -q "dtrain bf16 failed" && printf '%s\n' "$out" | grep -q "bf16 refused (stand-in)" &&
  [ "$(cell "dtrain bf16" 1)" = n/a ] && [ "$(cell "dtrain fp32" 1)" = 100.0 ] &&
  ok "a failing run: its output shown, its row n/a, exit 1" || bad "failing run" "$out"
for how in "STEPS 0" "STEPS x" "ROUNDS=0" "MODELS=vgg"; do
  case $how in
    STEPS*) out=$(precision "${how#STEPS }") ;;
    *) out=$(export "${how?}"; precision) ;;
  esac
  rc=$?
  [ $rc -eq 1 ] && ok "precision.sh refuses $how: $(head -n 1 "$T/err")" || bad "precision.sh $how: exit $rc" "$out$(cat "$T/err")"
done

# ---- compare.sh and families.sh on the same stand-ins ----
rm -f "$LOG" "$T"/n_*
out=$(DTRAIN=$T/dtrain PYTHON=$T/syspy bash bench/compare.sh configs/quickstart.ini 2 2>&1)
rc=$?
if [ $rc -eq 0 ] && printf '%s\n' "$out" | grep -qx "ratio dtrain/torch plain          2.62" &&
   printf '%s\n' "$out" | grep -qx "ratio dtrain/torch channels_last  2.10"; then
  ok "compare.sh: dtrain 105 / torch 40 and 50"
else
  bad "compare.sh (exit $rc)" "$out"
fi
rm -f "$LOG" "$T"/n_*
out=$(DTRAIN=$T/dtrain PYTHON=$T/syspy MODELS=wrn16_4 bash bench/families.sh 2 2>&1)
rc=$?
if [ $rc -eq 0 ] && printf '%s\n' "$out" | grep -q "^WRN-16-4  *105.0  *40.0  *50.0  *2.62  *2.10$"; then
  ok "families.sh: WRN-16-4 dtrain 105 / torch 40 and 50"
else
  bad "families.sh (exit $rc)" "$out"
fi
finish
