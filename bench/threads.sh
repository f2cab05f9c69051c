#!/usr/bin/env bash
# threads.sh: how CPU ranks and processes that share a machine's cores train, as ratios from one
# script run (README "Threads, ranks and binding").
#
# Usage: bench/threads.sh [CONFIG=configs/quickstart.ini] [STEPS=4] [PART...]
#   PART: ranks (mpirun -np 4 and 2 against their references), policy (the OpenMP wait policies
#         alone, two runs side by side, beside a busy loop), loader (one process, its loader
#         thread beside 1 or 2 compute threads), or all three (the default); jobs (separate
#         single-process runs sharing the cores: one alone, two started together, and a second
#         one arriving while the first runs: it has 4 x STEPS timed steps, the second STEPS,
#         started ARRIVE seconds after it) is run only when named.
#   env:  DTRAIN  dtrain binary (default ./dtrain, else build/dtrain)
#         BEFORE  another dtrain binary (e.g. a build from before thread sharing) to time under
#                 mpirun -np 4 and in the jobs part as well (default: none)
#         ARRIVE  seconds between the first and the second run of the jobs part (default 6)
#         POLICIES the wait policies to compare (default: "auto default active passive"; auto is
#                  dtrain's own choice, default the OpenMP runtime's (GOMP_SPINCOUNT=300000,
#                  libgomp's default, which also keeps dtrain from choosing), active and passive
#                  set OMP_WAIT_POLICY)
#
# Every figure is the `bench: X images/s` line of `dtrain CONFIG --bench STEPS` (model compute and
# all-reduce, global images/s; the loader part reads `bench_with_data`). Prints the CPU (lscpu),
# the load (uptime) at the start and the end, each number, and the ratios the README quotes.
# Exit status 0, or 1 when a run fails.
set -u

cd "$(dirname "$0")/.." || exit 1
CONFIG=${1:-configs/quickstart.ini}
STEPS=${2:-4}
shift 2 2>/dev/null || shift $#
PARTS=${*:-ranks policy loader}
POLICIES=${POLICIES:-auto default active passive}
if [ -z "${DTRAIN:-}" ]; then
  DTRAIN=./dtrain
  [ -x "$DTRAIN" ] || DTRAIN=build/dtrain
fi
MPIRUN=(mpirun --oversubscribe)
[ "$(id -u)" -eq 0 ] && MPIRUN+=(--allow-run-as-root)
T=$(mktemp -d /tmp/dtrain-threads-XXXXXX)
# The registry of dtrain processes (README "Threads, ranks and binding") of this script's own:
# dtrain processes of other users of the machine do not count in these runs.
export DTRAIN_SHARE_DIR=$T/share
busy_pid=
pa=
cleanup() {
  [ -n "$busy_pid" ] && kill "$busy_pid" 2>/dev/null
  [ -n "$pa" ] && kill -9 "$pa" 2>/dev/null # a run in the background (--bench ignores SIGTERM)
  rm -rf "$T"
}
trap cleanup EXIT

# ips FILE: the images/s of a finished bench run's output, or FAIL.
ips() { awk '/^bench: / { print $2; f = 1 } END { if (!f) print "FAIL" }' "$1"; }
# run NAME ENV... -- CMD...: one bench run in the foreground, its output in $T/NAME.
run() {
  local name=$1
  shift
  env "$@" >"$T/$name" 2>&1
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "n/a" }'; }
# policy_env P: the environment of policy P (auto: none; dtrain chooses).
policy_env() {
  case $1 in
    auto) echo "DTRAIN_BENCH_POLICY=auto" ;;
    default) echo "GOMP_SPINCOUNT=300000" ;;
    *) echo "OMP_WAIT_POLICY=$1" ;;
  esac
}

echo "cpu: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores online"
echo "load at start: $(uptime)"
BENCH=("$DTRAIN" "$CONFIG" --bench "$STEPS" --set output.dir="$T/run")
failed=0

case " $PARTS " in *" ranks "*)
  echo "== ranks sharing the cores (no OMP_NUM_THREADS unless named) =="
  run np4_auto -u OMP_NUM_THREADS "${MPIRUN[@]}" -np 4 "${BENCH[@]}"
  run np4_omp1 OMP_NUM_THREADS=1 "${MPIRUN[@]}" -x OMP_NUM_THREADS -np 4 "${BENCH[@]}"
  run np2_auto -u OMP_NUM_THREADS "${MPIRUN[@]}" -np 2 "${BENCH[@]}"
  run np1_t2 OMP_NUM_THREADS=2 "${BENCH[@]}"
  a=$(ips "$T/np4_auto") b=$(ips "$T/np4_omp1") c=$(ips "$T/np2_auto") d=$(ips "$T/np1_t2")
  grep -h '^ranks:\|warning' "$T/np4_auto" | sort -u | sed 's/^/  np4 default: /'
  printf 'np4 default %s, np4 OMP_NUM_THREADS=1 %s images/s: ratio %s\n' "$a" "$b" "$(ratio "$a" "$b")"
  printf 'np2 default %s, np1 2 threads %s images/s: ratio %s\n' "$c" "$d" "$(ratio "$c" "$d")"
  for v in "$a" "$b" "$c" "$d"; do [ "$v" = FAIL ] && failed=1; done
  if [ -n "${BEFORE:-}" ]; then
    run np4_before -u OMP_NUM_THREADS "${MPIRUN[@]}" -np 4 "$BEFORE" "$CONFIG" --bench "$STEPS" --set output.dir="$T/run"
    e=$(ips "$T/np4_before")
    printf 'np4 default, binary %s: %s images/s: ratio to OMP_NUM_THREADS=1 %s\n' "$BEFORE" "$e" "$(ratio "$e" "$b")"
  fi
  ;;
