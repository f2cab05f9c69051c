#!/usr/bin/python3
"""The table and plots of one reproduced experiment (scripts/reproduce.sh writes them after
every run).

    PYTHONPATH=tools /usr/bin/python3 -m dtrain_tools.results EXPERIMENT [--runs DIR]
        [--experiments DIR] [--out DIR]
    PYTHONPATH=tools /usr/bin/python3 -m dtrain_tools.results --wall RUN_DIR

Reads EXPERIMENTS/EXPERIMENT.rows (the rows, in order; default experiments/) and the run
directories DIR/EXPERIMENT/ROW/seedS (default runs/reproduce) that scripts/reproduce.sh made:
config.ini (the settings the run used), metrics.h5 (/epoch, src/io/metrics.c) and
reproduce.done (command, reproduce, commit, device, device_name, wall_s; a run without it has
not finished and is listed as such). Writes OUT/EXPERIMENT/ (default results/):
  README.md     first line: the data and how the protocol was shortened; then per row the
                config, runner, dataset, epochs, batch, lr, seeds, our final test error
                (100 - last epoch's test top-1; mean +- sample standard deviation over the
                seeds, each seed's value beside it), the published value of the config's
                header ("; Published test error (%, last epoch): X", the first one; it is for
                the config's own dataset and epochs, and left out when the row changes the
                protocol with SECTION.KEY overrides), images/s, wall time per run, device,
                commit; then the exact command of every row.
  curves.png    train / test loss and accuracy against the epoch, one line per row (seed 0).
  batch_size.png  (rows with two or more batch sizes) final test error against the batch
                size: linear scaling, with warmup (schedule.warmup_epochs > 0), LARS
                (optim.name = lars), and the published values for comparison.
--wall RUN_DIR prints the seconds of the run's epochs (the sum of /epoch/seconds).
Exit status: 0 written, 1 bad input (one message), 2 usage.
"""

