"""PyTorch GPU training throughput of ResNet-preact or WRN, the yardstick for dtrain --device cuda.

Times full training steps (forward, mean cross-entropy, backward, SGD Nesterov
step with weight decay) of the independent model in tools/dtrain_tools/torch_models.py on
one synthetic batch already on the GPU, so the number is compute only, like
`dtrain CONFIG --device cuda --bench STEPS`. The model and batch are
channels_last (NHWC, as dtrain's CUDA backend) unless --nchw; cuDNN autotuning
is on (dtrain also times every convolution algorithm once).

Precisions:
  fp32  strict fp32: TF32 off for cuDNN and cuBLAS (what dtrain computes by default)
  tf32  fp32 tensors, TF32 tensor cores allowed (PyTorch's default for convolutions;
        dtrain with DT_CUDA_TF32=1)
  bf16  autocast to bfloat16 with fp32 master weights
  fp16  autocast to float16 with fp32 master weights and a GradScaler (dynamic loss
        scaling), as dtrain's train.precision = fp16

Usage:
  tools/dtrain-tool torch-bench-gpu --channels 3 --size 32 --batch 128 \\
      --precision fp32 --warmup 10 --steps 50
  tools/dtrain-tool torch-bench-gpu --channels 3 --size 32 --warmup 10 --steps 50 \\
      --rows rnp20:128:bf16,wrn28_10:128:bf16,rnp20:128:bf16+compile

The last line is `torch: <images/s> images/s`: total images over the wall time
of the timed steps, between two device synchronisations. With --rows, every
row is measured in this one process and printed as `torch_row: ...` at once.
"""

import argparse
import sys

import torch
import torch.nn.functional as F

from dtrain_tools.torch_bench_common import positive, sgd, synthetic_batch, time_steps
from dtrain_tools.torch_models import WRN, ResNetPreact, count_params


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["resnet_preact", "wrn"],
                    default="resnet_preact")
    ap.add_argument("--depth", type=positive, default=20)
    ap.add_argument("--widening-factor", type=positive, default=10,
                    help="wrn: k of WRN-depth-k")
    ap.add_argument("--block", choices=["basic", "bottleneck"],
                    default="basic")
    ap.add_argument("--channels", type=positive, default=3,
                    help="input channels")
    ap.add_argument("--size", type=positive, default=32,
                    help="input height = width")
    ap.add_argument("--classes", type=positive, default=10)
    ap.add_argument("--initial-channels", type=positive, default=16)
    ap.add_argument("--batch", type=positive, default=128)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--steps", type=positive, default=50)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--precision", choices=["fp32", "tf32", "bf16", "fp16"],
                    default="fp32")
    ap.add_argument("--nchw", action="store_true",
                    help="plain NCHW instead of channels_last")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the model (compilation is not timed)")
    ap.add_argument("--rows", default="",
                    help="several measurements in this one process (one import, one "
                    "CUDA context): comma-separated MODEL:BATCH:PRECISION[+compile], "
                    "MODEL rnp20 (ResNet-preact-20) or wrn28_10; each prints a line "
                    "'torch_row: MODEL BATCH PRECISION IMAGES/S' as soon as it is measured")
    args = ap.parse_args(argv)

    if not torch.cuda.is_available():
        print("torch_bench_gpu: no CUDA device visible to torch %s"
              % torch.__version__, file=sys.stderr)
        return 2
    if not args.rows:
        ips = bench(args)
        print("torch: %.1f images/s" % ips)
        return 0
    failed = 0
    for spec in args.rows.split(","):
        parts = spec.strip().split(":")
        if len(parts) != 3 or parts[0] not in ("rnp20", "wrn28_10"):
            print("torch_bench_gpu: bad row %r (MODEL:BATCH:PRECISION)" % spec,
                  file=sys.stderr)
            return 2
        row = argparse.Namespace(**vars(args))
        row.model, row.depth = (("wrn", 28) if parts[0] == "wrn28_10"
                                else ("resnet_preact", 20))
        row.widening_factor = 10
        row.batch = int(parts[1])
        row.precision, _, extra = parts[2].partition("+")
        row.compile = extra == "compile"
        if row.precision not in ("fp32", "tf32", "bf16", "fp16"):
            print("torch_bench_gpu: bad precision in %r" % spec, file=sys.stderr)
            return 2
        try:
            ips = bench(row)
        except Exception as e:  # one failing row (e.g. compile) must not lose the others
            print("torch_bench_gpu: row %s failed: %s" % (spec, e), file=sys.stderr)
            failed += 1
            continue
        print("torch_row: %s %s %s %.1f" % (parts[0], parts[1], parts[2], ips), flush=True)
    return 1 if failed else 0


def bench(args):
    """One measurement; prints what was measured and returns images/s."""
    dev = torch.device("cuda")
    tf32 = args.precision == "tf32"
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    fmt = torch.contiguous_format if args.nchw else torch.channels_last
    if args.model == "wrn":
        model = WRN(depth=args.depth, widening_factor=args.widening_factor,
                    in_channels=args.channels, n_classes=args.classes,
                    initial_channels=args.initial_channels)
        name = "WRN-%d-%d" % (args.depth, args.widening_factor)
    else:
        model = ResNetPreact(depth=args.depth, block_type=args.block,
                             in_channels=args.channels, n_classes=args.classes,
                             initial_channels=args.initial_channels)
        name = "ResNet-preact-%d %s" % (args.depth, args.block)
    model = model.to(dev).to(memory_format=fmt).train()
    params = count_params(model)
    opt = sgd(model, args.lr)
    run = torch.compile(model) if args.compile else model
    x, y = synthetic_batch(args.batch, args.channels, args.size, args.classes, fmt, dev)

    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    scaler = torch.amp.GradScaler("cuda", enabled=args.precision == "fp16")

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type="cuda", dtype=half or torch.float32,
                            enabled=half is not None):
            loss = F.cross_entropy(run(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss

    final, dt, _ = time_steps(step, args.warmup, args.steps, torch.cuda.synchronize)

    print("model %s, %d params, input %dx%dx%d, batch %d, %s, "
          "%s%s, torch %s, %s"
          % (name, params, args.channels,
             args.size, args.size, args.batch, args.precision,
             "NCHW" if args.nchw else "channels_last",
             ", torch.compile" if args.compile else "", torch.__version__,
             torch.cuda.get_device_name(dev)))
    print("%d timed steps in %.3f s, %.2f ms/step, final loss %.4f"
          % (args.steps, dt, 1000 * dt / args.steps, final), flush=True)
    return args.steps * args.batch / dt


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
