"""Write golden tensors from the independent PyTorch ResNet-preact-20.

dtrain's C tests load tests/golden/resnet_preact20.bin and compare their own
forward pass, gradients, BN statistics and 20 SGD steps against it.

Usage:
  tools/dtrain-tool make-golden [--out tests/golden/resnet_preact20.bin]
  tools/dtrain-tool make-golden --verify [--out ...]
  tools/dtrain-tool make-golden --spread

--verify reloads the file, checks its structure (names, shapes, parameter
count), recomputes everything and requires bit-identical values, and checks
every one of the 20 SGD updates against the SGD formula of
docs/reference-experiments.md "Optimizers", written by hand.
--spread prints how far float64, 1-thread and channels_last runs of the same
model land from the golden values: a guide for the C tests' tolerances. The
20-step run is chaotic at float32 rounding level (ReLU sign flips grow from
step 2 on), so only its first steps can be compared tightly.

File format (little-endian):
  8 bytes magic b"DTGOLD1\\0", uint32 record count, then per record:
  uint32 name length, name bytes (no NUL), uint32 ndim, ndim x int64 dims,
  float32 data (prod(dims) values; a scalar has ndim 0 and one value).

Records:
  param/<key>        initial state_dict (no num_batches_tracked)
  data/x (1,4,1,28,28), data/y (1,4)   the batch (labels as float32)
  step0/margin ()    smallest |pre-ReLU activation| of that forward (float64)
  step0/logits (4,10), step0/loss ()    train-mode forward on step0/x
  grad/<key>         gradient of the mean CE loss for every parameter
  step0/<key>        BN running_mean/running_var after that forward
  train/loss (20,)   loss of each of 20 SGD steps on that batch (before its update)
  train/loss64 (20,) the same 20 steps computed in float64
  train/loss_cl (20,) the same 20 steps in float32 with channels_last tensors
  train/margin64 (20,) smallest |pre-ReLU activation| of each float64 step's forward
  train/noise32 (20,)  largest |float32 - float64| pre-ReLU difference of a forward
                       at that step's float64 weights: float32 rounding noise
  train/loss_kink (20,) largest relative loss deviation, per step, of KINK_RUNS
                       float64 runs in which every ReLU input closer to zero than
                       that step's noise32 takes the other side of its kink in
                       backward (each with probability 1/2): how far a correct
                       float32 implementation may legitimately land (see below)

Why the batch is random and searched, not real images: a gradient is discontinuous at
every ReLU kink, and this net at initialisation has about 2.3 million ReLU
inputs for a batch of 16; some lie within 1e-6 of zero, so two correct float32
implementations (even PyTorch NCHW vs channels_last) flip a ReLU and then
disagree by 0.2-1 % in whole gradient tensors (one element carries ~1/sqrt(n)
of the norm). Real Fashion-MNIST makes it worse: its constant background gives
thousands of tied activations, and batch norm over near-constant channels
amplifies rounding, so 20 steps on 16-image batches of it separate PyTorch's own
float32 and float64 runs by 3 % at step 3 and 10-80 % later. The batch is a
small random-normal batch whose seed was chosen so that no pre-ReLU activation
of the first forward lies within STEP0_MARGIN of zero (checked in float64): any
implementation accurate to better than that margin agrees to float32 rounding
on the first step, and 20 steps on it stay within 2e-4 between float32 and
float64 PyTorch; PyTorch's channels_last path (another summation order, like
any second implementation) stays within 2e-3 of it. train/loss64 and
train/loss_cl hold those runs so a test can say how close is close enough.

Why train/loss_kink: over 20 steps the float64 run has about 11 million ReLU
inputs and, at almost every step, a few of them closer to zero than a float32
forward's rounding noise (train/margin64 against train/noise32: the margin falls
to 1e-6 at step 2 and below 1e-7 later, the noise stays around 4e-6). Which side
of the kink such an input lands on depends on the summation order of the
convolutions, so two correct float32 implementations (oneDNN's AVX2 and AVX-512
kernels, for one) may take different sides, and the loss separates by up to a
few percent a few steps later. PyTorch's own float64 and channels_last runs did
not happen to flip any of them, so their spread alone cannot bound that. The
kink runs make every such flip explicitly: steps before the first flippable
input keep a spread of exactly zero and stay under the tight bound.
"""

