"""Write one golden file per model family from the independent PyTorch models.

dtrain's tests/test_golden_models.c loads each tests/golden/<case>.bin,
builds the dtrain model its config/ records describe, copies the weights by
name, runs one training-mode forward and backward on the stored batch and
compares logits, loss, every parameter gradient and every updated batch-norm
running statistic.

Usage:
  tools/dtrain-tool make-golden-models [--out-dir tests/golden] [CASE ...]
  tools/dtrain-tool make-golden-models --verify [--out-dir ...] [CASE ...]
  tools/dtrain-tool make-golden-models --list

--verify re-reads each file, recomputes it and requires bit-identical values,
checks the stored loss against the stored logits and one FC-bias gradient
against a float64 finite difference.

The file format is make_golden.py's (DTGOLD1, float32 records).
Records of a family file:
  config/<section.key=value>  () 0.0: one dtrain --set override per record;
                               applied over dtrain's defaults they select the
                               same network (the name carries the setting)
  param/<key>        initial state_dict (no num_batches_tracked)
  data/x (N,3,32,32), data/y (N)   the batch (labels as float32)
  step0/margin ()    smallest distance of that batch's float64 forward to a
                     kink: |ReLU input|, or the gap between the two largest
                     values of a max-pool window with a positive maximum (a
                     window of ReLU zeros passes no gradient)
  step0/spread ()    worst relative error of PyTorch's float32 gradients
                     against float64 (tensors that are not zero analytically)
  step0/logits (N,10), step0/loss ()   train-mode forward, mean cross-entropy
  grad/<key>         gradient of that loss for every parameter
  step0/<key>        BN running_mean/running_var after that forward

Why a small random-normal batch whose seed is searched (see make_golden.py for
the measurements): gradients are discontinuous wherever a ReLU input crosses
zero or a max-pool window's maximum changes hands. A batch whose float64
forward keeps every such quantity at least MARGIN (1e-5) away from its kink
lets two correct float32 implementations agree to rounding level; without it
a single flipped ReLU moves whole gradient tensors by 0.2-1 %.

A kink margin alone does not make every gradient well conditioned: a tensor
whose gradient is a near-cancelling sum (a BN parameter early in the net) can
lose several digits in float32. The seed must also give float32 PyTorch
gradients within SPREAD (1e-5) of float64 ones on every tensor, so a second
float32 implementation can be held to 1e-4.

Randomness: dropout is off (drop_rate 0) and shake-shake runs with
shake_forward = shake_backward = False, i.e. alpha = beta = 0.5, so each
golden step is deterministic; the random modes are tested by the layer tests.

The instances are small (each file < 500 KB) but keep every code path of
their family: projection and identity shortcuts, bottleneck and basic blocks,
transitions, zero-padded shortcuts, grouped convs, SE layers, VGG biases.
"""

import argparse
import copy
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

from dtrain_tools import ROOT, torch_models
from dtrain_tools.make_golden import read_golden, write_golden
from dtrain_tools.torch_models import build_model, count_params

N, CHANNELS, SIZE, CLASSES = 4, 3, 32, 10
MARGIN = 1e-5
SPREAD = 1e-5     # PyTorch float32 vs float64, worst gradient tensor
NEAR_ZERO = 1e-3  # tensors this small against their kind's scale are zero
SEED, THREADS = 0, 2
FIRST_DATA_SEED, MAX_DATA_SEEDS = 1000, 400
MAX_BYTES = 500 * 1024

