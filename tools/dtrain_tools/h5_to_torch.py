"""Convert a dtrain HDF5 checkpoint into a PyTorch state_dict file.

    tools/dtrain-tool h5-to-torch CHECKPOINT.h5 OUT.pt [--num-batches-tracked]
    tools/dtrain-tool h5-to-torch CHECKPOINT.h5 OUT.pt --verify-fashion-mnist

Every dataset under /model (weights and batch-norm running statistics, named
by their PyTorch state_dict names, e.g. stage1.block1.conv1.weight, in their
logical shapes) becomes a float32 tensor, and the dict is written with
torch.save. PyTorch's BatchNorm2d also keeps a num_batches_tracked buffer, and
ResNetPreact().state_dict() of tools/dtrain_tools/torch_models.py lists one per batch norm;
dtrain has no such counter. The file still loads with strict=True into that
model: a plain dict carries no _metadata version, and BatchNorm's loader fills
a missing num_batches_tracked with 0 for unversioned state (PyTorch 1.13 and
2.x). --num-batches-tracked writes them explicitly as torch.tensor(0), for
consumers that compare key sets (the value only matters for
BatchNorm2d(momentum=None)).

--verify-fashion-mnist (or --verify for any of the IDX datasets
fashion_mnist, mnist, kmnist) rebuilds the reference model of
tools/dtrain_tools/torch_models.py from the checkpoint's /config text (model depth,
block_type, initial_channels, remove_first_relu, add_last_bn, preact_stage;
the dataset's channels and classes), loads the converted state_dict with
strict=True, evaluates the test set (the first data.test_limit images when the
run used a limit; normalised with the dataset mean and std; batch 256; eval
mode) and prints

    test_top1: X
    correct: C / N
    test_loss: L

to compare with the test_top1 of the same epoch in the run's metrics.h5.
Exit status: 0 done, 1 bad input (message on stderr), 2 usage.
"""

import argparse
import configparser
import gzip
import os
import sys

import numpy as np


# Dataset statistics as in src/data/dataset.c (docs/reference-experiments.md "Datasets").
IDX_DATASETS = {
    "fashion_mnist": ("/usr/share/datasets/fashion-mnist", 0.2860, 0.3530),
    "mnist": ("data/mnist", 0.1307, 0.3081),
    "kmnist": ("data/kmnist", 0.1904, 0.3475),
}
N_CLASSES = {"fashion_mnist": 10, "mnist": 10, "kmnist": 10, "cifar10": 10,
             "cifar100": 100}


class InputError(Exception):
    """A problem with a file or its contents; reported as one message."""


def read_checkpoint(path):
    """Returns (dict name -> float32 ndarray, config text or None, attrs)."""
    import h5py

    if not os.path.exists(path):
        raise InputError("%s: no such file" % path)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise InputError("%s: not a readable HDF5 file (%s)" % (path, e))
    with f:
        if "model" not in f or not isinstance(f["model"], h5py.Group):
            raise InputError("%s: no /model group (not a dtrain checkpoint)" % path)
        tensors = {}

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                tensors[name.replace("/", ".")] = np.asarray(obj[()], dtype=np.float32)

        f["model"].visititems(visit)
        if not tensors:
            raise InputError("%s: /model holds no tensors" % path)
        config = None
        if "config" in f:
            raw = f["config"][()]
            if isinstance(raw, np.ndarray):
                raw = raw.reshape(-1)[0]
            config = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        attrs = {}
        for k, v in f.attrs.items():
            if isinstance(v, bytes):
                v = v.decode("utf-8")
            elif isinstance(v, np.generic):
                v = v.item()
            attrs[k] = v
    return tensors, config, attrs


def to_state_dict(tensors, num_batches_tracked=False):
    import torch

    sd = {}
    for name in sorted(tensors):
        sd[name] = torch.from_numpy(np.ascontiguousarray(tensors[name]))
        if num_batches_tracked and name.endswith(".running_var"):
            sd[name[: -len("running_var")] + "num_batches_tracked"] = torch.tensor(0)
    return sd


