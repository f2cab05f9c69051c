#!/usr/bin/env bash
# test_owndata.sh: a user's own images end to end (README "Your own data"):
#   (a) a small image-folder tree of PNG files written here (3 classes, RGB 12x12) packed by
#       tools/dtrain_tools/pack_images.py: shapes, labels, class names, mean and std;
#   (b) a short training run on it (data.dataset = hdf5), then --eval of each of its
#       checkpoints: top-1 (to the image), top-5 and loss equal what training logged for that
#       epoch in metrics.h5; the --csv table agrees with itself; the same under mpirun -np 2
#       (trained and evaluated on 2 ranks);
#   (c) --predict on the test images themselves, packed with --predict-images: its top-1
#       classes are right exactly as often as --eval counted;
#   (d) --eval of a quickstart checkpoint (built-in Fashion-MNIST, shortened) equals its log;
#   (e) bad dataset files, each one message naming the file, exit 1, no run directory: missing
#       datasets, label out of range, empty class, mismatched counts, wrong dtypes, bad
#       mean/std, not HDF5; bad --predict inputs; bad packer inputs (no output file left);
#   (f) models refuse image sizes they cannot take, naming the sizes;
#   (g) the HDF5 path loses nothing: the first 512 training and 500 test images of the real
#       Fashion-MNIST exported to PNG files (export_images.py), packed in IDX order with the
#       built-in normalisation constants, train 1 epoch exactly as the built-in IDX reader does:
#       every metrics row and every weight of the checkpoint equal bit for bit (skipped
#       without the Debian dataset-fashion-mnist files).
# Skipped (77) when /usr/bin/python3 lacks numpy, h5py or Pillow.
# Usage (from the repository root, as ctest runs it): bash tests/test_owndata.sh ./dtrain
set -u
source "$(dirname "$0")/harness.sh"
DTRAIN=${1:-./dtrain}
PY=/usr/bin/python3
if ! "$PY" -c 'import numpy, h5py, PIL' 2>/dev/null; then
  echo "SKIP: $PY lacks numpy, h5py or Pillow (Debian python3-numpy python3-h5py python3-pil)"
  exit 77
fi
harness_tmp owndata
PACK=(env PYTHONPATH="$PWD/tools" "$PY" -m dtrain_tools.pack_images)

# expect_fail NAME PATTERN CMD...: exit 1 and one line on stderr that matches PATTERN.
expect_fail() {
  local name=$1 pattern=$2 rc
  shift 2
  "$@" >"$T/out" 2>"$T/err"
  rc=$?
  if [[ $rc -eq 1 ]] && grep -q -- "$pattern" "$T/err" && [[ $(wc -l <"$T/err") -eq 1 ]]; then
    ok "$name: $(cat "$T/err")"
  else
    bad "$name (exit $rc, wanted 1 and one line /$pattern/)" "$(cat "$T/err" "$T/out")"
  fi
}

# ---- (a) the tree and the packer ----
"$PY" - "$T/tree" <<'EOF'
import os, sys
import numpy as np
from PIL import Image
root, rng = sys.argv[1], np.random.RandomState(1)
for split, n in (("train", 40), ("test", 15)):
    for k, name in enumerate(["circle", "cross", "stripes"]):
        d = os.path.join(root, split, name)
        os.makedirs(d)
        for i in range(n):
            a = (rng.rand(12, 12, 3) * 160).astype(np.uint8)  # noise hides the pattern a little
            if k == 0: a[3:9, 3:9, 0] += 80
            if k == 1: a[5:7, :, 1] += 80; a[:, 5:7, 1] += 80
            if k == 2: a[::3, :, 2] += 80
            Image.fromarray(a).save(os.path.join(d, "%03d.png" % i))
