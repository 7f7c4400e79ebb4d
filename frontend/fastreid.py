"""fast-reid checkpoints: `model_final.pth` (Checkpointer's `{"model": state_dict, "optimizer",
"scheduler", "iteration"}`, loaded weights-only) with the run's `config.yaml`.

The network is reidc's own PyTorch module with fast-reid's parameter names (`backbone.*`,
`heads.*`), built from the config's keys (frontend/fastreid_config.py): a ResNet-18/34/50/101
with optional IBN, SE and non-local blocks, last stride 1 or 2, max-pool with ceil_mode as fast-reid's,
an OSNet (with or without IBN; frontend/osnet.py) or a MobileNetV2 (frontend/mobilenet.py); the
EmbeddingHead's pooling, embedding conv and BN neck. It takes raw 0-255 RGB images, as
fast-reid's `Baseline.forward` does, and normalises them first (`PixelNorm`, which the
compiler folds into the stem conv). The classifier (`heads.weight`) is not part of it.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from reidc.compiler.base.errors import CheckpointError
from reidc.compiler.base.modes import RunMode

from .capture import capture_module
from .checkpoint import load_strict, read_weights
from .fastreid_config import MOBILENET_DEPTHS, FastReIDSpec, read_fastreid_config
from .mobilenet import FastReIDMobileNetV2
from .osnet import OSNet
from .reid_layers import IBN, AdaptiveAvgMaxPool, EmbeddingHead, GeneralizedMeanPooling, NonLocal, PixelNorm, SELayer

CONFIG_NAME = "config.yaml"
#: what the compiled network takes, as fast-reid's Baseline.forward
INPUT_CONTRACT = "raw RGB 0-255 float32 (N, 3, H, W); PIXEL_MEAN/PIXEL_STD are applied inside the network"
BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
#: non-local blocks per stage where WITH_NL, as fast-reid's build_resnet_backbone
NON_LOCAL = {18: (0, 0, 0, 0), 34: (0, 0, 0, 0), 50: (0, 2, 3, 0), 101: (0, 2, 9, 0)}


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, with_ibn, with_se, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = IBN(planes) if with_ibn else nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.se = SELayer(planes) if with_se else nn.Identity()
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, with_ibn, with_se, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = IBN(planes) if with_ibn else nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.se = SELayer(planes * 4) if with_se else nn.Identity()
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.se(self.bn3(self.conv3(out)))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """fast-reid's ResNet backbone (fastreid/modeling/backbones/resnet.py): IBN in stages 1-3
    only, non-local blocks (`NL_k`) after the last blocks of a stage, as fast-reid builds them."""

    def __init__(self, spec: FastReIDSpec):
        super().__init__()
        block = BasicBlock if spec.depth in (18, 34) else Bottleneck
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)
        counts = BLOCKS[spec.depth]
        self.layer1 = self._stage(block, 64, counts[0], 1, spec.with_ibn, spec.with_se)
        self.layer2 = self._stage(block, 128, counts[1], 2, spec.with_ibn, spec.with_se)
        self.layer3 = self._stage(block, 256, counts[2], 2, spec.with_ibn, spec.with_se)
        self.layer4 = self._stage(block, 512, counts[3], spec.last_stride, False, spec.with_se)
        self.nl_after: list[list[int]] = [[], [], [], []]
        if spec.with_nl:
            for k, (count, width) in enumerate(zip(NON_LOCAL[spec.depth], (256, 512, 1024, 2048))):
                setattr(self, f"NL_{k + 1}", nn.ModuleList([NonLocal(width) for _ in range(count)]))
                self.nl_after[k] = sorted(counts[k] - (i + 1) for i in range(count))

    def _stage(self, block, planes, blocks, stride, with_ibn, with_se):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, with_ibn, with_se, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, with_ibn, with_se) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for k, stage in enumerate((self.layer1, self.layer2, self.layer3, self.layer4)):
            after = self.nl_after[k]
            for i, block in enumerate(stage):
                x = block(x)
                if i in after:
                    x = getattr(self, f"NL_{k + 1}")[after.index(i)](x)
        return x


def _pool(spec: FastReIDSpec) -> nn.Module:
    if spec.pool == "avg":
        return nn.AdaptiveAvgPool2d(1)
    if spec.pool == "max":
        return nn.AdaptiveMaxPool2d(1)
    if spec.pool == "avgmax":
        return AdaptiveAvgMaxPool()
    return GeneralizedMeanPooling(3.0, 1e-6, learned=spec.pool == "gem_learned")


def backbone_of(spec: FastReIDSpec) -> nn.Module:
    if spec.backbone == "osnet":
        return OSNet(spec.width, ibn=spec.with_ibn, head=False)
    if spec.backbone == "mobilenetv2":
        return FastReIDMobileNetV2(MOBILENET_DEPTHS[spec.width])
    return ResNet(spec)


class FastReIDBaseline(nn.Module):
    """fast-reid's `Baseline` at inference: raw 0-255 RGB (N, 3, H, W) -> the head's feature."""

    def __init__(self, spec: FastReIDSpec):
        super().__init__()
        self.spec = spec
        self.preprocess = PixelNorm(spec.pixel_mean, spec.pixel_std)
        self.backbone = backbone_of(spec)
        self.heads = EmbeddingHead(_pool(spec), spec.feat_dim, spec.embedding_dim, spec.with_bnneck)

    def forward(self, x):
        return self.heads(self.backbone(self.preprocess(x)))


def config_beside(path: Path) -> Path | None:
    """The `config.yaml` fast-reid's training run dumped into the checkpoint's folder, if any."""
    cand = path.parent / CONFIG_NAME if path.is_file() else None
    return cand if cand is not None and cand.is_file() else None


def load_fastreid(path: str | Path, spec: FastReIDSpec, state: dict[str, torch.Tensor]) -> FastReIDBaseline:
    """The network of `spec` with the checkpoint's tensors `state` (already read weights-only),
    strictly: every tensor the network needs, with its shape, and nothing the config does not
    explain except the classifier and BN counters."""
    model = FastReIDBaseline(spec)
    got = load_strict(model, state, path, f"{spec.name} as its fast-reid config describes it",
                      "does the config belong to this checkpoint?", lambda k: k == "heads.weight")
    if spec.pool == "gem_learned" and not float(got["heads.pool_layer.p"].reshape(-1)[0]) > 0:
        raise CheckpointError(f"{path}: the learned GeM power heads.pool_layer.p is "
                              f"{float(got['heads.pool_layer.p'].reshape(-1)[0])}; it must be > 0")
    return model.eval()


def fastreid_source(path: str | Path, config: str | Path, weights: str = "model",
                    input_size: tuple[int, int] | None = None):
    """(torch module, IR graph, modes, manifest facts) for a fast-reid checkpoint and its config."""
    path = Path(path)
    spec = read_fastreid_config(config)
    if input_size is not None:
        spec = dataclasses.replace(spec, input_size=tuple(input_size))
    model = load_fastreid(path, spec, read_weights(path, weights))
    g = capture_module(model, (3,) + tuple(spec.input_size), spec.name)
    h, w = spec.input_size
    facts = {"model": spec.name, "family": "fast-reid", "arch": spec.to_json(), "weights_entry": weights,
             "fastreid_config": str(Path(config).resolve()), "input_contract": INPUT_CONTRACT, "input_range": [0, 255],
             "preprocess": {"color": "RGB", "resize": [h, w], "interpolation": "bicubic", "scale": 1.0,
                            "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}}
    return model, g, (RunMode.MAIN,), facts
