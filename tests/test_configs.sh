#!/bin/bash
# test_configs.sh: every configs/*.ini passes `dtrain CONFIG --dry-run` (it parses, validates and
# builds its model; datasets that are not on this machine are reported, not needed), and a
# config whose comment states "; params: N" (docs/reference-experiments.md "Common conventions"
# count, written by tools/dtrain_tools/make_configs.py) builds a model with exactly N parameters.
# Usage (ctest runs it from the repository root): bash tests/test_configs.sh path/to/dtrain
set -u
dtrain=${1:?usage: test_configs.sh path/to/dtrain}
dtrain=$(cd "$(dirname "$dtrain")" && pwd)/$(basename "$dtrain")
[ -x "$dtrain" ] || { echo "FAIL: $dtrain is not executable"; exit 1; }
shopt -s nullglob
configs=(configs/*.ini)
[ ${#configs[@]} -gt 0 ] || { echo "FAIL: no configs/*.ini (run from the repository root)"; exit 1; }


# Prints "ok <file> [params N]" or "FAIL <file>: <why>".
# A singleton MPI process that does not start Open MPI's daemon (ess_singleton_isolated) runs
# about 30 % faster; a few such starts in parallel fail inside MPI_Init now and then, and those
# are rerun with the daemon.
check_one() {
  local ini=$1 out want got status
  out=$(OMPI_MCA_ess_singleton_isolated=1 "$DTRAIN" "$ini" --dry-run 2>&1)
  status=$?
  if [ $status -ne 0 ] && printf '%s\n' "$out" | grep -q 'MPI_INIT\|MPI_ERRORS_ARE_FATAL'; then
    out=$("$DTRAIN" "$ini" --dry-run 2>&1)
    status=$?
  fi
  if [ $status -ne 0 ]; then
    echo "FAIL $ini: dry run exited non-zero:"
    printf '%s\n' "$out" | tail -3 | sed 's/^/    /'
    return
  fi
  got=$(printf '%s\n' "$out" | sed -n 's/^parameters: \([0-9]*\)$/\1/p')
  [ -n "$got" ] || { echo "FAIL $ini: no 'parameters:' line in the dry run"; return; }
  want=$(sed -n 's/^; *params: *\([0-9]*\) *$/\1/p' "$ini" | head -1)
  if [ -z "$want" ]; then
    echo "ok $ini"
  elif [ "$want" = "$got" ]; then
    echo "ok $ini params $got"
  else
    echo "FAIL $ini: $got parameters, its comment says $want"
  fi
}
export -f check_one
export DTRAIN=$dtrain

results=$(printf '%s\0' "${configs[@]}" | xargs -0 -n 1 -P 4 bash -c 'check_one "$1"' _)
total=$(printf '%s\n' "$results" | grep -c '^ok \|^FAIL ')
failed=$(printf '%s\n' "$results" | grep -c '^FAIL ')
counted=$(printf '%s\n' "$results" | grep -c ' params [0-9]*$')
printf '%s\n' "$results" | grep -A3 '^FAIL ' || true
echo "$total configs: $((total - failed)) pass the dry run, $counted with a parameter count checked against the published count, $failed failed"
[ "$total" -eq ${#configs[@]} ] || { echo "FAIL: $total results for ${#configs[@]} configs"; exit 1; }
[ "$counted" -gt 0 ] || { echo "FAIL: no config states its parameter count"; exit 1; }
[ "$failed" -eq 0 ]
