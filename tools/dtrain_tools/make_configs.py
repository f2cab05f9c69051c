"""Write configs/*.ini: one dtrain configuration per published result row
(docs/reference-experiments.md "Published results", the tables of
hysts/pytorch_image_classification) that dtrain can
run, plus configs/resnext29.ini.

Usage: tools/dtrain-tool make-configs [--out-dir configs] [--check]

Each file starts with comments naming its table row(s), the published result
(test error at the last epoch, % ) and, where docs/reference-experiments.md
"Common conventions" gives it, the
parameter count as "; params: N" (tests/test_configs.sh compares it with
`dtrain CONFIG --dry-run`). Rows with identical settings share one file; its
comment lists every row. --check reports files that would change or are
missing, without writing.

Choices made where the published setup leaves a gap (each file repeats the ones it uses):
  * Settings follow the original reference code that produced the published
    numbers (docs/reference-experiments.md "Code generations"): cosine
    decays to 0 (schedule.min_factor = 0), seed 7, MNIST without crop or
    flip, KMNIST with crop and no flip, Fashion-MNIST and CIFAR with both;
    the multi-GPU table (6.3) is the current reference code (min_factor
    1e-3, seed 0).
  * optim.reference_batch = train.batch_size, so optim.lr is the table's lr.
  * Weight decay, batch and epochs not stated by a row come from the model's
    config ("Default hyperparameters"); 200-epoch multistep runs of table 6.9 use milestones
    [100, 150] and the 300-epoch mixup run of table 6.7 [150, 225] (not stated).
  * RICAP turns random crop off (configs/augmentations/cifar/ricap.yaml)
    unless the row says "w/ random crop".
  * Per-GPU batch norm (multi-GPU tables, ghost BN) is train.accum_steps:
    batch norm sees batch_size / (ranks x accum_steps) images.
  * "no weight decay on BN" is optim.no_decay_bn_bias, which also spares the
    FC bias (the original reference code decayed it).
Rows dtrain cannot run are left out: FP16 and mixed precision (table 6.13).
"""

import argparse
import os
import sys

from dtrain_tools import ROOT

# ---------------------------------------------------------------------------
# Models: dtrain [model] keys, docs/reference-experiments.md "Common conventions" parameter count
# (3x32x32, 10 classes) or None, stem channels (for the 1-channel rule) and the config
# defaults of docs/reference-experiments.md "Default hyperparameters".
# ---------------------------------------------------------------------------


def preact(depth, c0=16, bottleneck=False, rfr=False, lastbn=False,
           stages="true,true,true"):
    return dict(name="resnet_preact", depth=depth,
                block_type="bottleneck" if bottleneck else "basic",
                initial_channels=c0, remove_first_relu=rfr,
                add_last_bn=lastbn, preact_stage=stages)


RESNET_TRAIN = dict(batch=128, lr=0.1, wd=1e-4, epochs=160,
                    schedule=("multistep", [80, 120], 0.1))
MODELS = {
    # tag: (label, [model] keys, params, stem, training defaults)
    "vgg15": ("VGG-like (depth 15, w/ BN, channel 64)",
              dict(name="vgg", vgg_channels="64,128,256,512,512",
                   vgg_layers="2,2,3,3,3", use_bn=True), 14728266, 64,
              RESNET_TRAIN),
    "resnet110": ("ResNet-110", dict(name="resnet", depth=110,
                                     block_type="basic", initial_channels=16),
                  1730714, 16, RESNET_TRAIN),
    "resnet_preact110": ("ResNet-preact-110", preact(110), 1730522, 16,
                         RESNET_TRAIN),
    "resnet_preact164": ("ResNet-preact-164 bottleneck",
                         preact(164, bottleneck=True), 1619290, 16,
                         RESNET_TRAIN),
    "resnet_preact1001": ("ResNet-preact-1001 bottleneck",
                          preact(1001, bottleneck=True), None, 16,
                          RESNET_TRAIN),
    "resnet_preact20": ("ResNet-preact-20", preact(20), 272282, 16,
                        RESNET_TRAIN),
    "resnet_preact20_w4": ("ResNet-preact-20, widening factor 4 "
                           "(initial_channels 64, docs/reference-experiments.md ResNet-preact)",
                           preact(20, c0=64), 4326986, 64, RESNET_TRAIN),
    "resnet_preact50": ("ResNet-preact-50", preact(50), 758362, 16,
                        RESNET_TRAIN),
    "resnet_preact50_w4": ("ResNet-preact-50, widening factor 4 "
                           "(initial_channels 64)", preact(50, c0=64),
                           12077386, 64, RESNET_TRAIN),
    "resnet_preact56": ("ResNet-preact-56", preact(56), 855578, 16,
                        RESNET_TRAIN),
    "wrn28_10": ("WRN-28-10", dict(name="wrn", depth=28, widening_factor=10,
                                   initial_channels=16, drop_rate=0.0),
                 36479194, 16,
                 dict(batch=128, lr=0.1, wd=5e-4, epochs=200,
                      schedule=("multistep", [60, 120, 160], 0.2))),
    "densenet100_k12": ("DenseNet-100 (k=12)",
                        dict(name="densenet", depth=100, block_type="basic",
                             growth_rate=12, compression_rate=1.0,
                             drop_rate=0.0), 7083538, 24,
                        dict(batch=64, lr=0.1, wd=1e-4, epochs=300,
                             schedule=("multistep", [150, 225], 0.1))),
}


def _densenet(depth, k, bc, params):
    return (("DenseNet-BC-%d (k=%d)" if bc else "DenseNet-%d (k=%d)")
            % (depth, k),
            dict(name="densenet", depth=depth,
                 block_type="bottleneck" if bc else "basic", growth_rate=k,
                 compression_rate=0.5 if bc else 1.0, drop_rate=0.0),
            params, 2 * k, MODELS["densenet100_k12"][4])


def _pyramid(depth, alpha, bottleneck, params):
    return ("PyramidNet-%d%s (alpha=%d)"
            % (depth, " bottleneck" if bottleneck else "", alpha),
            dict(name="pyramidnet", depth=depth,
                 block_type="bottleneck" if bottleneck else "basic",
                 initial_channels=16, alpha=alpha), params, 16,
            dict(batch=128, lr=0.1, wd=1e-4, epochs=300,
                 schedule=("multistep", [150, 225], 0.1)))


def _resnext(card, params):
    return ("ResNeXt-29 %dx64d" % card,
            dict(name="resnext", depth=29, initial_channels=64,
                 cardinality=card, base_channels=64), params, 64,
            dict(batch=128, lr=0.1, wd=5e-4, epochs=300,
                 schedule=("multistep", [150, 225], 0.1)))


def _shake(c, params):
    return ("shake-shake-26 2x%dd (S-S-I)" % c,
            dict(name="shake_shake", depth=26, initial_channels=c,
                 shake_forward=True, shake_backward=True, shake_image=True),
            params, 16,
            dict(batch=128, lr=0.2, wd=1e-4, epochs=1800,
                 schedule=("cosine", 0.0)))


MODELS.update({
    "densenet100_k24": _densenet(100, 24, False, None),
    "densenet_bc100_k12": _densenet(100, 12, True, 769162),
    "densenet_bc250_k24": _densenet(250, 24, True, 15324406),
    "densenet_bc190_k40": _densenet(190, 40, True, 25624430),
    "pyramidnet110_a84": _pyramid(110, 84, False, 3904446),
    "pyramidnet110_a270": _pyramid(110, 270, False, 28485477),
    "pyramidnet164_a270": _pyramid(164, 270, True, 27216021),
    "pyramidnet272_a200": _pyramid(272, 200, True, 26210842),
    "resnext29_4x64d": _resnext(4, 17562442),
    "resnext29_8x64d": _resnext(8, 34426698),
    "resnext29_16x64d": _resnext(16, 68155210),
    "shake_shake26_2x32d": _shake(32, 2923162),
    "shake_shake26_2x64d": _shake(64, 11653978),
    "shake_shake26_2x96d": _shake(96, 26192922),
    "shake_shake26_2x128d": _shake(128, 46539994),
})

