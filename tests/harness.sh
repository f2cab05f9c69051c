# harness.sh: the pieces every shell test shares, sourced (not run) by tests/test_*.sh and
# tests/gpu/test_*.sh: counting results, a temporary directory, the test tools, and readers of
# checkpoints and metrics. A test ends with `finish`.

pass=0 fail=0
# ok WHAT; bad WHAT [OUTPUT]: one result line; bad shows the last BAD_LINES (20) lines of OUTPUT.
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() {
  fail=$((fail + 1))
  echo "FAIL $1"
  [ -n "${2:-}" ] && printf '%s\n' "$2" | sed 's/^/     | /' | tail -"${BAD_LINES:-20}"
  return 0
}
# The summary line and the exit status of the test.
finish() {
  echo "$pass passed, $fail failed${1:+, $1}"
  [ "$fail" -eq 0 ]
}

# harness_tmp NAME: T, a fresh directory removed when the test exits.
harness_tmp() {
  T=$(mktemp -d "/tmp/dtrain-$1-XXXXXX")
  trap 'rm -rf "$T"' EXIT
}

# need_tools TOOL...: TOOLS, the directory of the test tools ($DTRAIN_TOOLS, else DTRAIN's
# directory/tools, else DTRAIN's directory as in the device bundle); exit 1 if one is missing.
need_tools() {
  TOOLS=${DTRAIN_TOOLS:-$(dirname "$DTRAIN")/tools}
  [ -x "$TOOLS/$1" ] || [ -n "${DTRAIN_TOOLS:-}" ] || TOOLS=$(dirname "$DTRAIN")
  local tool
  for tool in "$@"; do
    if [ ! -x "$TOOLS/$tool" ]; then
      echo "FAIL $TOOLS/$tool is missing (build the test tools: cmake --build BUILD)"
      exit 1
    fi
  done
}

# latest RUN_DIR: the path of its newest checkpoint (empty when there is none).
latest() { ls "$1"/checkpoints/step_*.h5 2>/dev/null | sort | tail -1; }
# snapshot DIR: every path with its size and mtime, and every file's sha256: equal snapshots
# mean nothing in DIR changed.
snapshot() { (cd "$1" && find . -printf '%p %s %T@\n' | sort && find . -type f -exec sha256sum {} + | sort); }
# ckpt RUN_DIR STEP: the path of that step's checkpoint.
ckpt() { printf '%s/checkpoints/step_%09d.h5' "$1" "$2"; }
# h5col FILE DATASET: the values of a 1-d dataset, one per line.
h5col() {
  h5dump -y -w 0 -d "$2" "$1" 2>/dev/null |
    awk '/DATA \{/ { f = 1; next } f && /^ *\}/ { f = 0 } f' | tr ',' '\n' | tr -d ' \t' | grep -v '^$'
}
# h5attr FILE NAME: a scalar attribute of the file's root group.
h5attr() {
  h5dump -y -w 0 -a "/$2" "$1" 2>/dev/null |
    awk '/DATA \{/ { f = 1; next } f && /^ *\}/ { f = 0 } f' | tr -d ' \t,' | grep -v '^$'
}
# metrics_equal REF.h5 RUN.h5: RUN's metrics file holds REF's rows: /epoch and /steps with the
# same number of rows, every column equal bit for bit but the timings (seconds,
# images_per_s). Prints the row counts, or the first difference of each table (status 1).
metrics_equal() {
  /usr/bin/python3 - "$1" "$2" <<'PYEOF'
import sys, h5py, numpy as np
a, b = (h5py.File(p, "r") for p in sys.argv[1:3])
rows, diffs = [], []
for group in ("epoch", "steps"):
    cols = a[group].attrs["columns"]
    cols = (cols.decode() if isinstance(cols, bytes) else cols).split(",")
    n = (len(a[group]["step"]), len(b[group]["step"]))
    rows.append("%d %s rows" % (n[0], group))
    if n[0] != n[1]:
        diffs.append("%s: %d rows, the reference %d (steps %s vs %s)" % (group, n[1], n[0],
                     list(b[group]["step"][:]), list(a[group]["step"][:])))
        continue
    for c in cols:
        if c in ("seconds", "images_per_s"):
            continue
        x, y = a[group][c][:], b[group][c][:]
        same = (x == y) | (np.isnan(x) & np.isnan(y))
        if not same.all():
            r = int(np.argmin(same))
            diffs.append("%s/%s row %d (step %g): %r, the reference %r" % (group, c, r,
                         a[group]["step"][r], y[r], x[r]))
print("; ".join(diffs) if diffs else ", ".join(rows) + " equal")
sys.exit(1 if diffs else 0)
PYEOF
}
