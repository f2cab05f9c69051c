#!/usr/bin/python3
"""Export an MNIST-family dataset (the IDX files dtrain reads, gzip or raw) to an image-folder
tree of PNG files, OUT/train/<class>/<index>.png and OUT/test/<class>/<index>.png: a real
dataset in the layout of a user's own images, for the README's worked example ("Your own data")
and for checking that the HDF5 path trains exactly as the built-in reader.

    export_images.py IDX_DIR OUT [--names fashion_mnist|digits] [--train-limit N] [--test-limit N]

<index> is the image's position in its IDX file, zero-padded, so that
pack_images.py --order name packs the images in the IDX order. Class directories are
"<label>_<name>" (Fashion-MNIST's names, or the digit), which sort in label order.
"""

import argparse
import gzip
import os
import struct
import sys

import numpy as np

FASHION = ["t-shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
           "bag", "ankle_boot"]


def read_idx(directory, base):
    for name, opener in ((base + ".gz", gzip.open), (base, open)):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            with opener(path, "rb") as f:
                data = f.read()
            magic, n = struct.unpack(">II", data[:8])
            if magic == 0x803:
                rows, cols = struct.unpack(">II", data[8:16])
                return np.frombuffer(data, np.uint8, n * rows * cols, 16).reshape(n, rows, cols)
            if magic == 0x801:
                return np.frombuffer(data, np.uint8, n, 8)
            sys.exit("export_images: %s: not an IDX file (magic 0x%08x)" % (path, magic))
    sys.exit("export_images: %s: no %s(.gz)" % (directory, base))


def main(argv):
    ap = argparse.ArgumentParser(prog="export_images.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("idx_dir")
    ap.add_argument("out")
    ap.add_argument("--names", choices=("fashion_mnist", "digits"), default="fashion_mnist")
    ap.add_argument("--train-limit", type=int, default=0, help="only the first N training images")
    ap.add_argument("--test-limit", type=int, default=0, help="only the first N test images")
    args = ap.parse_args(argv)
    from PIL import Image
    names = FASHION if args.names == "fashion_mnist" else [str(d) for d in range(10)]
    for split, prefix, limit in (("train", "train", args.train_limit), ("test", "t10k", args.test_limit)):
        images = read_idx(args.idx_dir, prefix + "-images-idx3-ubyte")
        labels = read_idx(args.idx_dir, prefix + "-labels-idx1-ubyte")
        n = min(limit, len(labels)) if limit > 0 else len(labels)
        for k, name in enumerate(names):
            os.makedirs(os.path.join(args.out, split, "%d_%s" % (k, name)), exist_ok=True)
        for i in range(n):
            k = int(labels[i])
            Image.fromarray(images[i], mode="L").save(
                os.path.join(args.out, split, "%d_%s" % (k, names[k]), "%05d.png" % i))
        print("%s: %d %s images" % (args.out, n, split))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