DATASETS = {
    # name: (label, channels, classes, random_crop, hflip)
    "cifar10": ("CIFAR-10", 3, 10, True, True),
    "fashion_mnist": ("Fashion-MNIST", 1, 10, True, True),
    "mnist": ("MNIST", 1, 10, False, False),
    "kmnist": ("KMNIST", 1, 10, True, False),
}

# Tables 6.9-6.13 (ResNet-preact-20, CIFAR-10) of docs/reference-experiments.md "Published results".
TABLES = """
== 6.9
-- Linear scaling rule, lr = 0.1·B/128, 200 epochs
4096 | 3.2 | cosine | 200 | 10.57 | 22m
2048 | 1.6 | cosine | 200 | 8.87 | 21m
1024 | 0.8 | cosine | 200 | 8.40 | 21m
512 | 0.4 | cosine | 200 | 8.22 | 20m
256 | 0.2 | cosine | 200 | 8.61 | 22m
128 | 0.1 | cosine | 200 | 8.09 | 24m
64 | 0.05 | cosine | 200 | 8.22 | 28m
32 | 0.025 | cosine | 200 | 8.00 | 43m
16 | 0.0125 | cosine | 200 | 7.75 | 1h17m
8 | 0.006125 | cosine | 200 | 7.70 | 2h32m
4096 | 3.2 | multistep | 200 | 28.97 | 22m
2048 | 1.6 | multistep | 200 | 9.07 | 21m
1024 | 0.8 | multistep | 200 | 8.62 | 21m
512 | 0.4 | multistep | 200 | 8.23 | 20m
256 | 0.2 | multistep | 200 | 8.40 | 21m
128 | 0.1 | multistep | 200 | 8.28 | 24m
64 | 0.05 | multistep | 200 | 8.13 | 28m
32 | 0.025 | multistep | 200 | 7.58 | 43m
16 | 0.0125 | multistep | 200 | 7.93 | 1h18m
8 | 0.006125 | multistep | 200 | 8.31 | 2h34m
-- Linear scaling plus longer training
4096 | 3.2 | cosine | 400 | 8.97 | 44m
2048 | 1.6 | cosine | 400 | 7.85 | 43m
1024 | 0.8 | cosine | 400 | 7.20 | 42m
512 | 0.4 | cosine | 400 | 7.83 | 40m
256 | 0.2 | cosine | 400 | 7.65 | 42m
128 | 0.1 | cosine | 400 | 7.09 | 47m
64 | 0.05 | cosine | 400 | 7.17 | 44m
32 | 0.025 | cosine | 400 | 7.24 | 2h11m
16 | 0.0125 | cosine | 400 | 7.26 | 4h10m
8 | 0.006125 | cosine | 400 | 7.02 | 7h53m
4096 | 3.2 | cosine | 800 | 8.14 | 1h29m
2048 | 1.6 | cosine | 800 | 7.74 | 1h23m
1024 | 0.8 | cosine | 800 | 7.15 | 1h31m
512 | 0.4 | cosine | 800 | 7.27 | 1h25m
256 | 0.2 | cosine | 800 | 7.22 | 1h26m
128 | 0.1 | cosine | 800 | 6.68 | 1h35m
64 | 0.05 | cosine | 800 | 7.18 | 2h20m
32 | 0.025 | cosine | 800 | 7.03 | 4h16m
16 | 0.0125 | cosine | 800 | 6.78 | 8h37m
8 | 0.006125 | cosine | 800 | 6.89 | 16h47m
-- Effect of the initial LR at fixed batch
4096 | 3.2 | cosine | 200 | 10.57 | 22m
4096 | 1.6 | cosine | 200 | 10.32 | 22m
4096 | 0.8 | cosine | 200 | 10.71 | 22m
2048 | 3.2 | cosine | 200 | 11.34 | 21m
2048 | 2.4 | cosine | 200 | 8.69 | 21m
2048 | 2.0 | cosine | 200 | 8.81 | 21m
2048 | 1.6 | cosine | 200 | 8.73 | 22m
2048 | 0.8 | cosine | 200 | 9.62 | 21m
1024 | 3.2 | cosine | 200 | 9.12 | 21m
1024 | 2.4 | cosine | 200 | 8.42 | 22m
1024 | 2.0 | cosine | 200 | 8.38 | 22m
1024 | 1.6 | cosine | 200 | 8.07 | 22m
1024 | 1.2 | cosine | 200 | 8.25 | 21m
1024 | 0.8 | cosine | 200 | 8.08 | 22m
1024 | 0.4 | cosine | 200 | 8.49 | 22m
512 | 3.2 | cosine | 200 | 8.51 | 21m
512 | 1.6 | cosine | 200 | 7.73 | 20m
512 | 0.8 | cosine | 200 | 7.73 | 21m
512 | 0.4 | cosine | 200 | 8.22 | 20m
256 | 3.2 | cosine | 200 | 9.64 | 22m
256 | 1.6 | cosine | 200 | 8.32 | 22m
256 | 0.8 | cosine | 200 | 7.45 | 21m
256 | 0.4 | cosine | 200 | 7.68 | 22m
256 | 0.2 | cosine | 200 | 8.61 | 22m
128 | 1.6 | cosine | 200 | 9.03 | 24m
128 | 0.8 | cosine | 200 | 7.54 | 24m
128 | 0.4 | cosine | 200 | 7.28 | 24m
128 | 0.2 | cosine | 200 | 7.96 | 24m
128 | 0.1 | cosine | 200 | 8.09 | 24m
128 | 0.05 | cosine | 200 | 8.81 | 24m
128 | 0.025 | cosine | 200 | 10.07 | 24m
64 | 0.4 | cosine | 200 | 7.42 | 35m
64 | 0.2 | cosine | 200 | 7.52 | 36m
64 | 0.1 | cosine | 200 | 7.78 | 37m
64 | 0.05 | cosine | 200 | 8.22 | 28m
32 | 0.2 | cosine | 200 | 7.64 | 1h05m
32 | 0.1 | cosine | 200 | 7.25 | 1h08m
32 | 0.05 | cosine | 200 | 7.45 | 1h07m
32 | 0.025 | cosine | 200 | 8.00 | 43m
-- Good LR plus longer training
4096 | 1.6 | cosine | 200 | 10.32 | 22m
2048 | 1.6 | cosine | 200 | 8.73 | 22m
1024 | 1.6 | cosine | 200 | 8.07 | 22m
1024 | 0.8 | cosine | 200 | 8.08 | 22m
512 | 1.6 | cosine | 200 | 7.73 | 20m
512 | 0.8 | cosine | 200 | 7.73 | 21m
256 | 0.8 | cosine | 200 | 7.45 | 21m
128 | 0.4 | cosine | 200 | 7.28 | 24m
128 | 0.2 | cosine | 200 | 7.96 | 24m
128 | 0.1 | cosine | 200 | 8.09 | 24m
4096 | 1.6 | cosine | 800 | 8.36 | 1h33m
2048 | 1.6 | cosine | 800 | 7.53 | 1h27m
1024 | 1.6 | cosine | 800 | 7.30 | 1h30m
1024 | 0.8 | cosine | 800 | 7.42 | 1h30m
512 | 1.6 | cosine | 800 | 6.69 | 1h26m
512 | 0.8 | cosine | 800 | 6.77 | 1h26m
256 | 0.8 | cosine | 800 | 6.84 | 1h28m
128 | 0.4 | cosine | 800 | 6.86 | 1h35m
128 | 0.2 | cosine | 800 | 7.05 | 1h38m
128 | 0.1 | cosine | 800 | 6.68 | 1h35m
4096 | 1.6 | cosine | 1600 | 8.25 | 3h10m
2048 | 1.6 | cosine | 1600 | 7.34 | 2h50m
1024 | 1.6 | cosine | 1600 | 6.94 | 2h52m
512 | 1.6 | cosine | 1600 | 6.99 | 2h44m
256 | 0.8 | cosine | 1600 | 6.95 | 2h50m
128 | 0.4 | cosine | 1600 | 6.64 | 3h09m
4096 | 1.6 | cosine | 3200 | 9.52 | 6h15m
2048 | 1.6 | cosine | 3200 | 6.92 | 5h42m
1024 | 1.6 | cosine | 3200 | 6.96 | 5h43m
2048 | 1.6 | cosine | 6400 | 7.45 | 11h44m
== 6.10
SGD | 4096 | 3.2 | cosine | 200 | 10.57 (1 run) | 22m
SGD | 4096 | 1.6 | cosine | 200 | 10.20 | 22m
SGD | 4096 | 0.8 | cosine | 200 | 10.71 (1 run) | 22m
LARS | 4096 | 0.04 | cosine | 200 | 9.58 | 22m
LARS | 4096 | 0.03 | cosine | 200 | 8.46 | 22m
LARS | 4096 | 0.02 | cosine | 200 | 8.21 | 22m
LARS | 4096 | 0.015 | cosine | 200 | 8.47 | 22m
LARS | 4096 | 0.01 | cosine | 200 | 9.33 | 22m
LARS | 4096 | 0.005 | cosine | 200 | 14.31 | 22m
SGD | 2048 | 3.2 | cosine | 200 | 11.34 (1 run) | 21m
SGD | 2048 | 2.4 | cosine | 200 | 8.69 (1 run) | 21m
SGD | 2048 | 2.0 | cosine | 200 | 8.81 (1 run) | 21m
SGD | 2048 | 1.6 | cosine | 200 | 8.73 (1 run) | 22m
SGD | 2048 | 0.8 | cosine | 200 | 9.62 (1 run) | 21m
LARS | 2048 | 0.04 | cosine | 200 | 11.58 | 21m
LARS | 2048 | 0.02 | cosine | 200 | 8.05 | 22m
LARS | 2048 | 0.01 | cosine | 200 | 8.07 | 22m
LARS | 2048 | 0.005 | cosine | 200 | 9.65 | 22m
SGD | 1024 | 3.2 | cosine | 200 | 9.12 (1 run) | 21m
SGD | 1024 | 2.4 | cosine | 200 | 8.42 (1 run) | 22m
SGD | 1024 | 2.0 | cosine | 200 | 8.38 (1 run) | 22m
SGD | 1024 | 1.6 | cosine | 200 | 8.07 (1 run) | 22m
SGD | 1024 | 1.2 | cosine | 200 | 8.25 (1 run) | 21m
SGD | 1024 | 0.8 | cosine | 200 | 8.08 (1 run) | 22m
SGD | 1024 | 0.4 | cosine | 200 | 8.49 (1 run) | 22m
LARS | 1024 | 0.02 | cosine | 200 | 9.30 | 22m
LARS | 1024 | 0.01 | cosine | 200 | 7.68 | 22m
LARS | 1024 | 0.005 | cosine | 200 | 8.88 | 23m
SGD | 512 | 3.2 | cosine | 200 | 8.51 (1 run) | 21m
SGD | 512 | 1.6 | cosine | 200 | 7.73 (1 run) | 20m
SGD | 512 | 0.8 | cosine | 200 | 7.73 (1 run) | 21m
SGD | 512 | 0.4 | cosine | 200 | 8.22 (1 run) | 20m
LARS | 512 | 0.015 | cosine | 200 | 9.84 | 23m
LARS | 512 | 0.01 | cosine | 200 | 8.05 | 23m
LARS | 512 | 0.0075 | cosine | 200 | 7.58 | 23m
LARS | 512 | 0.005 | cosine | 200 | 7.96 | 23m
LARS | 512 | 0.0025 | cosine | 200 | 8.83 | 23m
SGD | 256 | 3.2 | cosine | 200 | 9.64 (1 run) | 22m
SGD | 256 | 1.6 | cosine | 200 | 8.32 (1 run) | 22m
SGD | 256 | 0.8 | cosine | 200 | 7.45 (1 run) | 21m
SGD | 256 | 0.4 | cosine | 200 | 7.68 (1 run) | 22m
SGD | 256 | 0.2 | cosine | 200 | 8.61 (1 run) | 22m
LARS | 256 | 0.01 | cosine | 200 | 8.95 | 27m
LARS | 256 | 0.005 | cosine | 200 | 7.75 | 28m
LARS | 256 | 0.0025 | cosine | 200 | 8.21 | 28m
SGD | 128 | 1.6 | cosine | 200 | 9.03 (1 run) | 24m
SGD | 128 | 0.8 | cosine | 200 | 7.54 (1 run) | 24m
SGD | 128 | 0.4 | cosine | 200 | 7.28 (1 run) | 24m
SGD | 128 | 0.2 | cosine | 200 | 7.96 (1 run) | 24m
LARS | 128 | 0.005 | cosine | 200 | 7.96 | 37m
LARS | 128 | 0.0025 | cosine | 200 | 7.98 | 37m
LARS | 128 | 0.00125 | cosine | 200 | 9.21 | 37m
SGD | 4096 | 1.6 | cosine | 200 | 10.20 | 22m
SGD | 4096 | 1.6 | cosine | 800 | 8.36 (1 run) | 1h33m
SGD | 4096 | 1.6 | cosine | 1600 | 8.25 (1 run) | 3h10m
LARS | 4096 | 0.02 | cosine | 200 | 8.21 | 22m
LARS | 4096 | 0.02 | cosine | 400 | 7.53 | 44m
LARS | 4096 | 0.02 | cosine | 800 | 7.48 | 1h29m
LARS | 4096 | 0.02 | cosine | 1600 | 7.37 (1 run) | 2h58m
== 6.11
8192 | N/A | 1.6 | cosine | 200 | 12.35 | 25m*
4096 | N/A | 1.6 | cosine | 200 | 10.32 | 22m
2048 | N/A | 1.6 | cosine | 200 | 8.73 | 22m
1024 | N/A | 1.6 | cosine | 200 | 8.07 | 22m
128 | N/A | 0.4 | cosine | 200 | 7.28 | 24m
8192 | 128 | 1.6 | cosine | 200 | 11.51 | 27m
4096 | 128 | 1.6 | cosine | 200 | 9.73 | 25m
2048 | 128 | 1.6 | cosine | 200 | 8.77 | 24m
1024 | 128 | 1.6 | cosine | 200 | 7.82 | 22m
8192 | N/A | 1.6 | cosine | 1600 |  | 
4096 | N/A | 1.6 | cosine | 1600 | 8.25 | 3h10m
2048 | N/A | 1.6 | cosine | 1600 | 7.34 | 2h50m
1024 | N/A | 1.6 | cosine | 1600 | 6.94 | 2h52m
8192 | 128 | 1.6 | cosine | 1600 | 11.83 | 3h37m
4096 | 128 | 1.6 | cosine | 1600 | 8.95 | 3h15m
2048 | 128 | 1.6 | cosine | 1600 | 7.23 | 3h05m
1024 | 128 | 1.6 | cosine | 1600 | 7.08 | 2h59m
== 6.12
yes | 5e-4 | 4096 | 1.6 | cosine | 200 | 10.81 | 22m
yes | 4e-4 | 4096 | 1.6 | cosine | 200 | 10.88 | 22m
yes | 3e-4 | 4096 | 1.6 | cosine | 200 | 10.96 | 22m
yes | 2e-4 | 4096 | 1.6 | cosine | 200 | 9.30 | 22m
yes | 1e-4 | 4096 | 1.6 | cosine | 200 | 10.20 | 22m
no | 5e-4 | 4096 | 1.6 | cosine | 200 | 8.78 | 22m
no | 4e-4 | 4096 | 1.6 | cosine | 200 | 9.83 | 22m
no | 3e-4 | 4096 | 1.6 | cosine | 200 | 9.90 | 22m
no | 2e-4 | 4096 | 1.6 | cosine | 200 | 9.64 | 22m
no | 1e-4 | 4096 | 1.6 | cosine | 200 | 10.38 | 22m
yes | 5e-4 | 2048 | 1.6 | cosine | 200 | 8.46 | 20m
yes | 4e-4 | 2048 | 1.6 | cosine | 200 | 8.35 | 20m
yes | 3e-4 | 2048 | 1.6 | cosine | 200 | 7.76 | 20m
yes | 2e-4 | 2048 | 1.6 | cosine | 200 | 8.09 | 20m
yes | 1e-4 | 2048 | 1.6 | cosine | 200 | 8.83 | 20m
no | 5e-4 | 2048 | 1.6 | cosine | 200 | 8.49 | 20m
no | 4e-4 | 2048 | 1.6 | cosine | 200 | 7.98 | 20m
no | 3e-4 | 2048 | 1.6 | cosine | 200 | 8.26 | 20m
no | 2e-4 | 2048 | 1.6 | cosine | 200 | 8.47 | 20m
no | 1e-4 | 2048 | 1.6 | cosine | 200 | 9.27 | 20m
yes | 5e-4 | 1024 | 1.6 | cosine | 200 | 8.45 | 21m
yes | 4e-4 | 1024 | 1.6 | cosine | 200 | 7.91 | 21m
yes | 3e-4 | 1024 | 1.6 | cosine | 200 | 7.81 | 21m
yes | 2e-4 | 1024 | 1.6 | cosine | 200 | 7.69 | 21m
yes | 1e-4 | 1024 | 1.6 | cosine | 200 | 8.26 | 21m
no | 5e-4 | 1024 | 1.6 | cosine | 200 | 8.08 | 21m
no | 4e-4 | 1024 | 1.6 | cosine | 200 | 7.73 | 21m
no | 3e-4 | 1024 | 1.6 | cosine | 200 | 7.92 | 21m
no | 2e-4 | 1024 | 1.6 | cosine | 200 | 7.93 | 21m
no | 1e-4 | 1024 | 1.6 | cosine | 200 | 8.53 | 21m
== 6.13
-- GTX 1080 Ti (no Tensor Cores):
FP32 | 8192 | 1.6 | cosine | 200 |  | 
FP32 | 4096 | 1.6 | cosine | 200 | 10.32 | 22m
FP32 | 2048 | 1.6 | cosine | 200 | 8.73 | 22m
FP32 | 1024 | 1.6 | cosine | 200 | 8.07 | 22m
FP32 | 512 | 0.8 | cosine | 200 | 7.73 | 21m
FP32 | 256 | 0.8 | cosine | 200 | 7.45 | 21m
FP32 | 128 | 0.4 | cosine | 200 | 7.28 | 24m
FP16 | 8192 | 1.6 | cosine | 200 | 48.52 | 33m
FP16 | 4096 | 1.6 | cosine | 200 | 49.84 | 28m
FP16 | 2048 | 1.6 | cosine | 200 | 75.63 | 27m
FP16 | 1024 | 1.6 | cosine | 200 | 19.09 | 27m
FP16 | 512 | 0.8 | cosine | 200 | 7.89 | 26m
FP16 | 256 | 0.8 | cosine | 200 | 7.40 | 28m
FP16 | 128 | 0.4 | cosine | 200 | 7.59 | 32m
mixed | 8192 | 1.6 | cosine | 200 | 11.78 | 28m
mixed | 4096 | 1.6 | cosine | 200 | 10.48 | 27m
mixed | 2048 | 1.6 | cosine | 200 | 8.98 | 26m
mixed | 1024 | 1.6 | cosine | 200 | 8.05 | 26m
mixed | 512 | 0.8 | cosine | 200 | 7.81 | 28m
mixed | 256 | 0.8 | cosine | 200 | 7.58 | 32m
mixed | 128 | 0.4 | cosine | 200 | 7.37 | 41m
-- Tesla V100:
FP32 | 8192 | 1.6 | cosine | 200 | 12.35 | 25m
FP32 | 4096 | 1.6 | cosine | 200 | 9.88 | 19m
FP32 | 2048 | 1.6 | cosine | 200 | 8.87 | 17m
FP32 | 1024 | 1.6 | cosine | 200 | 8.45 | 18m
mixed | 8192 | 1.6 | cosine | 200 | 11.92 | 25m
mixed | 4096 | 1.6 | cosine | 200 | 10.16 | 19m
mixed | 2048 | 1.6 | cosine | 200 | 9.10 | 17m
mixed | 1024 | 1.6 | cosine | 200 | 7.84 | 16m
"""


