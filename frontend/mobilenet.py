"""MobileNetV2 as torchreid (torchreid/reid/models/mobilenetv2.py) and fast-reid
(fastreid/modeling/backbones/mobilenet.py) build it, each with its own parameter names, so
their state dicts load as saved: inverted residual blocks (1x1 expand, depthwise 3x3, 1x1
project), ReLU6 after the first two, the identity added where shape allows.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: (expansion t, channels c, blocks n, first stride s) per stage, in both toolboxes
STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
          (6, 320, 1, 1))
#: fast-reid's DEPTH values and their width multipliers
FASTREID_WIDTHS = {"1.0x": 1.0, "0.75x": 0.75, "0.5x": 0.5, "0.35x": 0.35, "0.25x": 0.25, "0.1x": 0.1}


class ConvBlock(nn.Module):
    """torchreid's: conv (no bias), BN, ReLU6."""

    def __init__(self, cin, cout, k, s=1, p=0, g=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=s, padding=p, bias=False, groups=g)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu6(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, cin, cout, t, stride=1):
        super().__init__()
        mid = cin * t
        self.use_residual = stride == 1 and cin == cout
        self.conv1 = ConvBlock(cin, mid, 1)
        self.dwconv2 = ConvBlock(mid, mid, 3, stride, 1, g=mid)
        self.conv3 = nn.Sequential(nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        m = self.conv3(self.dwconv2(self.conv1(x)))
        return x + m if self.use_residual else m


class TorchreidMobileNetV2(nn.Module):
    """torchreid's mobilenetv2_x1_0 / x1_4 (no fc): its eval output, the pooled feature."""

    def __init__(self, width: float):
        super().__init__()
        self.in_channels = int(32 * width)
        self.feature_dim = int(1280 * width) if width > 1 else 1280
        self.conv1 = ConvBlock(3, self.in_channels, 3, s=2, p=1)
        for k, (t, c, n, s) in enumerate(STAGES):
            layers = []
            for i in range(n):
                layers.append(Bottleneck(self.in_channels, int(c * width), t, s if i == 0 else 1))
                self.in_channels = int(c * width)
            setattr(self, f"conv{k + 2}", nn.Sequential(*layers))
        self.conv9 = ConvBlock(self.in_channels, self.feature_dim, 1)
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        x = self.conv1(x)
        for k in range(2, 10):
            x = getattr(self, f"conv{k}")(x)
        return torch.flatten(self.global_avgpool(x), 1)


def _make_divisible(v, divisor):
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _conv_bn(cin, cout, k, stride, relu6=True, groups=1):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return layers + [nn.ReLU6(inplace=True)] if relu6 else layers


class InvertedResidual(nn.Module):
    """fast-reid's block: `conv` a Sequential of (pw,) dw and pw-linear convs with their BNs."""

    def __init__(self, cin, cout, stride, t):
        super().__init__()
        hidden = round(cin * t)
        self.identity = stride == 1 and cin == cout
        layers = [] if t == 1 else _conv_bn(cin, hidden, 1, 1)
        layers += _conv_bn(hidden, hidden, 3, stride, groups=hidden) + _conv_bn(hidden, cout, 1, 1, relu6=False)
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.identity else self.conv(x)


class FastReIDMobileNetV2(nn.Module):
    """fast-reid's MobileNetV2 backbone: the last 1x1 conv's feature map."""

    def __init__(self, width: float):
        super().__init__()
        div = 4 if width == 0.1 else 8
        cin = _make_divisible(32 * width, div)
        layers = [nn.Sequential(*_conv_bn(3, cin, 3, 2))]
        for t, c, n, s in STAGES:
            cout = _make_divisible(c * width, div)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        self.features = nn.Sequential(*layers)
        self.out_channels = _make_divisible(1280 * width, div) if width > 1.0 else 1280
        self.conv = nn.Sequential(*_conv_bn(cin, self.out_channels, 1, 1))

    def forward(self, x):
        return self.conv(self.features(x))