# name -> (family, PyTorch keyword settings, dtrain --set overrides). The two
# descriptions must build the same network; the C test checks every name and
# shape when it copies the weights.
CASES = {
    "resnet": ("resnet", dict(depth=20, initial_channels=4),
               ["model.name=resnet", "model.depth=20",
                "model.initial_channels=4"]),
    "resnet_bottleneck": ("resnet", dict(depth=11, block_type="bottleneck",
                                         initial_channels=8),
                          ["model.name=resnet", "model.depth=11",
                           "model.block_type=bottleneck",
                           "model.initial_channels=8"]),
    "wrn": ("wrn", dict(depth=16, widening_factor=2, initial_channels=4),
            ["model.name=wrn", "model.depth=16", "model.widening_factor=2",
             "model.initial_channels=4", "model.drop_rate=0"]),
    "densenet": ("densenet", dict(depth=22, block_type="bottleneck",
                                  growth_rate=4, compression_rate=0.5),
                 ["model.name=densenet", "model.depth=22",
                  "model.block_type=bottleneck", "model.growth_rate=4",
                  "model.compression_rate=0.5", "model.drop_rate=0"]),
    "densenet_basic": ("densenet", dict(depth=10, block_type="basic",
                                        growth_rate=4, compression_rate=1.0),
                       ["model.name=densenet", "model.depth=10",
                        "model.block_type=basic", "model.growth_rate=4",
                        "model.compression_rate=1", "model.drop_rate=0"]),
    "pyramidnet": ("pyramidnet", dict(depth=20, alpha=12, initial_channels=4),
                   ["model.name=pyramidnet", "model.depth=20",
                    "model.alpha=12", "model.initial_channels=4"]),
    "pyramidnet_bottleneck": ("pyramidnet",
                              dict(depth=11, block_type="bottleneck",
                                   alpha=12, initial_channels=4),
                              ["model.name=pyramidnet", "model.depth=11",
                               "model.block_type=bottleneck", "model.alpha=12",
                               "model.initial_channels=4"]),
    "resnext": ("resnext", dict(depth=11, cardinality=2, base_channels=4,
                                initial_channels=8),
                ["model.name=resnext", "model.depth=11",
                 "model.cardinality=2", "model.base_channels=4",
                 "model.initial_channels=8"]),
    "shake_shake": ("shake_shake", dict(depth=14, initial_channels=4,
                                        shake_forward=False,
                                        shake_backward=False,
                                        shake_image=True),
                    ["model.name=shake_shake", "model.depth=14",
                     "model.initial_channels=4", "model.shake_forward=false",
                     "model.shake_backward=false", "model.shake_image=true"]),
    "se_resnet_preact": ("se_resnet_preact",
                         dict(depth=14, initial_channels=8, se_reduction=8,
                              remove_first_relu=True, add_last_bn=True,
                              preact_stage=(True, False, False)),
                         ["model.name=se_resnet_preact", "model.depth=14",
                          "model.initial_channels=8", "model.se_reduction=8",
                          "model.remove_first_relu=true",
                          "model.add_last_bn=true",
                          "model.preact_stage=true,false,false"]),
    "vgg": ("vgg", dict(channels=(4, 8, 16, 16, 16), layers=(2, 2, 3, 3, 3),
                        use_bn=True),
            ["model.name=vgg", "model.vgg_channels=4,8,16,16,16",
             "model.vgg_layers=2,2,3,3,3", "model.use_bn=true"]),
    "vgg_nobn": ("vgg", dict(channels=(4, 8, 8, 8, 8), layers=(1, 1, 2, 1, 1),
                             use_bn=False),
                 ["model.name=vgg", "model.vgg_channels=4,8,8,8,8",
                  "model.vgg_layers=1,1,2,1,1", "model.use_bn=false"]),
}


def make_model(case):
    family, kw, _ = CASES[case]
    torch.manual_seed(SEED)
    return build_model(family, in_channels=CHANNELS, n_classes=CLASSES,
                       **kw).float()


def batch(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, CHANNELS, SIZE, SIZE, generator=g)
    y = torch.randint(0, CLASSES, (N,), generator=g)
    return x, y


