"""BiRe-ID-style binarized ReID ResNets (ResNet-18/34, basic blocks, last stride 1, BNNeck).

Each 3x3 conv unit of a binarized stage is Bi-Real style with a real-valued shortcut:
    unit(x) = PReLU(BN_out(BinaryConv(sign(BN_in(x))))) + shortcut(x)
BinaryConv uses sign(W) * alpha (alpha: one learned scale per output channel, stored in the
checkpoint). sign(v) is +1 for v >= 0 and -1 otherwise (also for 0, as Larq does); training
uses the straight-through estimator. The stem conv and the BNNeck head stay real. Stages that
`ArchSpec.binary_stages` marks real use a float conv in the same unit. The downsample shortcut
is real (AvgPool 2x2 when strided, 1x1 conv, BN) or, with `binary_downsample`, a 1x1 binary
conv of sign(x) and a BN. Every BN is a CM-NAS `SwitchableBN`, so a binarized network can be
cross-modality too.
"""
from __future__ import annotations

import torch
from torch import nn

from .arch import ArchSpec, _stages
from .models import ReIDResNet, Stage, SwitchableBN


class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x.abs() <= 1).to(g.dtype)


@torch.fx.wrap
def binarize(x: torch.Tensor) -> torch.Tensor:
    """+1 where x >= 0, else -1; straight-through gradient inside [-1, 1]."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _SignSTE.apply(x)
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


class BinaryConv2d(nn.Conv2d):
    """conv(sign(x), sign(W) * alpha): 1-bit activations and weights, a real scale per output channel."""

    def __init__(self, cin, cout, kernel_size, stride=1, padding=0):
        super().__init__(cin, cout, kernel_size, stride, padding, bias=False)
        self.alpha = nn.Parameter(torch.ones(cout))

    def binary_weight(self) -> torch.Tensor:
        return binarize(self.weight) * self.alpha.view(-1, 1, 1, 1)

    def forward(self, x):
        return nn.functional.conv2d(binarize(x), self.binary_weight(), None, self.stride, self.padding)


class Unit(nn.Module):
    """BN_in -> sign -> (binary) conv -> BN_out -> PReLU, plus a real shortcut."""

    def __init__(self, cin, cout, stride, binary, split_of, prefix, shortcut=None):
        super().__init__()
        self.bn_in = SwitchableBN(cin, split_of[f"{prefix}.bn_in"])
        conv = BinaryConv2d if binary else nn.Conv2d
        self.conv = conv(cin, cout, 3, stride, 1) if binary else nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn_out = SwitchableBN(cout, split_of[f"{prefix}.bn_out"])
        self.act = nn.PReLU(cout, init=0.25)
        self.shortcut = shortcut

    def forward(self, x, m):
        y = self.act(self.bn_out(self.conv(self.bn_in(x, m)), m))
        return y + (x if self.shortcut is None else self.shortcut(x, m))


class Shortcut(nn.Module):
    def __init__(self, cin, cout, stride, binary, split):
        super().__init__()
        self.pool = nn.AvgPool2d(2, 2) if stride == 2 and not binary else None
        self.conv = BinaryConv2d(cin, cout, 1, stride) if binary else nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = SwitchableBN(cout, split)

    def forward(self, x, m):
        if self.pool is not None:
            x = self.pool(x)
        return self.bn(self.conv(x), m)


class Block(nn.Module):
    def __init__(self, cin, cout, stride, binary, split_of, prefix, shortcut):
        super().__init__()
        self.unit1 = Unit(cin, cout, stride, binary, split_of, f"{prefix}.unit1", shortcut)
        self.unit2 = Unit(cout, cout, 1, binary, split_of, f"{prefix}.unit2")

    def forward(self, x, m):
        return self.unit2(self.unit1(x, m), m)


class BiReResNet(ReIDResNet):
    def __init__(self, spec: ArchSpec):
        super().__init__(spec)
        split_of = spec.split_of()
        for stage, n, cin, cout, stride in _stages(spec.depth, 1):
            binary = spec.binary_stages[stage]
            prefix = f"layer{stage + 1}"
            sc = None
            if stride != 1 or cin != cout:
                sc = Shortcut(cin, cout, stride, binary and spec.binary_downsample,
                              split_of[f"{prefix}.0.unit1.shortcut.bn"])
            blocks = [Block(cin if b == 0 else cout, cout, stride if b == 0 else 1, binary, split_of,
                            f"{prefix}.{b}", sc if b == 0 else None) for b in range(n)]
            self.add_module(prefix, Stage(blocks))
        self.add_head(cout)