def _bool(text):
    t = text.strip().lower()
    if t in ("true", "yes", "on", "1"):
        return True
    if t in ("false", "no", "off", "0"):
        return False
    raise ValueError("not a boolean: %r" % text)


def parse_config(text, path):
    """The keys that shape the model and the test set, with dtrain's defaults."""
    cp = configparser.ConfigParser(interpolation=None,
                                   inline_comment_prefixes=None)
    try:
        cp.read_string(text)
    except configparser.Error as e:
        raise InputError("%s: /config is not a readable INI text (%s)" % (path, e))

    def get(section, key, default):
        if cp.has_option(section, key):
            v = cp.get(section, key).strip()
            return v if v != "" else default
        return default

    try:
        c = {
            "dataset": get("data", "dataset", "fashion_mnist"),
            "dir": get("data", "dir", ""),
            "test_limit": int(get("data", "test_limit", "0")),
            "name": get("model", "name", "resnet_preact"),
            "depth": int(get("model", "depth", "20")),
            "block_type": get("model", "block_type", "basic"),
            "initial_channels": int(get("model", "initial_channels", "16")),
            "remove_first_relu": _bool(get("model", "remove_first_relu", "false")),
            "add_last_bn": _bool(get("model", "add_last_bn", "false")),
            "preact_stage": [_bool(x) for x in
                             get("model", "preact_stage", "true,true,true").split(",")],
        }
    except ValueError as e:
        raise InputError("%s: /config: %s" % (path, e))
    return c


def build_reference(cfg, path):
    from dtrain_tools.torch_models import ResNetPreact

    if cfg["name"] != "resnet_preact":
        raise InputError("%s: model.name %s has no PyTorch reference in "
                         "tools/dtrain_tools/torch_models.py" % (path, cfg["name"]))
    if cfg["dataset"] not in N_CLASSES:
        raise InputError("%s: unknown data.dataset %s" % (path, cfg["dataset"]))
    channels = 3 if cfg["dataset"].startswith("cifar") else 1
    try:
        return ResNetPreact(depth=cfg["depth"], block_type=cfg["block_type"],
                            in_channels=channels,
                            n_classes=N_CLASSES[cfg["dataset"]],
                            initial_channels=cfg["initial_channels"],
                            remove_first_relu=cfg["remove_first_relu"],
                            add_last_bn=cfg["add_last_bn"],
                            preact_stage=tuple(cfg["preact_stage"]))
    except ValueError as e:
        raise InputError("%s: /config does not describe a ResNet-preact: %s" % (path, e))


def _open_maybe_gz(directory, base):
    for name, opener in ((base + ".gz", gzip.open), (base, open)):
        p = os.path.join(directory, name)
        if os.path.exists(p):
            return opener(p, "rb"), p
    raise InputError("%s: neither %s nor %s.gz found" % (directory, base, base))


def read_idx_test(directory):
    """Returns (images uint8 (N, 28, 28), labels int64 (N,))."""
    f, p = _open_maybe_gz(directory, "t10k-images-idx3-ubyte")
    with f:
        data = f.read()
    if len(data) < 16 or int.from_bytes(data[0:4], "big") != 0x803:
        raise InputError("%s: not an IDX image file (magic)" % p)
    n, rows, cols = (int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(3))
    if len(data) != 16 + n * rows * cols:
        raise InputError("%s: %d bytes, expected %d" % (p, len(data), 16 + n * rows * cols))
    images = np.frombuffer(data, np.uint8, offset=16).reshape(n, rows, cols)
    f, p = _open_maybe_gz(directory, "t10k-labels-idx1-ubyte")
    with f:
        data = f.read()
    if len(data) < 8 or int.from_bytes(data[0:4], "big") != 0x801:
        raise InputError("%s: not an IDX label file (magic)" % p)
    m = int.from_bytes(data[4:8], "big")
    if m != n or len(data) != 8 + m:
        raise InputError("%s: %d labels for %d images" % (p, m, n))
    labels = np.frombuffer(data, np.uint8, offset=8).astype(np.int64)
    return images, labels


