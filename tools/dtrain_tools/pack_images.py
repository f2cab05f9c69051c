#!/usr/bin/python3
"""Pack an image-folder tree into the HDF5 file that dtrain trains on (data.dataset = hdf5),
or a list of images into the file that `dtrain --predict` reads (README "Your own data").

Dataset (the ImageFolder convention; class names are the sorted directory names of the
training split, label k = the k-th name):

    ROOT/train/<class>/*.png|jpg|...     ROOT/test/<class>/*.png|jpg|...
    or ROOT/<class>/*.png|jpg|... with --test-fraction F (a seeded split per class)

    pack_images.py ROOT -o data.h5 [--size H[xW] [--fit resize|crop]] [--mode auto|L|RGB]
                   [--test-fraction F --seed S] [--order class|name] [--no-hflip]
                   [--mean M,.. --std S,..]

writes /train/images, /test/images (uint8, N x C x H x W), /train/labels, /test/labels (int64),
/classes (strings), /mean and /std (float64, per channel: of pixel / 255 over the training
split, unless given) and the attribute default_hflip (what augment.hflip = auto does; 1 unless
--no-hflip: right for photographs, wrong for digits and text).

Images for prediction:

    pack_images.py --predict-images A.png B.jpg ... -o batch.h5 [--like data.h5] [--fit ...]

writes /images (uint8, N x C x H x W) and /names (the paths as given). --like takes the size and
channels of a dataset file; images of another size need --fit. Without --like or --size the
images are packed as they are (all of one size), and dtrain --predict refuses a size or channel
count that is not the model's.

Decoding is Pillow's (one decoder for training and prediction, so the same image file always
gives the same pixels). Images: RGB(A) and palette images become RGB (alpha dropped), grey
ones L; --mode auto packs L when every image is grey, else RGB. Sizes: without --size every
image must have the same size (else a message naming two that differ); with --size,
--fit resize stretches each image to H x W (bilinear), --fit crop scales the shorter side to
the target and cuts the centre (the usual Resize + CenterCrop); images already of that size are
untouched. Order: --order class (default) is class by class, files sorted by name; --order name
sorts every image of a split by file name (how a tree exported from an ordered dataset keeps
its order). Any problem is one message on stderr naming the file, exit status 1, and no output
file (it is written to a temporary name and renamed at the end).
"""

import argparse
import os
import sys

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
MAX_CLASSES = 256  # dtrain stores labels as uint8


class PackError(Exception):
    """An input problem: one message, exit status 1."""


def parse_size(text):
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1 or max(parts) > 4096:
        raise PackError("--size %s: expected H or HxW with sides 1 to 4096" % text)
    return tuple(parts)


def parse_floats(text, what):
    try:
        v = [float(p) for p in text.split(",")]
    except ValueError:
        raise PackError("%s %s: expected comma-separated numbers" % (what, text))
    return v


def list_images(directory):
    """The image files of one class directory, sorted by name (hidden files skipped)."""
    names = sorted(n for n in os.listdir(directory)
                   if not n.startswith(".") and n.lower().endswith(EXTENSIONS)
                   and os.path.isfile(os.path.join(directory, n)))
    return [os.path.join(directory, n) for n in names]


def class_dirs(root):
    if not os.path.isdir(root):
        raise PackError("%s: not a directory" % root)
    return sorted(n for n in os.listdir(root)
                  if not n.startswith(".") and os.path.isdir(os.path.join(root, n)))


def scan_tree(args):
    """[(path, label)] of the training and test splits, and the class names."""
    root = args.root
    has_split = os.path.isdir(os.path.join(root, "train")) and os.path.isdir(os.path.join(root, "test"))
    if has_split and args.test_fraction is not None:
        raise PackError("%s has train/ and test/: --test-fraction is for a tree without them" % root)
    if has_split:
        classes = class_dirs(os.path.join(root, "train"))
        split_dirs = {"train": os.path.join(root, "train"), "test": os.path.join(root, "test")}
    else:
        if args.test_fraction is None:
            raise PackError("%s has no train/ and test/ directories: give --test-fraction F to "
                            "split ROOT/<class>/ images" % root)
        if not 0 < args.test_fraction < 1:
            raise PackError("--test-fraction %g: expected a fraction between 0 and 1" % args.test_fraction)
        classes = class_dirs(root)
    if not classes:
        raise PackError("%s: no class directories (expected %s/<class name>/*.png)"
                        % (root, os.path.join(root, "train") if has_split else root))
    if len(classes) > MAX_CLASSES:
        raise PackError("%s: %d classes, dtrain takes at most %d" % (root, len(classes), MAX_CLASSES))
    splits = {"train": [], "test": []}
    if has_split:
        for split, d in split_dirs.items():
            for name in class_dirs(d):
                if name not in classes:
                    raise PackError("%s: class %s has no directory in %s (every class of the "
                                    "test split must be a training class)"
                                    % (os.path.join(d, name), name, split_dirs["train"]))
            for k, name in enumerate(classes):
                cdir = os.path.join(d, name)
                files = list_images(cdir) if os.path.isdir(cdir) else []
                if split == "train" and not files:
                    raise PackError("%s: empty class: no images (%s)" % (cdir, "|".join(EXTENSIONS)))
                splits[split] += [(f, k) for f in files]
    else:
        import numpy as np
        rng = np.random.RandomState(args.seed)
        for k, name in enumerate(classes):
            cdir = os.path.join(root, name)
            files = list_images(cdir)
            if not files:
                raise PackError("%s: empty class: no images (%s)" % (cdir, "|".join(EXTENSIONS)))
            order = rng.permutation(len(files))
            n_test = min(int(round(args.test_fraction * len(files))), len(files) - 1)
            test = set(order[:n_test].tolist())
            for i, f in enumerate(files):
                splits["test" if i in test else "train"].append((f, k))
    if not splits["test"]:
        raise PackError("%s: the test split has no images" % root)
    if args.order == "name":
        for split in splits:
            splits[split].sort(key=lambda item: (os.path.basename(item[0]), item[0]))
    return splits, classes


