"""Independent PyTorch references of every dtrain model family, as
docs/reference-experiments.md "Models" describes them (current reference code).

Written from that description, not from the upstream code, so that dtrain's C
models can be checked against a second implementation: ResNetPreact, ResNet,
WRN, DenseNet, PyramidNet, ResNeXt, ShakeShake, SEResNetPreact and VGG (one
section of that page each); build_model(family,
...) takes dtrain's model.name. They are used by make_golden.py and
make_golden_models.py (golden tensors for the C tests) and
torch_bench*.py (PyTorch training speed).

The module names are chosen so that state_dict keys match dtrain's parameter
names exactly, e.g. `conv.weight`, `stage1.block1.bn1.running_var`,
`stage2.block1.shortcut.conv.weight`, `stage1.transition.conv.weight`,
`stage1.block1.residual_path1.conv1.weight`,
`stage2.block1.shortcut.skip.bn.weight`, `stage3.block2.se.fc1.weight`,
`stage5.conv2.bias`, `bn.weight`, `fc.bias`.

Run `tools/dtrain-tool torch-models --check` for a self-check
(parameter counts against docs/reference-experiments.md "Common conventions",
key names, output shapes).
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
        # Projection only when the channel count changes (docs/reference-experiments.md
        # "ResNet-preact"); a stride-2 block always changes channels in this family.
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
            # sees the pre-activated tensor (docs/reference-experiments.md "ResNet-preact").
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
        # Stage 1 keeps c0 channels even for bottleneck (a quirk of the reference code,
        # docs/reference-experiments.md "ResNet").
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
        """Current reference initializer (docs/reference-experiments.md
        "Common conventions"): Kaiming-normal (ReLU gain) for conv
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


# ---------------------------------------------------------------------------
# The other families (docs/reference-experiments.md "VGG"). Module names give the
# same state_dict keys as dtrain's builders (src/models/<family>.c).
# ---------------------------------------------------------------------------

def _init_weights(model, init_mode="fan_out", keep_conv_bias=True):
    """Current reference initializer (docs/reference-experiments.md
    "Common conventions") for any family: Kaiming-normal (ReLU gain)
    conv and linear weights with the given fan, linear bias 0, BN 1/0. A conv
    bias (VGG only) keeps PyTorch's default U(+-1/sqrt(fan_in)) ("Code generations")."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode=init_mode,
                                    nonlinearity="relu")
            if m.bias is not None and not keep_conv_bias:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, mode=init_mode,
                                    nonlinearity="relu")
            nn.init.zeros_(m.bias)


def _blocks_per_stage(depth, per, offset, what):
    if depth < per + offset or (depth - offset) % per != 0:
        raise ValueError("%s: depth %d is not %dn+%d" % (what, depth, per,
                                                          offset))
    return (depth - offset) // per


class _Sequence(nn.Module):
    """Children named block1..blockN (plus optional extra named children),
    applied in insertion order."""

    def __init__(self, named):
        super().__init__()
        for name, mod in named:
            self.add_module(name, mod)

    def forward(self, x):
        for mod in self.children():
            x = mod(x)
        return x


def _gap_fc(x, fc):
    return fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# ---- ResNet (post-activation) ----------------------------------------

class _ProjectionBN(nn.Module):
    """conv1x1(stride) -> BN shortcut: children `conv`, `bn`."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv = _conv(c_in, c_out, 1, stride)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x):
        return self.bn(self.conv(x))