esac

case " $PARTS " in *" loader "*)
  echo "== the loader thread beside 1 or 2 compute threads (one process, data.loader_threads = 1) =="
  for t in 1 2; do
    run "loader_$t" -u OMP_NUM_THREADS "${BENCH[@]}" --set train.threads=$t
  done
  w1=$(awk '/^bench_with_data: / { print $2 }' "$T/loader_1") w2=$(awk '/^bench_with_data: / { print $2 }' "$T/loader_2")
  printf 'with data: 1 compute thread %s, 2 compute threads %s images/s: ratio %s\n' "${w1:-FAIL}" "${w2:-FAIL}" "$(ratio "$w2" "$w1")"
  [ -z "$w1" ] || [ -z "$w2" ] && failed=1
  ;;
esac

case " $PARTS " in *" policy "*)
  echo "== OpenMP wait policy: alone, two runs side by side, beside a busy loop =="
  printf '%-8s %10s %10s %10s %8s %10s\n' policy alone pair_a pair_b pair/1 busy
  for p in $POLICIES; do
    # shellcheck disable=SC2046
    run "alone_$p" -u OMP_NUM_THREADS -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT $(policy_env "$p") "${BENCH[@]}"
    env -u OMP_NUM_THREADS -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT $(policy_env "$p") "${BENCH[@]}" \
      --set output.dir="$T/pa" >"$T/pa_$p" 2>&1 &
    pa=$!
    env -u OMP_NUM_THREADS -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT $(policy_env "$p") "${BENCH[@]}" \
      --set output.dir="$T/pb" >"$T/pb_$p" 2>&1
    wait $pa
    (while :; do :; done) &
    busy_pid=$!
    run "busy_$p" -u OMP_NUM_THREADS -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT $(policy_env "$p") "${BENCH[@]}"
    kill "$busy_pid"
    wait "$busy_pid" 2>/dev/null
    busy_pid=
    one=$(ips "$T/alone_$p") x=$(ips "$T/pa_$p") y=$(ips "$T/pb_$p") z=$(ips "$T/busy_$p")
    pair=$(awk -v x="$x" -v y="$y" 'BEGIN { print x + y }')
    printf '%-8s %10s %10s %10s %8s %10s\n' "$p" "$one" "$x" "$y" "$(ratio "$pair" "$one")" "$z"
    grep -h '^ranks:\|wait policy' "$T/pa_$p" | sed "s/^/  $p side by side: /"
    for v in "$one" "$x" "$y" "$z"; do [ "$v" = FAIL ] && failed=1; done
  done
  ;;
esac
case " $PARTS " in *" jobs "*)
  echo "== separate jobs on the same cores: one alone, two together, a second arriving =="
  ARRIVE=${ARRIVE:-6}
  for bin in ${BEFORE:+"$BEFORE"} "$DTRAIN"; do
    J=(-u OMP_NUM_THREADS -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT "$bin" "$CONFIG" --set output.dir="$T/run")
    echo "-- $bin (load $(cut -d' ' -f1-3 /proc/loadavg))"
    run jobs_alone "${J[@]}" --bench "$STEPS"
    env "${J[@]}" --bench "$STEPS" --set output.dir="$T/ja" >"$T/jobs_a" 2>&1 &
    pa=$!
    run jobs_b "${J[@]}" --bench "$STEPS" --set output.dir="$T/jb"
    wait $pa
    one=$(ips "$T/jobs_alone") x=$(ips "$T/jobs_a") y=$(ips "$T/jobs_b")
    pair=$(awk -v x="$x" -v y="$y" 'BEGIN { print x + y }')
    printf 'alone %s; together %s + %s = %s images/s: %s of one alone\n' "$one" "$x" "$y" "$pair" "$(ratio "$pair" "$one")"
    env "${J[@]}" --bench $((4 * STEPS)) --set output.dir="$T/ja" >"$T/arrive_a" 2>&1 &
    pa=$!
    sleep "$ARRIVE"
    run arrive_b "${J[@]}" --bench "$STEPS" --set output.dir="$T/jb"
    wait $pa
    x=$(ips "$T/arrive_a") y=$(ips "$T/arrive_b")
    printf 'first (%d steps) %s, second (%d steps, started %ss later) %s images/s\n' $((4 * STEPS)) "$x" "$STEPS" "$ARRIVE" "$y"
    grep -h '^threads: \|^ranks: \|^rethread: ' "$T/jobs_a" "$T/jobs_b" | sort | uniq -c | sed 's/^/  together: /'
    grep -h '^threads: \|^ranks: \|^rethread: ' "$T/arrive_a" | sed 's/^/  first: /'
    grep -h '^ranks: ' "$T/arrive_b" | sed 's/^/  second: /'
    for v in "$one" "$x" "$y"; do [ "$v" = FAIL ] && failed=1; done
  done
  ;;
esac
echo "load at end: $(uptime)"
if [ "$failed" -ne 0 ]; then
  echo "threads.sh: a run failed; its output:" >&2
  grep -l -L '^bench: ' "$T"/* 2>/dev/null | head -1 | xargs -r tail -5 >&2
  exit 1
fi