def open_image(path):
    from PIL import Image
    try:
        img = Image.open(path)
        img.load()
    except Exception as e:  # Pillow raises many kinds for a bad file
        raise PackError("%s: cannot decode the image: %s" % (path, e))
    return img


def is_grey(img):
    return img.mode in ("1", "L", "LA", "I", "I;16", "F")


def to_mode(img, mode):
    if img.mode == mode:
        return img
    if mode == "L" and img.mode in ("I", "I;16", "F"):
        raise PackError("%s: %s images (more than 8 bits) are not supported: save as 8-bit"
                        % (img.filename, img.mode))
    return img.convert(mode)


def fit(img, size, how):
    """img resized to size (H, W) by `how`; unchanged when it already has that size."""
    from PIL import Image
    h, w = size
    if img.size == (w, h):
        return img
    if how == "resize":
        return img.resize((w, h), Image.BILINEAR)
    scale = max(w / img.width, h / img.height)
    sw, sh = max(w, int(round(img.width * scale))), max(h, int(round(img.height * scale)))
    img = img.resize((sw, sh), Image.BILINEAR)
    left, top = (sw - w) // 2, (sh - h) // 2
    return img.crop((left, top, left + w, top + h))


def check_sizes(paths, imgs):
    """Without --size every image must have the size of the first."""
    first = imgs[0]
    for p, i in zip(paths, imgs):
        if i.size != first.size:
            raise PackError("images differ in size: %s is %dx%d, %s is %dx%d (H x W): give "
                            "--size HxW with --fit resize or --fit crop"
                            % (paths[0], first.height, first.width, p, i.height, i.width))
    return (first.height, first.width)


def to_array(paths, imgs, size, how, mode):
    """uint8 array (N, C, H, W) of the decoded images imgs (of the files paths)."""
    import numpy as np
    C = 1 if mode == "L" else 3
    out = np.empty((len(imgs), C, size[0], size[1]), dtype=np.uint8)
    for n, (p, img) in enumerate(zip(paths, imgs)):
        img.filename = p
        a = np.asarray(fit(to_mode(img, mode), size, how), dtype=np.uint8)
        out[n] = a[None] if C == 1 else a.transpose(2, 0, 1)
    return out


def auto_mode(imgs):
    return "L" if all(is_grey(i) for i in imgs) else "RGB"


def write_atomic(path, fill):
    """Call fill(h5file) on a temporary file next to path, then rename it to path."""
    import h5py
    tmp = "%s.tmp.%d" % (path, os.getpid())
    try:
        with h5py.File(tmp, "w") as f:
            fill(f)
        os.replace(tmp, path)
    except OSError as e:
        raise PackError("%s: cannot write: %s" % (path, e))
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def pack_dataset(args):
    import h5py
    import numpy as np
    splits, classes = scan_tree(args)
    size = parse_size(args.size) if args.size else None
    # Every image decoded once; one mode and (without --size) one size for both splits.
    paths = {name: [p for p, _ in items] for name, items in splits.items()}
    imgs = {name: [open_image(p) for p in ps] for name, ps in paths.items()}
    every_path, every_img = paths["train"] + paths["test"], imgs["train"] + imgs["test"]
    mode = auto_mode(every_img) if args.mode == "auto" else args.mode
    if size is None:
        size = check_sizes(every_path, every_img)
    arrays = {}
    for name, items in splits.items():
        arrays[name] = (to_array(paths[name], imgs[name], size, args.fit, mode),
                        np.array([k for _, k in items], dtype=np.int64))
        imgs[name] = None
    train = arrays["train"][0]
    C = train.shape[1]
    if args.mean is not None or args.std is not None:
        if args.mean is None or args.std is None:
            raise PackError("--mean and --std go together")
        mean, std = parse_floats(args.mean, "--mean"), parse_floats(args.std, "--std")
        if len(mean) != C or len(std) != C or min(std) <= 0:
            raise PackError("--mean %s --std %s: expected %d value(s) each (one per channel), std "
                            "positive" % (args.mean, args.std, C))
    else:
        # Per channel over every pixel, in chunks (a float copy of a large set would not fit).
        s1, s2 = np.zeros(C), np.zeros(C)
        for i in range(0, len(train), 1024):
            x = train[i:i + 1024].astype(np.float64) / 255.0
            s1 += x.sum(axis=(0, 2, 3))
            s2 += (x * x).sum(axis=(0, 2, 3))
        n = train.shape[0] * train.shape[2] * train.shape[3]
        mean = (s1 / n).tolist()
        std = np.sqrt(np.maximum(s2 / n - (s1 / n) ** 2, 0)).tolist()
        if min(std) <= 0:
            raise PackError("%s: every training pixel of a channel has the same value (std 0): "
                            "give --mean and --std" % args.root)

    def fill(f):
        for name, (images, labels) in arrays.items():
            g = f.create_group(name)
            g.create_dataset("images", data=images)
            g.create_dataset("labels", data=labels)
        f.create_dataset("classes", data=classes, dtype=h5py.string_dtype("utf-8"))
        f.create_dataset("mean", data=np.array(mean, dtype=np.float64))
        f.create_dataset("std", data=np.array(std, dtype=np.float64))
        f.attrs["default_hflip"] = np.int64(0 if args.no_hflip else 1)
        f.attrs["format"] = "dtrain-images"
        f.attrs["version"] = np.int64(1)

    write_atomic(args.output, fill)
    _, _, H, W = train.shape
    print("%s: %d classes, %d train / %d test images of %dx%dx%d, mean %s, std %s"
          % (args.output, len(classes), len(arrays["train"][1]), len(arrays["test"][1]), C, H, W,
             ",".join("%.4f" % m for m in mean), ",".join("%.4f" % s for s in std)))