def evaluate(model, cfg, data_dir):
    """Top-1 accuracy and mean cross-entropy of model on the test set."""
    import torch
    import torch.nn.functional as F

    default_dir, mean, std = IDX_DATASETS[cfg["dataset"]]
    directory = data_dir or cfg["dir"] or default_dir
    images, labels = read_idx_test(directory)
    if cfg["test_limit"] > 0:
        images, labels = images[: cfg["test_limit"]], labels[: cfg["test_limit"]]
    x_all = (torch.from_numpy(images.astype(np.float32) / 255.0) - mean) / std
    x_all = x_all.unsqueeze(1)  # (N, 1, 28, 28)
    y_all = torch.from_numpy(labels)
    model.eval()
    correct, loss_sum = 0, 0.0
    with torch.no_grad():
        for i in range(0, len(y_all), 256):
            x, y = x_all[i: i + 256], y_all[i: i + 256]
            logits = model(x)  # (B, classes)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            correct += int((logits.argmax(1) == y).sum().item())
    n = len(y_all)
    return correct, n, loss_sum / max(n, 1)


def main(argv):
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Exit status: 0 done, 1 bad input, 2 usage.")
    ap.add_argument("checkpoint", help="dtrain checkpoint (RUN_DIR/checkpoints/step_*.h5)")
    ap.add_argument("out", help="output file for torch.save(state_dict)")
    ap.add_argument("--num-batches-tracked", action="store_true",
                    help="add the BatchNorm num_batches_tracked buffers as "
                         "torch.tensor(0) (not needed for strict loading)")
    ap.add_argument("--verify-fashion-mnist", action="store_true",
                    help="load into the reference model (strict) and evaluate "
                         "the Fashion-MNIST test set")
    ap.add_argument("--verify", action="store_true",
                    help="same for the checkpoint's own IDX dataset "
                         "(fashion_mnist, mnist, kmnist)")
    ap.add_argument("--data-dir", default="",
                    help="dataset directory (default: data.dir of the run, else "
                         "the dataset's standard place)")
    args = ap.parse_args(argv)

    try:
        tensors, config, attrs = read_checkpoint(args.checkpoint)
        import torch

        sd = to_state_dict(tensors, args.num_batches_tracked)
        try:
            torch.save(sd, args.out)
        except (OSError, RuntimeError) as e:
            raise InputError("%s: cannot write (%s)" % (args.out, e))
        n_params = sum(int(np.prod(t.shape)) for t in tensors.values())
        print("wrote %s: %d tensors (%d values) from %s (epoch %s, step %s)"
              % (args.out, len(sd), n_params, args.checkpoint,
                 attrs.get("epoch", "?"), attrs.get("step", "?")))
        if not (args.verify or args.verify_fashion_mnist):
            return 0
        if config is None:
            raise InputError("%s: no /config text; cannot rebuild the model" % args.checkpoint)
        cfg = parse_config(config, args.checkpoint)
        if args.verify_fashion_mnist and cfg["dataset"] != "fashion_mnist":
            raise InputError("%s: the run trained on %s, not fashion_mnist (use --verify)"
                             % (args.checkpoint, cfg["dataset"]))
        if cfg["dataset"] not in IDX_DATASETS:
            raise InputError("%s: --verify reads IDX datasets only (%s), not %s"
                             % (args.checkpoint, ", ".join(IDX_DATASETS), cfg["dataset"]))
        model = build_reference(cfg, args.checkpoint)
        try:
            model.load_state_dict(torch.load(args.out), strict=True)
        except RuntimeError as e:
            raise InputError("%s: does not match the reference model built from its "
                             "/config: %s" % (args.checkpoint, e))
        correct, n, loss = evaluate(model, cfg, args.data_dir)
        print("model: resnet_preact-%d %s, initial_channels %d, %s"
              % (cfg["depth"], cfg["block_type"], cfg["initial_channels"], cfg["dataset"]))
        print("test_top1: %.4f" % (100.0 * correct / max(n, 1)))
        print("correct: %d / %d" % (correct, n))
        print("test_loss: %.6f" % loss)
        return 0
    except InputError as e:
        print("dtrain-tool h5-to-torch: %s" % e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