class PostActBlock(nn.Module):
    """(conv -> BN -> ReLU) x (2 or 3, the last without ReLU), + shortcut, ReLU.
    Basic: 3x3(s), 3x3. Bottleneck: 1x1, 3x3(s), 1x1 with width out/4."""

    def __init__(self, c_in, c_out, stride, bottleneck):
        super().__init__()
        if bottleneck:
            w = c_out // 4
            plan = [(c_in, w, 1, 1), (w, w, 3, stride), (w, c_out, 1, 1)]
        else:
            plan = [(c_in, c_out, 3, stride), (c_out, c_out, 3, 1)]
        self.n = len(plan)
        for i, (a, b, k, s) in enumerate(plan, 1):
            self.add_module("conv%d" % i, _conv(a, b, k, s))
            self.add_module("bn%d" % i, nn.BatchNorm2d(b))
        self.shortcut = (_ProjectionBN(c_in, c_out, stride) if c_in != c_out
                         else nn.Identity())

    def forward(self, x):
        y = x
        for i in range(1, self.n + 1):
            y = getattr(self, "bn%d" % i)(getattr(self, "conv%d" % i)(y))
            if i < self.n:
                y = F.relu(y)
        return F.relu(y + self.shortcut(x))


class ResNet(nn.Module):
    """conv -> BN -> ReLU -> 3 stages -> GAP -> FC (docs/reference-experiments.md "ResNet")."""

    def __init__(self, depth=110, block_type="basic", in_channels=3,
                 n_classes=10, initial_channels=16, init_mode="fan_out"):
        super().__init__()
        bottleneck = block_type == "bottleneck"
        n = _blocks_per_stage(depth, 9 if bottleneck else 6, 2, "resnet")
        e = 4 if bottleneck else 1
        c0 = initial_channels
        chans = [c0, 2 * c0 * e, 4 * c0 * e]
        self.conv = _conv(in_channels, c0, 3, 1)
        self.bn = nn.BatchNorm2d(c0)
        c_prev = c0
        for s, c in enumerate(chans):
            blocks = [("block%d" % (i + 1),
                       PostActBlock(c_prev if i == 0 else c, c,
                                    (1 if s == 0 else 2) if i == 0 else 1,
                                    bottleneck)) for i in range(n)]
            self.add_module("stage%d" % (s + 1), _Sequence(blocks))
            c_prev = c
        self.fc = nn.Linear(chans[2], n_classes)
        _init_weights(self, init_mode)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        x = self.stage3(self.stage2(self.stage1(x)))
        return _gap_fc(x, self.fc)


# ---- WRN ----------------------------------------------------------------

class WideBlock(nn.Module):
    """BN1-ReLU -> conv3x3(s) -> [dropout] -> BN2-ReLU -> conv3x3, + shortcut.
    When channels change the pre-activated input feeds both paths."""

    def __init__(self, c_in, c_out, stride, drop_rate):
        super().__init__()
        self.drop_rate = drop_rate
        self.project = c_in != c_out
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = _conv(c_in, c_out, 3, stride)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = _conv(c_out, c_out, 3, 1)
        if self.project:
            self.shortcut = _Shortcut(c_in, c_out, stride)

    def forward(self, x):
        a = F.relu(self.bn1(x))
        y = self.conv1(a)
        if self.drop_rate > 0:
            # Reference code: dropout on the conv1 output, before BN2 (docs/reference-experiments.md
            # "WRN")
            y = F.dropout(y, p=self.drop_rate, training=self.training)
        y = self.conv2(F.relu(self.bn2(y)))
        return y + (self.shortcut(a) if self.project else x)


class WRN(nn.Module):
    """conv -> 3 stages of wide blocks -> BN -> ReLU -> GAP -> FC
    (docs/reference-experiments.md "WRN")."""

    def __init__(self, depth=28, widening_factor=10, drop_rate=0.0,
                 in_channels=3, n_classes=10, initial_channels=16,
                 init_mode="fan_in"):
        super().__init__()
        n = _blocks_per_stage(depth, 6, 4, "wrn")
        c0, k = initial_channels, widening_factor
        chans = [c0 * k, 2 * c0 * k, 4 * c0 * k]
        self.conv = _conv(in_channels, c0, 3, 1)
        c_prev = c0
        for s, c in enumerate(chans):
            blocks = [("block%d" % (i + 1),
                       WideBlock(c_prev if i == 0 else c, c,
                                 (1 if s == 0 else 2) if i == 0 else 1,
                                 drop_rate)) for i in range(n)]
            self.add_module("stage%d" % (s + 1), _Sequence(blocks))
            c_prev = c
        self.bn = nn.BatchNorm2d(chans[2])
        self.fc = nn.Linear(chans[2], n_classes)
        _init_weights(self, init_mode)

    def forward(self, x):
        x = self.stage3(self.stage2(self.stage1(self.conv(x))))
        return _gap_fc(F.relu(self.bn(x)), self.fc)