EOF
out=$("${PACK[@]}" "$T/tree" -o "$T/own.h5" 2>&1)
if [[ $? -eq 0 && $out == *"3 classes, 120 train / 45 test images of 3x12x12"* ]]; then ok "packer: $out"; else bad "packer" "$out"; fi
out=$("$PY" - "$T/own.h5" "$T/tree" <<'EOF' 2>&1
import os, sys
import h5py, numpy as np
from PIL import Image
f, root = h5py.File(sys.argv[1], "r"), sys.argv[2]
names = [s.decode() for s in f["classes"][()]]
assert names == ["circle", "cross", "stripes"], names
tr, te = f["train/images"][()], f["test/images"][()]
assert tr.shape == (120, 3, 12, 12) and tr.dtype == np.uint8 and te.shape == (45, 3, 12, 12)
assert list(f["train/labels"][()]) == [k for k in range(3) for _ in range(40)]
# The pixels are the PNG's, channel-major; image 41 is cross/001.png.
png = np.asarray(Image.open(os.path.join(root, "train", "cross", "001.png"))).transpose(2, 0, 1)
assert (tr[41] == png).all()
x = tr.astype(np.float64) / 255
assert np.allclose(f["mean"][()], x.mean(axis=(0, 2, 3))) and np.allclose(f["std"][()], x.std(axis=(0, 2, 3)))
assert f.attrs["default_hflip"] == 1
print("ok")
EOF
)
[[ $out == ok ]] && ok "packed file: layout, labels in class order, pixels of the PNG, mean and std of the training split" || bad "packed file" "$out"

# ---- (b) training on it, then --eval of each checkpoint against the log ----
cat >"$T/own.ini" <<EOF
[data]
dataset = hdf5
path = $T/own.h5
[model]
name = resnet_preact
depth = 8
initial_channels = 4
[train]
epochs = 2
batch_size = 20
eval_batch_size = 16
[optim]
lr = 0.05
[augment]
crop_padding = 2
[output]
dir = $T/run
log_every = 3
keep_last = 0
EOF
out=$("$DTRAIN" "$T/own.ini" 2>&1)
if [[ $? -eq 0 && $out == *"hdf5 (120 train / 45 test images, 3x12x12, 3 classes)"* ]]; then ok "training on the packed file"; else bad "training on the packed file" "$out"; fi

# check_eval NAME RUN EPOCH OUT: --eval's output OUT against metrics.h5 row EPOCH.
check_eval() {
  local res
  res=$("$PY" - "$2/metrics.h5" "$3" "$4" <<'EOF' 2>&1
import re, sys
import h5py
f, e, out = h5py.File(sys.argv[1], "r"), int(sys.argv[2]), sys.argv[3]
row = list(f["epoch/epoch"][()]).index(e)
top1, top5, loss = (f["epoch/" + c][row] for c in ("test_top1", "test_top5", "test_loss"))
m = re.search(r"test loss (\S+) top1 \S+ top5 \S+ \(top1 (\d+)/(\d+) images, top5 (\d+)/(\d+)\)", out)
assert m, out
n = int(m.group(3))
want1, want5 = round(top1 * n / 100), round(top5 * n / 100)
assert abs(top1 * n / 100 - want1) < 1e-6, top1
assert int(m.group(2)) == want1, "eval top1 %s/%d, training %d/%d" % (m.group(2), n, want1, n)
assert int(m.group(4)) == want5, "eval top5 %s, training %d" % (m.group(4), want5)
assert m.group(1) == "%.4f" % loss, "eval loss %s, training %.4f" % (m.group(1), loss)
print("top1 %d/%d, top5 %d/%d, loss %.4f" % (want1, n, want5, n, loss))
EOF
  )
  if [[ $? -eq 0 ]]; then ok "$1: as training logged: $res"; else bad "$1" "$res"; fi
}
for e in 1 2; do
  ck=$(ls "$T"/run/checkpoints/step_*.h5 | sort | sed -n ${e}p)
  out=$("$DTRAIN" --eval "$ck" 2>&1)
  check_eval "--eval of the epoch-$e checkpoint" "$T/run" $e "$out"
