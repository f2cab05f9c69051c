"""PyTorch training throughput of ResNet-preact, the yardstick for dtrain.

Times full training steps (forward, mean cross-entropy, backward, SGD
Nesterov step with weight decay) of the independent model in
tools/dtrain_tools/torch_models.py on synthetic data already in memory, so the number is
compute only, like `dtrain CONFIG --bench STEPS`.

Usage:
  tools/dtrain-tool torch-bench --depth 20 --channels 1 --size 28 \\
      --batch 128 --threads 2 --warmup 3 --steps 20 [--channels-last] [--autocast-bf16]

The last line is `torch: <images/s> images/s`, computed as total images over
total wall time of the timed steps (no median).
"""

import argparse
import sys

import torch

from dtrain_tools.torch_bench_common import (add_cpu_run_args, bench_cpu, memory_format, positive,
                                             print_cpu_result)
from dtrain_tools.torch_models import ResNetPreact


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=positive, default=20)
    ap.add_argument("--block", choices=["basic", "bottleneck"],
                    default="basic")
    ap.add_argument("--channels", type=positive, default=1,
                    help="input channels")
    ap.add_argument("--size", type=positive, default=28,
                    help="input height = width")
    ap.add_argument("--classes", type=positive, default=10)
    ap.add_argument("--initial-channels", type=positive, default=16)
    ap.add_argument("--add-last-bn", action="store_true")
    add_cpu_run_args(ap, batch=128, steps=20)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = ResNetPreact(depth=args.depth, block_type=args.block,
                         in_channels=args.channels, n_classes=args.classes,
                         initial_channels=args.initial_channels,
                         add_last_bn=args.add_last_bn)
    final, dt, cpu = bench_cpu(model, args, memory_format(args.channels_last))

    print_cpu_result(args, "ResNet-preact-%d %s" % (args.depth, args.block), model, final, dt,
                     cpu)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
