"""PyTorch training throughput of any dtrain model family, the yardstick for
`dtrain CONFIG --bench STEPS` (bench/families.sh runs both).

Times full training steps (forward, mean cross-entropy, backward, SGD with
Nesterov momentum and weight decay) of the independent model that
tools/dtrain_tools/torch_models.py builds for a dtrain model.name, on one synthetic batch
kept in memory, so the number is compute only, as dtrain's `bench:` line.

Usage:
  tools/dtrain-tool torch-bench-models --family densenet \\
      --set depth=100 --set growth_rate=12 --channels 3 --size 32 \\
      --batch 64 --threads 2 --warmup 3 --steps 10 [--channels-last] [--autocast-bf16]

--set KEY=VALUE passes one keyword of the family's constructor (see
tools/dtrain_tools/torch_models.py; the names are dtrain's [model] keys); VALUE is read as
an int, a float, true/false, else a string. The last line is
`torch: <images/s> images/s`, total images over the wall time of the timed
steps.
"""

import argparse
import sys

import torch

from dtrain_tools.torch_bench_common import (add_cpu_run_args, bench_cpu, memory_format, positive,
                                             print_cpu_result)
from dtrain_tools.torch_models import FAMILIES, build_model


def keyword(text):
    """KEY=VALUE -> (key, value) with VALUE as int, float, bool or str."""
    if "=" not in text:
        raise argparse.ArgumentTypeError("expected KEY=VALUE, got %s" % text)
    key, raw = text.split("=", 1)
    key, raw = key.strip(), raw.strip()
    if not key:
        raise argparse.ArgumentTypeError("empty key in %s" % text)
    if raw.lower() in ("true", "false"):
        return key, raw.lower() == "true"
    for kind in (int, float):
        try:
            return key, kind(raw)
        except ValueError:
            pass
    return key, raw


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", required=True, choices=sorted(FAMILIES))
    ap.add_argument("--set", type=keyword, action="append", default=[],
                    metavar="KEY=VALUE", help="model keyword (repeatable)")
    ap.add_argument("--channels", type=positive, default=3,
                    help="input channels")
    ap.add_argument("--size", type=positive, default=32,
                    help="input height = width")
    ap.add_argument("--classes", type=positive, default=10)
    add_cpu_run_args(ap, batch=64, steps=10)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    kw = dict(args.set)
    kw.update(in_channels=args.channels, n_classes=args.classes)
    try:
        model = build_model(args.family, **kw)
    except TypeError as e:  # an unknown keyword for this family
        print("dtrain-tool torch-bench-models: %s: %s" % (args.family, e),
              file=sys.stderr)
        return 1
    final, dt, cpu = bench_cpu(model, args, memory_format(args.channels_last))

    settings = " ".join("%s=%s" % kv for kv in sorted(dict(args.set).items()))
    print_cpu_result(args, "%s %s" % (args.family, settings), model, final, dt, cpu)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