done
out=$("$DTRAIN" --eval "$T/run" --csv "$T/eval.csv" 2>&1)
check_eval "--eval RUN_DIR (its latest checkpoint)" "$T/run" 2 "$out"
eval_top1=$(sed -n 's/.*(top1 \([0-9]*\)\/.*/\1/p' <<<"$out")
out=$("$DTRAIN" --eval "$T/run" "$T/own.ini" --set train.eval_batch_size=16 2>&1)
check_eval "--eval RUN_DIR CONFIG.ini (a given configuration)" "$T/run" 2 "$out"
res=$("$PY" - "$T/eval.csv" "$eval_top1" <<'EOF' 2>&1
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
assert [r["name"] for r in rows] == ["circle", "cross", "stripes", "all"], rows
K = 3
conf = [[int(r["predicted_%d" % j]) for j in range(K)] for r in rows[:K]]
assert all(sum(conf[k]) == int(rows[k]["images"]) == 15 for k in range(K))
assert all(conf[k][k] == int(rows[k]["top1_correct"]) for k in range(K))
assert sum(conf[k][k] for k in range(K)) == int(rows[K]["top1_correct"]) == int(sys.argv[2])
print("per class top1 %s" % [r["top1_correct"] for r in rows])
EOF
)
[[ $? -eq 0 ]] && ok "--csv: per-class rows, confusion rows sum to the class sizes, diagonal = top-1 ($res)" || bad "--csv" "$res"

# ---- the same on 2 ranks ----
MPIRUN=(mpirun)
if mpirun --version 2>&1 | grep -q 'Open MPI'; then
  MPIRUN+=(--oversubscribe)
  [ "$(id -u)" -eq 0 ] && MPIRUN+=(--allow-run-as-root)
fi
if command -v mpirun >/dev/null && out=$("${MPIRUN[@]}" -np 2 "$DTRAIN" "$T/own.ini" --set output.dir="$T/run2" \
    --set train.epochs=1 2>&1); then
  if grep -q "ranks: 2" <<<"$out" || grep -q "2 ranks" <<<"$out"; then
    out=$("${MPIRUN[@]}" -np 2 "$DTRAIN" --eval "$T/run2" 2>&1)
    [[ $out == *"2 rank(s), eval batch 16"* ]] || bad "--eval under mpirun -np 2 used 2 ranks" "$out"
    check_eval "--eval on 2 ranks of a 2-rank run" "$T/run2" 1 "$out"
  else
    echo "skipped: 2-rank runs (this build's comm is single-process)"
  fi
else
  bad "2-rank training" "$out"
fi

