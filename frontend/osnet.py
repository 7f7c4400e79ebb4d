"""OSNet as torchreid (torchreid/reid/models/osnet.py, osnet_ain.py) and fast-reid
(fastreid/modeling/backbones/osnet.py) build it, with their parameter names, so their state
dicts load as saved and the module is the PyTorch reference verification compares with.

- `OSNet`: x1.0/x0.75/x0.5/x0.25 and the IBN variant (InstanceNorm in the stem and after the
  residual add of stage 2's blocks). fast-reid's backbone is the same network without the
  pooling and fc (`head=False`).
- `OSNetAIN`: torchreid's osnet_ain_*: IN in the stem, and blocks whose last 1x1 conv is
  followed by an InstanceNorm (no BN) inside the residual branch, in the stages' fixed pattern.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .reid_layers import ChannelGate

#: widths per scale, as both toolboxes name them
WIDTHS = {"x1_0": (64, 256, 384, 512), "x0_75": (48, 192, 288, 384), "x0_5": (32, 128, 192, 256),
          "x0_25": (16, 64, 96, 128)}
#: osnet_ain's blocks per stage: True where the block has its InstanceNorm inside the residual
AIN_BLOCKS = ((True, True), (False, True), (True, False))


class ConvLayer(nn.Module):
    def __init__(self, cin, cout, k, stride=1, padding=0, IN=False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=padding, bias=False)
        self.bn = nn.InstanceNorm2d(cout, affine=True) if IN else nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class Conv1x1(nn.Module):
    """1x1 conv and BN, then ReLU unless `relu` is False (the toolboxes' Conv1x1Linear); `bn`
    False: no BN (osnet_ain's last conv of an IN block)."""

    def __init__(self, cin, cout, relu=True, bn=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout) if bn else None
        self.relu = nn.ReLU(inplace=True) if relu else nn.Identity()

    def forward(self, x):
        x = self.conv(x)
        return self.relu(x if self.bn is None else self.bn(x))


class LightConv3x3(nn.Module):
    """1x1 (linear) then depthwise 3x3, BN, ReLU."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False, groups=cout)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.bn(self.conv2(self.conv1(x))))


class OSBlock(nn.Module):
    """Omni-scale block: four streams of 1-4 light convs, one shared gate, summed; `IN`: an
    InstanceNorm after the residual add (osnet_ibn)."""

    def __init__(self, cin, cout, IN=False):
        super().__init__()
        mid = cout // 4
        self.conv1 = Conv1x1(cin, mid)
        self.conv2a = LightConv3x3(mid, mid)
        self.conv2b = nn.Sequential(*[LightConv3x3(mid, mid) for _ in range(2)])
        self.conv2c = nn.Sequential(*[LightConv3x3(mid, mid) for _ in range(3)])
        self.conv2d = nn.Sequential(*[LightConv3x3(mid, mid) for _ in range(4)])
        self.gate = ChannelGate(mid)
        self.conv3 = Conv1x1(mid, cout, relu=False)
        self.downsample = Conv1x1(cin, cout, relu=False) if cin != cout else None
        self.IN = nn.InstanceNorm2d(cout, affine=True) if IN else None

    def forward(self, x):
        x1 = self.conv1(x)
        x2 = self.gate(self.conv2a(x1)) + self.gate(self.conv2b(x1)) + self.gate(self.conv2c(x1)) + \
            self.gate(self.conv2d(x1))
        out = self.conv3(x2) + (x if self.downsample is None else self.downsample(x))
        if self.IN is not None:
            out = self.IN(out)
        return F.relu(out)


class OSNet(nn.Module):
    """torchreid's osnet_<width> / osnet_ibn_x1_0 (`head`: its global pooling and 512-d fc, the
    eval output), or fast-reid's OSNet backbone (no head: the conv5 feature map)."""

    def __init__(self, width: str, ibn: bool = False, head: bool = True):
        super().__init__()
        c = WIDTHS[width]
        self.conv1 = ConvLayer(3, c[0], 7, stride=2, padding=3, IN=ibn)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = self._stage(c[0], c[1], True, ibn)
        self.conv3 = self._stage(c[1], c[2], True, False)
        self.conv4 = self._stage(c[2], c[3], False, False)
        self.conv5 = Conv1x1(c[3], c[3])
        self.out_channels = c[3]
        if head:
            self.global_avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Sequential(nn.Linear(c[3], 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True))
        self.head = head

    @staticmethod
    def _stage(cin, cout, reduce, use_in):
        layers = [OSBlock(cin, cout, IN=use_in), OSBlock(cout, cout, IN=use_in)]
        if reduce:
            layers.append(nn.Sequential(Conv1x1(cout, cout), nn.AvgPool2d(2, stride=2)))
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.conv5(self.conv4(self.conv3(self.conv2(self.maxpool(self.conv1(x))))))
        return self.fc(torch.flatten(self.global_avgpool(x), 1)) if self.head else x


class LightConvStream(nn.Module):
    def __init__(self, cin, cout, depth):
        super().__init__()
        self.layers = nn.Sequential(*[LightConv3x3(cin if i == 0 else cout, cout) for i in range(depth)])

    def forward(self, x):
        return self.layers(x)


class OSBlockAIN(nn.Module):
    """osnet_ain's OSBlock (`IN` False) and OSBlockINin (`IN` True: the last 1x1 conv has no BN
    and an InstanceNorm follows it inside the residual branch)."""

    def __init__(self, cin, cout, IN: bool, T: int = 4):
        super().__init__()
        mid = cout // 4
        self.conv1 = Conv1x1(cin, mid)
        self.conv2 = nn.ModuleList([LightConvStream(mid, mid, t) for t in range(1, T + 1)])
        self.gate = ChannelGate(mid)
        self.conv3 = Conv1x1(mid, cout, relu=False, bn=not IN)
        self.downsample = Conv1x1(cin, cout, relu=False) if cin != cout else None
        self.IN = nn.InstanceNorm2d(cout, affine=True) if IN else None

    def forward(self, x):
        x1 = self.conv1(x)
        streams = [self.gate(conv(x1)) for conv in self.conv2]
        x2 = streams[0]
        for s in streams[1:]:
            x2 = x2 + s
        x3 = self.conv3(x2)
        if self.IN is not None:
            x3 = self.IN(x3)
        return F.relu(x3 + (x if self.downsample is None else self.downsample(x)))


class OSNetAIN(nn.Module):
    """torchreid's osnet_ain_<width>: its eval output, the 512-d fc feature."""

    def __init__(self, width: str):
        super().__init__()
        c = WIDTHS[width]
        self.conv1 = ConvLayer(3, c[0], 7, stride=2, padding=3, IN=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stages = [nn.Sequential(*[OSBlockAIN(c[k] if i == 0 else c[k + 1], c[k + 1], IN=flag)
                                  for i, flag in enumerate(AIN_BLOCKS[k])]) for k in range(3)]
        self.conv2, self.conv3, self.conv4 = stages
        self.pool2 = nn.Sequential(Conv1x1(c[1], c[1]), nn.AvgPool2d(2, stride=2))
        self.pool3 = nn.Sequential(Conv1x1(c[2], c[2]), nn.AvgPool2d(2, stride=2))
        self.conv5 = Conv1x1(c[3], c[3])
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(c[3], 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True))

    def forward(self, x):
        x = self.pool2(self.conv2(self.maxpool(self.conv1(x))))
        x = self.conv5(self.conv4(self.pool3(self.conv3(x))))
        return self.fc(torch.flatten(self.global_avgpool(x), 1))