import argparse
import copy
import gzip
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

from dtrain_tools import ROOT
from dtrain_tools.torch_models import ResNetPreact, count_params

MAGIC = b"DTGOLD1\0"
DATA_DIR = "/usr/share/datasets/fashion-mnist"
# Fashion-MNIST normalisation (docs/reference-experiments.md "Datasets").
MEAN, STD = 0.2860, 0.3530
N_BATCHES, BATCH = 1, 4
TRAIN_STEPS = 20
LR, MOMENTUM, WD = 0.1, 0.9, 5e-4
SEED, THREADS = 0, 2
STEP0_N, STEP0_SEED, STEP0_MARGIN = 4, 1084, 1e-5
KINK_RUNS, KINK_SEED = 64, 1
# Trainable parameters of ResNet-preact-20 with 1 input channel, 10 classes:
# 272282 - 2*9*16 (docs/reference-experiments.md "Common conventions").
EXPECTED_PARAMS = 271994


def read_idx(path, want_magic):
    """Parse a gzip IDX file (big-endian header) into a uint8 array."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != want_magic:
        raise ValueError("%s: IDX magic %#x, expected %#x"
                         % (path, magic, want_magic))
    ndim = magic & 0xFF
    dims = struct.unpack(">%dI" % ndim, raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError("%s: %d bytes of data for dims %s"
                         % (path, data.size, dims))
    return data.reshape(dims)


def load_data():
    """The batch of every check, as (1,4,1,28,28)/(1,4)."""
    x, y = step0_batch()
    return x.reshape(N_BATCHES, BATCH, 1, 28, 28), y.reshape(N_BATCHES, BATCH)


def stats_keys(model):
    return [k for k in model.state_dict()
            if k.endswith("running_mean") or k.endswith("running_var")]


def state(model):
    return [(k, v) for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")]


def make_model():
    """ResNet-preact-20, 1x28x28 input, 10 classes, default flags, seed 0."""
    torch.manual_seed(SEED)
    return ResNetPreact(depth=20, block_type="basic", in_channels=1,
                        n_classes=10, remove_first_relu=False,
                        add_last_bn=False,
                        preact_stage=(True, True, True)).float()


def compute(dtype=torch.float32, threads=THREADS, channels_last=False):
    """Return (records, model, init, x, y); records is the ordered list of
    (name, float32 tensor). The defaults give the golden file; the other
    settings exist for --spread (how much a second implementation may differ).
    """
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    model = make_model()
    init = copy.deepcopy(model)
    x, y = load_data()
    rec = []
    rec += [("param/" + k, v.clone()) for k, v in state(model)]
    rec += [("data/x", x), ("data/y", y.float())]
    x0, y0 = x[0], y[0]
    rec += [("step0/margin", torch.tensor(relu_margin(init, x0)))]

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    xs = x.to(dtype)

    def fresh():
        return copy.deepcopy(init).to(dtype).to(memory_format=fmt).train()

    def batch(b):
        return xs[b].contiguous(memory_format=fmt)

    # One train-mode step on the margin-checked batch from the initial weights.
    m = fresh()
    logits = m(x0.to(dtype).contiguous(memory_format=fmt))
    loss = F.cross_entropy(logits, y0)
    loss.backward()
    rec += [("step0/logits", logits.detach().clone()),
            ("step0/loss", loss.detach().clone())]
    rec += [("grad/" + k, p.grad.clone()) for k, p in m.named_parameters()]
    sd = m.state_dict()
    rec += [("step0/" + k, sd[k].clone()) for k in stats_keys(m)]

    # 20 SGD steps (Nesterov, coupled L2 on every parameter), batch i % 4.
    m = fresh()
    opt = torch.optim.SGD(m.parameters(), lr=LR, momentum=MOMENTUM,
                          dampening=0, nesterov=True, weight_decay=WD)
    losses = []
    for i in range(TRAIN_STEPS):
        b = i % N_BATCHES
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(m(batch(b)), y[b])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    rec += [("train/loss", torch.tensor(losses, dtype=torch.float32))]
    if dtype == torch.float32:
        rec += [("train/loss64", torch.tensor(train_losses(init, x, y, torch.float64))),
                ("train/loss_cl", torch.tensor(train_losses(init, x, y, torch.float32,
                                                            channels_last=True)))]
        margin, noise, kink = kink_spread(init, x, y)
        rec += [("train/margin64", torch.tensor(margin)),
                ("train/noise32", torch.tensor(noise)),
                ("train/loss_kink", torch.tensor(kink))]
    rec = [(n, t.detach().to(torch.float32).contiguous()) for n, t in rec]
    return rec, model, init, x, y


def step0_batch():
    """The one-step batch: STEP0_N random-normal images and random labels."""
    g = torch.Generator().manual_seed(STEP0_SEED)
    x = torch.randn(STEP0_N, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (STEP0_N,), generator=g)
    return x, y


def relu_margin(init, x):
    """Smallest |input| of any ReLU in a float64 train-mode forward. In this
    net every ReLU follows a batch norm, so the BN outputs are the inputs."""
    m = copy.deepcopy(init).double().train()
    seen = []
    hooks = [mod.register_forward_hook(
        lambda _m, _i, o: seen.append(o.detach().abs().min().item()))
        for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        m(x.double())
    for h in hooks:
        h.remove()
    return min(seen)


def train_losses(init, x, y, dtype, channels_last=False):
    """Loss of each of the 20 SGD steps, computed in `dtype`."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    m = copy.deepcopy(init).to(dtype).to(memory_format=fmt).train()
    opt = torch.optim.SGD(m.parameters(), lr=LR, momentum=MOMENTUM,
                          dampening=0, nesterov=True, weight_decay=WD)
    out = []
    for i in range(TRAIN_STEPS):
        b = i % N_BATCHES
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(m(x[b].to(dtype).contiguous(memory_format=fmt)), y[b])
        loss.backward()
        opt.step()
        out.append(loss.item())
    return out