# ---- DenseNet ---------------------------------------------------------

class DenseLayer(nn.Module):
    """Appends k channels: [BN1-ReLU-conv1x1(4k)-drop] BN-ReLU-conv3x3(k)-drop.
    Children bn/conv (basic) or bn1/conv1/bn2/conv2 (bottleneck)."""

    def __init__(self, c_in, k, bottleneck, drop_rate):
        super().__init__()
        self.bottleneck, self.drop_rate = bottleneck, drop_rate
        if bottleneck:
            self.bn1 = nn.BatchNorm2d(c_in)
            self.conv1 = _conv(c_in, 4 * k, 1, 1)
            self.bn2 = nn.BatchNorm2d(4 * k)
            self.conv2 = _conv(4 * k, k, 3, 1)
        else:
            self.bn = nn.BatchNorm2d(c_in)
            self.conv = _conv(c_in, k, 3, 1)

    def _drop(self, y):
        if self.drop_rate > 0:
            y = F.dropout(y, p=self.drop_rate, training=self.training)
        return y

    def forward(self, x):
        if self.bottleneck:
            y = self._drop(self.conv1(F.relu(self.bn1(x))))
            y = self._drop(self.conv2(F.relu(self.bn2(y))))
        else:
            y = self._drop(self.conv(F.relu(self.bn(x))))
        return torch.cat([x, y], dim=1)


class Transition(nn.Module):
    """BN-ReLU-conv1x1(-> floor(theta C))-[drop]-avgpool 2x2/2."""

    def __init__(self, c_in, c_out, drop_rate):
        super().__init__()
        self.drop_rate = drop_rate
        self.bn = nn.BatchNorm2d(c_in)
        self.conv = _conv(c_in, c_out, 1, 1)

    def forward(self, x):
        y = self.conv(F.relu(self.bn(x)))
        if self.drop_rate > 0:
            y = F.dropout(y, p=self.drop_rate, training=self.training)
        return F.avg_pool2d(y, 2)


class DenseNet(nn.Module):
    """conv(2k) -> 3 dense stages with transitions -> BN -> ReLU -> GAP -> FC
    (docs/reference-experiments.md "DenseNet"). The transition is the child
    `transition` of stages 1-2."""

    def __init__(self, depth=100, block_type="bottleneck", growth_rate=12,
                 compression_rate=0.5, drop_rate=0.0, in_channels=3,
                 n_classes=10, init_mode="fan_out"):
        super().__init__()
        bottleneck = block_type == "bottleneck"
        n = _blocks_per_stage(depth, 6 if bottleneck else 3, 4, "densenet")
        k = growth_rate
        c = 2 * k
        self.conv = _conv(in_channels, c, 3, 1)
        for s in range(3):
            named = []
            for i in range(n):
                named.append(("block%d" % (i + 1),
                              DenseLayer(c, k, bottleneck, drop_rate)))
                c += k
            if s < 2:
                out = int(c * compression_rate)
                named.append(("transition", Transition(c, out, drop_rate)))
                c = out
            self.add_module("stage%d" % (s + 1), _Sequence(named))
        self.bn = nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, n_classes)
        _init_weights(self, init_mode)

    def forward(self, x):
        x = self.stage3(self.stage2(self.stage1(self.conv(x))))
        return _gap_fc(F.relu(self.bn(x)), self.fc)


# ---- PyramidNet ---------------------------------------------------------

