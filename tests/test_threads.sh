#!/usr/bin/env bash
# test_threads.sh: the compute threads each CPU rank starts by default, for the affinity and
# rank layouts this machine can make, read from the lines --dry-run prints ("ranks: ..." and one
# "threads: rank R of N: ..." per rank): taskset masks of one core and of all cores,
# OMP_NUM_THREADS and train.threads overriding the share, mpirun -np 1..4 over the same cores
# (--bind-to none), bound to their own cores (--bind-to core), and squeezed onto one core; the
# oversubscription warning exactly once, and only when oversubscribed; the OpenMP wait policy
# that takes effect (OMP_DISPLAY_ENV=verbose prints the runtime's GOMP_SPINCOUNT); and a --bench
# run under mpirun -np 2 that trains with the decided threads.
# Usage: test_threads.sh DTRAIN. The mpirun parts are skipped without mpirun or in a
# single-process (-DDT_MPI=OFF) build.
set -u
source "$(dirname "$0")/harness.sh"
DTRAIN=${1:-./dtrain}
harness_tmp threads
unset OMP_NUM_THREADS OMP_WAIT_POLICY GOMP_SPINCOUNT DTRAIN_WAIT_POLICY DTRAIN_SHARE
# A registry of dtrain processes of this test's own: other dtrain processes on the machine do not
# change the counts checked here.
export DTRAIN_SHARE_DIR=$T/share
C=$(nproc)
DRY=(configs/quickstart.ini --dry-run --set data.dir=/nonexistent)

# share CORES RANKS [LOADER]: the default threads of a rank whose mask of CORES cores is shared
# by RANKS ranks: CORES / RANKS (at least 1), less the loader threads where 2 or more remain.
share() {
  local s=$(($1 / $2)) l=${3:-1}
  ((s < 1)) && s=1
  ((s - l >= 2)) && s=$((s - l))
  echo $s
}
# expect NAME OUTPUT PATTERN [COUNT]: OUTPUT has COUNT (default 1) lines matching PATTERN (grep -E).
expect() {
  local n
  n=$(printf '%s\n' "$2" | grep -cE -- "$3")
  if [[ $n -eq ${4:-1} ]]; then ok "$1"; else bad "$1: $n lines match '$3', want ${4:-1}" "$2"; fi
}
thr() { [[ $1 -eq 1 ]] && echo "1 compute thread" || echo "$1 compute threads"; }

# ---- one process: taskset masks and the overrides ----
out=$(taskset -c 0 "$DTRAIN" "${DRY[@]}" 2>&1)
expect "taskset -c 0: 1 thread" "$out" \
  '^threads: rank 0 of 1: 1 compute thread \+ 1 loader thread; its mask has 1 core, shared by 1 local rank \(share\)$'
expect "taskset -c 0: start-up line" "$out" '^ranks: 1 x 1 thread \(1 core, 1 local rank\), OpenMP wait '
expect "taskset -c 0: no warning" "$out" 'warning' 0
out=$(taskset -c 0-$((C - 1)) "$DTRAIN" "${DRY[@]}" 2>&1)
t=$(share "$C" 1)
expect "all $C cores: $t threads" "$out" "^threads: rank 0 of 1: $(thr "$t") \+ 1 loader thread; its mask has $C cores?, shared by 1 local rank \(share\)$"
out=$(taskset -c 0-$((C - 1)) "$DTRAIN" "${DRY[@]}" --set data.loader_threads=3 2>&1)
t=$(share "$C" 1 3)
expect "all $C cores, 3 loader threads: $t threads" "$out" "^threads: rank 0 of 1: $(thr "$t") \+ 3 loader threads"
out=$(OMP_NUM_THREADS=3 taskset -c 0 "$DTRAIN" "${DRY[@]}" 2>&1)
expect "OMP_NUM_THREADS=3 on 1 core: 3 threads" "$out" '^threads: rank 0 of 1: 3 compute threads .*\(OMP_NUM_THREADS\)$'
expect "OMP_NUM_THREADS=3 on 1 core: start-up line" "$out" '^ranks: 1 x 3 threads \(1 core, 1 local rank; threads from OMP_NUM_THREADS\)'
expect "OMP_NUM_THREADS=3 on 1 core: one warning" "$out" '^dtrain: warning: 3 compute threads \(OMP_NUM_THREADS\) on the 1 core of this rank'
out=$(OMP_NUM_THREADS=3 taskset -c 0 "$DTRAIN" "${DRY[@]}" --set train.threads=1 2>&1)
expect "train.threads=1 beats OMP_NUM_THREADS=3" "$out" '^threads: rank 0 of 1: 1 compute thread .*\(train.threads\)$'
expect "train.threads=1: no warning" "$out" 'warning' 0

