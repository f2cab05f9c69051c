"""tensorboard_check: read a run's TensorBoard events (output.tensorboard) back with
TensorBoard's own reader and compare them with the run's metrics.h5.

  tensorboard_check RUN_DIR [--batch-png FILE]
      Every column of metrics.h5 but `step` must be a scalar tag <group>/<column> (steps/loss,
      epoch/test_top1, ...) whose points are exactly the table's rows: the same steps in the
      same order, each value the float64 of metrics.h5 rounded to float32 (NaN for NaN); no
      other scalar tag. The image `train/batch` must be one PNG at step 0 that decodes to the
      width and height its summary states (and, with --batch-png, has the pixels of FILE, the
      picture `dtrain --dump-batch` wrote). Read with EventAccumulator over RUN_DIR/tensorboard
      (every events file, with TensorBoard's purge of the steps a resumed run logs again).
  tensorboard_check --records FILE
      Read FILE record by record with TensorBoard's record reader, which checks both CRC-32Cs of
      each record; prints the record count, exit 1 with the reader's message when a record fails.

Exit status 0 when everything matches, 1 with one line per difference otherwise. Needs the
`tensorboard` package (scripts/install_deps.sh puts it in .venv-tb), h5py, numpy and Pillow.
"""
import io
import logging
import math
import os
import sys


def _f32(x):
    import numpy as np
    return float(np.float32(x))


def _same(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == b


def check_run(run_dir, batch_png=None):
    """The differences between RUN_DIR's events and metrics.h5, as a list of lines."""
    import h5py
    from tensorboard.backend.event_processing import event_accumulator as ea

    # Its note on each purge (a resumed run) is expected here, not news.
    logging.getLogger("tensorboard").setLevel(logging.ERROR)
    acc = ea.EventAccumulator(os.path.join(run_dir, "tensorboard"),
                              size_guidance={ea.SCALARS: 0, ea.IMAGES: 0},
                              purge_orphaned_data=True)
    acc.Reload()
    tags = acc.Tags()
    errors, seen, points = [], set(), 0
    with h5py.File(os.path.join(run_dir, "metrics.h5"), "r") as f:
        for group in ("steps", "epoch"):
            steps = [int(s) for s in f[group]["step"][()]]
            for col in f[group].attrs["columns"].split(","):
                if col == "step":
                    continue
                tag = f"{group}/{col}"
                seen.add(tag)
                want = [(s, _f32(v)) for s, v in zip(steps, f[group][col][()])]
                if tag not in tags["scalars"]:
                    errors.append(f"{tag}: not in the events ({len(want)} rows in metrics.h5)")
                    continue
                got = [(e.step, e.value) for e in acc.Scalars(tag)]
                if len(got) != len(want):
                    errors.append(f"{tag}: {len(got)} points, metrics.h5 has {len(want)} rows "
                                  f"(steps {[s for s, _ in got]} vs {[s for s, _ in want]})")
                    continue
                for (gs, gv), (ws, wv) in zip(got, want):
                    if gs != ws or not _same(gv, wv):
                        errors.append(f"{tag}: step {gs} value {gv!r}, metrics.h5 step {ws} "
                                      f"value {wv!r}")
                        break
                points += len(got)
    extra = sorted(set(tags["scalars"]) - seen)
    if extra:
        errors.append(f"scalar tags not in metrics.h5: {extra}")
    images = 0
    if "train/batch" not in tags["images"]:
        errors.append("no image train/batch")
    else:
        from PIL import Image
        evs = acc.Images("train/batch")
        images = len(evs)
        if len(evs) != 1 or evs[0].step != 0:
            errors.append(f"train/batch: {len(evs)} images at steps {[e.step for e in evs]}, "
                          "want one at step 0")
        for e in evs:
            img = Image.open(io.BytesIO(e.encoded_image_string))
            img.load()
            if img.size != (e.width, e.height) or img.mode != "RGB":
                errors.append(f"train/batch: the PNG is {img.size} {img.mode}, the summary says "
                              f"{(e.width, e.height)} RGB")
            if batch_png:
                ref = Image.open(batch_png).convert("RGB")
                if ref.size != img.size or ref.tobytes() != img.convert("RGB").tobytes():
                    errors.append(f"train/batch: not the picture of {batch_png} ({img.size} vs "
                                  f"{ref.size})")
    if not errors:
        print(f"{len(seen)} scalar tags, {points} points equal to metrics.h5; "
              f"{images} image(s) train/batch")
    return errors


def check_records(path):
    """Read every record of PATH with TensorBoard's reader; (count, error message or None)."""
    from tensorboard.compat.tensorflow_stub import errors as tf_errors
    from tensorboard.compat.tensorflow_stub import pywrap_tensorflow

    reader = pywrap_tensorflow.PyRecordReader_New(path)
    n = 0
    while True:
        try:
            reader.GetNext()
        except tf_errors.OutOfRangeError:
            return n, None
        except tf_errors.DataLossError as e:
            return n, str(e.message if hasattr(e, "message") else e)
        n += 1


def main(argv):
    if len(argv) == 2 and argv[0] == "--records":
        n, err = check_records(argv[1])
        if err:
            print(f"record {n + 1}: {err}")
            return 1
        print(f"{n} records, every CRC-32C checked")
        return 0
    if len(argv) not in (1, 3) or (len(argv) == 3 and argv[1] != "--batch-png"):
        print(__doc__, file=sys.stderr)
        return 2
    errors = check_run(argv[0], argv[2] if len(argv) == 3 else None)
    for e in errors:
        print(e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
