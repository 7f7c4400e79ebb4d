"""CM-NAS cross-modality ResNets (ResNet-18/34/50, last stride 1, BNNeck head) in PyTorch.

Every BatchNorm2d of the backbone is a `SwitchableBN` holding a visible BN, an infrared
("thermal") BN and a shared BN, with CM-NAS's attribute names. `forward(x, modality)` takes
a `Modality` ("visible", "infrared") or an int tensor (N,) holding one `Modality.code` per
sample (a mixed batch). Inference returns the BNNeck feature.
"""
from __future__ import annotations

import torch
from torch import nn

from reidc.compiler.base.modes import MODEL_MODES, Modality, RunMode

from .arch import DEPTHS, STAGE_WIDTHS, ArchSpec


class SwitchableBN(nn.Module):
    """A BN that is either shared by both modalities or split into visible/infrared BNs."""

    def __init__(self, channels: int, split: bool):
        super().__init__()
        self.split = split
        self.visible_bn = nn.BatchNorm2d(channels)
        self.thermal_bn = nn.BatchNorm2d(channels)
        self.sharable_bn = nn.BatchNorm2d(channels)

    #: (p_split, p_shared) while a differentiable search relaxes the choice (frontend/supernet.py:
    #: set_mixture): the output is their mixture of both forms; None: the choice `split` holds
    mix = None

    def forward(self, x: torch.Tensor, modality) -> torch.Tensor:
        if self.mix is not None:
            return self.mix[0] * self._split(x, modality) + self.mix[1] * self.sharable_bn(x)
        if not self.split:
            return self.sharable_bn(x)
        return self._split(x, modality)

    def _split(self, x: torch.Tensor, modality) -> torch.Tensor:
        if isinstance(modality, str):
            return self.visible_bn(x) if modality == Modality.VISIBLE else self.thermal_bn(x)
        if self.training:  # per-modality batch statistics, as CM-NAS trains
            out = torch.empty_like(x)
            for m, bn in ((Modality.VISIBLE, self.visible_bn), (Modality.INFRARED, self.thermal_bn)):
                idx = (modality == m.code).nonzero(as_tuple=True)[0]
                if idx.numel():
                    out[idx] = bn(x[idx])
            return out
        sel = (modality == Modality.INFRARED.code).view(-1, 1, 1, 1)
        return torch.where(sel, self.thermal_bn(x), self.visible_bn(x))

    def extra_repr(self) -> str:
        return f"split={self.split}"


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, width, stride, downsample, split_of, prefix):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = SwitchableBN(width, split_of[f"{prefix}.bn1"])
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = SwitchableBN(width, split_of[f"{prefix}.bn2"])
        self.relu = nn.ReLU(inplace=False)
        self.downsample = downsample

    def forward(self, x, m):
        out = self.relu(self.bn1(self.conv1(x), m))
        out = self.bn2(self.conv2(out), m)
        idt = x if self.downsample is None else self.downsample(x, m)
        return self.relu(out + idt)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, width, stride, downsample, split_of, prefix):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = SwitchableBN(width, split_of[f"{prefix}.bn1"])
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = SwitchableBN(width, split_of[f"{prefix}.bn2"])
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = SwitchableBN(width * 4, split_of[f"{prefix}.bn3"])
        self.relu = nn.ReLU(inplace=False)
        self.downsample = downsample

    def forward(self, x, m):
        out = self.relu(self.bn1(self.conv1(x), m))
        out = self.relu(self.bn2(self.conv2(out), m))
        out = self.bn3(self.conv3(out), m)
        idt = x if self.downsample is None else self.downsample(x, m)
        return self.relu(out + idt)


class Downsample(nn.Module):
    """1x1 strided conv + switchable BN; indices 0 and 1 keep torchvision's key names."""

    def __init__(self, cin, cout, stride, split):
        super().__init__()
        self.add_module("0", nn.Conv2d(cin, cout, 1, stride, bias=False))
        self.add_module("1", SwitchableBN(cout, split))

    def forward(self, x, m):
        return getattr(self, "1")(getattr(self, "0")(x), m)


class Stage(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        for i, b in enumerate(blocks):
            self.add_module(str(i), b)

    def forward(self, x, m):
        for b in self.children():
            x = b(x, m)
        return x


class ReIDResNet(nn.Module):
    """What every reidc ReID ResNet shares: a real stem (7x7 conv, switchable BN, ReLU, max
    pool), four stages `layer1..4` that subclasses add, and the BNNeck head."""

    def __init__(self, spec: ArchSpec):
        super().__init__()
        self.spec = spec
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = SwitchableBN(64, spec.split_of()["bn1"])
        self.relu = nn.ReLU(inplace=False)
        self.maxpool = nn.MaxPool2d(3, 2, 1)

    def add_head(self, feat_dim: int) -> None:
        self.feat_dim = feat_dim
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.bottleneck = nn.BatchNorm1d(feat_dim)  # BNNeck
        self.bottleneck.bias.requires_grad_(False)
        self.classifier = nn.Linear(feat_dim, self.spec.num_classes, bias=False)

    def backbone(self, x, m):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x), m)))
        for s in range(1, 5):
            x = getattr(self, f"layer{s}")(x, m)
        return torch.flatten(self.pool(x), 1)

    def forward(self, x: torch.Tensor, modality=Modality.VISIBLE.value) -> torch.Tensor:
        """Inference: the BNNeck feature (N, feat_dim), or with spec.feature "pool" the pooled
        feature before the BNNeck BN. Training: (feature, logits)."""
        pooled = self.backbone(x, modality)
        feat = self.bottleneck(pooled)
        if self.training:
            return feat, self.classifier(feat)
        return pooled if self.spec.feature == "pool" else feat


class CMNASResNet(ReIDResNet):
    """ResNet backbone with switchable BNs, last stride 1, and a BNNeck feature head."""

    def __init__(self, spec: ArchSpec):
        super().__init__(spec)
        kind, blocks = DEPTHS[spec.depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        split_of = spec.split_of()
        cin = 64
        for s, n in enumerate(blocks):
            width = STAGE_WIDTHS[s]
            cout = width * block.expansion
            stride = 1 if s in (0, 3) else 2
            ds = None
            if stride != 1 or cin != cout:
                ds = Downsample(cin, cout, stride, split_of[f"layer{s + 1}.0.downsample.1"])
            layers = []
            for b in range(n):
                layers.append(block(cin, width, stride if b == 0 else 1, ds if b == 0 else None,
                                    split_of, f"layer{s + 1}.{b}"))
                cin = cout
            self.add_module(f"layer{s + 1}", Stage(layers))
        self.add_head(cin)


def modality_tensor(mode: str, n: int) -> torch.Tensor | str:
    """The `modality` argument for a batch of n in a run mode; mixed alternates visible,
    infrared, visible... (their codes)."""
    mode = RunMode.parse(mode, MODEL_MODES)
    if mode.modality is not None:
        return mode.modality.value
    codes = torch.tensor([Modality.VISIBLE.code, Modality.INFRARED.code], dtype=torch.int32)
    return codes[torch.arange(n) % 2]
