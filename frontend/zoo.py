"""Deterministic zoo checkpoints: seeded weights and BN statistics, no downloads."""
from __future__ import annotations

import torch

from .arch import ArchSpec, parse_split
from .models import CMNASResNet, SwitchableBN, build_model

ZOO = {"cmnas-resnet18": 18, "cmnas-resnet34": 34, "cmnas-resnet50": 50}


def _fill_bn(bn: torch.nn.BatchNorm2d | torch.nn.BatchNorm1d, g: torch.Generator, gain: float) -> None:
    c = bn.num_features
    with torch.no_grad():
        bn.weight.copy_(gain * (0.5 + torch.rand(c, generator=g)))
        bn.bias.copy_(0.1 * torch.randn(c, generator=g))
        bn.running_mean.copy_(0.1 * torch.randn(c, generator=g))
        bn.running_var.copy_(0.5 + torch.rand(c, generator=g))


def init_deterministic(model: CMNASResNet, seed: int = 0) -> CMNASResNet:
    """Kaiming conv weights; BN statistics drawn so activations stay O(1) through the net.

    The last BN of each residual branch gets a small gain (as zero-init-residual does), so
    deep random ResNets neither explode nor vanish; visible and infrared BNs differ.
    """
    g = torch.Generator().manual_seed(seed)
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
        elif isinstance(m, SwitchableBN):
            last = name.endswith(("bn3", "downsample.1")) or (name.endswith("bn2") and model.spec.depth < 50)
            for bn in (m.visible_bn, m.thermal_bn, m.sharable_bn):
                _fill_bn(bn, g, 0.2 if last else 1.0)
        elif isinstance(m, torch.nn.Linear):
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.001)
    _fill_bn(model.bottleneck, g, 1.0)
    with torch.no_grad():
        model.bottleneck.bias.zero_()
    return model.eval()


def zoo_model(name: str, split: str = "all-split", seed: int = 0, input_size=(256, 128)) -> CMNASResNet:
    if name not in ZOO:
        raise KeyError(f"unknown zoo model {name!r}; available: {', '.join(sorted(ZOO))}")
    depth = ZOO[name]
    spec = ArchSpec(depth=depth, split=parse_split(split, depth), input_size=tuple(input_size))
    return init_deterministic(build_model(spec), seed)
