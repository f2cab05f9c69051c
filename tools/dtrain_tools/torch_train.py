#!/usr/bin/python3
"""An independent PyTorch training of one dtrain configuration (the parity row of
results/regularizers: dtrain's number next to PyTorch's under the identical protocol).

    PYTHONPATH=tools /usr/bin/python3 -m dtrain_tools.torch_train CONFIG.ini \
        [--set SECTION.KEY=VALUE ...] [--device cpu|cuda]
    PYTHONPATH=tools /usr/bin/python3 -m dtrain_tools.torch_train --resume RUN_DIR

The exact command of the parity rows (3 seeds, 3 epochs, as the CPU campaign runs them; the
row is `baseline_torch` of experiments/regularizers.rows, beside dtrain's `baseline`):

    scripts/reproduce.sh regularizers --epochs 3 --rows baseline_torch [--runs DIR]

(--runs as the dtrain rows were run, so the table holds both; --device cuda on a GPU.)

It reads the dtrain config (.ini, the same --set overrides) so the protocol is shared:
ResNet-preact (tools/dtrain_tools/torch_models.py) on an IDX dataset (Fashion-MNIST from
data.dir, default /usr/share/datasets/fashion-mnist) normalised with dtrain's constants
(src/data/dataset.c: mean 0.2860, std 0.3530), zero padding by augment.crop_padding and a random
crop, a horizontal flip with augment.hflip_prob, SGD with (Nesterov) momentum and L2 weight
decay added to the gradient (optionally not on BN and bias), the learning rate of
src/schedule.c per iteration (lr x batch / reference_batch, warmup, cosine to min_factor, ...),
train.epochs of floor(N / batch) steps on a fresh permutation each epoch, cross-entropy with
augment.label_smoothing. Keys this runner cannot honour (other models, mixing augmentations,
other optimizers, reduced precision) are refused with one message, exit 1.

Run directory (output.dir) as dtrain lays it out, so tools/dtrain_tools/results.py reads it
as one more row: config.ini (every key the runner used), log.txt, metrics.h5 (/epoch with
dtrain's twelve columns, src/io/metrics.c; /steps empty) rewritten at each epoch end, and
checkpoints/torch_epoch_NNNNNN.pt (model, optimizer, history) from which --resume continues
after an interruption (the epoch in flight is run again).

Threads: train.threads, else OMP_NUM_THREADS, else the cores of the affinity mask, as dtrain.
Exit status: 0 done, 1 bad config or input, 2 usage.
"""

import argparse
import gzip
import math
import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from dtrain_tools import ini  # noqa: E402

# The keys the runner reads, with dtrain's defaults (src/config.h).
DEFAULTS = {
    "data.dataset": "fashion_mnist", "data.dir": "", "data.train_limit": "0",
    "data.test_limit": "0",
    "model.name": "resnet_preact", "model.depth": "20", "model.block_type": "basic",
    "model.initial_channels": "16", "model.remove_first_relu": "false",
    "model.add_last_bn": "false", "model.preact_stage": "true,true,true",
    "model.init_mode": "auto",
    "train.epochs": "15", "train.batch_size": "128", "train.eval_batch_size": "256",
    "train.seed": "0", "train.threads": "0", "train.accum_steps": "1", "train.precision": "fp32",
    "train.max_steps": "0",
    "optim.name": "sgd", "optim.lr": "0.1", "optim.reference_batch": "128",
    "optim.momentum": "0.9", "optim.nesterov": "true", "optim.weight_decay": "5e-4",
    "optim.no_decay_bn_bias": "false",
    "schedule.type": "cosine", "schedule.milestones": "", "schedule.gamma": "0.1",
    "schedule.min_factor": "1e-3", "schedule.warmup_epochs": "0",
    "schedule.warmup_start_factor": "1e-3", "schedule.warmup_type": "linear",
    "schedule.warmup_exponent": "4", "schedule.t0": "10", "schedule.t_mul": "1",
    "schedule.poly_power": "2",
    "augment.random_crop": "auto", "augment.crop_padding": "4", "augment.hflip": "auto",
    "augment.hflip_prob": "0.5", "augment.label_smoothing": "0",
    "output.dir": "runs/default", "output.overwrite": "false",
}
# Keys that must keep these values here (the runner does not implement the alternative).
REQUIRED = {
    "model.name": "resnet_preact", "optim.name": "sgd", "train.accum_steps": "1",
    "train.precision": "fp32", "train.max_steps": "0",
    "augment.cutout": "false", "augment.random_erasing": "false",
    "augment.dual_cutout": "false", "augment.mixup": "false", "augment.ricap": "false",
    "augment.cutmix": "false",
}
# IDX datasets: default directory, mean, std, default hflip (src/data/dataset.c).
DATASETS = {"fashion_mnist": ("/usr/share/datasets/fashion-mnist", 0.2860, 0.3530, True)}
EPOCH_COLUMNS = ("epoch", "step", "lr", "train_loss", "train_top1", "test_loss", "test_top1",
                 "test_top5", "seconds", "images_per_s", "loss_scale", "skipped_steps")
