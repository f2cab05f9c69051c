"""Plot the training curves of one or more dtrain runs.

    tools/dtrain-tool plot-metrics RUN_DIR_OR_METRICS_H5... -o out.png

Reads each run's metrics.h5 (src/io/metrics.h: /epoch/<column> and
/steps/<column>, one float64 1-d dataset per column) and draws, with one
colour per run and a legend:
  * train loss (solid) and test loss (dashed) vs epoch,
  * test top-1 accuracy (solid) and train top-1 (dotted) vs epoch,
  * learning rate vs epoch (per step when the run logged steps),
  * the per-step training loss vs epoch, when /steps has rows.
A file can be read while its run is still going (dtrain closes it between
epochs). Prints one summary line per run. Exit status: 0 done, 1 a missing or
invalid file (one message naming it), 2 usage.
"""

import argparse
import os
import sys

import numpy as np

EPOCH_COLUMNS = ("epoch", "step", "lr", "train_loss", "train_top1", "test_loss",
                 "test_top1", "test_top5", "seconds", "images_per_s")
STEP_COLUMNS = ("step", "epoch", "lr", "loss", "top1", "images_per_s")


class InputError(Exception):
    """A problem with one input file; reported as one message."""


def metrics_path(arg):
    """RUN_DIR -> RUN_DIR/metrics.h5; a file stays as it is."""
    if os.path.isdir(arg):
        path = os.path.join(arg, "metrics.h5")
        if not os.path.exists(path):
            raise InputError("%s: a directory without metrics.h5 (not a dtrain run "
                             "directory, or the run has not finished an epoch)" % arg)
        return path
    if not os.path.exists(arg):
        raise InputError("%s: no such file or directory" % arg)
    return arg


def _table(f, group, columns, path, required):
    import h5py

    if group not in f:
        if required:
            raise InputError("%s: no /%s group (not a dtrain metrics file)" % (path, group))
        return None
    g = f[group]
    if not isinstance(g, h5py.Group):
        raise InputError("%s: /%s is not a group" % (path, group))
    table = {}
    for c in columns:
        if c not in g:
            if required:
                raise InputError("%s: /%s/%s missing" % (path, group, c))
            return None
        d = g[c]
        if not isinstance(d, h5py.Dataset) or d.ndim != 1:
            raise InputError("%s: /%s/%s is not a 1-d dataset" % (path, group, c))
        table[c] = np.asarray(d[()], dtype=np.float64)
    n = min(len(v) for v in table.values())
    if any(len(v) != n for v in table.values()):
        # A reader can catch a file between the appends of two columns; use the common rows.
        table = {k: v[:n] for k, v in table.items()}
    return table


def read_metrics(path):
    """Returns (epoch table, steps table or None): dicts column -> ndarray."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise InputError("%s: not a readable HDF5 file (%s)" % (path, e))
    with f:
        epochs = _table(f, "epoch", EPOCH_COLUMNS, path, True)
        steps = _table(f, "steps", STEP_COLUMNS, path, False)
    if steps is not None and len(steps["step"]) == 0:
        steps = None
    return epochs, steps


def run_labels(paths):
    """Short, distinct legend labels: the run directory name, else the file name."""
    def name(p, depth):
        parts = os.path.normpath(os.path.abspath(p)).split(os.sep)
        if parts[-1] == "metrics.h5":
            parts = parts[:-1]
        else:
            parts[-1] = os.path.splitext(parts[-1])[0]
        return "/".join(parts[-depth:])

    for depth in range(1, 8):
        labels = [name(p, depth) for p in paths]
        if len(set(labels)) == len(labels):
            return labels
    return [os.path.abspath(p) for p in paths]


def plot(runs, out, title, dpi):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_steps = any(s is not None for _, _, s in runs)
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    ax_loss, ax_acc, ax_lr, ax_step = axes.ravel()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, e, s) in enumerate(runs):
        c = colors[i % len(colors)]
        x = e["epoch"]
        ax_loss.plot(x, e["train_loss"], "-", color=c, marker=".", label=label + " train")
        ax_loss.plot(x, e["test_loss"], "--", color=c, marker=".", label=label + " test")
        ax_acc.plot(x, e["test_top1"], "-", color=c, marker=".", label=label + " test")
        ax_acc.plot(x, e["train_top1"], ":", color=c, label=label + " train")
        if s is not None:
            # Steps carry their epoch index; spread each epoch's steps over [e-1, e] by
            # the global step, so the per-step curves line up with the epoch axis.
            xs = _step_epochs(s, e)
            ax_lr.plot(xs, s["lr"], "-", color=c, label=label)
            ax_step.plot(xs, s["loss"], "-", color=c, lw=0.8, label=label)
        else:
            ax_lr.plot(x, e["lr"], "-", color=c, marker=".", label=label)
    ax_loss.set(title="loss", xlabel="epoch", ylabel="cross-entropy")
    ax_acc.set(title="top-1 accuracy", xlabel="epoch", ylabel="%")
    ax_lr.set(title="learning rate", xlabel="epoch", ylabel="lr")
    ax_step.set(title="training loss per logged step", xlabel="epoch", ylabel="loss")
    if not has_steps:
        ax_step.text(0.5, 0.5, "no per-step rows (/steps)", ha="center", va="center",
                     transform=ax_step.transAxes, color="gray")
    for ax in (ax_loss, ax_acc, ax_lr, ax_step):
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=dpi)
    plt.close(fig)


def _step_epochs(s, e):
    """Fractional epoch of each step row: step / steps per epoch, from the epoch table."""
    if len(e["epoch"]) > 0 and e["epoch"][0] > 0 and e["step"][0] > 0:
        per_epoch = e["step"][0] / e["epoch"][0]
        return s["step"] / per_epoch
    return s["epoch"]


def summary(label, e):
    n = len(e["epoch"])
    if n == 0:
        return "%s: no epoch rows yet" % label
    best = int(np.nanargmax(e["test_top1"]))
    return ("%s: %d epochs, final test top-1 %.2f%% (loss %.4f), best %.2f%% at epoch %g"
            % (label, n, e["test_top1"][-1], e["test_loss"][-1], e["test_top1"][best],
               e["epoch"][best]))


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 epilog="Exit status: 0 done, 1 bad input, 2 usage.")
    ap.add_argument("runs", nargs="+", metavar="RUN_DIR_OR_METRICS_H5")
    ap.add_argument("-o", "--out", required=True, help="output image (png, pdf, svg)")
    ap.add_argument("--title", default="", help="figure title")
    ap.add_argument("--dpi", type=int, default=110)
    args = ap.parse_args(argv)
    try:
        paths = [metrics_path(a) for a in args.runs]
        tables = [read_metrics(p) for p in paths]
        runs = [(label, e, s) for label, (e, s) in zip(run_labels(paths), tables)]
        for label, e, _ in runs:
            print(summary(label, e))
        try:
            plot(runs, args.out, args.title, args.dpi)
        except (OSError, ValueError) as e:
            raise InputError("%s: cannot write the figure (%s)" % (args.out, e))
        print("wrote %s" % args.out)
        return 0
    except InputError as e:
        print("dtrain-tool plot-metrics: %s" % e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