class PyramidBlock(nn.Module):
    """BN1 -> convs (no first ReLU) -> last BN, + (avg-pooled) input with zero
    channels appended."""

    def __init__(self, c_in, c_out, stride, bottleneck):
        super().__init__()
        self.stride = stride
        self.bn1 = nn.BatchNorm2d(c_in)
        if bottleneck:
            w = c_out // 4
            plan = [(c_in, w, 1, 1), (w, w, 3, stride), (w, c_out, 1, 1)]
        else:
            plan = [(c_in, c_out, 3, stride), (c_out, c_out, 3, 1)]
        self.n = len(plan)
        for i, (a, b, k, s) in enumerate(plan, 1):
            self.add_module("conv%d" % i, _conv(a, b, k, s))
            self.add_module("bn%d" % (i + 1), nn.BatchNorm2d(b))

    def forward(self, x):
        y = self.bn1(x)
        for i in range(1, self.n + 1):
            y = getattr(self, "bn%d" % (i + 1))(getattr(self, "conv%d" % i)(y))
            if i < self.n:
                y = F.relu(y)
        s = F.avg_pool2d(x, 2) if self.stride > 1 else x
        extra = y.shape[1] - s.shape[1]
        if extra:
            zeros = s.new_zeros(s.shape[0], extra, s.shape[2], s.shape[3])
            s = torch.cat([s, zeros], dim=1)
        return y + s


def pyramid_widths(initial_channels, alpha, n_blocks_total):
    """Unrounded widths accumulated in float64, each rounded half-to-even."""
    c, out = float(initial_channels), []
    for _ in range(n_blocks_total):
        c = c + alpha / n_blocks_total
        out.append(int(round(c)))  # Python's round is half-to-even, as numpy's
    return out


class PyramidNet(nn.Module):
    """conv -> BN -> 3 stages -> BN -> ReLU -> GAP -> FC
    (docs/reference-experiments.md "PyramidNet"); the stem
    stays initial_channels for both block types (current reference code, "Code generations")."""

    def __init__(self, depth=110, block_type="basic", alpha=270,
                 in_channels=3, n_classes=10, initial_channels=16,
                 init_mode="fan_out"):
        super().__init__()
        bottleneck = block_type == "bottleneck"
        n = _blocks_per_stage(depth, 9 if bottleneck else 6, 2, "pyramidnet")
        e = 4 if bottleneck else 1
        widths = [w * e for w in pyramid_widths(initial_channels, alpha, 3 * n)]
        self.conv = _conv(in_channels, initial_channels, 3, 1)
        self.bn1 = nn.BatchNorm2d(initial_channels)
        c_prev, j = initial_channels, 0
        for s in range(3):
            blocks = []
            for i in range(n):
                stride = 2 if s > 0 and i == 0 else 1
                blocks.append(("block%d" % (i + 1),
                               PyramidBlock(c_prev, widths[j], stride,
                                            bottleneck)))
                c_prev = widths[j]
                j += 1
            self.add_module("stage%d" % (s + 1), _Sequence(blocks))
        self.bn2 = nn.BatchNorm2d(c_prev)
        self.fc = nn.Linear(c_prev, n_classes)
        _init_weights(self, init_mode)

    def forward(self, x):
        x = self.bn1(self.conv(x))
        x = self.stage3(self.stage2(self.stage1(x)))
        return _gap_fc(F.relu(self.bn2(x)), self.fc)


# ---- ResNeXt ---------------------------------------------------------

class ResNeXtBlock(nn.Module):
    """conv1x1 BN ReLU grouped conv3x3(s) BN ReLU conv1x1 BN, + shortcut, ReLU."""

    def __init__(self, c_in, c_out, stride, width, cardinality):
        super().__init__()
        self.conv1 = _conv(c_in, width, 1, 1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1,
                               groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv(width, c_out, 1, 1)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.shortcut = (_ProjectionBN(c_in, c_out, stride) if c_in != c_out
                         else nn.Identity())

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + self.shortcut(x))


