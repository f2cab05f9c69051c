"""Write the seed inputs of the IDX, CIFAR and checkpoint fuzz harnesses.

    dtrain-tool make-fuzz-seeds [--corpus tests/fuzz/corpus]

Into corpus/idx and corpus/cifar (the layout each harness of tests/fuzz/ documents: a flags
byte, then files separated by FUZZ_SEP): small valid datasets, so that mutations start from
files the readers accept; into corpus/checkpoint: edit lists of fuzz_checkpoint. The raw
checkpoint seeds come from tests/fuzz/run.sh --seeds, which runs this task first.
"""
import argparse
import gzip
import os
import struct
import sys

from dtrain_tools import ROOT

SEP = b"\n--8<--\n"


def idx_images(n):
    return struct.pack(">IIII", 0x803, n, 28, 28) + bytes((i * 7) % 256 for i in range(n * 784))


def idx_labels(n):
    return struct.pack(">II", 0x801, n) + bytes(i % 10 for i in range(n))


def cifar_record(label_bytes, i):
    labels = bytes([i % 20, i % 100]) if label_bytes == 2 else bytes([i % 10])
    return labels + bytes((i + j) % 256 for j in range(3072))


def write(corpus, kind, name, flags, parts):
    d = os.path.join(corpus, kind)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(bytes([flags]) + SEP.join(parts))


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=os.path.join(ROOT, "tests", "fuzz", "corpus"),
                    help="corpus directory (default: tests/fuzz/corpus)")
    corpus = ap.parse_args(argv).corpus
    raw = [idx_images(2), idx_labels(2), idx_images(1), idx_labels(1)]
    write(corpus, "idx", "raw", 0x00, raw)
    # gzip with a fixed mtime, so the seeds do not change from one run to the next
    write(corpus, "idx", "gzip", 0x0F, [gzip.compress(p, mtime=0) for p in raw])
    write(corpus, "idx", "mixed", 0x05, [gzip.compress(raw[0], mtime=0), raw[1], gzip.compress(raw[2], mtime=0), raw[3]])

    write(corpus, "cifar", "cifar10_flat", 0x00, [cifar_record(1, i) for i in range(6)])
    write(corpus, "cifar", "cifar100_nested", 0x03, [cifar_record(2, 0) + cifar_record(2, 1), cifar_record(2, 2)])

    # fuzz_checkpoint: edit lists (see its apply_edits): none; step = -1 (op 0, attribute 2);
    # loss_scale = inf (op 1, attribute 7); a NaN weight (op 4); fc.bias removed (op 5);
    # conv1.weight reshaped (op 6); an external link in /model (op 7); an extra group (op 8).
    ckpt = {
        "template": b"",
        "step_negative": bytes([0, 2]) + struct.pack("<q", -1),
        "loss_scale_inf": bytes([1, 7]) + struct.pack("<d", float("inf")),
        "nan_weight": bytes([4, 0, 5]) + struct.pack("<f", float("nan")),
        "missing_bias": bytes([5, 6]),
        "reshaped": bytes([6, 0, 2, 4, 27, 0]),
        "external_link": bytes([7, 5, 1, 5]),
        "extra_group": bytes([8, 3]) + b"fc2" + bytes([2]),
    }
    d = os.path.join(corpus, "checkpoint")
    os.makedirs(d, exist_ok=True)
    for name, data in ckpt.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
