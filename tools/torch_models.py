#!/usr/bin/python3
"""Independent PyTorch reference of ResNet-preact (SPEC §1.3, HEAD semantics).

Written from the specification, not from the upstream code, so that dtrain's C
model can be checked against a second implementation. It is used by
tools/make_golden.py (golden tensors for the C tests) and bench/torch_bench.py
(PyTorch training speed).

The module names are chosen so that state_dict keys match dtrain's parameter
names exactly, e.g. `conv.weight`, `stage1.block1.bn1.running_var`,
`stage2.block1.shortcut.conv.weight`, `bn.weight`, `fc.bias`.

Run `/usr/bin/python3 tools/torch_models.py --check` for a self-check
(parameter counts, key names, output shapes).
"""

import argparse
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F


def _conv(c_in, c_out, k, stride):
    # Every ResNet-preact conv is bias-free; 3x3 convs pad 1, 1x1 convs pad 0.
    return nn.Conv2d(c_in, c_out, kernel_size=k, stride=stride,
                     padding=k // 2, bias=False)


class _Shortcut(nn.Module):
    """Identity, or a strided 1x1 projection with no BN (child name `conv`)."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        # Projection only when the channel count changes (SPEC §1.3); a
        # stride-2 block always changes channels in this family.
        if c_in != c_out:
            self.conv = _conv(c_in, c_out, 1, stride)
        else:
            self.conv = None

    def forward(self, x):
        return x if self.conv is None else self.conv(x)


class BasicBlock(nn.Module):
    """BN1 -> [ReLU] -> conv3x3(s) -> BN2 -> ReLU -> conv3x3 -> [BN3], + shortcut."""

    expansion = 1

    def __init__(self, c_in, c_out, stride, remove_first_relu, add_last_bn,
                 preact):
        super().__init__()
        self.remove_first_relu = remove_first_relu
        self.add_last_bn = add_last_bn
        self.preact = preact
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = _conv(c_in, c_out, 3, stride)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = _conv(c_out, c_out, 3, 1)
        if add_last_bn:
            self.bn3 = nn.BatchNorm2d(c_out)
        self.shortcut = _Shortcut(c_in, c_out, stride)

    def _preactivate(self, x):
        # Returns (branch input, shortcut input).
        if self.preact:
            # The ReLU stays even with remove_first_relu, and the shortcut
            # sees the pre-activated tensor (SPEC §1.3).
            a = F.relu(self.bn1(x))
            return a, a
        r = self.bn1(x)
        if not self.remove_first_relu:
            r = F.relu(r)
        return r, x

    def forward(self, x):
        r, s = self._preactivate(x)
        y = self.conv1(r)
        y = self.conv2(F.relu(self.bn2(y)))
        if self.add_last_bn:
            y = self.bn3(y)
        # No ReLU after the addition in the pre-activation design.
        return y + self.shortcut(s)


class BottleneckBlock(BasicBlock):
    """BN1 -> [ReLU] -> 1x1 -> BN2 -> ReLU -> 3x3(s) -> BN3 -> ReLU -> 1x1 -> [BN4]."""

    expansion = 4

    def __init__(self, c_in, c_out, stride, remove_first_relu, add_last_bn,
                 preact):
        nn.Module.__init__(self)
        self.remove_first_relu = remove_first_relu
        self.add_last_bn = add_last_bn
        self.preact = preact
        width = c_out // self.expansion
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = _conv(c_in, width, 1, 1)
        self.bn2 = nn.BatchNorm2d(width)
        # The stride sits on the 3x3 conv in the bottleneck block.
        self.conv2 = _conv(width, width, 3, stride)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = _conv(width, c_out, 1, 1)
        if add_last_bn:
            self.bn4 = nn.BatchNorm2d(c_out)
        self.shortcut = _Shortcut(c_in, c_out, stride)

    def forward(self, x):
        r, s = self._preactivate(x)
        y = self.conv1(r)
        y = self.conv2(F.relu(self.bn2(y)))
        y = self.conv3(F.relu(self.bn3(y)))
        if self.add_last_bn:
            y = self.bn4(y)
        return y + self.shortcut(s)


class _Stage(nn.Module):
    """Blocks named block1..blockN; only block1 strides and may pre-activate."""

    def __init__(self, block, n_blocks, c_in, c_out, stride, remove_first_relu,
                 add_last_bn, preact):
        super().__init__()
        self.n_blocks = n_blocks
        for i in range(n_blocks):
            first = i == 0
            self.add_module(
                "block%d" % (i + 1),
                block(c_in if first else c_out, c_out, stride if first else 1,
                      remove_first_relu, add_last_bn, preact and first))

    def forward(self, x):
        for i in range(self.n_blocks):
            x = getattr(self, "block%d" % (i + 1))(x)
        return x


class ResNetPreact(nn.Module):
    """CIFAR-type ResNet-preact: conv -> stage1..3 -> BN -> ReLU -> GAP -> FC."""

    def __init__(self, depth=20, block_type="basic", in_channels=3,
                 n_classes=10, initial_channels=16, remove_first_relu=False,
                 add_last_bn=False, preact_stage=(True, True, True),
                 init_mode="fan_out"):
        super().__init__()
        if block_type == "basic":
            block, per = BasicBlock, 6
        elif block_type == "bottleneck":
            block, per = BottleneckBlock, 9
        else:
            raise ValueError("block_type must be basic or bottleneck, got %r"
                             % (block_type,))
        if depth < per + 2 or (depth - 2) % per != 0:
            raise ValueError("depth %d is not %dn+2 for %s blocks"
                             % (depth, per, block_type))
        if len(preact_stage) != 3:
            raise ValueError("preact_stage needs 3 values")
        n = (depth - 2) // per
        e = block.expansion
        # Stage 1 keeps c0 channels even for bottleneck (HEAD quirk, SPEC §1.2).
        chans = [initial_channels, 2 * initial_channels * e,
                 4 * initial_channels * e]

        self.conv = _conv(in_channels, chans[0], 3, 1)
        c_prev = chans[0]
        for s, (c, stride) in enumerate(zip(chans, (1, 2, 2))):
            self.add_module(
                "stage%d" % (s + 1),
                _Stage(block, n, c_prev, c, stride, remove_first_relu,
                       add_last_bn, bool(preact_stage[s])))
            c_prev = c
        self.bn = nn.BatchNorm2d(chans[2])
        self.fc = nn.Linear(chans[2], n_classes)
        self.reset_parameters(init_mode)

    def reset_parameters(self, init_mode="fan_out"):
        """HEAD initializer (SPEC §1.0): Kaiming-normal (ReLU gain) for conv
        and FC weights with the given fan mode, FC bias 0, BN gamma 1 beta 0.
        Running statistics are left at PyTorch's defaults (mean 0, var 1)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode=init_mode,
                                        nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, mode=init_mode,
                                        nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x):
        # x: (N, C, H, W)
        x = self.conv(x)
        x = self.stage3(self.stage2(self.stage1(x)))
        x = F.relu(self.bn(x))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (N, C_last)
        return self.fc(x)  # (N, n_classes)