class Run:
    """One training configuration (the settings of one or more published rows)."""

    def __init__(self, model, dataset="cifar10", **kw):
        label, mkeys, params, stem, train = MODELS[model]
        self.model, self.dataset = model, dataset
        self.model_keys = dict(mkeys)
        self.model_keys.update(kw.pop("model_keys", {}))
        self.batch = kw.pop("batch", train["batch"])
        self.lr = kw.pop("lr", train["lr"])
        self.wd = kw.pop("wd", train["wd"])
        self.epochs = kw.pop("epochs", train["epochs"])
        self.schedule = kw.pop("schedule", train["schedule"])
        self.optimizer = kw.pop("optimizer", "sgd")
        self.no_decay = kw.pop("no_decay", False)
        self.accum = kw.pop("accum", 1)
        self.seed = kw.pop("seed", 7)
        self.aug = kw.pop("aug", {})
        if kw:
            raise TypeError("unknown settings %s" % sorted(kw))

    def params(self):
        label, mkeys, params, stem, train = MODELS[self.model]
        if self.model_keys.get("add_last_bn"):
            # "Common conventions" counts one last-BN variant: ResNet-preact-56 with last BN.
            params = 857594 if self.model == "resnet_preact56" else None
        if params is None:
            return None
        channels = DATASETS[self.dataset][1]
        # "Common conventions": a 1-channel input removes 2 x 9 x C_stem stem weights.
        return params - (3 - channels) * 9 * stem

    def body(self):
        """The INI sections (everything but comments and output.dir)."""
        _, _, _, crop, flip = DATASETS[self.dataset]
        aug = self.aug
        if aug.get("ricap") is not None and not aug.get("ricap_crop"):
            crop = False
        out = ["[data]", "dataset = %s" % self.dataset, "", "[model]"]
        for k, v in self.model_keys.items():
            out.append("%s = %s" % (k, _fmt(v)))
        out += ["", "[train]", "epochs = %d" % self.epochs,
                "batch_size = %d" % self.batch, "seed = %d" % self.seed,
                "accum_steps = %d" % self.accum, "", "[optim]",
                "name = %s" % self.optimizer, "lr = %s" % _fmt(self.lr),
                "reference_batch = %d" % self.batch, "momentum = 0.9",
                "nesterov = %s" % ("false" if self.optimizer == "lars"
                                   else "true"),
                "weight_decay = %s" % _fmt(self.wd),
                "no_decay_bn_bias = %s" % _fmt(self.no_decay)]
        if self.optimizer == "lars":
            out += ["lars_eps = 1e-9", "lars_threshold = 1e-2", "lars_eta = 0"]
        out += ["", "[schedule]", "type = %s" % self.schedule[0]]
        if self.schedule[0] == "multistep":
            out += ["milestones = %s" % ", ".join(map(str, self.schedule[1])),
                    "gamma = %s" % _fmt(self.schedule[2])]
        else:
            out += ["min_factor = %s" % _fmt(self.schedule[1])]
        out += ["", "[augment]", "random_crop = %s" % _fmt(crop),
                "crop_padding = 4", "hflip = %s" % _fmt(flip)]
        if "cutout" in aug:
            out += ["cutout = true", "cutout_size = %d" % aug["cutout"]]
        if aug.get("random_erasing"):
            out += ["random_erasing = true", "erasing_prob = 0.5"]
        if "mixup" in aug:
            out += ["mixup = true", "mixup_alpha = %s" % _fmt(aug["mixup"])]
        if aug.get("ricap") is not None:
            out += ["ricap = true", "ricap_beta = %s" % _fmt(aug["ricap"])]
        if "dual_cutout" in aug:
            out += ["dual_cutout = true", "cutout_size = 16",
                    "dual_cutout_alpha = %s" % _fmt(aug["dual_cutout"])]
        if "label_smoothing" in aug:
            out += ["label_smoothing = %s" % _fmt(aug["label_smoothing"])]
        return "\n".join(out) + "\n"