STEP_COLUMNS = "step,epoch,lr,loss,top1,images_per_s,loss_scale"


class ConfigError(Exception):
    """Bad config, data or run directory: one message, exit 1."""


# ---- configuration ----

def read_ini(path):
    """{section.key: value} of an .ini file; a bad one raises ConfigError."""
    return ini.read_ini(path, ConfigError)


def resolve(config_path, sets):
    """The settings: defaults, then the file, then --set overrides, checked."""
    cfg = dict(DEFAULTS)
    cfg.update(read_ini(config_path))
    for kv in sets:
        key, eq, value = kv.partition("=")
        if not eq or "." not in key:
            raise ConfigError("--set %s: expected SECTION.KEY=VALUE" % kv)
        cfg[key.strip()] = value.strip()
    for key, want in REQUIRED.items():
        if cfg.get(key, want) != want:
            raise ConfigError("%s: %s = %s is not supported by the PyTorch runner (it needs %s)"
                              % (config_path, key, cfg[key], want))
    if cfg["data.dataset"] not in DATASETS:
        raise ConfigError("%s: data.dataset = %s: the PyTorch runner reads %s only"
                          % (config_path, cfg["data.dataset"], ", ".join(DATASETS)))
    if cfg["schedule.type"] not in ("constant", "multistep", "cosine", "sgdr", "linear", "poly"):
        raise ConfigError("%s: schedule.type = %s: unknown" % (config_path, cfg["schedule.type"]))
    try:
        for key in ("train.epochs", "train.batch_size", "train.seed", "optim.reference_batch",
                    "augment.crop_padding", "data.train_limit", "data.test_limit"):
            int(cfg[key])
        for key in ("optim.lr", "optim.momentum", "optim.weight_decay", "schedule.min_factor",
                    "augment.hflip_prob", "augment.label_smoothing"):
            float(cfg[key])
    except ValueError:
        raise ConfigError("%s: %s = %s is not a number" % (config_path, key, cfg[key]))
    return cfg


def flag(cfg, key, auto=True):
    v = cfg[key].lower()
    return auto if v == "auto" else v in ("true", "1", "yes", "on")


def write_ini(cfg, path):
    sections = {}
    for key in sorted(cfg):
        s, _, k = key.partition(".")
        sections.setdefault(s, []).append((k, cfg[key]))
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("; configuration of a PyTorch run (tools/dtrain_tools/torch_train.py)\n")
        for s, items in sections.items():
            f.write("\n[%s]\n" % s)
            for k, v in items:
                f.write("%s = %s\n" % (k, v))
    os.replace(tmp, path)


# ---- learning rate: src/schedule.c ----