class ResNeXt(nn.Module):
    """conv(c0) -> BN -> ReLU -> stages 4c0/8c0/16c0 -> GAP -> FC
    (docs/reference-experiments.md "ResNeXt")."""

    def __init__(self, depth=29, cardinality=8, base_channels=64,
                 in_channels=3, n_classes=10, initial_channels=64,
                 init_mode="fan_out"):
        super().__init__()
        n = _blocks_per_stage(depth, 9, 2, "resnext")
        c0 = initial_channels
        self.conv = _conv(in_channels, c0, 3, 1)
        self.bn = nn.BatchNorm2d(c0)
        c_prev = c0
        for s in range(3):
            c = 4 * c0 * 2 ** s
            width = cardinality * base_channels * 2 ** s
            blocks = [("block%d" % (i + 1),
                       ResNeXtBlock(c_prev if i == 0 else c, c,
                                    (1 if s == 0 else 2) if i == 0 else 1,
                                    width, cardinality)) for i in range(n)]
            self.add_module("stage%d" % (s + 1), _Sequence(blocks))
            c_prev = c
        self.fc = nn.Linear(c_prev, n_classes)
        _init_weights(self, init_mode)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        x = self.stage3(self.stage2(self.stage1(x)))
        return _gap_fc(x, self.fc)


# ---- Shake-shake ---------------------------------------------------------

class _ShakeFunction(torch.autograd.Function):
    """y = alpha a + (1 - alpha) b; backward: beta g to a, (1 - beta) g to b."""

    @staticmethod
    def forward(ctx, a, b, alpha, beta):
        ctx.save_for_backward(beta)
        return alpha * a + (1 - alpha) * b

    @staticmethod
    def backward(ctx, g):
        (beta,) = ctx.saved_tensors
        return beta * g, (1 - beta) * g, None, None