# ---- other dtrain processes on the same cores (the registry, src/thread_share.h) ----
# A stand-in for a dtrain process of another job: an entry holding the mask of CPU 0, kept
# locked (flock(1)) by a process for as long as it lives.
if command -v flock >/dev/null 2>&1; then
  mkdir -p -m 700 "$DTRAIN_SHARE_DIR"
  # stand_in: the entry written and locked; holder is the sleep itself (exec), which holds it.
  stand_in() {
    /usr/bin/python3 -c 'import struct, sys; sys.stdout.buffer.write(struct.pack("<16Q", 1, *[0] * 15))' \
      >"$DTRAIN_SHARE_DIR/p-other"
    (flock -x 9 && exec sleep 120) 9<"$DTRAIN_SHARE_DIR/p-other" &
    holder=$!
    for _ in $(seq 50); do flock -n -s "$DTRAIN_SHARE_DIR/p-other" true || break; sleep 0.1; done
  }
  stand_in
  out=$(taskset -c 0-$((C - 1)) "$DTRAIN" "${DRY[@]}" 2>&1)
  t=$(share "$C" 2)
  expect "another process on CPU 0: all $C cores shared by 2, $t thread(s)" "$out" \
    "^threads: rank 0 of 1: $(thr "$t") \+ 1 loader thread; its mask has $C cores?, shared by 1 local rank and 1 other dtrain process \(share\)$"
  expect "another process on CPU 0: start-up line" "$out" \
    "^ranks: 1 x $t threads? \($C cores?, 1 local rank, 1 other dtrain process on these cores\)"
  out=$(taskset -c 0-$((C - 1)) "$DTRAIN" "${DRY[@]}" --set train.threads=$C 2>&1)
  expect "another process on CPU 0: train.threads=$C still wins" "$out" \
    "^threads: rank 0 of 1: $(thr "$C") .*1 other dtrain process \(train.threads\)$"
  out=$(DTRAIN_SHARE=0 taskset -c 0-$((C - 1)) "$DTRAIN" "${DRY[@]}" 2>&1)
  expect "another process on CPU 0, DTRAIN_SHARE=0: not counted" "$out" \
    "^threads: rank 0 of 1: $(thr "$(share "$C" 1)") \+ 1 loader thread; its mask has $C cores?, shared by 1 local rank \(share\)$"
  if ((C >= 2)); then
    out=$(taskset -c 1 "$DTRAIN" "${DRY[@]}" 2>&1)
    expect "another process on CPU 0, this one on CPU 1: not counted" "$out" \
      '^threads: rank 0 of 1: 1 compute thread \+ 1 loader thread; its mask has 1 core, shared by 1 local rank \(share\)$'
  fi
  ls "$DTRAIN_SHARE_DIR" >"$T/entries"
  expect "the dry runs left no entry behind" "$(cat "$T/entries")" '^p' 1
  if ((C >= 2)); then
    # A training run that starts beside the stand-in grows when it ends and shrinks when another
    # one arrives (the recount between steps), then stops at SIGTERM.
    taskset -c 0-$((C - 1)) "$DTRAIN" configs/quickstart.ini --set train.epochs=1000 \
      --set data.train_limit=256 --set data.test_limit=64 --set train.batch_size=32 \
      --set output.log_every=1 --set "output.dir=$T/mid" >"$T/mid.out" 2>&1 &
    trainer=$!
    # wait_for PATTERN: until the run's output has a line matching PATTERN (2 minutes at most).
    wait_for() {
      for _ in $(seq 600); do
        grep -qE -- "$1" "$T/mid.out" && return 0
        kill -0 "$trainer" 2>/dev/null || return 1
        sleep 0.2
      done
      return 1
    }
    wait_for '^step|^epoch|images/s' && ok "training beside the stand-in started" || bad "training did not start" "$(cat "$T/mid.out")"
    expect "training beside the stand-in: start-up line" "$(cat "$T/mid.out")" \
      "^ranks: 1 x $(share "$C" 2) threads? \($C cores?, 1 local rank, 1 other dtrain process on these cores\)"
    kill "$holder"
    wait "$holder" 2>/dev/null
    up="^threads: $(share "$C" 2) -> $(share "$C" 1) \(no other dtrain process shares these cores now; $C cores, 1 process on them\)$"
    wait_for "$up" && ok "the stand-in ended: the run grows" || bad "the run did not grow" "$(cat "$T/mid.out")"
    stand_in
    down="^threads: $(share "$C" 1) -> $(share "$C" 2) \(another dtrain process shares these cores; $C cores, 2 processes on them\)$"
    wait_for "$down" && ok "another process arrived: the run shrinks" || bad "the run did not shrink" "$(cat "$T/mid.out")"
    kill -TERM "$trainer"
    wait "$trainer" 2>/dev/null
  fi
  kill "$holder"
  wait "$holder" 2>/dev/null
  out=$(taskset -c 0-$((C - 1)) "$DTRAIN" "${DRY[@]}" 2>&1)
  expect "the other process ended (its entry unlocked): not counted" "$out" \
    "^threads: rank 0 of 1: $(thr "$(share "$C" 1)") \+ 1 loader thread; its mask has $C cores?, shared by 1 local rank \(share\)$"
  [[ -e $DTRAIN_SHARE_DIR/p-other ]] && bad "the ended process's entry was not removed" || ok "the ended process's entry was removed"
