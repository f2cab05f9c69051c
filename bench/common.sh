# common.sh: what the bench/ scripts share; sourced by them, not run. The checks of their
# STEPS argument, the dtrain binary they time, the CPU they run on, a synthetic CIFAR-10 set,
# and reading, averaging and dividing images/s.
# shellcheck shell=bash

# bench_steps NAME VALUE: exits 1 with a message naming script NAME unless VALUE is an integer >= 1.
bench_steps() {
  case $2 in '' | *[!0-9]*) echo "$1: STEPS must be a positive integer, got '$2'" >&2; exit 1 ;; esac
  if [ "$2" -lt 1 ]; then echo "$1: STEPS must be >= 1" >&2; exit 1; fi
}

# bench_dtrain: sets DTRAIN, when the caller's environment did not, to ./dtrain, else build/dtrain.
bench_dtrain() {
  if [ -z "${DTRAIN:-}" ]; then
    DTRAIN=./dtrain
    [ -x "$DTRAIN" ] || DTRAIN=build/dtrain
  fi
}

# The CPU's model name (with its family and model numbers, which tell generations apart where
# the name does not, e.g. "AMD EPYC"), its core count and whether it has the 16-bit
# instructions that decide dtrain's and PyTorch's bf16 speed (flags of /proc/cpuinfo; CPUINFO
# overrides the file).
bench_cpu() {
  local info=${CPUINFO:-/proc/cpuinfo} model fam num flags f out=""
  model=$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' "$info" 2>/dev/null | head -n 1)
  fam=$(sed -n 's/^cpu family[[:space:]]*:[[:space:]]*//p' "$info" 2>/dev/null | head -n 1)
  num=$(sed -n 's/^model[[:space:]]*:[[:space:]]*//p' "$info" 2>/dev/null | head -n 1)
  [ -n "$fam" ] && model="$model (family $fam, model $num)"
  flags=" $(sed -n 's/^flags[[:space:]]*:[[:space:]]*//p' "$info" 2>/dev/null | head -n 1) "
  for f in avx512_bf16 avx512_fp16 amx_bf16 amx_tile; do
    case $flags in *" $f "*) out="$out, $f yes" ;; *) out="$out, $f no" ;; esac
  done
  echo "cpu: ${model:-unknown}, $(nproc) cores; ${out#, }"
}

# bench_cifar_data DIR: a small synthetic CIFAR-10 binary set in DIR (random pixels: data_batch_1..5.bin
# and test_batch.bin, records of 1 label byte and 3072 pixel bytes, 256 records per file), written
# with $PYTHON. dtrain's `bench:` times model compute on one batch, so the pixels do not matter.
bench_cifar_data() {
  "$PYTHON" - "$1" <<'PYEOF'
import os, random, sys
d = sys.argv[1]
os.makedirs(d)
rng = random.Random(0)
for name in ["data_batch_%d.bin" % i for i in range(1, 6)] + ["test_batch.bin"]:
    with open(os.path.join(d, name), "wb") as f:
        for r in range(256):
            f.write(bytes([rng.randrange(10)]) + bytes(rng.getrandbits(8) for _ in range(3072)))
PYEOF
}

# The load average now (1, 5 and 15 minutes): a busy shared machine shows here.
bench_load() { cut -d' ' -f1-3 /proc/loadavg; }

# rate TAG: the number X of the last line "TAG: X images/s" on stdin (nothing when absent).
rate() { awk -v tag="$1:" '$1 == tag && $3 == "images/s" { v = $2 } END { if (v != "") print v }'; }

# mean X...: their mean with one decimal, n/a when there are none.
mean() { printf '%s\n' "$@" | awk 'NF { s += $1; n++ } END { if (n) printf "%.1f", s / n; else print "n/a" }'; }

# ratio A B: A / B with two decimals, n/a when either is not a positive number.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "n/a" }'; }
