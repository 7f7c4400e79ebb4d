"""The weight-sharing supernet of the latency-aware search, and children cut from it.

Search space (both papers joined): per BN, split by modality or shared (CM-NAS); per stage,
real-valued or binarized (BiRe-ID). A candidate is simply an `ArchSpec` of the `bire` family
(split vector + binary_stages). The supernet is a `BiReResNet` whose switchable BNs hold all
three BNs (as they always do) and whose 3x3 convs keep one latent weight and a scale that
serve both choices: a binarized stage runs conv(sign(x), sign(W) * alpha), a real stage runs
conv(x, W). `set_arch` picks a candidate in place; `extract` copies it out as a plain model
whose state dict `reidc compile` takes.
"""
from __future__ import annotations

import random

import torch
from torch import nn

from .arch import ArchSpec, bn_names
from .bire import BinaryConv2d, BiReResNet, Unit, binarize
from .models import SwitchableBN
from .networks import build_model

DEPTH = 18


class SharedConv(BinaryConv2d):
    """A 3x3 conv that runs binarized or real from the same latent weight."""
    binary = True
    mix = None    # (p_real, p_binarized) while a differentiable search relaxes the choice (set_mixture)

    def forward(self, x):
        real = lambda: nn.functional.conv2d(x, self.weight, None, self.stride, self.padding)  # noqa: E731
        if self.mix is not None:
            return self.mix[0] * real() + self.mix[1] * super().forward(x)
        return super().forward(x) if self.binary else real()


def space_size(depth: int = DEPTH) -> tuple[int, int]:
    """(number of switchable BNs, number of stages)."""
    return len(bn_names(depth, "bire")), 4


def random_arch(rng: random.Random, input_size, num_classes: int, depth: int = DEPTH) -> ArchSpec:
    n_bn, n_stage = space_size(depth)
    return ArchSpec(depth=depth, family="bire", input_size=tuple(input_size), num_classes=num_classes,
                    split=tuple(rng.randint(0, 1) for _ in range(n_bn)),
                    binary_stages=tuple(rng.random() < 0.5 for _ in range(n_stage)))


def build_supernet(input_size, num_classes: int, depth: int = DEPTH) -> BiReResNet:
    n_bn, _ = space_size(depth)
    spec = ArchSpec(depth=depth, family="bire", split=(0,) * n_bn, input_size=tuple(input_size),
                    num_classes=num_classes, binary_stages=(True,) * 4)
    net = BiReResNet(spec)
    for unit in (m for m in net.modules() if isinstance(m, Unit)):
        old = unit.conv
        new = SharedConv(old.in_channels, old.out_channels, 3, old.stride, old.padding)
        new.load_state_dict(old.state_dict())
        unit.conv = new
    return net


def set_arch(net: BiReResNet, spec: ArchSpec) -> BiReResNet:
    """Make the supernet compute candidate `spec` (in place)."""
    split = spec.split_of()
    for name, m in net.named_modules():
        if isinstance(m, SwitchableBN):
            m.split = split[name]
        elif isinstance(m, SharedConv):
            m.binary = spec.binary_stages[stage_index(name)]
    net.spec = spec
    return net


def stage_index(name: str) -> int:
    """The stage (0-3) a module of the supernet belongs to; the stem's is 0."""
    return int(name.split(".")[0][len("layer"):]) - 1 if name.startswith("layer") else 0


def set_mixture(net: BiReResNet, bn_probs: torch.Tensor, stage_probs: torch.Tensor) -> BiReResNet:
    """Make the supernet compute the continuous relaxation of its choices (a differentiable
    search's, compiler/search/differentiable.py), in place: switchable BN i outputs
    bn_probs[i, 0] x split + bn_probs[i, 1] x shared (split-vector order), a stage s's 3x3
    convs stage_probs[s, 0] x real + stage_probs[s, 1] x binarized. One-hot rows compute the
    candidate they select, as `set_arch` does."""
    names = [n for n, m in net.named_modules() if isinstance(m, SwitchableBN)]
    order = bn_names(net.spec.depth, "bire")
    if sorted(names) != sorted(order) or tuple(bn_probs.shape) != (len(order), 2) or tuple(stage_probs.shape) != (4, 2):
        raise ValueError(f"set_mixture: expected ({len(order)}, 2) BN and (4, 2) stage probabilities, "
                         f"got {tuple(bn_probs.shape)} and {tuple(stage_probs.shape)}")
    row = {n: i for i, n in enumerate(order)}
    for name, m in net.named_modules():
        if isinstance(m, SwitchableBN):
            m.mix = bn_probs[row[name]]
        elif isinstance(m, SharedConv):
            m.mix = stage_probs[stage_index(name)]
    return net


def clear_mixture(net: BiReResNet) -> BiReResNet:
    """Back to discrete choices (what `set_arch` last set)."""
    for m in net.modules():
        if isinstance(m, (SwitchableBN, SharedConv)):
            m.mix = None
    return net


def extract(net: BiReResNet, spec: ArchSpec) -> BiReResNet:
    """The candidate as a stand-alone model with the supernet's weights (eval mode)."""
    child = build_model(spec)
    state = net.state_dict()
    child.load_state_dict({k: state[k] for k in child.state_dict()}, strict=True)
    return child.eval()


@torch.no_grad()
def recalibrate_bn(net: nn.Module, batches, modality_of) -> None:
    """Re-estimate every BN's running statistics for the architecture the net computes now
    (a shared weight set has no right statistics for any one candidate): cumulative averages
    over `batches` in training mode, no weight changes."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    net.train()
    try:
        for x, m in batches:
            net(x, modality_of(m))
    finally:
        for bn, mom in zip(bns, saved):
            bn.momentum = mom
        net.eval()


__all__ = ["SharedConv", "build_supernet", "set_arch", "set_mixture", "clear_mixture", "stage_index", "extract",
           "recalibrate_bn", "random_arch", "binarize"]
