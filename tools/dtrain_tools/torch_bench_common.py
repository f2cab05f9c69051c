"""torch_bench_common: what the PyTorch benchmarks (torch_bench, torch_bench_models,
torch_bench_gpu) share: argument checks, the optimizer, the synthetic batch, the timed loop of
training steps and the CPU result lines. Not a task: no main(argv)."""

import argparse
import time

import torch
import torch.nn.functional as F

from dtrain_tools.torch_models import count_params


def positive(text):
    v = int(text)
    if v <= 0:
        raise argparse.ArgumentTypeError("must be > 0, got %s" % text)
    return v


def add_cpu_run_args(ap, batch, steps):
    """The options of a CPU benchmark's run (--batch, --threads, --warmup, --steps, --lr,
    --channels-last, --autocast-bf16) with the caller's default batch and step count."""
    ap.add_argument("--batch", type=positive, default=batch)
    ap.add_argument("--threads", type=positive, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=positive, default=steps)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--channels-last", action="store_true",
                    help="NHWC memory format for model and input")
    ap.add_argument("--autocast-bf16", action="store_true",
                    help='forward and loss under torch.autocast("cpu", torch.bfloat16): '
                    "bf16 convolutions and linear layers, fp32 weights and optimizer")


def loadavg():
    """The 1-minute load average, or "?" where /proc/loadavg cannot be read."""
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[0]
    except OSError:
        return "?"


def memory_format(channels_last):
    return torch.channels_last if channels_last else torch.contiguous_format


def sgd(model, lr):
    """SGD with Nesterov momentum 0.9 and weight decay 5e-4, as dtrain's default optimizer."""
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True,
                           weight_decay=5e-4)


def synthetic_batch(batch, channels, size, classes, fmt, device=None):
    """One random batch (x, y), prepared once: the benchmarks measure compute only."""
    x = torch.randn(batch, channels, size, size, device=device)
    x = x.contiguous(memory_format=fmt)  # (N, C, H, W)
    y = torch.randint(0, classes, (batch,), device=device)
    return x, y


def time_steps(step, warmup, steps, sync=None):
    """Runs step() warmup times untimed, then steps times timed; step returns the loss tensor.
    sync (e.g. torch.cuda.synchronize) is called before the clock starts and before it stops.
    Returns (final loss, wall seconds, process CPU seconds) of the timed steps."""
    for _ in range(warmup):
        step()
    if sync:
        sync()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        loss = step()
    if sync:
        sync()
    final = loss.item()  # on the CPU the steps are synchronous; this uses the loss
    return final, time.perf_counter() - t0, time.process_time() - c0


def cpu_autocast(enabled):
    """The bf16 autocast context of the CPU (a no-op context when not enabled). Raises
    RuntimeError where this PyTorch has no CPU autocast."""
    if not hasattr(torch, "autocast"):
        raise RuntimeError("torch %s has no torch.autocast" % torch.__version__)
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


def bench_cpu(model, args, fmt):
    """Times CPU training steps (forward, mean cross-entropy, backward, SGD step) of model on
    one synthetic batch shaped by args (batch, channels, size, classes, lr, warmup, steps;
    autocast_bf16: forward and loss under CPU bf16 autocast).
    Returns (final loss, wall seconds, process CPU seconds)."""
    model = model.to(memory_format=fmt).train()
    opt = sgd(model, args.lr)
    x, y = synthetic_batch(args.batch, args.channels, args.size, args.classes, fmt)
    autocast = getattr(args, "autocast_bf16", False)

    def step():
        opt.zero_grad(set_to_none=True)
        with cpu_autocast(autocast):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return time_steps(step, args.warmup, args.steps)


def print_cpu_result(args, name, model, final, dt, cpu):
    """The lines of a CPU benchmark: what was measured (model name, its parameters, the run), the
    timing, and last `torch: <images/s> images/s`."""
    print("model %s, %d params, input %dx%dx%d, batch %d, threads %d, %s, %s, torch %s"
          % (name, count_params(model), args.channels, args.size, args.size, args.batch,
             args.threads, "channels_last" if args.channels_last else "NCHW",
             "bf16 autocast" if getattr(args, "autocast_bf16", False) else "fp32",
             torch.__version__))
    # On a shared machine another process on our cores makes the OpenMP
    # threads wait for each other; cpu/wall/threads well below 1 flags that.
    print("%d timed steps in %.3f s, %.1f ms/step, final loss %.4f, "
          "cpu/(wall*threads) %.2f, load average %s"
          % (args.steps, dt, 1000 * dt / args.steps, final,
             cpu / (dt * args.threads), loadavg()))
    print("torch: %.1f images/s" % (args.steps * args.batch / dt))