else
  ok "flock(1) not found: other processes not checked"
fi

# ---- the wait policy the OpenMP runtime really uses ----
out=$(OMP_DISPLAY_ENV=verbose OMP_WAIT_POLICY=active "$DTRAIN" "${DRY[@]}" 2>&1)
expect "OMP_WAIT_POLICY=active is kept" "$out" "^ranks: .*OpenMP wait OMP_WAIT_POLICY=active$"
expect "OMP_WAIT_POLICY=active: the runtime spins (no re-execution)" "$out" "GOMP_SPINCOUNT = 'INFINITY'|GOMP_SPINCOUNT = '[0-9]{4,}'"

# ---- ranks under mpirun ----
if ! command -v mpirun >/dev/null 2>&1; then
  finish "mpirun not found: rank layouts not checked"
  exit $?
fi
MPIRUN=(mpirun)
if mpirun --version 2>&1 | grep -q 'Open MPI'; then
  MPIRUN+=(--oversubscribe)
  [[ $(id -u) -eq 0 ]] && MPIRUN+=(--allow-run-as-root)
fi
# mpi ARGS...: what every rank printed, stream by stream (Open MPI --output-filename: through
# mpirun's terminal the ranks' lines interleave mid-line), else mpirun's output; run under the
# command in MPI_PREFIX (e.g. taskset) when set.
MPI_PREFIX=()
mpi() {
  local d opt=()
  d=$(mktemp -u "$T/mpi-XXXXXX")
  mpirun --version 2>&1 | grep -q 'Open MPI' && opt=(--output-filename "$d")
  "${MPI_PREFIX[@]}" timeout 300 "${MPIRUN[@]}" "${opt[@]}" "$@" >"$d.out" 2>&1
  if [[ -d $d ]]; then find "$d" -type f -name 'std*' -exec cat {} +; else cat "$d.out"; fi
}
out=$(mpi -np 2 --bind-to none "$DTRAIN" "${DRY[@]}" 2>&1)
if printf '%s\n' "$out" | grep -q '^threads: rank 0 of 1:'; then
  finish "single-process build: rank layouts not checked"
  exit $?
