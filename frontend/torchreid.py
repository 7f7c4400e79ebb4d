"""torchreid checkpoints: its engine's `model.pth.tar-N` (`{"state_dict", "epoch", "rank1",
"optimizer", "scheduler"}`, keys often under `module.`) or a model-zoo file (a bare state
dict), with the architecture named as torchreid's `build_model` names it (`--torchreid-arch`).

The network is reidc's own module with torchreid's parameter names (torchreid/reid/models/
osnet.py and resnet.py): OSNet x1.0/x0.75/x0.5/x0.25 and its IBN variant, ResNet-50 and
ResNet-50-fc512. Its output is what torchreid's model returns in eval mode (the feature before
the classifier, which is not part of it). Images come normalised as torchreid's test transform
leaves them (ImageNet mean and std).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from reidc.compiler.base.errors import ArchError
from reidc.compiler.base.modes import RunMode

from .arch import preprocess_for
from .capture import capture_module
from .checkpoint import load_strict, read_weights
from .fastreid import ResNet
from .fastreid_config import FastReIDSpec
from .reid_layers import ChannelGate

#: OSNet widths per torchreid architecture name, and whether it has IBN's InstanceNorms
OSNETS = {"osnet_x1_0": ((64, 256, 384, 512), False), "osnet_x0_75": ((48, 192, 288, 384), False),
          "osnet_x0_5": ((32, 128, 192, 256), False), "osnet_x0_25": ((16, 64, 96, 128), False),
          "osnet_ibn_x1_0": ((64, 256, 384, 512), True)}
#: ResNets: (last stride, fc dims)
RESNETS = {"resnet50": (2, ()), "resnet50_fc512": (1, (512,))}
ARCHS = tuple(OSNETS) + tuple(RESNETS)


class ConvLayer(nn.Module):
    def __init__(self, cin, cout, k, stride=1, padding=0, IN=False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=padding, bias=False)
        self.bn = nn.InstanceNorm2d(cout, affine=True) if IN else nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class Conv1x1(nn.Module):
    def __init__(self, cin, cout, relu=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True) if relu else nn.Identity()

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


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
    """Omni-scale block: four streams of 1-4 light convs, one shared gate, summed."""

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
    def __init__(self, name: str, input_size=(256, 128)):
        super().__init__()
        channels, use_in = OSNETS[name]
        self.arch, self.input_size = name, tuple(input_size)
        self.conv1 = ConvLayer(3, channels[0], 7, stride=2, padding=3, IN=use_in)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = self._stage(channels[0], channels[1], True, use_in)
        self.conv3 = self._stage(channels[1], channels[2], True, False)
        self.conv4 = self._stage(channels[2], channels[3], False, False)
        self.conv5 = Conv1x1(channels[3], channels[3])
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(channels[3], 512), nn.BatchNorm1d(512), nn.ReLU(inplace=True))

    @staticmethod
    def _stage(cin, cout, reduce, use_in):
        layers = [OSBlock(cin, cout, IN=use_in), OSBlock(cout, cout, IN=use_in)]
        if reduce:
            layers.append(nn.Sequential(Conv1x1(cout, cout), nn.AvgPool2d(2, stride=2)))
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.conv5(self.conv4(self.conv3(self.conv2(self.maxpool(self.conv1(x))))))
        return self.fc(torch.flatten(self.global_avgpool(x), 1))


class TorchreidResNet(ResNet):
    """torchreid's ResNet (torchvision's names and max-pool), the feature after an optional
    fc (Linear, BatchNorm1d, ReLU per dim)."""

    def __init__(self, name: str, input_size=(256, 128)):
        last_stride, fc = RESNETS[name]
        super().__init__(FastReIDSpec(depth=50, last_stride=last_stride))
        self.arch, self.input_size = name, tuple(input_size)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        layers, cin = [], 2048
        for d in fc:
            layers += [nn.Linear(cin, d), nn.BatchNorm1d(d), nn.ReLU(inplace=True)]
            cin = d
        self.fc = nn.Sequential(*layers) if layers else None

    def forward(self, x):
        v = torch.flatten(self.global_avgpool(super().forward(x)), 1)
        return v if self.fc is None else self.fc(v)


def check_arch(name: str) -> None:
    if name not in ARCHS:
        raise ArchError(f"--torchreid-arch {name!r}: reidc builds {', '.join(ARCHS)} (osnet_ain_*, mobilenetv2 "
                        "and the others are not supported yet)")


def build_torchreid(name: str, input_size=(256, 128)) -> nn.Module:
    check_arch(name)
    if name in OSNETS:
        return OSNet(name, input_size).eval()
    return TorchreidResNet(name, input_size).eval()


def load_torchreid(path: Path, name: str, state: dict[str, torch.Tensor], input_size=(256, 128)) -> nn.Module:
    model = build_torchreid(name, input_size)
    load_strict(model, state, path, f"torchreid's {name}", "is it that architecture?",
                lambda k: k.startswith("classifier."))
    return model.eval()


def torchreid_source(path: str | Path, name: str, input_size: tuple[int, int] | None = None):
    """(torch module, IR graph, modes, manifest facts) for a torchreid checkpoint."""
    path = Path(path)
    size = tuple(input_size or (256, 128))
    check_arch(name)   # before the file is read
    model = load_torchreid(path, name, read_weights(path, "model"), size)
    g = capture_module(model, (3,) + size, name)
    facts = {"model": name, "family": "torchreid", "arch": {"torchreid_arch": name, "input_size": list(size)},
             "weights_entry": None, "preprocess": preprocess_for((3,) + size)}
    return model, g, (RunMode.MAIN,), facts