class Schedule:
    def __init__(self, cfg, steps_per_epoch):
        g = lambda k: float(cfg["schedule." + k])  # noqa: E731
        self.base = float(cfg["optim.lr"]) * int(cfg["train.batch_size"]) / int(
            cfg["optim.reference_batch"])
        self.total = int(cfg["train.epochs"]) * steps_per_epoch
        self.warmup = int(cfg["schedule.warmup_epochs"]) * steps_per_epoch
        self.kind = cfg["schedule.type"]
        self.exponential = cfg["schedule.warmup_type"] == "exponential"
        self.exponent, self.gamma, self.m = g("warmup_exponent"), g("gamma"), g("min_factor")
        self.start, self.t_mul, self.power = g("warmup_start_factor"), g("t_mul"), g("poly_power")
        self.t0 = int(cfg["schedule.t0"]) * steps_per_epoch
        ms = cfg["schedule.milestones"].strip()
        self.milestones = [int(x) * steps_per_epoch for x in ms.split(",")] if ms else []

    def lr(self, t):
        if t < self.warmup:
            x = t / self.warmup
            if self.exponential:
                x = x ** self.exponent
            return self.base * (self.start + (1 - self.start) * x)
        tm, main = t - self.warmup, self.total - self.warmup
        x = min(tm, main) / main if main > 0 else 1.0
        m, f = self.m, 1.0
        cos = lambda m, x: m + (1 - m) * 0.5 * (1 + math.cos(math.pi * x))  # noqa: E731
        if self.kind == "multistep":
            f = self.gamma ** sum(1 for s in self.milestones if tm >= s)
        elif self.kind == "cosine":
            f = cos(m, x)
        elif self.kind == "sgdr":
            period, start = float(self.t0), 0.0
            while start + period <= tm and period > 0:
                start += period
                period *= self.t_mul
            f = cos(m, (tm - start) / period)
        elif self.kind == "linear":
            f = 1 - (1 - m) * x
        elif self.kind == "poly":
            f = m + (1 - m) * (1 - x) ** self.power
        return self.base * f


# ---- data ----

def read_idx(path, magic):
    try:
        with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError("%s: cannot read it (%s)" % (path, e))
    got = int.from_bytes(raw[:4], "big")
    if got != magic:
        raise ConfigError("%s: not an IDX file (magic %#x, expected %#x)" % (path, got, magic))
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ConfigError("%s: %d bytes of data for dims %s" % (path, data.size, dims))
    return data.reshape(dims)


def find_file(d, base):
    for name in (base + ".gz", base):
        p = os.path.join(d, name)
        if os.path.exists(p):
            return p
    raise ConfigError("%s: neither %s.gz nor %s found" % (d, base, base))


def load_split(d, prefix, limit, mean, std):
    import torch

    x = read_idx(find_file(d, prefix + "-images-idx3-ubyte"), 0x803)
    y = read_idx(find_file(d, prefix + "-labels-idx1-ubyte"), 0x801)
    if len(x) != len(y):
        raise ConfigError("%s: %d %s images but %d labels" % (d, len(x), prefix, len(y)))
    if limit > 0:
        x, y = x[:limit], y[:limit]
    x = (torch.from_numpy(x.astype(np.float32)) / 255.0 - mean) / std
    return x.unsqueeze(1).contiguous(), torch.from_numpy(y.astype(np.int64))


def augment(x, pad, pad_value, crop, hflip_prob, gen):
    """Pad by `pad` with the normalised zero, crop back at a random offset, flip."""
    import torch

    n, _, h, w = x.shape
    if crop and pad > 0:
        p = torch.nn.functional.pad(x, (pad, pad, pad, pad), value=pad_value)
        top = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        left = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        rows = (top[:, None] + torch.arange(h))[:, None, :, None]  # (N, 1, H, 1)
        cols = (left[:, None] + torch.arange(w))[:, None, None, :]  # (N, 1, 1, W)
        x = p[torch.arange(n)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None],
              rows, cols]
    if hflip_prob > 0:
        flip = torch.rand(n, generator=gen) < hflip_prob
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x


# ---- run directory ----

def write_metrics(path, history):
    import h5py

    tmp = path + ".tmp"
    with h5py.File(tmp, "w") as f:
        f.attrs["format_version"] = np.int64(1)
        g = f.create_group("epoch")
        g.attrs["columns"] = ",".join(EPOCH_COLUMNS)
        for c in EPOCH_COLUMNS:
            g.create_dataset(c, data=np.array([r[c] for r in history], dtype=np.float64),
                             maxshape=(None,), chunks=(64,))
        f.create_group("steps").attrs["columns"] = STEP_COLUMNS
    os.replace(tmp, path)


def latest_checkpoint(run_dir):
    d = os.path.join(run_dir, "checkpoints")
    names = sorted(n for n in os.listdir(d) if n.startswith("torch_epoch_")) \
        if os.path.isdir(d) else []
    return os.path.join(d, names[-1]) if names else None