def kink_margin(model, x):
    """Smallest distance to a kink in a float64 train-mode forward: every
    F.relu input and every 2x2 max-pool window's top-two gap. The reference
    models call F.relu and F.max_pool2d through torch_models' F, which is
    wrapped here for the duration of one forward."""
    m = copy.deepcopy(model).double().train()
    seen = []
    relu, max_pool2d = F.relu, F.max_pool2d

    def relu_hook(t, *a, **k):
        seen.append(t.detach().abs().min().item())
        return relu(t, *a, **k)

    def pool_hook(t, kernel_size, *a, **k):
        n, c, h, w = t.shape
        win = t.detach()[:, :, :h // 2 * 2, :w // 2 * 2]
        win = win.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 2, 4, 3, 5)
        top = win.reshape(n, c, h // 2, w // 2, 4).sort(dim=-1).values
        gap = top[..., 3] - top[..., 2]
        # A window of ReLU zeros has a tie, but no gradient flows through it
        # (every ReLU below it is off), so only positive maxima count.
        gap = torch.where(top[..., 3] > 0, gap, torch.full_like(gap, np.inf))
        seen.append(gap.min().item())
        return max_pool2d(t, kernel_size, *a, **k)

    torch_models.F.relu, torch_models.F.max_pool2d = relu_hook, pool_hook
    try:
        with torch.no_grad():
            m(x.double())
    finally:
        torch_models.F.relu, torch_models.F.max_pool2d = relu, max_pool2d
    return min(seen)


def _grads(model, x, y, dtype):
    m = copy.deepcopy(model).to(dtype).train()
    F.cross_entropy(m(x.to(dtype)), y).backward()
    return {k: p.grad.double() for k, p in m.named_parameters()}


def float32_spread(model, x, y):
    """Worst relative error in norm of PyTorch's own float32 gradients against
    float64, over the tensors that are not zero analytically (reference norm
    at least NEAR_ZERO x the RMS gradient element x sqrt(size), the C test's
    rule): how well conditioned this batch's gradients are."""
    g32, g64 = _grads(model, x, y, torch.float32), _grads(model, x, y,
                                                         torch.float64)
    total = sum(float((g ** 2).sum()) for g in g64.values())
    count = sum(g.numel() for g in g64.values())
    worst = 0.0
    for k, ref in g64.items():
        norm = float(ref.norm())
        if norm < NEAR_ZERO * (total / count * ref.numel()) ** 0.5:
            continue
        worst = max(worst, float((g32[k] - ref).norm()) / norm)
    return worst


def find_batch(model):
    """The first data seed whose batch keeps MARGIN from every kink and whose
    float32 gradients agree with float64 to SPREAD."""
    for seed in range(FIRST_DATA_SEED, FIRST_DATA_SEED + MAX_DATA_SEEDS):
        x, y = batch(seed)
        margin = kink_margin(model, x)
        if margin >= MARGIN and float32_spread(model, x, y) <= SPREAD:
            return seed, x, y, margin
    raise RuntimeError("no data seed in %d tries keeps a %.0e kink margin and "
                       "a %.0e float32 spread" % (MAX_DATA_SEEDS, MARGIN, SPREAD))


def compute(case, data_seed=None):
    """Ordered (name, float32 tensor) records of one case."""
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    model = make_model(case)
    if data_seed is None:
        data_seed, x, y, margin = find_batch(model)
    else:
        x, y = batch(data_seed)
        margin = kink_margin(model, x)
    rec = [("config/" + s, torch.tensor(0.0)) for s in CASES[case][2]]
    rec += [("param/" + k, v.clone()) for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")]
    rec += [("data/x", x), ("data/y", y.float()),
            ("step0/margin", torch.tensor(margin)),
            ("step0/spread", torch.tensor(float32_spread(model, x, y)))]
    m = copy.deepcopy(model).train()
    logits = m(x)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    rec += [("step0/logits", logits.detach()), ("step0/loss", loss.detach())]
    rec += [("grad/" + k, p.grad.clone()) for k, p in m.named_parameters()]
    sd = m.state_dict()
    rec += [("step0/" + k, sd[k].clone()) for k in sd
            if k.endswith("running_mean") or k.endswith("running_var")]
    rec = [(n, t.detach().to(torch.float32).contiguous()) for n, t in rec]
    return rec, model, data_seed


def path_of(out_dir, case):
    return os.path.join(out_dir, case + ".bin")


def verify(out_dir, case):
    ok = True

    def check(what, cond):
        nonlocal ok
        ok = ok and bool(cond)
        print("  %-64s %s" % (what, "ok" if cond else "FAIL"))

    path = path_of(out_dir, case)
    print(case)
    recs = read_golden(path)
    got = dict(recs)
    size = os.path.getsize(path)
    check("file size %d bytes < %d" % (size, MAX_BYTES), size < MAX_BYTES)
    check("record names unique", len(got) == len(recs))
    check("config records == case table",
          [n[7:] for n, _ in recs if n.startswith("config/")] == CASES[case][2])
    # Recompute from the stored data rather than re-searching the seed.
    x = torch.from_numpy(got["data/x"].copy())
    seed = next(s for s in range(FIRST_DATA_SEED,
                                 FIRST_DATA_SEED + MAX_DATA_SEEDS)
                if torch.equal(batch(s)[0], x))
    fresh, model, _ = compute(case, seed)
    check("record order and names match (data seed %d)" % seed,
          [n for n, _ in recs] == [n for n, _ in fresh])
    check("values bit-identical on recomputation",
          all(n in got and np.array_equal(got[n], t.numpy()) for n, t in fresh))
    pnames = [n for n, _ in model.named_parameters()]
    check("one grad/ per parameter (%d params)" % count_params(model),
          sorted(k[5:] for k in got if k.startswith("grad/")) == sorted(pnames))
    check("step0/margin %.2e >= %.0e" % (float(got["step0/margin"]), MARGIN),
          float(got["step0/margin"]) >= MARGIN)
    check("step0/spread %.2e <= %.0e" % (float(got["step0/spread"]), SPREAD),
          float(got["step0/spread"]) <= SPREAD)
    lg = torch.from_numpy(got["step0/logits"].copy())
    yb = torch.from_numpy(got["data/y"].astype(np.int64))
    ce = F.cross_entropy(lg, yb).item()
    check("step0/loss == CE(step0/logits, data/y)",
          abs(ce - float(got["step0/loss"])) < 1e-6)
    md = copy.deepcopy(model).double().train()
    eps = 1e-6
    with torch.no_grad():
        md.fc.bias[3] += eps
        lp = F.cross_entropy(md(x.double()), yb).item()
        md.fc.bias[3] -= 2 * eps
        lm = F.cross_entropy(md(x.double()), yb).item()
    fd = (lp - lm) / (2 * eps)
    check("grad/fc.bias[3] %.6f ~ finite difference %.6f"
          % (got["grad/fc.bias"][3], fd), abs(got["grad/fc.bias"][3] - fd) < 1e-4)
    return ok


def main(argv):
    ap = argparse.ArgumentParser(description="per-family golden tensors")
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "tests", "golden"))
    ap.add_argument("--verify", action="store_true",
                    help="reload each file and check it instead of writing")
    ap.add_argument("--list", action="store_true", help="list the cases")
    ap.add_argument("cases", nargs="*", help="cases (default: all)")
    args = ap.parse_args(argv)
    if args.list:
        for case, (family, kw, sets) in CASES.items():
            print("%-22s %-16s %s" % (case, family, " ".join(sets)))
        return 0
    cases = args.cases or list(CASES)
    for case in cases:
        if case not in CASES:
            ap.error("unknown case %s (see --list)" % case)
    if args.verify:
        results = [verify(args.out_dir, c) for c in cases]
        print("verify", "PASSED" if all(results) else "FAILED")
        return 0 if all(results) else 1
    os.makedirs(args.out_dir, exist_ok=True)
    for case in cases:
        rec, model, seed = compute(case)
        path = path_of(args.out_dir, case)
        write_golden(path, rec)
        r = dict(rec)
        size = os.path.getsize(path)
        print("%-22s %7d params, data seed %4d, margin %.2e, float32 spread "
              "%.1e, loss %.6f, %6d bytes"
              % (case, count_params(model), seed, r["step0/margin"].item(),
                 r["step0/spread"].item(), r["step0/loss"].item(), size))
        if size >= MAX_BYTES:
            print("  %s is larger than %d bytes" % (path, MAX_BYTES))
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
