"""torchreid checkpoints: its engine's `model.pth.tar-N` (`{"state_dict", "epoch", "rank1",
"optimizer", "scheduler"}`, keys often under `module.`) or a model-zoo file (a bare state
dict), with the architecture named as torchreid's `build_model` names it (`--torchreid-arch`).

The network is reidc's own module with torchreid's parameter names (frontend/osnet.py,
frontend/mobilenet.py, and the ResNet here): OSNet x1.0/x0.75/x0.5/x0.25, its IBN and AIN
variants, MobileNetV2 x1.0/x1.4, ResNet-50 and ResNet-50-fc512. Its output is what torchreid's
model returns in eval mode (the feature before the classifier, which is not part of it).
Images come normalised as torchreid's test transform leaves them (ImageNet mean and std).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from reidc.compiler.base.errors import ArchError
from reidc.compiler.base.modes import RunMode

from .arch import preprocess_for
from .capture import capture_module
from .checkpoint import load_strict, read_weights
from .fastreid import ResNet
from .fastreid_config import FastReIDSpec
from .mobilenet import TorchreidMobileNetV2
from .osnet import WIDTHS, OSNet, OSNetAIN

#: OSNets per torchreid architecture name: (width, variant)
OSNETS = {**{f"osnet_{w}": (w, "") for w in WIDTHS}, "osnet_ibn_x1_0": ("x1_0", "ibn"),
          **{f"osnet_ain_{w}": (w, "ain") for w in WIDTHS}}
#: MobileNetV2 width multipliers
MOBILENETS = {"mobilenetv2_x1_0": 1.0, "mobilenetv2_x1_4": 1.4}
#: ResNets: (last stride, fc dims)
RESNETS = {"resnet50": (2, ()), "resnet50_fc512": (1, (512,))}
ARCHS = tuple(OSNETS) + tuple(MOBILENETS) + tuple(RESNETS)


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
        raise ArchError(f"--torchreid-arch {name!r}: reidc builds {', '.join(ARCHS)} (the others "
                        "are not supported yet)")


def build_torchreid(name: str, input_size=(256, 128)) -> nn.Module:
    check_arch(name)
    if name in OSNETS:
        width, variant = OSNETS[name]
        model = OSNetAIN(width) if variant == "ain" else OSNet(width, ibn=variant == "ibn")
    elif name in MOBILENETS:
        model = TorchreidMobileNetV2(MOBILENETS[name])
    else:
        return TorchreidResNet(name, input_size).eval()
    model.arch, model.input_size = name, tuple(input_size)
    return model.eval()


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
