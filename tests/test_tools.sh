#!/usr/bin/env bash
# test_tools.sh: the Python tools on the files of a real short dtrain run (Fashion-MNIST, 512
# training images, 1 epoch) and on hand-made files:
#   plot-metrics (tools/dtrain-tool TASK; tools/dtrain_tools/plot_metrics.py) draws the run's
#     metrics.h5 (and several runs at once), reports the values it read, and refuses missing /
#     non-HDF5 / non-metrics files with one message;
#   h5-to-torch (tools/dtrain_tools/h5_to_torch.py) converts the run's last checkpoint into a
#     state_dict that loads with strict=True into tools/dtrain_tools/torch_models.py's
#     ResNetPreact, with the same values (with and without --num-batches-tracked);
#     --verify-fashion-mnist reproduces dtrain's test top-1 of that epoch in PyTorch; bad files
#     are refused with one message.
# Skipped (77) when /usr/bin/python3 lacks h5py, torch or matplotlib. A run that writes no
# metrics.h5 or no checkpoint fails the test.
# Usage (from the repository root, as ctest runs it): bash tests/test_tools.sh ./dtrain
set -u
source "$(dirname "$0")/harness.sh"
DTRAIN=${1:-./dtrain}
PY=/usr/bin/python3
if ! "$PY" -c 'import h5py, torch, matplotlib' 2>/dev/null; then
  echo "SKIP: $PY lacks h5py, torch or matplotlib (Debian python3-h5py python3-torch python3-matplotlib)"
  exit 77
fi
harness_tmp tools
# expect_error NAME PATTERN CMD...: exit 1, a message matching PATTERN, no Python traceback.
expect_error() {
  local name=$1 pattern=$2 out rc
  shift 2
  out=$("$@" 2>&1)
  rc=$?
  if [[ $rc -eq 1 ]] && grep -q -- "$pattern" <<<"$out" && ! grep -q Traceback <<<"$out"; then
    ok "$name"
  else
    bad "$name (exit $rc, wanted 1 and /$pattern/)" "$out"
  fi
}
is_png() { [[ -f $1 && $(head -c 8 "$1" | od -An -tx1 | tr -d ' \n') == 89504e470d0a1a0a && $(stat -c %s "$1") -gt 10000 ]]; }

# ---- a short real run ----
run=$T/run
out=$("$DTRAIN" configs/quickstart.ini --set data.train_limit=512 --set data.test_limit=256 \
      --set train.batch_size=64 --set train.epochs=1 --set output.dir="$run" --set output.log_every=2 2>&1)
rc=$?
if [[ $rc -eq 0 && -f $run/metrics.h5 ]]; then
  ok "dtrain run wrote $run/metrics.h5"
else
  bad "dtrain run (exit $rc): no metrics.h5" "$out"
fi

# ---- plot_metrics.py on the run ----
out=$("$PY" tools/dtrain-tool plot-metrics "$run" -o "$T/run.png" 2>&1)
rc=$?
if [[ $rc -eq 0 ]] && is_png "$T/run.png" && grep -q '^run: 1 epochs, final test top-1 [0-9.]*%' <<<"$out"; then
  ok "plot_metrics.py RUN_DIR: 1 epoch, $(stat -c %s "$T/run.png") byte png"
else
  bad "plot_metrics.py RUN_DIR (exit $rc)" "$out"
fi
# The test top-1 it reports is the one in the file (h5dump, independent of h5py).
want=$(h5dump -y -w 0 -d /epoch/test_top1 "$run/metrics.h5" 2>/dev/null |
       awk '/DATA \{/ { getline; gsub(/[ ,]/, ""); printf "%.2f", $0 }')
if [[ -n $want ]] && grep -q "final test top-1 $want%" <<<"$out"; then
  ok "plot_metrics.py reads test_top1 $want% as h5dump does"
else
  bad "plot_metrics.py test_top1 (h5dump says '$want')" "$out"
fi

# ---- plot_metrics.py on hand-made files: values, several runs, no /steps ----
"$PY" - "$T" <<'EOF'
import sys, h5py, numpy as np
t = sys.argv[1]
def write(path, top1, steps):
    with h5py.File(path, "w") as f:
        n = len(top1)
        e = f.create_group("epoch")
        cols = dict(epoch=np.arange(1, n + 1), step=10.0 * np.arange(1, n + 1),
                    lr=0.1 * 0.5 ** np.arange(n), train_loss=2.0 / np.arange(1, n + 1),
                    train_top1=np.array(top1) - 5, test_loss=[1.0, 0.6, 0.5][:n],
                    test_top1=top1, test_top5=[99.0] * n, seconds=[1.0] * n,
                    images_per_s=[100.0] * n)
        for k, v in cols.items():
            e.create_dataset(k, data=np.asarray(v, dtype=np.float64), maxshape=(None,))
        if steps:
            s = f.create_group("steps")
            st = np.arange(2, 10 * n + 1, 2, dtype=np.float64)
            for k, v in dict(step=st, epoch=np.ceil(st / 10), lr=0.1 / st, loss=3.0 / st,
                             top1=np.minimum(st * 3, 90), images_per_s=np.full_like(st, 100)).items():
                s.create_dataset(k, data=v, maxshape=(None,))
write(t + "/a.h5", [70.0, 85.0, 80.0], True)
write(t + "/b.h5", [60.0, 65.0], False)
with h5py.File(t + "/partial.h5", "w") as f:
    f.create_group("epoch").create_dataset("epoch", data=np.ones(1))