def _fmt(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "%g" % v
    return str(v)


class Row:
    def __init__(self, name, section, what, published, run, notes=()):
        self.name, self.section, self.what = name, section, what
        self.published, self.run, self.notes = published, run, list(notes)


ROWS = []


def row(name, section, what, published, run, *notes):
    ROWS.append(Row(name, section, what, published, run, notes))


COS0 = ("cosine", 0.0)  # original reference code: cosine decays to 0
S61 = 'Table 6.1 CIFAR-10, paper-like settings'
S62 = "Table 6.2 CIFAR-10 with regularization, longer training"
S63 = "Table 6.3 multi-GPU WRN-28-10 + RICAP, CIFAR-10 (current reference code, Tesla V100)"
S63V1 = "Table 6.3 superseded original-code table (nn.DataParallel, Tesla V100)"
S64 = "Table 6.4 Fashion-MNIST"
S65 = "Table 6.5 MNIST"
S66 = "Table 6.6 Kuzushiji-MNIST (KMNIST)"
S67 = "Table 6.7 residual-unit variants (ResNet-preact-56, CIFAR-10)"
S68 = "Table 6.8 label smoothing, mixup, RICAP, dual-cutout (ResNet-preact-20, CIFAR-10)"


def section_6_1():
    g980 = "GTX 980"
    rows = [
        ("vgg15", {}, "7.29 (median of 3 runs); paper N/A; 1h20m",
         ["The reference README number comes from the original code's VGG with one ReLU per stage "
          "(a bug); dtrain builds the current code's fixed net (a ReLU after every conv)."]),
        ("resnet110", {}, "6.52 (median of 3 runs); paper 6.43 (best), "
         "6.61 +/- 0.16; 3h06m", []),
        ("resnet_preact110", {}, "6.47 (median of 3 runs); paper 6.37 "
         "(median of 5 runs); 3h05m", []),
        ("resnet_preact164", {}, "5.90 (median of 3 runs); paper 5.46 "
         "(median of 5 runs); 4h01m", []),
        ("resnet_preact1001", {}, "no reference README run; paper 4.62 (median of 5 "
         "runs), 4.69 +/- 0.20", []),
        ("wrn28_10", dict(batch=64), "4.03 (median of 3 runs); paper 4.00 "
         "(median of 5 runs); 16h10m",
         ["Reference README deviation: batch 64 (paper 128), lr 0.1.",
          "model.init_mode auto = kaiming_fan_in for wrn (wrn.yaml); the original code "
          "also drew WRN's BN gamma from U(0,1), dtrain uses 1."]),
        ("densenet100_k12", {}, "3.87 (1 run); paper 4.10 (1 run); "
         "24h28m* (other computer)",
         ["No reference README command for this row: densenet.yaml settings with "
          "block_type basic and compression_rate 1."]),
        ("densenet100_k24", {}, "no reference README run; paper 3.74 (1 run)", []),
        ("densenet_bc100_k12", dict(batch=32, lr=0.05), "4.69 (median of 3 "
         "runs); paper 4.51 (1 run); 15h20m",
         ["Reference README deviation: batch 32, lr 0.05 (paper 64 / 0.1)."]),
        ("densenet_bc250_k24", {}, "no reference README run; paper 3.62 (1 run)", []),
        ("densenet_bc190_k40", {}, "no reference README run; paper 3.46 (1 run)", []),
        ("pyramidnet110_a84", {}, "4.40 (median of 3 runs); paper 4.26 "
         "+/- 0.23; 11h40m", []),
        ("pyramidnet110_a270", {}, "3.92 (1 run); paper 3.73 +/- 0.04; "
         "24h12m* (other computer)", []),
        ("pyramidnet164_a270", {}, "3.44 (1 run); paper 3.48 +/- 0.20; "
         "32h37m* (other computer)",
         ["Current reference stem width 16 (the original code used 64)."]),
        ("pyramidnet272_a200", {}, "no reference README run; paper 3.31 +/- 0.08", []),
        ("resnext29_4x64d", dict(batch=32, lr=0.025), "3.89 (median of 3 "
         "runs); paper ~3.75 (from Figure 7); 31h17m",
         ["Reference README deviation: 1 GPU, batch 32, lr 0.025 (paper 8 GPUs, "
          "128 / 0.1)."]),
        ("resnext29_8x64d", dict(batch=64, lr=0.05), "3.97 (1 run); paper "
         "3.65 (average of 10 runs); 42h50m* (other computer)",
         ["Reference README command: batch 64, lr 0.05."]),
        ("resnext29_16x64d", {}, "no reference README run; paper 3.58 (average of 10 "
         "runs)", []),
        ("shake_shake26_2x32d", {}, "3.68 (median of 3 runs); paper 3.55 "
         "(average of 3 runs); 33h49m", []),
        ("shake_shake26_2x64d", dict(batch=64, lr=0.1), "2.88 (1 run); paper "
         "2.98 (average of 3 runs); 78h48m",
         ["Reference README deviation: batch 64, lr 0.1."]),
        ("shake_shake26_2x96d", {}, "2.90 (1 run); paper 2.86 (average of 5 "
         "runs); 101h32m* (other computer)",
         ["The original command had no override (batch 128, lr 0.2, used here); "
          "the current reference README command shows 64 / 0.1."]),
    ]
    for tag, kw, pub, notes in rows:
        label = MODELS[tag][0]
        if "shake" in tag:
            notes = notes + ["Numbers are the original topology; dtrain "
                             "builds the current one."]
        row("%s_cifar10" % tag, S61, label, pub + " (%s)" % g980,
            Run(tag, **kw), *notes)
    row("wrn28_10_cifar10_dropout", S61, "WRN-28-10 w/ dropout",
        "no reference README run; paper 3.89 (median of 5 runs)",
        Run("wrn28_10", model_keys=dict(drop_rate=0.3)),
        "drop_rate 0.3 is the paper's (the reference gives no rate); its code drops the "
        "conv1 output before BN2.")


def section_6_2():
    w4 = [(200, "1h26m"), (400, "2h53m"), (1800, "12h53m")]
    res = {"": ["4.91", "4.01", "3.99"], "cutout16": ["3.71", "3.46", "3.76"],
           "ricap0.3": ["3.45", "3.11", "3.15"]}
    augs = {"": {}, "cutout16": dict(cutout=16), "ricap0.3": dict(ricap=0.3)}
    words = {"": "", "cutout16": ", Cutout 16", "ricap0.3": ", RICAP (beta=0.3)"}
    for key in ["", "cutout16", "ricap0.3"]:
        for (ep, tm), err in zip(w4, res[key]):
            row("resnet_preact20_w4_cifar10%s_e%d" % ("_" + key if key else "", ep),
                S62, "ResNet-preact-20, widening factor 4%s, %d epochs"
                % (words[key], ep), "%s (1 run); %s (GTX 1080 Ti)" % (err, tm),
                Run("resnet_preact20_w4", batch=128, lr=0.2, epochs=ep,
                    schedule=COS0, aug=augs[key]),
                "Reference README note: cosine annealing with initial lr 0.2.")
    wrn = [("cutout16", dict(cutout=16), ", Cutout 16", "3.19", "6h35m", "3.07", "13h10m"),
           ("mixup1", dict(mixup=1.0), ", mixup (alpha=1)", "3.32", "6h35m", "3.04", "13h08m"),
           ("ricap0.3", dict(ricap=0.3), ", RICAP (beta=0.3)", "2.83", "6h35m", "2.71", "13h08m"),
           ("dualcutout16", dict(dual_cutout=0.1), ", Dual-Cutout (alpha=0.1)", "2.87",
            "12h42m", "2.76", "25h20m")]
    for key, aug, word, e200, t200, e400, t400 in wrn:
        for ep, err, tm in [(200, e200, t200), (400, e400, t400)]:
            kw = dict(batch=64, lr=0.1) if key == "cutout16" else dict(batch=128, lr=0.2)
            notes = ["The reference README command for the Cutout rows uses batch 64, lr 0.1, "
                     "cosine."] if key == "cutout16" else [
                "Reference README note: cosine annealing with initial lr 0.2."]
            if key == "cutout16" and ep == 200:
                notes.append("Original reference README: 16h23m* on a GTX 980.")
            row("wrn28_10_cifar10_%s_e%d" % (key, ep), S62,
                "WRN-28-10%s, %d epochs" % (word, ep),
                "%s (1 run); %s (GTX 1080 Ti)" % (err, tm),
                Run("wrn28_10", epochs=ep, schedule=COS0, aug=aug, **kw), *notes)
    shake = [("shake_shake26_2x64d", "cutout16", "2.64", "78h55m* (GTX 980)"),
             ("shake_shake26_2x64d", "mixup1", "2.63", "35h56m"),
             ("shake_shake26_2x64d", "ricap0.3", "2.29", "35h10m"),
             ("shake_shake26_2x64d", "dualcutout16", "2.64", "68h34m"),
             ("shake_shake26_2x96d", "cutout16", "2.50", "60h20m"),
             ("shake_shake26_2x96d", "mixup1", "2.36", "60h20m"),
             ("shake_shake26_2x96d", "ricap0.3", "2.10", "60h20m"),
             ("shake_shake26_2x96d", "dualcutout16", "2.41", "113h09m"),
             ("shake_shake26_2x128d", "cutout16", "2.58", "85h04m"),
             ("shake_shake26_2x128d", "ricap0.3", "1.97", "85h06m")]
    augd = {k: a for k, a, *_ in wrn}
    wordd = {k: w for k, _, w, *_ in wrn}
    for tag, key, err, tm in shake:
        kw, notes = {}, ["Reference README note: cosine annealing with initial lr 0.2."]
        if tag == "shake_shake26_2x64d" and key == "cutout16":
            kw = dict(batch=64, lr=0.1)
            notes = ["The reference README command uses batch 64, lr 0.1 and 300 epochs while "
                     "the table says 1800: batch and lr from the command, epochs "
                     "from the table."]
        if "GTX" not in tm:
            tm += " (GTX 1080 Ti)"
        row("%s_cifar10_%s_e1800" % (tag, key), S62,
            "%s%s, 1800 epochs" % (MODELS[tag][0].replace(" (S-S-I)", ""), wordd[key]),
            "%s (1 run); %s" % (err, tm),
            Run(tag, epochs=1800, schedule=COS0, aug=augd[key], **kw), *notes)


def section_6_3():
    for gpus, err, tm in [(1, "2.63", "3h41m"), (2, "2.71", "2h14m"),
                          (4, "2.89", "1h01m"), (8, "2.75", "34m")]:
        row("wrn28_10_cifar10_ricap_ddp%d" % gpus, S63,
            "WRN-28-10, RICAP (beta=0.3), batch %d per GPU x %d GPUs"
            % (512 // gpus, gpus), "%s (1 run); %s" % (err, tm),
            Run("wrn28_10", batch=512, lr=0.2, epochs=200, accum=gpus,
                schedule=("cosine", 1e-3), seed=0, aug=dict(ricap=0.3)),
            "Global batch 512; batch norm sees %d images, as one GPU of the run "
            "did: run it as one process, or with mpirun -np P where P x "
            "train.accum_steps = %d." % (512 // gpus, gpus),
            "Current reference code: cosine floor lr_min_factor 1e-3, seed 0. At that "
            "time it trained on 45k images and validated on a 5k split; dtrain "
            "trains on all 50k.")
    for gpus, lr, err, tm in [(1, 0.3, "2.71", "3h33m"), (2, 0.4, "2.68", "2h20m"),
                              (4, 0.6, "3.01", "1h24m"), (8, 0.8, "2.85", "43m")]:
        row("wrn28_10_cifar10_ricap_dp%d" % gpus, S63V1,
            "WRN-28-10, RICAP (beta=0.3), total batch %d on %d GPUs, lr %g"
            % (256 * gpus, gpus, lr), "%s (1 run); %s (excluding tests)" % (err, tm),
            Run("wrn28_10", batch=256 * gpus, lr=lr, epochs=200, accum=gpus,
                schedule=COS0, aug=dict(ricap=0.3)),
            "DataParallel splits the batch over the GPUs: batch norm sees 256 "
            "images (run as one process, or mpirun -np P with P x "
            "train.accum_steps = %d)." % gpus)


def _mnist_family(section, dataset, rows, time_note):
    for tag, key, ep, err, tm in rows:
        aug, word = {}, ""
        if key.startswith("cutout"):
            aug, word = dict(cutout=int(key[6:])), ", Cutout %s" % key[6:]
        elif key.startswith("mixup"):
            aug, word = dict(mixup=float(key[5:])), ", Mixup (alpha=%s)" % key[5:]
        elif key == "randomerasing":
            aug, word = dict(random_erasing=True), ", RandomErasing"
        row("%s_%s%s_e%d" % (tag, dataset, "_" + key if key else "", ep), section,
            "%s%s, %d epochs" % (MODELS[tag][0], word, ep),
            "%s; %s (%s)" % (err, tm, time_note),
            Run(tag, dataset=dataset, batch=128, lr=0.2, epochs=ep, schedule=COS0,
                aug=aug),
            "Cosine annealing with initial lr 0.2 (table %s setup)." % section[5:8])


def section_6_4_to_6_6():
    m3 = "median of 3 runs"
    _mnist_family(S64, "fashion_mnist", [
        ("resnet_preact20_w4", "cutout12", 200, "4.17 (1 run)", "1h32m"),
        ("resnet_preact20_w4", "cutout14", 200, "4.11 (1 run)", "1h32m"),
        ("resnet_preact50", "cutout12", 200, "4.45 (1 run)", "57m"),
        ("resnet_preact50", "cutout14", 200, "4.38 (1 run)", "57m"),
        ("resnet_preact50_w4", "cutout12", 200, "4.07 (1 run)", "3h37m"),
        ("resnet_preact50_w4", "cutout14", 200, "4.13 (1 run)", "3h39m"),
        ("shake_shake26_2x32d", "cutout12", 400, "4.08 (1 run)", "3h41m"),
        ("shake_shake26_2x32d", "cutout14", 400, "4.05 (1 run)", "3h39m"),
        ("shake_shake26_2x96d", "cutout12", 400, "3.72 (1 run)", "13h46m"),
        ("shake_shake26_2x96d", "cutout14", 400, "3.85 (1 run)", "13h39m"),
        ("shake_shake26_2x96d", "cutout12", 800, "3.65 (1 run)", "26h42m"),
        ("shake_shake26_2x96d", "cutout14", 800, "3.60 (1 run)", "26h42m"),
        ("resnet_preact20", "", 200, "5.04 (%s)" % m3, "26m"),
        ("resnet_preact20", "cutout6", 200, "4.84 (%s)" % m3, "26m"),
        ("resnet_preact20", "cutout8", 200, "4.64 (%s)" % m3, "26m"),
        ("resnet_preact20", "cutout10", 200, "4.74 (%s)" % m3, "26m"),
        ("resnet_preact20", "cutout12", 200, "4.68 (%s)" % m3, "26m"),
        ("resnet_preact20", "cutout14", 200, "4.64 (%s)" % m3, "26m"),
        ("resnet_preact20", "cutout16", 200, "4.49 (%s)" % m3, "26m"),
        ("resnet_preact20", "randomerasing", 200, "4.61 (%s)" % m3, "26m"),
        ("resnet_preact20", "mixup1", 200, "4.92 (%s)" % m3, "26m"),
        ("resnet_preact20", "mixup1", 400, "4.64 (%s)" % m3, "52m"),
    ], "GTX 1080 Ti")
    _mnist_family(S65, "mnist", [
        ("resnet_preact20", "", 100, "0.40 (%s)" % m3, "12m"),
        ("resnet_preact20", "cutout6", 100, "0.32 (%s)" % m3, "12m"),
        ("resnet_preact20", "cutout8", 100, "0.25 (%s)" % m3, "12m"),
        ("resnet_preact20", "cutout10", 100, "0.27 (%s)" % m3, "12m"),
        ("resnet_preact20", "cutout12", 100, "0.26 (%s)" % m3, "12m"),
        ("resnet_preact20", "cutout14", 100, "0.26 (%s)" % m3, "12m"),
        ("resnet_preact20", "cutout16", 100, "0.25 (%s)" % m3, "12m"),
        ("resnet_preact20", "mixup1", 100, "0.40 (%s)" % m3, "12m"),
        ("resnet_preact20", "mixup0.5", 100, "0.38 (%s)" % m3, "12m"),
        ("resnet_preact20_w4", "cutout14", 100, "0.26 (%s)" % m3, "45m"),
        ("resnet_preact50", "cutout14", 100, "0.29 (%s)" % m3, "28m"),
        ("resnet_preact50_w4", "cutout14", 100, "0.25 (%s)" % m3, "1h50m"),
        ("shake_shake26_2x96d", "cutout14", 100, "0.24 (%s)" % m3, "3h22m"),
    ], "GTX 1080 Ti; augmentation not stated, original MNIST defaults: no crop, no flip")
    _mnist_family(S66, "kmnist", [
        ("resnet_preact20", "cutout14", 200, "0.82 (median of 3 runs, best 0.67)", "24m"),
        ("resnet_preact20_w4", "cutout14", 200, "0.72 (median of 3 runs, best 0.67)",
         "1h30m"),
        ("pyramidnet110_a270", "cutout14", 200, "0.72 (median of 3 runs, best 0.70)",
         "10h05m"),
        ("shake_shake26_2x96d", "cutout14", 200, "0.66 (median of 3 runs, best 0.63)",
         "6h46m"),
    ], "GTX 1080 Ti; original KMNIST defaults: crop, no flip")


def section_6_7():
    ms = ("multistep", [80, 120], 0.1)
    units = [
        ("relu_preactsc", "w/ 1st ReLU, w/o last BN, preactivate shortcut after "
         "downsampling", False, False, "true,true,true", {}, "6.45", "95 min"),
        ("relu", "w/ 1st ReLU, w/o last BN", False, False, "true,false,false", {},
         "6.47", "95 min"),
        ("norelu", "w/o 1st ReLU, w/o last BN", True, False, "true,false,false", {},
         "6.14", "89 min"),
        ("relu_lastbn", "w/ 1st ReLU, w/ last BN", False, True, "true,false,false", {},
         "6.43", "104 min"),
        ("norelu_lastbn", "w/o 1st ReLU, w/ last BN", True, True, "true,false,false",
         {}, "5.85", "98 min"),
        ("norelu_lastbn_preactsc", "w/o 1st ReLU, w/ last BN, preactivate shortcut "
         "after downsampling", True, True, "true,true,true", {}, "6.27", "98 min"),
        ("norelu_lastbn_cosine", "w/o 1st ReLU, w/ last BN, Cosine annealing", True,
         True, "true,false,false", dict(schedule=COS0), "5.72", "98 min"),
        ("norelu_lastbn_cutout16", "w/o 1st ReLU, w/ last BN, Cutout", True, True,
         "true,false,false", dict(aug=dict(cutout=16)), "4.96", "98 min"),
        ("norelu_lastbn_randomerasing", "w/o 1st ReLU, w/ last BN, RandomErasing",
         True, True, "true,false,false", dict(aug=dict(random_erasing=True)), "5.22",
         "98 min"),
        ("norelu_lastbn_mixup1_e300", "w/o 1st ReLU, w/ last BN, Mixup (300 epochs)",
         True, True, "true,false,false",
         dict(aug=dict(mixup=1.0), epochs=300, schedule=("multistep", [150, 225], 0.1)),
         "5.11", "191 min"),
    ]
    for key, what, rfr, lastbn, stages, kw, err, tm in units:
        kw = dict(kw)
        kw.setdefault("schedule", ms)
        notes = ["base_lr 0.2, batch 128, wd 1e-4, the config's multistep 160 epochs "
                 "[80, 120] x 0.1 unless the row says otherwise."]
        if key.endswith("mixup1_e300"):
            notes.append("Milestones of the 300-epoch run not stated: [150, 225].")
        row("resnet_preact56_cifar10_unit_%s" % key, S67, "ResNet-preact-56, " + what,
            "%s (median of 5 runs); %s (GPU not stated)" % (err, tm),
            Run("resnet_preact56", lr=0.2, batch=128,
                model_keys=dict(remove_first_relu=rfr, add_last_bn=lastbn,
                                preact_stage=stages), **kw), *notes)


def _preact20(batch, lr, sched, epochs, aug=None, wd=None, optimizer="sgd",
              no_decay=False, accum=1):
    """The canonical name and Run of a ResNet-preact-20 CIFAR-10 experiment."""
    name = "resnet_preact20_cifar10_b%d_lr%s_%s_e%d" % (batch, _fmt(lr), sched, epochs)
    if optimizer == "lars":
        name = name.replace("_cifar10_", "_cifar10_lars_")
    if accum > 1:
        name += "_ghost%d" % (batch // accum)
    schedule = COS0 if sched == "cosine" else ("multistep", [epochs // 2,
                                                            epochs * 3 // 4], 0.1)
    kw = dict(batch=batch, lr=lr, epochs=epochs, schedule=schedule,
              optimizer=optimizer, no_decay=no_decay, accum=accum, aug=aug or {})
    if wd is not None:
        kw["wd"] = float(wd)
        if float(wd) != 1e-4:
            name += "_wd%s" % wd
    if no_decay:
        name += "_nobnwd"
    return name, Run("resnet_preact20", **kw)


def section_6_8():
    variants = [
        ("", "", {}, "7.60", "24m", "7.05", "49m"),
        ("_ls0.001", ", label smoothing (epsilon=0.001)", dict(label_smoothing=0.001),
         "7.51", "25m", "7.20", "49m"),
        ("_ls0.01", ", label smoothing (epsilon=0.01)", dict(label_smoothing=0.01),
         "7.21", "25m", "6.97", "49m"),
        ("_ls0.1", ", label smoothing (epsilon=0.1)", dict(label_smoothing=0.1),
         "7.57", "25m", "7.16", "49m"),
        ("_mixup1", ", mixup (alpha=1)", dict(mixup=1.0), "7.24", "26m", "6.66", "51m"),
        ("_ricap0.3_crop", ", RICAP (beta=0.3), w/ random crop",
         dict(ricap=0.3, ricap_crop=True), "6.88", "28m", "6.30", "56m"),
        ("_ricap0.3", ", RICAP (beta=0.3)", dict(ricap=0.3), "6.77", "28m", "6.19", "56m"),
        ("_dualcutout16", ", Dual-Cutout 16 (alpha=0.1)", dict(dual_cutout=0.1),
         "6.24", "45m", "5.55", "1h36m"),
    ]
    for suffix, word, aug, e200, t200, e400, t400 in variants:
        for ep, err, tm in [(200, e200, t200), (400, e400, t400)]:
            name, run = _preact20(128, 0.2, "cosine", ep, aug=aug)
            row(name + suffix, S68, "ResNet-preact-20%s, %d epochs" % (word, ep),
                "%s (median of 3 runs); %s (GTX 1080 Ti)" % (err, tm), run,
                "Cosine annealing with initial lr 0.2, batch 128.")


def _tables():
    section, sub = None, ""
    for line in TABLES.strip().splitlines():
        if line.startswith("== "):
            section, sub = line[3:], ""
        elif line.startswith("-- "):
            sub = line[3:].rstrip(":")
        else:
            yield section, sub, [c.strip() for c in line.split("|")]


SECTION_TITLE = {
    "6.9": "Table 6.9 batch size and learning rate (ResNet-preact-20, CIFAR-10, GTX 1080 Ti)",
    "6.10": "Table 6.10 LARS vs SGD (ResNet-preact-20, CIFAR-10, cosine)",
    "6.11": "Table 6.11 Ghost BN (ResNet-preact-20, CIFAR-10, cosine)",
    "6.12": "Table 6.12 no weight decay on BN (ResNet-preact-20, CIFAR-10, cosine, "
            "200 epochs)",
    "6.13": "Table 6.13 FP32 vs FP16 vs mixed precision (ResNet-preact-20, CIFAR-10, "
            "cosine, 200 epochs)",
}


def sections_6_9_to_6_13():
    skipped = 0
    for sec, sub, c in _tables():
        title = SECTION_TITLE[sec] + (": " + sub if sub else "")
        runs = "1 run"
        if sec == "6.9":
            b, lr, sched, ep, err, tm = c
            name, run = _preact20(int(b), float(lr), sched, int(ep))
            what = "batch %s, lr %s, %s, %s epochs" % (b, lr, sched, ep)
            notes = ["Multistep milestones of the 200-epoch runs are not stated: "
                     "[100, 150] x 0.1."] if sched == "multistep" else []
        elif sec == "6.10":
            opt, b, lr, sched, ep, err, tm = c
            runs = "median of 3 runs"
            if err.endswith("(1 run)"):
                err, runs = err[:-len("(1 run)")].strip(), "1 run"
            name, run = _preact20(int(b), float(lr), sched, int(ep),
                                  optimizer=opt.lower())
            what = "%s, batch %s, lr %s, %s, %s epochs" % (opt, b, lr, sched, ep)
            notes = (["LARS without a trust coefficient (docs/reference-experiments.md "
                      "\"Optimizers\"): lars_eta 0, eps "
                      "1e-9, threshold 1e-2, momentum 0.9, no Nesterov."]
                     if opt == "LARS" else [])
        elif sec == "6.11":
            b, ghost, lr, sched, ep, err, tm = c
            accum = 1 if ghost == "N/A" else int(b) // int(ghost)
            name, run = _preact20(int(b), float(lr), sched, int(ep), accum=accum)
            what = "batch %s, ghost batch %s, lr %s, %s, %s epochs" % (b, ghost, lr,
                                                                     sched, ep)
            notes = (["Ghost batch norm: train.accum_steps = %d micro-batches of %s "
                      "(with mpirun -np P, P x accum_steps = %d)." % (accum, ghost, accum)]
                     if accum > 1 else [])
            if b == "8192" and ghost == "N/A" and ep == "200":
                notes.append("The 8192 FP32 run is the V100 row of table 6.13 (25m*).")
        elif sec == "6.12":
            wd_bn, wd, b, lr, sched, ep, err, tm = c
            runs = "median of 3 runs"
            name, run = _preact20(int(b), float(lr), sched, int(ep), wd=wd,
                                  no_decay=wd_bn == "no")
            what = "weight decay %s%s, batch %s, lr %s, %s, %s epochs" % (
                wd, " (not on BN)" if wd_bn == "no" else " (also on BN)", b, lr, sched, ep)
            notes = (["The original code spares parameters named *bn* and decays the FC "
                      "bias; optim.no_decay_bn_bias also spares the FC bias."]
                     if wd_bn == "no" else [])
        else:
            prec, b, lr, sched, ep, err, tm = c
            if prec != "FP32":
                skipped += 1
                continue
            name, run = _preact20(int(b), float(lr), sched, int(ep))
            what = "FP32, batch %s, lr %s, %s, %s epochs" % (b, lr, sched, ep)
            notes = []
        if sec == "6.9" and lr == "0.006125":
            notes.append("lr 0.006125 as printed; 0.1 x 8 / 128 = 0.00625 (probably a "
                         "reference README typo).")
        gpu = "Tesla V100" if (sec == "6.13" and "V100" in sub) or tm.endswith("*") \
            else "GTX 1080 Ti"
        published = ("%s (%s); %s (%s)" % (err, runs, tm.rstrip("*"), gpu)) if err \
            else "no published result"
        row(name, title, "ResNet-preact-20, " + what, published, run, *notes)
    return skipped


def resnext29_example():
    row("resnext29", "The resnext family config (\"Default hyperparameters\") and Table 6.1",
        "ResNeXt-29 8x64d on CIFAR-10 with the paper's batch: 8 ranks x 16 images",
        "Reference README 3.97 (1 run, batch 64 / lr 0.05 on one GPU: "
        "resnext29_8x64d_cifar10.ini); paper 3.65 (average of 10 runs, 8 GPUs x 16)",
        Run("resnext29_8x64d", seed=0),
        "Run: mpirun -np 8 ./dtrain configs/resnext29.ini (global batch 128: 16 per "
        "rank, batch norm per rank as in the paper and the reference's DDP).")


def build_all():
    section_6_1()
    section_6_2()
    section_6_3()
    section_6_4_to_6_6()
    section_6_7()
    section_6_8()
    skipped = sections_6_9_to_6_13()
    resnext29_example()
    files, by_body = {}, {}
    for r in ROWS:
        body = r.run.body()
        if body in by_body:
            name = by_body[body]
        else:
            name = r.name
            if name in files:
                raise ValueError("%s: two different settings under one name" % name)
            by_body[body] = name
            files[name] = dict(body=body, rows=[], run=r.run)
        # A row printed twice in one reference README table is listed once.
        if not any((o.section, o.what, o.published) == (r.section, r.what, r.published)
                   for o in files[name]["rows"]):
            files[name]["rows"].append(r)
    return files, skipped


def _wrap(text, width=96):
    out, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            out.append(line)
            line = word
        else:
            line = (line + " " + word) if line else word
    if line:
        out.append(line)
    return out


def render(name, f):
    lines = []
    for i, r in enumerate(f["rows"]):
        if i:
            lines.append("")
        lines += _wrap("%s: %s." % (r.section, r.what))
        lines += _wrap("Published test error (%%, last epoch): %s." % r.published)
        for n in r.notes:
            lines += _wrap(n)
    lines.append("")
    lines += _wrap("Settings: the model's config (docs/reference-experiments.md \"Default "
                   "hyperparameters\") with the row's changes, as the code generation that "
                   "produced the number ran it (the original code unless noted; \"Code "
                   "generations\"); tools/dtrain_tools/make_configs.py lists the choices made where the "
                   "published setup is silent. Tables: \"Published results\".")
    params = f["run"].params()
    if params is not None:
        lines.append("params: %d" % params)
    lines.append("run: ./dtrain configs/%s.ini" % name)
    text = "".join("; %s\n" % l if l else ";\n" for l in lines)
    return text + "\n" + f["body"] + "\n[output]\ndir = runs/%s\n" % name


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "configs"))
    ap.add_argument("--check", action="store_true",
                    help="list files that differ or are missing; write nothing")
    args = ap.parse_args(argv)
    files, skipped = build_all()
    differ = 0
    for name, f in sorted(files.items()):
        path = os.path.join(args.out_dir, name + ".ini")
        text = render(name, f)
        if args.check:
            old = open(path).read() if os.path.exists(path) else None
            if old != text:
                differ += 1
                print("differs: %s" % path)
            continue
        with open(path, "w") as out:
            out.write(text)
    print("%d configs for %d published rows (%d FP16/mixed rows left out)"
          % (len(files), len(ROWS), skipped))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
