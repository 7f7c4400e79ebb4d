"""A tiny ResNeXt-style network of grouped convs (groups 2, 4, 8 and one of a single input channel
per group), for the grouped-conv tests of the CPU, CUDA and aarch64 builds: small enough to build
in seconds."""
from __future__ import annotations

import torch
from torch import nn

SHAPE = (3, 16, 8)   # (C, H, W) of its input


class Block(nn.Module):
    """1x1 -> grouped 3x3 (stride) -> 1x1, each with BN, ReLU between, plus a shortcut."""

    def __init__(self, cin: int, width: int, cout: int, groups: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.short = None if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return torch.relu(y + (x if self.short is None else self.short(x)))


class ResNeXtTiny(nn.Module):
    """stem -> block (16 wide, 4 groups) -> block (32 wide, 8 groups, stride 2) -> a grouped 3x3
    with bias (2 groups, 32 -> 24) -> a 1x1 of one input channel per group (24 -> 48, 24 groups:
    not depthwise) -> global average."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.block1 = Block(16, 16, 16, groups=4, stride=1)
        self.block2 = Block(16, 32, 32, groups=8, stride=2)
        self.mix = nn.Conv2d(32, 24, 3, 1, 1, groups=2, bias=True)
        self.expand = nn.Conv2d(24, 48, 1, groups=24, bias=True)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        y = self.block2(self.block1(self.stem(x)))
        y = self.expand(torch.relu(self.mix(y)))
        return torch.flatten(self.pool(y), 1)


def resnext_tiny(seed: int = 0) -> ResNeXtTiny:
    """Seeded weights and non-trivial BN statistics, in eval mode."""
    torch.manual_seed(seed)
    model = ResNeXtTiny()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
    return model.eval()