class _KinkReLU(torch.autograd.Function):
    """ReLU whose backward takes the other side of the kink, with probability
    1/2 each, for the inputs closer to zero than delta. The forward value is
    unchanged (it moves by less than delta, which is rounding-level)."""

    @staticmethod
    def forward(ctx, x, delta, gen):
        mask = x > 0
        if delta > 0:
            near = x.abs() < delta
            if bool(near.any()):
                coin = torch.rand(x.shape, generator=gen, dtype=torch.float64) < 0.5
                mask = torch.where(near & coin, ~mask, mask)
        ctx.save_for_backward(mask)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, g):
        (mask,) = ctx.saved_tensors
        return g * mask.to(g.dtype), None, None


def pre_relu(m, x):
    """Every ReLU input of a train-mode forward (in this net each ReLU follows a
    batch norm), flattened into one float64 vector. Running statistics are
    restored afterwards, so the probe does not change the model."""
    saved = copy.deepcopy(m.state_dict())
    seen = []
    hooks = [mod.register_forward_hook(
        lambda _m, _i, o: seen.append(o.detach().double().flatten()))
        for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        m(x)
    for h in hooks:
        h.remove()
    m.load_state_dict(saved)
    return torch.cat(seen)


def kink_spread(init, x, y):
    """Per step of the float64 20-step run: the smallest |pre-ReLU|, the float32
    rounding noise of the pre-ReLU values at that step's weights, and the largest
    relative loss deviation over KINK_RUNS runs that flip the kinks within that
    noise (see the module notes)."""
    from dtrain_tools import torch_models
    m = copy.deepcopy(init).double().train()
    opt = torch.optim.SGD(m.parameters(), lr=LR, momentum=MOMENTUM,
                          dampening=0, nesterov=True, weight_decay=WD)
    margin, noise, base = [], [], []
    for i in range(TRAIN_STEPS):
        b = i % N_BATCHES
        a64 = pre_relu(m, x[b].double())
        a32 = pre_relu(copy.deepcopy(m).float().train(), x[b].float())
        margin.append(a64.abs().min().item())
        noise.append((a32 - a64).abs().max().item())
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(m(x[b].double()), y[b])
        loss.backward()
        opt.step()
        base.append(loss.item())
    base = np.array(base)
    worst = np.zeros(TRAIN_STEPS)
    plain_relu = torch_models.F.relu
    for r in range(KINK_RUNS):
        gen = torch.Generator().manual_seed(KINK_SEED + r)
        m = copy.deepcopy(init).double().train()
        opt = torch.optim.SGD(m.parameters(), lr=LR, momentum=MOMENTUM,
                              dampening=0, nesterov=True, weight_decay=WD)
        for i in range(TRAIN_STEPS):
            b = i % N_BATCHES
            delta = noise[i]
            torch_models.F.relu = (
                lambda t, inplace=False, d=delta: _KinkReLU.apply(t, d, gen))
            try:
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(m(x[b].double()), y[b])
                loss.backward()
            finally:
                torch_models.F.relu = plain_relu
            opt.step()
            worst[i] = max(worst[i], abs(loss.item() - base[i]) / abs(base[i]))
    return margin, noise, worst.tolist()


def spread():
    """Print how far other valid computations land from the golden values:
    the same model in float64, with 1 thread, and in channels_last. A C
    implementation can be expected to differ by about as much, which is what
    its test tolerances should be based on."""
    gold = dict(compute()[0])
    variants = [("float64", dict(dtype=torch.float64)),
                ("float32 1 thread", dict(threads=1)),
                ("float32 channels_last", dict(channels_last=True))]

    def rel(a, b):
        return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))

    for label, kw in variants:
        got = dict(compute(**kw)[0])
        print("== %s vs golden" % label)
        print("  step0/logits max|diff| %.2e, step0/loss |diff| %.2e"
              % (np.abs(got["step0/logits"] - gold["step0/logits"]).max(),
                 abs(float(got["step0/loss"]) - float(gold["step0/loss"]))))
        for group in ("grad/", "step0/stage"):
            worst = max((rel(got[k].numpy(), v.numpy()), k)
                        for k, v in gold.items() if k.startswith(group))
            print("  %-12s worst per-tensor ||diff||/||golden|| %.2e (%s)"
                  % (group + "*", worst[0], worst[1]))
        d = np.abs(got["train/loss"].numpy() - gold["train/loss"].numpy())
        print("  train/loss |diff| per step:",
              " ".join("%.0e" % v for v in d))
    torch.set_num_threads(THREADS)