import argparse
import math
import os
import re
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from dtrain_tools import ini  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATASET_NAMES = {"fashion_mnist": "Fashion-MNIST", "mnist": "MNIST", "kmnist": "KMNIST",
                 "cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
# Overrides that shorten or place a run without changing its protocol (and output.*).
NEUTRAL_KEYS = {"data.train_limit", "data.test_limit", "data.dir", "data.loader_threads",
                "train.threads", "train.epochs", "train.eval_batch_size"}
PUBLISHED_RE = re.compile(r"^;\s*Published test error \(%, last epoch\):\s*([0-9.]+)")
TABLE_RE = re.compile(r"^;\s*Table\s+([0-9.]+)")


class InputError(Exception):
    """A bad rows file or run directory: one message, exit 1."""


def read_ini(path):
    """{section.key: value} of an .ini file; a bad one raises InputError."""
    return ini.read_ini(path, InputError)


def read_done(path):
    """reproduce.done: KEY = VALUE lines."""
    out = {}
    with open(path) as f:
        for line in f:
            k, eq, v = line.partition("=")
            if eq:
                out[k.strip()] = v.strip()
    return out


def published(config_path):
    """(value, table) of the config header's first published test error, or (None, None)."""
    table = None
    with open(config_path) as f:
        for line in f:
            if not line.startswith(";"):
                break
            m = TABLE_RE.match(line)
            if m:
                table = m.group(1).rstrip(".")
            m = PUBLISHED_RE.match(line)
            if m:
                return float(m.group(1)), table
    return None, None


def read_rows(path):
    """[(row, config, seeds, runner, {key: value})] in file order."""
    rows = []
    try:
        lines = open(path).read().splitlines()
    except OSError as e:
        raise InputError("%s: cannot read it (%s)" % (path, e.strerror))
    for n, line in enumerate(lines, 1):
        f = line.split()
        if not f or f[0].startswith("#"):
            continue
        if len(f) < 2:
            raise InputError("%s:%d: expected ROW CONFIG [...]" % (path, n))
        seeds, runner, sets = 1, "dtrain", {}
        for tok in f[2:]:
            k, _, v = tok.partition("=")
            if k == "seeds":
                seeds = int(v)
            elif k == "runner":
                runner = v
            else:
                sets[k] = v
        rows.append((f[0], f[1], seeds, runner, sets))
    return rows


def read_epochs(path):
    """The /epoch table of a metrics.h5: column -> ndarray (common length)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            g = f["epoch"]
            cols = {c: np.asarray(g[c][()], dtype=np.float64) for c in g.keys()}
    except (OSError, KeyError) as e:
        raise InputError("%s: not a dtrain metrics file (%s)" % (path, e))
    n = min(len(v) for v in cols.values()) if cols else 0
    return {k: v[:n] for k, v in cols.items()}


def seed_dirs(row_dir):
    if not os.path.isdir(row_dir):
        return []
    names = [d for d in os.listdir(row_dir) if re.fullmatch(r"seed[0-9]+", d)]
    return [os.path.join(row_dir, d) for d in sorted(names, key=lambda d: int(d[4:]))]


class Run:
    def __init__(self, path):
        self.path = path
        self.seed = int(os.path.basename(path)[4:])
        self.done = read_done(os.path.join(path, "reproduce.done")) \
            if os.path.exists(os.path.join(path, "reproduce.done")) else None
        self.cfg = read_ini(os.path.join(path, "config.ini")) \
            if os.path.exists(os.path.join(path, "config.ini")) else {}
        mp = os.path.join(path, "metrics.h5")
        self.epochs = read_epochs(mp) if os.path.exists(mp) else None
        if self.epochs is not None and "epoch" not in self.epochs:
            self.epochs = None  # created, no epoch finished yet
        if self.done is not None and (self.epochs is None or len(self.epochs["epoch"]) == 0):
            raise InputError("%s: reproduce.done but no epoch rows in metrics.h5" % path)

    @property
    def error(self):
        return 100.0 - float(self.epochs["test_top1"][-1])


def fmt_time(s):
    s = int(round(s))
    if s >= 3600:
        return "%dh%02dm" % (s // 3600, s % 3600 // 60)
    return "%dm%02ds" % (s // 60, s % 60)


def fmt_error(errors):
    if not errors:
        return "—"
    each = ", ".join("%.2f" % e for e in errors)
    if len(errors) == 1:
        return "%.2f" % errors[0]
    return "%.2f ± %.2f (%s)" % (np.mean(errors), np.std(errors, ddof=1), each)


def collect(experiment, runs_dir, exp_dir):
    rows_file = os.path.join(exp_dir, experiment + ".rows")
    out = []
    for row, config, seeds, runner, sets in read_rows(rows_file):
        cpath = os.path.join(ROOT, "configs", config)
        if not os.path.exists(cpath):
            raise InputError("%s: row %s: configs/%s not found" % (rows_file, row, config))
        pub, table = published(cpath)
        protocol_sets = {k: v for k, v in sets.items()
                         if k not in NEUTRAL_KEYS and not k.startswith("output.")}
        runs = [Run(d) for d in seed_dirs(os.path.join(runs_dir, experiment, row))]
        out.append(dict(row=row, config=config, seeds=seeds, runner=runner, sets=sets,
                        protocol_sets=protocol_sets, published=pub, table=table,
                        config_cfg=read_ini(cpath), runs=runs,
                        done=[r for r in runs if r.done is not None]))
    return rows_file, out


def first_line(rows):
    """The data, and how the runs shorten the protocol of the configs."""
    done = [r for row in rows for r in row["done"]]
    if not done:
        return "No run of this experiment has finished yet."
    datasets = sorted({r.cfg.get("data.dataset", "?") for r in done})
    ours = ", ".join(DATASET_NAMES.get(d, d) for d in datasets)
    conf_ds = sorted({row["config_cfg"].get("data.dataset", "?") for row in rows})
    conf = ", ".join(DATASET_NAMES.get(d, d) for d in conf_ds)
    epochs = sorted({int(r.cfg.get("train.epochs", "0")) for r in done})
    conf_epochs = sorted({int(row["config_cfg"].get("train.epochs", "0")) for row in rows})
    ep = "/".join(str(e) for e in epochs)
    cep = "/".join(str(e) for e in conf_epochs)
    parts = [ours]
    if epochs != conf_epochs:
        parts[0] += ", %s epoch%s instead of %s" % (ep, "" if ep == "1" else "s", cep)
    else:
        parts[0] += ", %s epochs as published" % ep
    limits = []
    for key, what in (("data.train_limit", "training"), ("data.test_limit", "test")):
        v = sorted({int(r.cfg.get(key, "0")) for r in done})
        if v == [0]:
            continue
        n = "%d" % v[0] if len(v) == 1 else "%d–%d" % (v[0] or v[1], v[-1])
        limits.append("%s %s%s" % (n, what, " (all in some rows)" if 0 in v else ""))
    if limits:
        parts.append("only the first %s images" % " and ".join(limits))
    line = ", ".join(parts)
    if datasets != conf_ds:
        if "cifar10" in conf_ds and not os.path.isdir(os.path.join(ROOT, "data", "cifar10")):
            line += ": %s is not obtainable on these machines" % conf
        else:
            line += ": the configs' dataset is %s" % conf
        line += " (the published values are %s at %s epochs)" % (conf, cep)
    elif epochs != conf_epochs:
        line += " (the published values are at %s epochs)" % cep
    return line + "."


def row_cells(row):
    done = row["done"]
    c = row["config_cfg"]
    if done:
        cfg = done[0].cfg
        ds = DATASET_NAMES.get(cfg.get("data.dataset", ""), cfg.get("data.dataset", "?"))
    else:  # the protocol as the rows file gives it; data and epochs come with the runs
        cfg = dict(c, **row["sets"])
        ds = "—"
    batch = int(cfg.get("train.batch_size", "128"))
    lr = float(cfg.get("optim.lr", "0.1")) * batch / int(cfg.get("optim.reference_batch", "128"))
    extra = [] if cfg.get("optim.name", "sgd") == "sgd" else [cfg["optim.name"].upper()]
    if int(cfg.get("schedule.warmup_epochs", "0")) > 0:
        extra.append("warmup %s" % cfg["schedule.warmup_epochs"])
    errors = [r.error for r in done]
    if row["published"] is None:
        pub = "—"
    elif row["protocol_sets"]:
        pub = "— (config: %.2f without the overrides)" % row["published"]
    else:
        pds = DATASET_NAMES.get(c.get("data.dataset", ""), "?")
        pub = "%.2f (%s, %s ep.%s)" % (row["published"], pds, c.get("train.epochs", "?"),
                                        ", table %s" % row["table"] if row["table"] else "")
    ips = [float(np.mean(r.epochs["images_per_s"])) for r in done]
    walls = [float(r.done.get("wall_s", "nan")) for r in done]
    devices = sorted({r.done.get("device_name") or "%s (model not recorded)"
                      % r.done.get("device", "?") for r in done})
    commits = sorted({r.done.get("commit", "?") for r in done})
    epochs = sorted({int(r.cfg.get("train.epochs", "0")) for r in done})
    if len(done) < row["seeds"]:
        state = []
        for r in row["runs"]:
            if r.done is None:
                n = len(r.epochs["epoch"]) if r.epochs is not None else 0
                state.append("seed %d at epoch %d/%s" % (r.seed, n, r.cfg.get("train.epochs", "?")))
        state.append("%d of %d seeds finished" % (len(done), row["seeds"]))
        seeds = "; ".join(state)
    else:
        seeds = str(len(done))
    name = row["row"] + ("" if not extra else " (%s)" % ", ".join(extra))
    sets = " ".join("%s=%s" % kv for kv in row["sets"].items())
    return [name, "`%s`%s" % (row["config"], " " + sets if sets else ""), row["runner"], ds,
            "/".join(str(e) for e in epochs) or "—", str(batch),
            "%.4g" % lr, seeds, fmt_error(errors), pub,
            "%.0f" % np.mean(ips) if ips else "—",
            fmt_time(np.mean(walls)) if walls and not math.isnan(np.mean(walls)) else "—",
            "; ".join(devices) or "—", ", ".join(commits) or "—"]


# The --set options reproduce.sh itself adds to a row's dtrain command.
OWN_SETS = ("data.dataset=", "data.dir=", "train.seed=", "output.dir=", "output.overwrite=",
            "train.epochs=")


def command_of(experiment, row):
    """(reproduce.sh command, training command) of the row's first finished seed. Runs of an
    older reproduce.sh did not record the first: it is rebuilt from the training command (its
    epochs and the --set options that are neither reproduce.sh's own nor the row's)."""
    done = row["done"]
    if not done:
        return None, None
    r = done[0]
    cmd = r.done.get("command", "")
    rep = r.done.get("reproduce")
    if rep is None and cmd:
        words = cmd.split()
        sets = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--set"]
        rep = "scripts/reproduce.sh %s --rows %s" % (experiment, row["row"])
        device = words[words.index("--device") + 1] if "--device" in words[:-1] else None
        if device:
            rep += " --device %s" % device
        for kv in sets:
            if kv.startswith("train.epochs="):
                rep += " --epochs %s" % kv.split("=", 1)[1]
        row_sets = {"%s=%s" % kv for kv in row["sets"].items()}
        for kv in sets:
            if not kv.startswith(OWN_SETS) and kv not in row_sets:
                rep += " --set %s" % kv
    return rep, cmd or None


def plot_curves(rows, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    ax_loss, ax_acc = axes
    shown = [row for row in rows if row["done"]]
    colors = plt.get_cmap("tab10").colors if len(shown) <= 10 else \
        plt.get_cmap("tab20").colors[::2] + plt.get_cmap("tab20").colors[1::2]
    for i, row in enumerate(shown):
        e = row["done"][0].epochs
        c = colors[i % len(colors)]
        ax_loss.plot(e["epoch"], e["train_loss"], "--", color=c, marker=".")
        ax_loss.plot(e["epoch"], e["test_loss"], "-", color=c, marker=".", label=row["row"])
        ax_acc.plot(e["epoch"], e["train_top1"], "--", color=c, marker=".")
        ax_acc.plot(e["epoch"], e["test_top1"], "-", color=c, marker=".", label=row["row"])
    ax_loss.set(title="loss (solid: test, dashed: train)", xlabel="epoch",
                ylabel="cross-entropy (log scale)", yscale="log")
    ax_acc.set(title="top-1 accuracy (solid: test, dashed: train)", xlabel="epoch", ylabel="%")
    fmt = matplotlib.ticker.FormatStrFormatter("%.2g")
    ax_loss.yaxis.set_major_formatter(fmt)
    lo, hi = ax_loss.get_ylim()
    # Minor ticks labelled only over a short range (a diverged run spans decades, where the
    # labels of every minor tick would overlap).
    ax_loss.yaxis.set_minor_formatter(fmt if hi / max(lo, 1e-30) < 30
                                      else matplotlib.ticker.NullFormatter())
    for ax in axes:
        ax.grid(True, alpha=0.3)
        if len(shown) and max(len(r["done"][0].epochs["epoch"]) for r in shown) <= 10:
            ax.xaxis.get_major_locator().set_params(integer=True)
    if shown:
        ax_acc.legend(fontsize="small", ncol=2 if len(shown) > 8 else 1, loc="lower right")
    fig.suptitle(title + " (seed 0 of each row)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def batch_series(rows):
    """{'linear scaling' | 'with warmup' | 'LARS' (+ ', PyTorch'): [(batch, mean error, sd,
    published)]}, the seeds of every row of one kind and batch size pooled."""
    pooled = {}
    for row in rows:
        if not row["done"]:
            continue
        cfg = row["done"][0].cfg
        if cfg.get("optim.name", "sgd") == "lars":
            kind = "LARS"
        elif int(cfg.get("schedule.warmup_epochs", "0")) > 0:
            kind = "with warmup"
        else:
            kind = "linear scaling"
        if row["runner"] != "dtrain":
            kind += ", PyTorch"
        errs, pubs = pooled.setdefault((kind, int(cfg["train.batch_size"])), ([], []))
        errs += [r.error for r in row["done"]]
        if not row["protocol_sets"] and row["published"] is not None:
            pubs.append(row["published"])
    series = {}
    for (kind, b), (errs, pubs) in sorted(pooled.items(), key=lambda kv: kv[0][1]):
        series.setdefault(kind, []).append(
            (b, float(np.mean(errs)), float(np.std(errs, ddof=1)) if len(errs) > 1 else 0.0,
             pubs[0] if pubs else None))
    return series


def plot_batch(series, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, axp) = plt.subplots(1, 2, figsize=(13, 5.2))
    style = {"linear scaling": ("C0", "o"), "with warmup": ("C1", "s"), "LARS": ("C2", "^"),
             "linear scaling, PyTorch": ("C3", "x")}
    batches = set()
    for kind, pts in series.items():
        c, m = style.get(kind, ("C3", "x"))
        b = [p[0] for p in pts]
        batches.update(b)
        ax.errorbar(b, [p[1] for p in pts], yerr=[p[2] for p in pts], color=c, marker=m,
                    capsize=3, label=kind)
        pub = [(p[0], p[3]) for p in pts if p[3] is not None]
        if pub and "PyTorch" not in kind:  # the same published value as dtrain's row
            axp.plot([p[0] for p in pub], [p[1] for p in pub], color=c, marker=m, ls="--",
                     label=kind)
    for a in (ax, axp):
        a.set_xscale("log", base=2)
        a.set_xticks(sorted(batches))
        a.set_xticklabels([str(b) for b in sorted(batches)])
        a.set_xlabel("batch size (lr = 0.1 x batch / 128 for SGD)")
        a.set_ylabel("test error (%)")
        a.grid(True, alpha=0.3)
        if a.lines:
            a.legend(fontsize="small")
    ax.set_title("ours (mean ± sd over seeds)")
    axp.set_title("published (the configs' own dataset and epochs)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def md_table(header, rows):
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def write(experiment, runs_dir, exp_dir, out_dir):
    rows_file, rows = collect(experiment, runs_dir, exp_dir)
    dest = os.path.join(out_dir, experiment)
    os.makedirs(dest, exist_ok=True)
    line = first_line(rows)
    header = ["row", "config", "runner", "dataset", "epochs", "batch", "lr", "seeds",
              "test error % (mean ± sd: seeds)", "published test error %", "images/s",
              "wall per run", "device", "commit"]
    body = [row_cells(r) for r in rows]
    md = [line, "", "# %s" % experiment, "",
          "Written by `tools/dtrain_tools/results.py` from the runs under `%s` (rows: `%s`). "
          "Test error = 100 − the last epoch's test top-1 (`metrics.h5`); ± is the sample "
          "standard deviation over seeds, each seed's value in parentheses. images/s: mean "
          "over the run's epochs (training only; the machine is shared, so timings are noisy). "
          "The published values are the configs' header lines, for the config's own dataset "
          "and epochs." % (runs_dir, os.path.relpath(rows_file, ROOT)
                           if rows_file.startswith(ROOT) else rows_file), "",
          md_table(header, body), ""]
    plots = []
    if any(r["done"] for r in rows):
        plot_curves(rows, os.path.join(dest, "curves.png"), line.split(":")[0].rstrip("."))
        plots.append(("curves.png", "train and test loss and top-1 accuracy per epoch"))
        series = batch_series(rows)
        if len({p[0] for pts in series.values() for p in pts}) >= 2:
            plot_batch(series, os.path.join(dest, "batch_size.png"),
                       line.split(":")[0].rstrip("."))
            plots.append(("batch_size.png", "final test error against the batch size"))
    if plots:
        md += ["## Plots", ""]
        md += ["![%s](%s)  \n`%s`: %s" % (d, p, p, d) for p, d in plots]
        md.append("")
    md += ["## Commands", "",
           "Each row again (skips finished seeds, resumes interrupted ones), then the first "
           "seed's training command as it ran:", ""]
    for r in rows:
        rep, cmd = command_of(experiment, r)
        if rep is None and cmd is None:
            md.append("- `%s`: not finished yet" % r["row"])
            continue
        md.append("- `%s`:" % r["row"])
        if rep:
            md.append("  `%s`  " % rep)
        if cmd:
            md.append("  `%s`" % cmd.strip())
    md.append("")
    tmp = os.path.join(dest, "README.md.tmp")
    with open(tmp, "w") as f:
        f.write("\n".join(md))
    os.replace(tmp, os.path.join(dest, "README.md"))
    return os.path.join(dest, "README.md"), [os.path.join(dest, p) for p, _ in plots]


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 epilog="Exit status: 0 written, 1 bad input, 2 usage.")
    ap.add_argument("experiment", nargs="?")
    ap.add_argument("--runs", default="runs/reproduce", help="parent of EXPERIMENT/ROW/seedS")
    ap.add_argument("--experiments", default=os.path.join(ROOT, "experiments"),
                    help="directory of EXPERIMENT.rows")
    ap.add_argument("--out", default=os.path.join(ROOT, "results"), help="parent of the tables")
    ap.add_argument("--wall", metavar="RUN_DIR", help="print the run's epoch seconds, summed")
    args = ap.parse_args(argv)
    try:
        if args.wall:
            e = read_epochs(os.path.join(args.wall, "metrics.h5"))
            print("%.0f" % float(np.sum(e["seconds"])))
            return 0
        if not args.experiment:
            ap.error("give an EXPERIMENT (or --wall RUN_DIR)")
        readme, plots = write(args.experiment, os.path.abspath(args.runs), args.experiments,
                              args.out)
        print("wrote %s" % " ".join([readme] + plots))
        return 0
    except InputError as e:
        print("results: %s" % e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