EOF
out=$("$PY" tools/dtrain-tool plot-metrics "$T/a.h5" "$T/b.h5" -o "$T/ab.png" --title "two runs" 2>&1)
rc=$?
if [[ $rc -eq 0 ]] && is_png "$T/ab.png" &&
   grep -qx 'a: 3 epochs, final test top-1 80.00% (loss 0.5000), best 85.00% at epoch 2' <<<"$out" &&
   grep -qx 'b: 2 epochs, final test top-1 65.00% (loss 0.6000), best 65.00% at epoch 2' <<<"$out"; then
  ok "plot_metrics.py two hand-made runs (one without /steps): values as written"
else
  bad "plot_metrics.py two hand-made runs (exit $rc)" "$out"
fi
echo "not hdf5" >"$T/text.h5"
expect_error "plot_metrics.py: missing file" "nope.h5: no such file" "$PY" tools/dtrain-tool plot-metrics "$T/nope.h5" -o "$T/x.png"
expect_error "plot_metrics.py: directory without metrics.h5" "without metrics.h5" "$PY" tools/dtrain-tool plot-metrics "$T" -o "$T/x.png"
expect_error "plot_metrics.py: not HDF5" "text.h5: not a readable HDF5 file" "$PY" tools/dtrain-tool plot-metrics "$T/text.h5" -o "$T/x.png"
expect_error "plot_metrics.py: missing column" "partial.h5: /epoch/step missing" "$PY" tools/dtrain-tool plot-metrics "$T/partial.h5" -o "$T/x.png"
[[ ! -e $T/x.png ]] && ok "plot_metrics.py: no figure after an error" || bad "plot_metrics.py wrote a figure after an error"

# ---- h5_to_torch.py on the run's last checkpoint ----
ckpt=$(ls "$run"/checkpoints/step_*.h5 2>/dev/null | tail -1)
if [[ -z $ckpt ]]; then
  bad "the dtrain run left no checkpoint in $run/checkpoints"
else
  out=$("$PY" tools/dtrain-tool h5-to-torch "$ckpt" "$T/model.pt" 2>&1)
  rc=$?
  [[ $rc -eq 0 && -f $T/model.pt ]] && ok "h5_to_torch.py wrote a state_dict" || bad "h5_to_torch.py (exit $rc)" "$out"
  # strict=True into the reference model, and every tensor equal to the HDF5 one.
  out=$(PYTHONPATH=tools "$PY" - "$ckpt" "$T/model.pt" <<'EOF' 2>&1
import sys, h5py, numpy as np, torch
from dtrain_tools.torch_models import ResNetPreact
ckpt, pt = sys.argv[1:]
sd = torch.load(pt)
m = ResNetPreact(depth=20, in_channels=1)
m.load_state_dict(sd, strict=True)
with h5py.File(ckpt, "r") as f:
    names = list(f["model"].keys())
    worst = max(float(np.abs(m.state_dict()[n].numpy() - f["model"][n][()]).max()) for n in names)
print("tensors %d, checked %d, max diff %g" % (len(sd), len(names), worst))
sys.exit(0 if worst == 0 and len(names) > 60 else 1)
EOF
)
  [[ $? -eq 0 ]] && ok "state_dict loads with strict=True, values bit-equal ($out)" || bad "strict load into ResNetPreact" "$out"
  out=$("$PY" tools/dtrain-tool h5-to-torch "$ckpt" "$T/nbt.pt" --num-batches-tracked 2>&1 && PYTHONPATH=tools "$PY" - "$T/nbt.pt" <<'EOF' 2>&1
import sys, torch
from dtrain_tools.torch_models import ResNetPreact
sd = torch.load(sys.argv[1])
m = ResNetPreact(depth=20, in_channels=1)
m.load_state_dict(sd, strict=True)
want = set(m.state_dict().keys())
nbt = [k for k in sd if k.endswith("num_batches_tracked")]
print("keys %d (reference %d), num_batches_tracked %d" % (len(sd), len(want), len(nbt)))
sys.exit(0 if set(sd) == want and nbt and all(int(sd[k]) == 0 for k in nbt) else 1)
EOF
)
  [[ $? -eq 0 ]] && ok "--num-batches-tracked: exactly the reference key set ($(tail -1 <<<"$out"))" ||
    bad "--num-batches-tracked" "$out"
  # PyTorch evaluation of the converted model against dtrain's own test top-1 for that epoch.
  out=$("$PY" tools/dtrain-tool h5-to-torch "$ckpt" "$T/model.pt" --verify-fashion-mnist 2>&1)
  rc=$?
  got=$(sed -n 's/^test_top1: //p' <<<"$out")
  # At most one of the 256 images may flip between oneDNN and PyTorch arithmetic.
  if [[ $rc -eq 0 && -n $got && -n $want ]] && grep -qx 'correct: [0-9]* / 256' <<<"$out" &&
     awk -v a="$got" -v b="$want" 'BEGIN { d = a - b; exit !(d * d <= (100 / 256 + 0.01) ^ 2) }'; then
    ok "--verify-fashion-mnist: PyTorch test top-1 $got% vs dtrain $want%"
  else
    bad "--verify-fashion-mnist (exit $rc, dtrain says $want%)" "$out"
  fi
fi
expect_error "h5_to_torch.py: missing file" "nope.h5: no such file" "$PY" tools/dtrain-tool h5-to-torch "$T/nope.h5" "$T/y.pt"
expect_error "h5_to_torch.py: not HDF5" "text.h5: not a readable HDF5 file" "$PY" tools/dtrain-tool h5-to-torch "$T/text.h5" "$T/y.pt"
expect_error "h5_to_torch.py: a metrics file" "a.h5: no /model group" "$PY" tools/dtrain-tool h5-to-torch "$T/a.h5" "$T/y.pt"
[[ ! -e $T/y.pt ]] && ok "h5_to_torch.py: no output after an error" || bad "h5_to_torch.py wrote output after an error"

finish