class _ResidualPath(nn.Module):
    """ReLU -> conv3x3(s) -> BN -> ReLU -> conv3x3 -> BN (ReLUs not in place)."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = _conv(c_in, c_out, 3, stride)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = _conv(c_out, c_out, 3, 1)
        self.bn2 = nn.BatchNorm2d(c_out)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(F.relu(x))))
        return self.bn2(self.conv2(y))


class _Skip(nn.Module):
    """ReLU, then [subsample -> conv1x1(out/2)] ++ [shift up-left by one
    pixel, zero fill -> subsample -> conv1x1(out/2)] -> BN."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.stride = stride
        self.conv1 = _conv(c_in, c_out // 2, 1, 1)
        self.conv2 = _conv(c_in, c_out // 2, 1, 1)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x):
        r = F.relu(x)
        s = self.stride
        p1 = self.conv1(r[:, :, ::s, ::s])
        shifted = torch.zeros_like(r)
        shifted[:, :, :-1, :-1] = r[:, :, 1:, 1:]
        p2 = self.conv2(shifted[:, :, ::s, ::s])
        return self.bn(torch.cat([p1, p2], dim=1))


class _SkipHolder(nn.Module):
    """Gives the projection the state_dict prefix `shortcut.skip.`."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.skip = _Skip(c_in, c_out, stride)

    def forward(self, x):
        return self.skip(x)


class ShakeBlock(nn.Module):
    """Two residual paths mixed by shake-shake, + shortcut."""

    def __init__(self, c_in, c_out, stride, shake_forward, shake_backward,
                 shake_image):
        super().__init__()
        self.flags = (shake_forward, shake_backward, shake_image)
        self.residual_path1 = _ResidualPath(c_in, c_out, stride)
        self.residual_path2 = _ResidualPath(c_in, c_out, stride)
        self.shortcut = (_SkipHolder(c_in, c_out, stride) if c_in != c_out
                         else nn.Identity())

    def _coefficients(self, n, like):
        fwd, bwd, per_image = self.flags if self.training else (False,) * 3
        shape = (n, 1, 1, 1) if per_image else (1, 1, 1, 1)
        alpha = torch.rand(shape) if fwd else torch.full(shape, 0.5)
        beta = torch.rand(shape) if bwd else torch.full(shape, 0.5)
        return alpha.to(like), beta.to(like)

    def forward(self, x):
        a, b = self.residual_path1(x), self.residual_path2(x)
        alpha, beta = self._coefficients(x.shape[0], a)
        return self.shortcut(x) + _ShakeFunction.apply(a, b, alpha, beta)


class ShakeShake(nn.Module):
    """conv(16) -> BN -> stages C/2C/4C -> ReLU -> GAP -> FC
    (docs/reference-experiments.md "Shake-shake",
    current reference topology)."""

    def __init__(self, depth=26, initial_channels=96, shake_forward=True,
                 shake_backward=True, shake_image=True, in_channels=3,
                 n_classes=10, init_mode="fan_out"):
        super().__init__()
        n = _blocks_per_stage(depth, 6, 2, "shake_shake")
        c = initial_channels
        self.conv = _conv(in_channels, 16, 3, 1)
        self.bn = nn.BatchNorm2d(16)
        c_prev = 16
        for s, ch in enumerate([c, 2 * c, 4 * c]):
            blocks = [("block%d" % (i + 1),
                       ShakeBlock(c_prev if i == 0 else ch, ch,
                                  (1 if s == 0 else 2) if i == 0 else 1,
                                  shake_forward, shake_backward, shake_image))
                      for i in range(n)]
            self.add_module("stage%d" % (s + 1), _Sequence(blocks))
            c_prev = ch
        self.fc = nn.Linear(c_prev, n_classes)
        _init_weights(self, init_mode)

    def forward(self, x):
        x = self.bn(self.conv(x))
        x = self.stage3(self.stage2(self.stage1(x)))
        return _gap_fc(F.relu(x), self.fc)


# ---- SE-ResNet-preact -------------------------------------------------

class SELayer(nn.Module):
    """GAP -> fc1(C -> C//r) -> ReLU -> fc2 -> sigmoid -> scale channels."""

    def __init__(self, c, reduction):
        super().__init__()
        self.fc1 = nn.Linear(c, c // reduction)
        self.fc2 = nn.Linear(c // reduction, c)

    def forward(self, x):
        s = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * s[:, :, None, None]


class _SEWrap(nn.Module):
    """A ResNet-preact block with an SE layer on the branch before the add."""

    def __init__(self, inner, c_out, reduction):
        super().__init__()
        # Register the inner block's children directly so the keys stay
        # stage.block.bn1..., plus stage.block.se.fc1.
        for name, mod in inner.named_children():
            self.add_module(name, mod)
        self.se = SELayer(c_out, reduction)
        self._flags = (inner.remove_first_relu, inner.add_last_bn,
                       inner.preact, isinstance(inner, BottleneckBlock))

    def forward(self, x):
        remove_first_relu, add_last_bn, preact, bottleneck = self._flags
        if preact:
            a = F.relu(self.bn1(x))
            r, s = a, a
        else:
            r = self.bn1(x)
            if not remove_first_relu:
                r = F.relu(r)
            s = x
        y = self.conv1(r)
        y = self.conv2(F.relu(self.bn2(y)))
        if bottleneck:
            y = self.conv3(F.relu(self.bn3(y)))
            if add_last_bn:
                y = self.bn4(y)
        elif add_last_bn:
            y = self.bn3(y)
        return self.se(y) + self.shortcut(s)


class SEResNetPreact(nn.Module):
    """ResNet-preact with SE layers (docs/reference-experiments.md
    "ResNet-preact", "SE-ResNet-preact"); always fan_out."""

    def __init__(self, depth=110, block_type="basic", se_reduction=16,
                 in_channels=3, n_classes=10, initial_channels=16,
                 remove_first_relu=True, add_last_bn=True,
                 preact_stage=(True, False, False)):
        super().__init__()
        base = ResNetPreact(depth, block_type, in_channels, n_classes,
                            initial_channels, remove_first_relu, add_last_bn,
                            preact_stage)
        self.conv = base.conv
        for s in range(3):
            stage = getattr(base, "stage%d" % (s + 1))
            blocks = []
            for i in range(stage.n_blocks):
                inner = getattr(stage, "block%d" % (i + 1))
                c_out = inner.conv2.out_channels if block_type == "basic" \
                    else inner.conv3.out_channels
                blocks.append(("block%d" % (i + 1),
                               _SEWrap(inner, c_out, se_reduction)))
            self.add_module("stage%d" % (s + 1), _Sequence(blocks))
        self.bn = base.bn
        self.fc = base.fc
        _init_weights(self, "fan_out")

    def forward(self, x):
        x = self.stage3(self.stage2(self.stage1(self.conv(x))))
        return _gap_fc(F.relu(self.bn(x)), self.fc)


# ---- VGG --------------------------------------------------------------

class VGGStage(nn.Module):
    """(conv3x3 with bias -> [BN] -> ReLU) x n -> max-pool 2x2/2; children
    conv0.., bn0.. (0-based)."""

    def __init__(self, c_in, c_out, n_layers, use_bn):
        super().__init__()
        self.n, self.use_bn = n_layers, use_bn
        for i in range(n_layers):
            self.add_module("conv%d" % i, nn.Conv2d(c_in if i == 0 else c_out,
                                                    c_out, 3, padding=1))
            if use_bn:
                self.add_module("bn%d" % i, nn.BatchNorm2d(c_out))

    def forward(self, x):
        for i in range(self.n):
            x = getattr(self, "conv%d" % i)(x)
            if self.use_bn:
                x = getattr(self, "bn%d" % i)(x)
            x = F.relu(x)
        return F.max_pool2d(x, 2)


class VGG(nn.Module):
    """stage1..stageS -> flatten -> FC (docs/reference-experiments.md "VGG",
    a ReLU after every conv)."""

    def __init__(self, channels=(64, 128, 256, 512, 512),
                 layers=(2, 2, 3, 3, 3), use_bn=True, in_channels=3,
                 n_classes=10, image_size=32, init_mode="fan_out"):
        super().__init__()
        c_prev = in_channels
        for s, (c, n) in enumerate(zip(channels, layers)):
            self.add_module("stage%d" % (s + 1), VGGStage(c_prev, c, n, use_bn))
            c_prev = c
        self.n_stages = len(channels)
        side = image_size >> self.n_stages
        self.fc = nn.Linear(c_prev * side * side, n_classes)
        _init_weights(self, init_mode)

    def forward(self, x):
        for s in range(self.n_stages):
            x = getattr(self, "stage%d" % (s + 1))(x)
        return self.fc(torch.flatten(x, 1))


FAMILIES = {
    "resnet_preact": ResNetPreact, "resnet": ResNet, "wrn": WRN,
    "densenet": DenseNet, "pyramidnet": PyramidNet, "resnext": ResNeXt,
    "shake_shake": ShakeShake, "se_resnet_preact": SEResNetPreact, "vgg": VGG,
}


def build_model(family, **kw):
    """The reference model of a dtrain model.name with keyword settings."""
    return FAMILIES[family](**kw)


# docs/reference-experiments.md "Common conventions" parameter-count table (current reference code,
# 3x32x32, 10 classes).
PUBLISHED_COUNTS = [
    ("VGG-15 BN", "vgg", {}, 14728266),
    ("ResNet-20", "resnet", dict(depth=20), 272474),
    ("ResNet-56", "resnet", dict(depth=56), 855770),
    ("ResNet-110", "resnet", dict(depth=110), 1730714),
    ("SE-ResNet-preact-110", "se_resnet_preact", dict(depth=110), 1748792),
    ("WRN-28-10", "wrn", dict(depth=28, widening_factor=10), 36479194),
    ("DenseNet-BC-100 k=12", "densenet", dict(depth=100), 769162),
    ("DenseNet-100 k=12", "densenet", dict(depth=100, block_type="basic",
                                           compression_rate=1.0), 7083538),
    ("DenseNet-BC-250 k=24", "densenet", dict(depth=250, growth_rate=24),
     15324406),
    ("DenseNet-BC-190 k=40", "densenet", dict(depth=190, growth_rate=40),
     25624430),
    ("PyramidNet-110 a84", "pyramidnet", dict(depth=110, alpha=84), 3904446),
    ("PyramidNet-110 a270", "pyramidnet", dict(depth=110, alpha=270),
     28485477),
    ("PyramidNet-164 bottleneck a270", "pyramidnet",
     dict(depth=164, block_type="bottleneck", alpha=270), 27216021),
    ("PyramidNet-272 bottleneck a200", "pyramidnet",
     dict(depth=272, block_type="bottleneck", alpha=200), 26210842),
    ("ResNeXt-29 4x64d", "resnext", dict(cardinality=4), 17562442),
    ("ResNeXt-29 8x64d", "resnext", dict(cardinality=8), 34426698),
    ("ResNeXt-29 16x64d", "resnext", dict(cardinality=16), 68155210),
    ("shake-shake-26 2x32d", "shake_shake", dict(initial_channels=32),
     2923162),
    ("shake-shake-26 2x64d", "shake_shake", dict(initial_channels=64),
     11653978),
    ("shake-shake-26 2x96d", "shake_shake", dict(initial_channels=96),
     26192922),
    ("shake-shake-26 2x128d", "shake_shake", dict(initial_channels=128),
     46539994),
]


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

    # 1-channel input: subtract 2*9*16 (docs/reference-experiments.md "Common conventions" rule).
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
    # The other families against docs/reference-experiments.md "Common conventions", plus a forward
    # on a small batch.
    for label, family, kw, want in PUBLISHED_COUNTS:
        m = build_model(family, **kw)
        expect("params " + label, count_params(m), want)
    for family, kw in [("vgg", dict(channels=(8, 8, 16, 16, 16))),
                       ("resnet", dict(depth=20)), ("wrn", dict(depth=10, widening_factor=2)),
                       ("densenet", dict(depth=22, growth_rate=4)),
                       ("pyramidnet", dict(depth=11, block_type="bottleneck", alpha=12)),
                       ("resnext", dict(depth=11, cardinality=2, base_channels=4,
                                        initial_channels=8)),
                       ("shake_shake", dict(depth=8, initial_channels=8)),
                       ("se_resnet_preact", dict(depth=20))]:
        m = build_model(family, **kw).train()
        y = m(torch.randn(2, 3, 32, 32))
        expect("  %s output shape" % family, tuple(y.shape), (2, 10))
    # 100 classes add 90 (C_last + 1); 1 channel removes 2 x 9 x C_stem.
    expect("WRN-28-10, 100 classes",
           count_params(WRN(28, 10, n_classes=100)), 36479194 + 90 * 641)
    expect("DenseNet-BC-100, 1 channel",
           count_params(DenseNet(100, in_channels=1)), 769162 - 2 * 9 * 24)
    expect("PyramidNet-110 a270, 1 channel",
           count_params(PyramidNet(110, alpha=270, in_channels=1)),
           28485477 - 2 * 9 * 16)
    sk = ShakeShake(26, 32).state_dict().keys()
    for k in ["stage1.block1.residual_path1.conv1.weight",
              "stage1.block1.shortcut.skip.conv2.weight",
              "stage2.block1.shortcut.skip.bn.running_var"]:
        expect("shake key " + k, k in sk, True)
    dk = DenseNet(100).state_dict().keys()
    expect("densenet key stage1.transition.conv.weight",
           "stage1.transition.conv.weight" in dk, True)
    sek = SEResNetPreact(20).state_dict().keys()
    expect("se key stage3.block3.se.fc1.weight", "stage3.block3.se.fc1.weight" in sek, True)
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