def pack_predict(args):
    import h5py
    size, mode = (parse_size(args.size) if args.size else None), args.mode
    if args.like:
        try:
            with h5py.File(args.like, "r") as f:
                _, C, H, W = f["train/images"].shape
        except (OSError, KeyError) as e:
            raise PackError("--like %s: not a dataset file of pack_images.py (%s)" % (args.like, e))
        size, mode = (H, W), ("L" if C == 1 else "RGB")
    for p in args.predict_images:
        if not os.path.isfile(p):
            raise PackError("%s: not found" % p)
    if size is not None and args.fit is None:
        for p in args.predict_images:
            img = open_image(p)
            if (img.height, img.width) != size:
                raise PackError("%s is %dx%d, the model takes %dx%d (H x W): give --fit resize or "
                                "--fit crop" % (p, img.height, img.width, size[0], size[1]))
    paths = args.predict_images
    imgs = [open_image(p) for p in paths]
    if mode == "auto":
        mode = auto_mode(imgs)
    if size is None:
        size = check_sizes(paths, imgs)
    images = to_array(paths, imgs, size, args.fit or "resize", mode)

    def fill(f):
        f.create_dataset("images", data=images)
        f.create_dataset("names", data=args.predict_images, dtype=h5py.string_dtype("utf-8"))

    write_atomic(args.output, fill)
    print("%s: %d images of %dx%dx%d" % ((args.output,) + (images.shape[0],) + images.shape[1:]))


def main(argv):
    ap = argparse.ArgumentParser(prog="pack_images.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", nargs="?", help="image-folder tree (dataset mode)")
    ap.add_argument("-o", "--output", required=True, help="the HDF5 file to write")
    ap.add_argument("--size", help="H or HxW: fit every image to this size (see --fit)")
    ap.add_argument("--fit", choices=("resize", "crop"),
                    help="how --size is reached: stretch (resize) or scale and centre-crop (crop); "
                         "default resize")
    ap.add_argument("--mode", choices=("auto", "L", "RGB"), default="auto",
                    help="L = grey (1 channel), RGB (3); auto: L when every image is grey")
    ap.add_argument("--test-fraction", type=float,
                    help="a tree without train/ and test/: this fraction of each class is the test split")
    ap.add_argument("--seed", type=int, default=0, help="seed of the --test-fraction split")
    ap.add_argument("--order", choices=("class", "name"), default="class",
                    help="image order within a split: class by class, or by file name")
    ap.add_argument("--no-hflip", action="store_true",
                    help="default_hflip = 0: augment.hflip = auto does not flip (digits, text)")
    ap.add_argument("--mean", help="per-channel mean of pixel/255 (default: of the training split)")
    ap.add_argument("--std", help="per-channel std of pixel/255 (default: of the training split)")
    ap.add_argument("--predict-images", nargs="+", metavar="IMAGE",
                    help="pack these images for dtrain --predict instead of a dataset")
    ap.add_argument("--like", help="--predict-images: take size and channels from this dataset file")
    args = ap.parse_args(argv)
    try:
        if args.predict_images:
            if args.root:
                raise PackError("give either ROOT (a dataset) or --predict-images, not both")
            pack_predict(args)
        else:
            if not args.root:
                raise PackError("missing ROOT (the image-folder tree) or --predict-images")
            if args.like:
                raise PackError("--like is for --predict-images")
            args.fit = args.fit or "resize"
            pack_dataset(args)
    except PackError as e:
        print("pack_images: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