def count_params(model):
    """Trainable parameter count (BN gamma/beta included, running stats not)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _self_check():
    ok = True

    def expect(what, got, want):
        nonlocal ok
        good = got == want
        ok = ok and good
        print("%-52s %12s  (want %s)%s" % (what, got, want,
                                           "" if good else "  FAIL"))

    torch.manual_seed(0)
    cases = [
        ("depth 20 basic", dict(depth=20), 272282),
        ("depth 56 basic, add_last_bn", dict(depth=56, add_last_bn=True),
         857594),
        ("depth 164 bottleneck", dict(depth=164, block_type="bottleneck"),
         1619290),
        ("depth 56 basic", dict(depth=56), 855578),
        ("depth 110 basic", dict(depth=110), 1730522),
        ("depth 20, initial_channels 64", dict(depth=20, initial_channels=64),
         4326986),
    ]
    for name, kw, want in cases:
        m = ResNetPreact(**kw)
        expect("params, 3x32x32, 10 classes, " + name, count_params(m), want)
        y = m(torch.randn(2, 3, 32, 32))
        expect("  output shape", tuple(y.shape), (2, 10))

    # 1-channel input: subtract 2*9*16 (SPEC §1.0 rule).
    m = ResNetPreact(depth=20, in_channels=1)
    expect("params, 1x28x28, depth 20", count_params(m), 272282 - 2 * 9 * 16)
    expect("  output shape", tuple(m(torch.randn(2, 1, 28, 28)).shape),
           (2, 10))

    keys = list(m.state_dict().keys())
    for k in ["conv.weight", "stage1.block1.bn1.weight",
              "stage1.block1.bn1.bias", "stage1.block1.bn1.running_mean",
              "stage1.block1.bn1.running_var", "stage1.block1.conv1.weight",
              "stage1.block1.bn2.weight", "stage1.block1.conv2.weight",
              "stage2.block1.shortcut.conv.weight",
              "stage3.block1.shortcut.conv.weight", "stage3.block3.conv2.weight",
              "bn.weight", "bn.running_var", "fc.weight", "fc.bias"]:
        expect("key " + k, k in keys, True)
    expect("no stage1 shortcut conv",
           any(k.startswith("stage1.") and "shortcut" in k for k in keys),
           False)
    expect("no bn3 without add_last_bn", any(".bn3." in k for k in keys),
           False)
    mb = ResNetPreact(depth=164, block_type="bottleneck", add_last_bn=True)
    kb = mb.state_dict().keys()
    expect("bottleneck key stage2.block1.bn4.weight",
           "stage2.block1.bn4.weight" in kb, True)
    expect("bottleneck conv3 shape",
           tuple(mb.state_dict()["stage2.block2.conv3.weight"].shape),
           (128, 32, 1, 1))
    # Kaiming fan_out on FC: std = sqrt(2 / n_classes) ~ 0.447.
    big = ResNetPreact(depth=20, n_classes=10, initial_channels=64)
    std = big.fc.weight.std().item()
    expect("fc weight std ~ 0.447 (|diff| < 0.02)", abs(std - 0.4472) < 0.02,
           True)
    print("self-check", "PASSED" if ok else "FAILED")
    return ok


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="run the self-check (parameter counts, key names)")
    args = ap.parse_args(argv)
    if args.check:
        return 0 if _self_check() else 1
    m = ResNetPreact()
    print(m)
    print("params:", count_params(m))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