# ---- (c) --predict on the same test images ----
mapfile -t test_pngs < <(for c in circle cross stripes; do ls "$T"/tree/test/$c/*.png | sort; done)
out=$("${PACK[@]}" --predict-images "${test_pngs[@]}" --like "$T/own.h5" -o "$T/pred.h5" 2>&1)
[[ $? -eq 0 ]] && ok "packer --predict-images --like: $out" || bad "packer --predict-images" "$out"
"$DTRAIN" --predict "$(latest "$T/run")" "$T/pred.h5" --top 3 >"$T/pred.csv" 2>"$T/err"
rc=$?
res=$("$PY" - "$T/pred.csv" "$eval_top1" <<'EOF' 2>&1
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
assert len(rows) == 45, len(rows)
right = 0
for r in rows:
    truth = r["image"].split("/")[-2]
    p = [float(r["probability_%d" % k]) for k in (1, 2, 3)]
    assert p[0] >= p[1] >= p[2] and abs(sum(p) - 1) < 1e-4, r
    assert sorted(r["name_%d" % k] for k in (1, 2, 3)) == ["circle", "cross", "stripes"], r
    right += r["name_1"] == truth
assert right == int(sys.argv[2]), "--predict right on %d images, --eval counted %s" % (right, sys.argv[2])
print("%d/45 right, as --eval counted" % right)
EOF
)
[[ $rc -eq 0 && $? -eq 0 ]] && ok "--predict on the test images: $res" || bad "--predict" "$res $(cat "$T/err")"

# ---- (d) a quickstart checkpoint (built-in Fashion-MNIST, shortened) ----
out=$("$DTRAIN" configs/quickstart.ini --set train.epochs=1 --set data.train_limit=1024 \
  --set data.test_limit=1000 --set output.dir="$T/qs" 2>&1)
if [[ $? -eq 0 ]]; then
  out=$("$DTRAIN" --eval "$T/qs" 2>&1)
  check_eval "--eval of a quickstart checkpoint (1024 training, 1000 test images)" "$T/qs" 1 "$out"
else
  bad "quickstart run" "$out"
fi

# ---- (e) bad dataset files ----
"$PY" - "$T/own.h5" "$T" <<'EOF'
import shutil, sys
import h5py, numpy as np
good, d = sys.argv[1], sys.argv[2]
def variant(name, edit):
    shutil.copy(good, "%s/%s.h5" % (d, name))
    with h5py.File("%s/%s.h5" % (d, name), "r+") as f:
        edit(f)
def replace(path, data):
    def edit(f):
        del f[path]
        f[path] = data
    return edit
variant("no_labels", lambda f: f.__delitem__("train/labels"))
variant("no_test", lambda f: f.__delitem__("test"))
variant("no_classes", lambda f: f.__delitem__("classes"))
variant("label_range", lambda f: f["test/labels"].__setitem__(7, 3))
variant("label_negative", lambda f: f["train/labels"].__setitem__(0, -1))
variant("empty_class", replace("train/labels", np.array([0, 1] * 60, dtype=np.int64)))
variant("counts", replace("train/labels", np.zeros(119, dtype=np.int64)))
variant("float_images", replace("train/images", np.zeros((120, 3, 12, 12), dtype=np.float32)))
variant("int16_images", replace("test/images", np.zeros((45, 3, 12, 12), dtype=np.int16)))
variant("float_labels", replace("train/labels", np.zeros(120, dtype=np.float64)))
variant("rank3", replace("train/images", np.zeros((120, 12, 12), dtype=np.uint8)))
variant("test_shape", replace("test/images", np.zeros((45, 3, 10, 12), dtype=np.uint8)))
variant("mean_len", replace("mean", np.zeros(2)))
variant("std_zero", replace("std", np.array([0.2, 0.0, 0.2])))
variant("channels", replace("train/images", np.zeros((120, 4, 12, 12), dtype=np.uint8)))
open("%s/text.h5" % d, "w").write("not an HDF5 file\n")
EOF
bad_file() { # NAME PATTERN: training on $T/NAME.h5 fails with PATTERN and leaves no run dir
  expect_fail "$1" "dataset file $T/$1.h5: $2" "$DTRAIN" "$T/own.ini" --set data.path="$T/$1.h5" \
    --set output.dir="$T/badrun"
  [[ -e $T/badrun ]] && bad "$1 left a run directory" && rm -rf "$T/badrun"
}
bad_file no_labels "no dataset /train/labels"
bad_file no_test "no dataset /test/images"
bad_file no_classes "no dataset /classes"
bad_file label_range "/test/labels: label 3 of image 7 is out of range (3 classes"
bad_file label_negative "/train/labels: label -1 of image 0 is out of range"
bad_file empty_class "class 2 ('stripes') has no training images"
bad_file counts "/train/images holds 120 images but /train/labels 119 labels"
bad_file float_images "/train/images is float32, expected uint8 pixels"
bad_file int16_images "/test/images is int16, expected uint8 pixels"
bad_file float_labels "/train/labels is float64, expected integer class indices"
bad_file rank3 "/train/images has 3 dimension(s), expected 4"
bad_file test_shape "/train/images are 3x12x12 (C x H x W) but /test/images 3x10x12"
bad_file mean_len "/mean has 2 values but the images 3 channel(s)"
bad_file std_zero "/std\[1\] = 0 (expected a finite positive value)"
bad_file channels "/train/images has 4 channels"
expect_fail "not an HDF5 file" "dataset file $T/text.h5: not an HDF5 file" "$DTRAIN" "$T/own.ini" \
  --set data.path="$T/text.h5" --set output.dir="$T/badrun"
expect_fail "a missing file" "dataset file $T/none.h5: not found" "$DTRAIN" "$T/own.ini" \
  --set data.path="$T/none.h5" --set output.dir="$T/badrun"
expect_fail "dataset = hdf5 without data.path" "needs \[data\] path = FILE.h5" "$DTRAIN" \
  "$T/own.ini" --set data.path= --set output.dir="$T/badrun"
[[ -e $T/badrun ]] && bad "a bad file left a run directory"
expect_fail "--eval with a bad data.path" "dataset file $T/counts.h5: /train/images holds" \
  "$DTRAIN" --eval "$T/run" --set data.path="$T/counts.h5"
expect_fail "--csv without --eval" "--csv is for --eval" "$DTRAIN" "$T/own.ini" --csv "$T/x.csv"
expect_fail "--top 0" "--top 0: expected a number of classes" "$DTRAIN" --predict "$(latest "$T/run")" "$T/pred.h5" --top 0
expect_fail "--predict without images" "give one or more image files" "$DTRAIN" --predict "$(latest "$T/run")"
expect_fail "--eval with --resume" "take no --resume" "$DTRAIN" --eval "$T/run" --resume "$T/run"
expect_fail "--eval of a model the checkpoint does not hold" "checkpoint .*step_000000012.h5: .*shape" \
  "$DTRAIN" --eval "$T/run" --set model.initial_channels=8
expect_fail "--eval of a missing checkpoint" "checkpoint $T/none.h5: cannot open" "$DTRAIN" --eval "$T/none.h5"
expect_fail "--predict of a PNG file" "image file $T/tree/test/cross/000.png: not an HDF5 file (convert" \
  "$DTRAIN" --predict "$(latest "$T/run")" "$T/tree/test/cross/000.png"
"${PACK[@]}" --predict-images "$T/tree/test/cross/000.png" --size 14 --fit resize -o "$T/p14.h5" >/dev/null
expect_fail "--predict of images of another size" \
  "image file $T/p14.h5: images of 3x14x14 (C x H x W), but the model of .* takes 3x12x12" \
  "$DTRAIN" --predict "$(latest "$T/run")" "$T/p14.h5"
"${PACK[@]}" --predict-images "$T/tree/test/cross/000.png" --mode L -o "$T/grey.h5" >/dev/null
expect_fail "--predict of grey images for an RGB model" "image file $T/grey.h5: images of 1x12x12" \
  "$DTRAIN" --predict "$(latest "$T/run")" "$T/grey.h5"
expect_fail "--predict of a dataset file (no /images)" "image file $T/own.h5: no dataset /images" \
  "$DTRAIN" --predict "$(latest "$T/run")" "$T/own.h5"

# Bad packer inputs: one message, exit 1, no output file.
mkdir -p "$T/t2/train/a" "$T/t2/train/b" "$T/t2/test/a"
"$PY" -c "
import numpy as np
from PIL import Image
def grey(w, h): return Image.fromarray((np.random.RandomState(w).rand(h, w) * 255).astype(np.uint8))
grey(8, 8).save('$T/t2/train/a/1.png'); grey(9, 8).save('$T/t2/train/b/1.png')
grey(8, 8).save('$T/t2/test/a/1.png')"
expect_fail "packer: sizes differ, no --size" "images differ in size: $T/t2/train/a/1.png is 8x8, $T/t2/train/b/1.png is 8x9 (H x W): give --size" \
  "${PACK[@]}" "$T/t2" -o "$T/t2.h5"
[[ -e $T/t2.h5 ]] && bad "the packer left $T/t2.h5"
out=$("${PACK[@]}" "$T/t2" -o "$T/t2.h5" --size 6x8 --fit crop 2>&1)
[[ $? -eq 0 && $out == *"2 classes, 2 train / 1 test images of 1x6x8"* ]] && ok "packer --size 6x8 --fit crop: $out" || bad "packer --size --fit crop" "$out"
mkdir -p "$T/t2/train/c"
expect_fail "packer: an empty class" "$T/t2/train/c: empty class: no images" "${PACK[@]}" "$T/t2" -o "$T/t3.h5" --size 8
echo "not a png" >"$T/t2/train/c/x.png"
expect_fail "packer: an undecodable image" "$T/t2/train/c/x.png: cannot decode the image" "${PACK[@]}" "$T/t2" -o "$T/t3.h5" --size 8
expect_fail "packer: no train/ and test/ without --test-fraction" "has no train/ and test/ directories: give --test-fraction" \
  "${PACK[@]}" "$T/t2/train" -o "$T/t3.h5"
[[ -e $T/t3.h5 ]] && bad "the packer left $T/t3.h5"
out=$("${PACK[@]}" "$T/tree/train" --test-fraction 0.25 -o "$T/split.h5" 2>&1)
[[ $? -eq 0 && $out == *"3 classes, 90 train / 30 test images"* ]] && ok "packer --test-fraction 0.25: $out" || bad "packer --test-fraction" "$out"

# ---- (f) models and image sizes ----
rm -f "$T/t2/train/c/x.png"; rmdir "$T/t2/train/c"
"${PACK[@]}" "$T/t2" -o "$T/t10.h5" --size 10 >/dev/null
"${PACK[@]}" "$T/t2" -o "$T/t3px.h5" --size 3 >/dev/null
expect_fail "pyramidnet on 10x10 images" "name = pyramidnet takes images whose height and width are multiples of 4 .* are 10x10" \
  "$DTRAIN" "$T/own.ini" --set data.path="$T/t10.h5" --set model.name=pyramidnet --set model.depth=20 --dry-run
expect_fail "densenet on 3x3 images" "name = densenet takes images of at least 4x4 .* are 3x3" \
  "$DTRAIN" "$T/own.ini" --set data.path="$T/t3px.h5" --set model.name=densenet --set model.depth=40 --dry-run
expect_fail "vgg (5 stages) on 12x12 images" "name = vgg with 5 stages halves the image 5 times: the 12x12 images" \
  "$DTRAIN" "$T/own.ini" --set model.name=vgg --dry-run
out=$("$DTRAIN" "$T/own.ini" --set data.path="$T/t10.h5" --set model.name=wrn --set model.depth=10 \
  --set model.widening_factor=1 --dry-run 2>&1)
[[ $? -eq 0 && $out == *"input 1x10x10, 2 classes"* ]] && ok "wrn takes 1x10x10 images (global average pooling)" || bad "wrn on 10x10" "$out"

# ---- (g) the HDF5 path against the built-in reader on real Fashion-MNIST ----
FM=/usr/share/datasets/fashion-mnist
if [[ -e $FM/train-images-idx3-ubyte.gz ]]; then
  need_tools ckpt_compare
  env PYTHONPATH="$PWD/tools" "$PY" -m dtrain_tools.export_images "$FM" "$T/fm" --train-limit 512 \
    --test-limit 500 >/dev/null
  out=$("${PACK[@]}" "$T/fm" -o "$T/fm.h5" --order name --mean 0.2860 --std 0.3530 2>&1)
  [[ $? -eq 0 ]] && ok "Fashion-MNIST subset exported and packed: $out" || bad "Fashion-MNIST export" "$out"
  common=(--set train.epochs=1 --set data.train_limit=512 --set data.test_limit=500 --set output.log_every=1)
  "$DTRAIN" configs/quickstart.ini "${common[@]}" --set output.dir="$T/fm_idx" >/dev/null 2>&1
  "$DTRAIN" configs/quickstart.ini "${common[@]}" --set output.dir="$T/fm_h5" --set data.dataset=hdf5 \
    --set data.path="$T/fm.h5" >/dev/null 2>&1
  res=$(metrics_equal "$T/fm_idx/metrics.h5" "$T/fm_h5/metrics.h5" 2>&1)
  [[ $? -eq 0 ]] && ok "HDF5 path = IDX path: metrics rows equal ($res)" || bad "HDF5 path = IDX path: metrics" "$res"
  res=$("$TOOLS/ckpt_compare" "$(latest "$T/fm_idx")" "$(latest "$T/fm_h5")" --exact 2>&1)
  [[ $? -eq 0 ]] && ok "HDF5 path = IDX path: checkpoint weights equal ($res)" || bad "HDF5 path = IDX path: weights" "$res"
else
  echo "skipped (g): no $FM (Debian dataset-fashion-mnist)"
fi

finish