def write_golden(path, records):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(MAGIC)
        f.write(struct.pack("<I", len(records)))
        for name, t in records:
            nb = name.encode("ascii")
            f.write(struct.pack("<I", len(nb)))
            f.write(nb)
            f.write(struct.pack("<I", t.dim()))
            if t.dim():
                f.write(struct.pack("<%dq" % t.dim(), *t.shape))
            f.write(t.numpy().astype("<f4").tobytes())
    os.replace(tmp, path)  # never leave a half-written golden file behind


def read_golden(path):
    """Return the ordered list of (name, numpy float32 array) records."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:8] != MAGIC:
        raise ValueError("%s: bad magic %r" % (path, raw[:8]))
    (count,) = struct.unpack_from("<I", raw, 8)
    off, out = 12, []
    for _ in range(count):
        (nlen,) = struct.unpack_from("<I", raw, off)
        off += 4
        name = raw[off:off + nlen].decode("ascii")
        off += nlen
        (ndim,) = struct.unpack_from("<I", raw, off)
        off += 4
        dims = struct.unpack_from("<%dq" % ndim, raw, off)
        off += 8 * ndim
        n = int(np.prod(dims)) if ndim else 1
        arr = np.frombuffer(raw, dtype="<f4", count=n, offset=off)
        off += 4 * n
        out.append((name, arr.reshape(dims)))
    if off != len(raw):
        raise ValueError("%s: %d trailing bytes" % (path, len(raw) - off))
    return out


def manual_sgd(init, x, y):
    """Re-run the 20 steps and check each torch SGD update against the SGD formula of
    docs/reference-experiments.md "Optimizers"
    written out by hand, applied to the same weights and gradients.

    The trajectory itself cannot be compared between two implementations:
    float32 rounding flips a few ReLUs per step and training amplifies that
    (see --spread), so the hand-written update is teacher-forced: it is fed
    torch's weights and gradients at every step. Returns (losses, worst
    relative update error, final state_dict)."""
    m = copy.deepcopy(init).train()
    opt = torch.optim.SGD(m.parameters(), lr=LR, momentum=MOMENTUM,
                          dampening=0, nesterov=True, weight_decay=WD)
    params = list(m.parameters())
    bufs = [None] * len(params)
    losses, worst = [], 0.0
    for i in range(TRAIN_STEPS):
        b = i % N_BATCHES
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(m(x[b]), y[b])
        loss.backward()
        losses.append(loss.item())
        want = []
        with torch.no_grad():
            for j, p in enumerate(params):
                w, g = p.double(), p.grad.double()
                d = g + WD * w
                bufs[j] = d if bufs[j] is None else MOMENTUM * bufs[j] + d
                want.append(w - LR * (d + MOMENTUM * bufs[j]))
        opt.step()
        with torch.no_grad():
            for p, w in zip(params, want):
                step = (w - p.double().detach()).abs().max().item()
                worst = max(worst, step / max(w.abs().max().item(), 1e-30))
    return np.array(losses, dtype=np.float32), worst, dict(state(m))


def verify(path):
    ok = True

    def check(what, cond):
        nonlocal ok
        ok = ok and bool(cond)
        print("%-60s %s" % (what, "ok" if cond else "FAIL"))

    recs = read_golden(path)
    got = dict(recs)
    check("file size %d bytes < 4 MB" % os.path.getsize(path),
          os.path.getsize(path) < 4 * 1024 * 1024)
    check("record names unique", len(got) == len(recs))
    fresh, model, init, x, y = compute()
    check("record count %d == recomputed %d" % (len(recs), len(fresh)),
          len(recs) == len(fresh))
    check("record order and names match",
          [n for n, _ in recs] == [n for n, _ in fresh])
    same_shape = all(got[n].shape == tuple(t.shape) for n, t in fresh
                     if n in got)
    check("record shapes match", same_shape)
    identical = all(n in got and np.array_equal(got[n], t.numpy())
                    for n, t in fresh)
    check("values bit-identical on recomputation", identical)

    pnames = [n for n, _ in model.named_parameters()]
    nparam = sum(got["param/" + n].size for n in pnames)
    check("trainable params in file %d == model %d == %d"
          % (nparam, count_params(model), EXPECTED_PARAMS),
          nparam == count_params(model) == EXPECTED_PARAMS)
    check("one grad/ per parameter",
          sorted(k[5:] for k in got if k.startswith("grad/")) == sorted(pnames))
    check("no num_batches_tracked", not any("num_batches" in k for k in got))
    n_stats = len(stats_keys(model))
    check("step0/ BN stats records: %d" % n_stats,
          sum(k.startswith("step0/") and "running" in k for k in got)
          == n_stats)
    check("shapes: data/x %s data/y %s logits %s loss %s train/loss %s"
          % (got["data/x"].shape, got["data/y"].shape,
             got["step0/logits"].shape, got["step0/loss"].shape,
             got["train/loss"].shape),
          got["data/x"].shape == (N_BATCHES, BATCH, 1, 28, 28)
          and got["data/y"].shape == (N_BATCHES, BATCH)
          and got["step0/logits"].shape == (STEP0_N, 10)
          and got["step0/loss"].shape == ()
          and got["train/loss"].shape == (TRAIN_STEPS,))

    # Independent cross-checks of the contents.
    lg = torch.from_numpy(got["step0/logits"].copy())
    ce = F.cross_entropy(lg, torch.from_numpy(got["data/y"][0].astype(np.int64)))
    check("step0/loss == CE(step0/logits, data/y) (%.6f)" % ce.item(),
          abs(ce.item() - float(got["step0/loss"])) < 1e-6)
    check("step0/margin %.2e >= %.0e" % (float(got["step0/margin"]), STEP0_MARGIN),
          float(got["step0/margin"]) >= STEP0_MARGIN)
    # Stem conv output mean drives stage1.block1.bn1 running_mean = 0.1 * mean.
    x0 = torch.from_numpy(got["data/x"][0].copy())
    with torch.no_grad():
        stem = init.conv(x0).mean(dim=(0, 2, 3)).numpy() * 0.1
    check("step0 stage1.block1.bn1.running_mean == 0.1*batch mean of stem",
          np.allclose(got["step0/stage1.block1.bn1.running_mean"], stem,
                      atol=1e-6))
    # Finite-difference check of one FC bias gradient (double precision).
    md = copy.deepcopy(init).double().train()
    xb, yb = x0.double(), torch.from_numpy(got["data/y"][0].astype(np.int64))
    eps = 1e-6
    with torch.no_grad():
        md.fc.bias[3] += eps
        lp = F.cross_entropy(md(xb), yb).item()
        md.fc.bias[3] -= 2 * eps
        lm = F.cross_entropy(md(xb), yb).item()
    fd = (lp - lm) / (2 * eps)
    check("grad/fc.bias[3] %.6f ~ finite difference %.6f"
          % (got["grad/fc.bias"][3], fd),
          abs(got["grad/fc.bias"][3] - fd) < 1e-4)
    man_loss, worst, man_state = manual_sgd(init, x, y)
    check("each SGD update == hand-written docs/reference-experiments.md Optimizers formula (max rel err %.1e)"
          % worst, worst < 1e-6)
    check("re-run train/loss bit-identical",
          np.array_equal(man_loss, got["train/loss"]))
    print("verify", "PASSED" if ok else "FAILED")
    return ok


def summary(records, path):
    total = sum(t.numel() for _, t in records)
    r = dict(records)
    print("wrote %s: %d records, %d floats, %d bytes"
          % (path, len(records), total, os.path.getsize(path)))
    print("trainable params: %d" % sum(
        t.numel() for n, t in records if n.startswith("grad/")))
    print("step0/loss %.6f" % r["step0/loss"].item())
    print("train/loss", " ".join("%.4f" % v for v in r["train/loss"].tolist()))
    print("grad/fc.bias", " ".join("%.5f" % v
                                   for v in r["grad/fc.bias"].tolist()))


def main(argv):
    ap = argparse.ArgumentParser(description="ResNet-preact-20 golden tensors")
    ap.add_argument("--out", default=os.path.join(
        ROOT, "tests", "golden", "resnet_preact20.bin"))
    ap.add_argument("--verify", action="store_true",
                    help="reload the file and check it instead of writing")
    ap.add_argument("--spread", action="store_true",
                    help="print how far float64 / 1-thread / channels_last "
                         "runs land from the golden values")
    args = ap.parse_args(argv)
    if args.spread:
        spread()
        return 0
    if args.verify:
        return 0 if verify(args.out) else 1
    records = compute()[0]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    write_golden(args.out, records)
    summary(records, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
