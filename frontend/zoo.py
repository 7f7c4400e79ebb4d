"""Deterministic zoo checkpoints: seeded weights and BN statistics, no downloads."""
from __future__ import annotations

from pathlib import Path

import torch

from reidc.compiler.base.atomic import guard_output_dir
from reidc.compiler.base.modes import Modality

from .arch import ArchSpec, parse_split, read_cmnas_config
from .bire import BinaryConv2d
from .checkpoint import save_checkpoint
from .models import CMNASResNet, SwitchableBN
from .networks import build_model

ZOO = {"cmnas-resnet18": ("cmnas", 18), "cmnas-resnet34": ("cmnas", 34), "cmnas-resnet50": ("cmnas", 50),
       "bire-resnet18": ("bire", 18), "bire-resnet34": ("bire", 34)}


def _fill_bn(bn: torch.nn.BatchNorm2d | torch.nn.BatchNorm1d, g: torch.Generator, gain: float) -> None:
    c = bn.num_features
    with torch.no_grad():
        bn.weight.copy_(gain * (0.5 + torch.rand(c, generator=g)))
        bn.bias.copy_(0.1 * torch.randn(c, generator=g))
        bn.running_mean.copy_(0.1 * torch.randn(c, generator=g))
        bn.running_var.copy_(0.5 + torch.rand(c, generator=g))


def _kaiming(conv: torch.nn.Conv2d, g: torch.Generator) -> None:
    fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)


def init_deterministic(model: CMNASResNet, seed: int = 0) -> CMNASResNet:
    """Kaiming conv weights; BN statistics drawn so activations stay O(1) through the net.

    The last BN of each residual branch gets a small gain (as zero-init-residual does), so
    deep random ResNets neither explode nor vanish; visible and infrared BNs differ.
    """
    g = torch.Generator().manual_seed(seed)
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            _kaiming(m, g)
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


def init_binarized(model, seed: int = 0):
    """Seeded weights; alpha = mean |W| per output channel (XNOR-Net's choice); BN statistics
    calibrated on seeded images (visible BNs on colour-like inputs, infrared BNs on grey-like
    ones), so signs are balanced and activations stay O(1); then seeded gains and shifts."""
    g = torch.Generator().manual_seed(seed)
    bns = []
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            _kaiming(m, g)
            if isinstance(m, BinaryConv2d):
                with torch.no_grad():
                    m.alpha.copy_(m.weight.abs().mean(dim=(1, 2, 3)))
        elif isinstance(m, torch.nn.PReLU):
            with torch.no_grad():
                m.weight.copy_(0.1 + 0.2 * torch.rand(m.weight.shape, generator=g))
        elif isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
            bns.append((name, m))
    h, w = model.spec.input_size
    vis = torch.randn((4, 3, h, w), generator=g)
    ir = torch.randn((4, 1, h, w), generator=g).expand(4, 3, h, w) + 0.1 * torch.randn((4, 3, h, w), generator=g)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # calibration statistics independent of the thread count
    try:
        for _, bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average: a shared BN sees both modalities
        model.train()
        with torch.no_grad():
            model(vis, Modality.VISIBLE)
            model(ir, Modality.INFRARED)
    finally:
        torch.set_num_threads(threads)
        for _, bn in bns:
            bn.momentum = 0.1
    for name, bn in bns:
        c = bn.num_features
        small = name.endswith(("bn_out", "shortcut.bn"))
        with torch.no_grad():
            bn.weight.copy_((0.3 if small else 1.0) * (0.5 + torch.rand(c, generator=g)))
            bn.bias.copy_(0.1 * torch.randn(c, generator=g))
    with torch.no_grad():
        model.bottleneck.bias.zero_()
    return model.eval()


def zoo_model(name: str, split: str = "all-split", seed: int = 0, input_size=(256, 128), **spec_extra):
    if name not in ZOO:
        raise KeyError(f"unknown zoo model {name!r}; available: {', '.join(sorted(ZOO))}")
    family, depth = ZOO[name]
    spec = ArchSpec(depth=depth, split=parse_split(split, depth, family), input_size=tuple(input_size),
                    family=family, **spec_extra)
    model = build_model(spec)
    return init_binarized(model, seed) if family == "bire" else init_deterministic(model, seed)


def export_zoo(name: str, out: str | Path, split: str = "all-split", split_config: str | Path | None = None,
               seed: int = 0, input_size=(256, 128)):
    """`reidc zoo export`: write zoo model `name` as a reidc checkpoint directory `out` and
    return the model. `split_config`: a CM-NAS config.cfg whose split vector replaces `split`.
    `out` is checked before the model is built."""
    if split_config is not None:
        split = " ".join(map(str, read_cmnas_config(split_config)))
    guard_output_dir(out, "checkpoint", [split_config])
    model = zoo_model(name, split, seed, input_size)
    save_checkpoint(model, out, [split_config])
    return model