fi
for n in 1 2 3 4; do
  out=$(mpi -np $n --bind-to none "$DTRAIN" "${DRY[@]}" 2>&1)
  t=$(share "$C" $n)
  expect "mpirun -np $n --bind-to none: every rank $t thread(s), mask shared by $n" "$out" \
    "^threads: rank [0-9] of $n: $(thr "$t") \+ 1 loader thread; its mask has $C cores?, shared by $n local ranks? \(share\)$" $n
  expect "mpirun -np $n --bind-to none: start-up line" "$out" \
    "^ranks: $n x $t threads? \($C cores?, $n local ranks?\), OpenMP wait "
  expect "mpirun -np $n --bind-to none: warning $( ((n * t > C)) && echo once || echo never)" "$out" \
    '^dtrain: warning' $( ((n * t > C)) && echo 1 || echo 0)
done
if ((C >= 2)); then
  out=$(mpi -np 2 --bind-to core "$DTRAIN" "${DRY[@]}" 2>&1)
  expect "mpirun -np 2 --bind-to core: own core each, 1 thread" "$out" \
    '^threads: rank [01] of 2: 1 compute thread \+ 1 loader thread; its mask has 1 core, shared by 1 local rank \(share\)$' 2
  expect "mpirun -np 2 --bind-to core: the runtime default wait (ranks own their cores)" "$out" \
    '^ranks: 2 x 1 thread \(2 cores, 2 local ranks\), OpenMP wait spin, then sleep'
fi
MPI_PREFIX=(taskset -c 0)
out=$(mpi -np 2 --bind-to none "$DTRAIN" "${DRY[@]}")
MPI_PREFIX=()
expect "two ranks on one core: 1 thread each" "$out" \
  '^threads: rank [01] of 2: 1 compute thread \+ 1 loader thread; its mask has 1 core, shared by 2 local ranks \(share\)$' 2
expect "two ranks on one core: one warning" "$out" '^dtrain: warning: 2 local ranks on 1 core: .* start at most 1 rank on this node$' 1
out=$(OMP_NUM_THREADS=$C mpi -x OMP_NUM_THREADS -np 2 --bind-to none "$DTRAIN" "${DRY[@]}" 2>&1)
expect "mpirun -np 2, OMP_NUM_THREADS=$C: $C each, one warning" "$out" \
  "^dtrain: warning: 2 local ranks start $((2 * C)) compute threads in all on $C cores \(OMP_NUM_THREADS\)" 1
# Passive waiting where ranks share cores, applied before the runtime starts: the re-executed
# process's runtime reports a spin count of 0 (its first start still shows the default).
out=$(OMP_DISPLAY_ENV=verbose mpi -x OMP_DISPLAY_ENV -np 2 --bind-to none "$DTRAIN" "${DRY[@]}" 2>&1)
expect "mpirun -np 2 --bind-to none: passive wait in the start-up line" "$out" \
  '^ranks: 2 x .*OpenMP wait passive \(2 local ranks on masks of '
expect "mpirun -np 2 --bind-to none: the runtime of each rank runs passive" "$out" "GOMP_SPINCOUNT = '0'" 2

# ---- a short benchmark trains with the decided threads ----
out=$(mpi -np 2 --bind-to none "$DTRAIN" configs/quickstart.ini --bench 1 \
      --set data.train_limit=512 --set train.batch_size=32 --set "output.dir=$T/bench" 2>&1)
t=$(share "$C" 2)
expect "--bench, mpirun -np 2: the backend runs $t thread(s)" "$out" "^model: .*, cpu, $t thread\(s\), 1 timed steps$"
expect "--bench, mpirun -np 2: start-up line" "$out" "^ranks: 2 x $t threads? \($C cores?, 2 local ranks\)"
finish