def thread_count(cfg):
    n = int(cfg["train.threads"])
    if n <= 0:
        env = os.environ.get("OMP_NUM_THREADS", "")
        n = int(env) if env.isdigit() and int(env) > 0 else len(os.sched_getaffinity(0))
    return n


# ---- training ----

def train(cfg, device_name, resume_from):
    import torch
    import torch.nn.functional as F

    from dtrain_tools import torch_models

    run_dir = cfg["output.dir"]
    torch.set_num_threads(thread_count(cfg))
    device = torch.device(device_name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device visible to PyTorch")

    dataset = cfg["data.dataset"]
    default_dir, mean, std, default_hflip = DATASETS[dataset]
    data_dir = cfg["data.dir"] or default_dir
    x_train, y_train = load_split(data_dir, "train", int(cfg["data.train_limit"]), mean, std)
    x_test, y_test = load_split(data_dir, "t10k", int(cfg["data.test_limit"]), mean, std)
    batch = int(cfg["train.batch_size"])
    steps_per_epoch = len(x_train) // batch
    if steps_per_epoch == 0:
        raise ConfigError("%s: %d training images, fewer than one batch of %d"
                          % (data_dir, len(x_train), batch))
    epochs, seed = int(cfg["train.epochs"]), int(cfg["train.seed"])
    sched = Schedule(cfg, steps_per_epoch)
    pad = int(cfg["augment.crop_padding"])
    crop = flag(cfg, "augment.random_crop")
    hflip_prob = float(cfg["augment.hflip_prob"]) if flag(cfg, "augment.hflip", default_hflip) \
        else 0.0
    pad_value = (0.0 - mean) / std

    torch.manual_seed(seed)
    init = cfg["model.init_mode"]
    model = torch_models.build_model(
        "resnet_preact", depth=int(cfg["model.depth"]), block_type=cfg["model.block_type"],
        in_channels=1, n_classes=10, initial_channels=int(cfg["model.initial_channels"]),
        remove_first_relu=flag(cfg, "model.remove_first_relu"),
        add_last_bn=flag(cfg, "model.add_last_bn"),
        preact_stage=[v.strip().lower() == "true" for v in cfg["model.preact_stage"].split(",")],
        init_mode="fan_in" if init == "kaiming_fan_in" else "fan_out").to(device)
    wd = float(cfg["optim.weight_decay"])
    if flag(cfg, "optim.no_decay_bn_bias"):
        decay = [p for p in model.parameters() if p.ndim > 1]
        rest = [p for p in model.parameters() if p.ndim <= 1]
        groups = [{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}]
    else:
        groups = [{"params": list(model.parameters()), "weight_decay": wd}]
    momentum = float(cfg["optim.momentum"])
    opt = torch.optim.SGD(groups, lr=sched.lr(0), momentum=momentum,
                          nesterov=flag(cfg, "optim.nesterov") and momentum > 0)
    smoothing = float(cfg["augment.label_smoothing"])

    history, first_epoch = [], 0
    if resume_from:
        state = torch.load(resume_from, map_location=device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        history, first_epoch = state["history"], state["epoch"]
    os.makedirs(os.path.join(run_dir, "checkpoints"), exist_ok=True)
    log = open(os.path.join(run_dir, "log.txt"), "a")

    def say(msg):
        print(msg, flush=True)
        log.write(msg + "\n")
        log.flush()

    say("torch_train: PyTorch %s, %d threads, device %s; %s %d train / %d test images; "
        "%d steps per epoch x %d epochs%s" % (
            torch.__version__, torch.get_num_threads(), device, dataset, len(x_train),
            len(x_test), steps_per_epoch, epochs,
            ", resuming after epoch %d" % first_epoch if first_epoch else ""))
    for epoch in range(first_epoch, epochs):
        t0 = time.time()
        gen = torch.Generator().manual_seed(seed * 1000003 + epoch)
        perm = torch.randperm(len(x_train), generator=gen)
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for i in range(steps_per_epoch):
            idx = perm[i * batch:(i + 1) * batch]
            xb = augment(x_train[idx], pad, pad_value, crop, hflip_prob, gen).to(device)
            yb = y_train[idx].to(device)
            lr = sched.lr(epoch * steps_per_epoch + i)
            for g in opt.param_groups:
                g["lr"] = lr
            out = model(xb)
            loss = F.cross_entropy(out, yb, label_smoothing=smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if not math.isfinite(loss.item()):
                raise ConfigError("epoch %d step %d: the loss is not finite" % (epoch + 1, i + 1))
            loss_sum += loss.item() * len(yb)
            correct += (out.argmax(1) == yb).sum().item()
            seen += len(yb)
        train_s = time.time() - t0
        model.eval()
        t_loss, top1, top5 = 0.0, 0, 0
        eval_batch = int(cfg["train.eval_batch_size"])
        with torch.no_grad():
            for j in range(0, len(x_test), eval_batch):
                xb, yb = x_test[j:j + eval_batch].to(device), y_test[j:j + eval_batch].to(device)
                out = model(xb)
                t_loss += F.cross_entropy(out, yb, reduction="sum").item()
                top = out.topk(5, 1).indices
                top1 += (top[:, 0] == yb).sum().item()
                top5 += (top == yb[:, None]).any(1).sum().item()
        n_test = len(x_test)
        step = (epoch + 1) * steps_per_epoch
        row = {"epoch": epoch + 1, "step": step, "lr": sched.lr(step - 1),
               "train_loss": loss_sum / seen, "train_top1": 100.0 * correct / seen,
               "test_loss": t_loss / n_test, "test_top1": 100.0 * top1 / n_test,
               "test_top5": 100.0 * top5 / n_test, "seconds": time.time() - t0,
               "images_per_s": seen / train_s, "loss_scale": 1.0, "skipped_steps": 0.0}
        history.append(row)
        say("epoch %d/%d train loss %.4f acc %.2f%% | test loss %.4f top1 %.2f%% top5 %.2f%% | "
            "%.1f s, %.0f img/s" % (epoch + 1, epochs, row["train_loss"], row["train_top1"],
                                   row["test_loss"], row["test_top1"], row["test_top5"],
                                   row["seconds"], row["images_per_s"]))
        write_metrics(os.path.join(run_dir, "metrics.h5"), history)
        ck = os.path.join(run_dir, "checkpoints", "torch_epoch_%06d.pt" % (epoch + 1))
        torch.save({"model": model.state_dict(), "optim": opt.state_dict(),
                    "history": history, "epoch": epoch + 1}, ck + ".tmp")
        os.replace(ck + ".tmp", ck)
        for old in os.listdir(os.path.join(run_dir, "checkpoints")):
            if old.startswith("torch_epoch_") and old < os.path.basename(ck):
                os.remove(os.path.join(run_dir, "checkpoints", old))
    say("done: %d epochs, final test top-1 %.2f%%" % (epochs, history[-1]["test_top1"]))
    log.close()


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 epilog="Exit status: 0 done, 1 bad config or input, 2 usage.")
    ap.add_argument("config", nargs="?", help="dtrain configuration (.ini)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its checkpoint")
    args = ap.parse_args(argv)
    if bool(args.config) == bool(args.resume):
        ap.error("give a CONFIG.ini or --resume RUN_DIR (not both)")
    try:
        if args.resume:
            cfg = resolve(os.path.join(args.resume, "config.ini"), args.set)
            cfg["output.dir"] = args.resume
            ck = latest_checkpoint(args.resume)
            if ck is None:
                raise ConfigError("%s: no checkpoints/torch_epoch_*.pt to resume from"
                                  % args.resume)
        else:
            cfg = resolve(args.config, args.set)
            ck = None
            run_dir = cfg["output.dir"]
            if os.path.exists(run_dir) and os.listdir(run_dir) and \
                    not flag(cfg, "output.overwrite", False):
                raise ConfigError("%s: run directory exists and is not empty (set "
                                  "output.overwrite=true, or --resume it)" % run_dir)
            os.makedirs(run_dir, exist_ok=True)
            write_ini(cfg, os.path.join(run_dir, "config.ini"))
        train(cfg, args.device, ck)
        return 0
    except ConfigError as e:
        print("torch_train: %s" % e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
