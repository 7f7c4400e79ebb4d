"""Supernet training on several processes (torch.distributed, DDP) that computes what one
process computes on the same global batch.

Every process draws the step's whole P x K batch (it depends only on (seed, step)) and keeps
its contiguous share: P / world identities with all their visible and infrared images. Two
things make the result the one-process result, not an approximation of it:
- **BatchNorm over the global batch.** Each BN's training statistics are sums all-reduced over
  the processes (in float64), so a BN normalises with the whole batch's mean and variance and
  updates its running statistics as one process would. torch's SyncBatchNorm does this on GPUs
  only; this one works on gloo (CPU) as well.
- **The loss over the global batch.** The features are all-gathered (differentiably: the
  gradient of a gathered slice is summed over the processes and handed back to its owner), so
  batch-hard triplets, SP's Gram matrices, CMMD and the identity loss see every image.
Every process then holds the same loss; DDP averages the gradients, which sums each process's
share of the one gradient. What remains is float summation order (a BN's sums in two parts).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from .losses import cmnas_loss


_GROUP = None    # the process group of the collectives in the forward and backward (`use_group`)


def use_group(group) -> None:
    """Run this module's collectives in `group`, a group of their own: DDP all-reduces its
    gradient buckets asynchronously from backward hooks, and collectives of one group must be
    issued in the same order on every process, which the hooks' timing does not guarantee."""
    global _GROUP
    _GROUP = group


def world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class _AllReduce(torch.autograd.Function):
    """y = the sum of x over the processes, on each; the gradient likewise summed."""

    @staticmethod
    def forward(ctx, x):
        y = x.clone()
        dist.all_reduce(y, group=_GROUP)
        return y

    @staticmethod
    def backward(ctx, g):
        g = g.contiguous().clone()
        dist.all_reduce(g, group=_GROUP)
        return g


class _AllGather(torch.autograd.Function):
    """Every process's x (equal shapes) concatenated in rank order; the gradient of the whole
    summed over the processes, each keeping its own slice."""

    @staticmethod
    def forward(ctx, x):
        ctx.rank, ctx.n = dist.get_rank(_GROUP), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world())]
        dist.all_gather(parts, x.contiguous(), group=_GROUP)
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, g):
        g = g.contiguous().clone()
        dist.all_reduce(g, group=_GROUP)
        return g[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def gather(x: torch.Tensor) -> torch.Tensor:
    """The global batch of `x` (differentiable when x requires grad)."""
    if world() == 1:
        return x
    if not x.requires_grad:
        parts = [torch.empty_like(x) for _ in range(world())]
        dist.all_gather(parts, x.contiguous(), group=_GROUP)
        return torch.cat(parts)
    return _AllGather.apply(x)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """A BatchNorm1d/2d whose training statistics are those of the global batch (the same
    parameters and buffers, so the same state dict); in eval plain BatchNorm. One process
    trains with it too: a binarized network is sensitive to how a BN rounds (torch's float32
    kernel against these float64 sums moved one step's gradients by 0.4% (median), through the
    signs after the BN), and with one formulation one and two processes agree."""

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        c = x.shape[1]
        x64 = x.double()
        local = torch.cat([x64.sum(dims), (x64 * x64).sum(dims), x64.new_tensor([x.numel() / c])])
        total = _AllReduce.apply(local) if world() > 1 else local
        n = total[-1]
        mean = total[:c] / n
        var = (total[c:2 * c] / n - mean * mean).clamp_min(0)
        with torch.no_grad():
            if self.track_running_stats:
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(m * mean.to(self.running_mean.dtype))
                self.running_var.mul_(1 - m).add_(m * (var * n / (n - 1)).to(self.running_var.dtype))
        shape = (1, c) + (1,) * (x.dim() - 2)
        y = (x64 - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        y = y.to(x.dtype)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


_GLOBAL = {nn.BatchNorm1d: type("GlobalBatchNorm1d", (GlobalBatchNorm, nn.BatchNorm1d), {}),
           nn.BatchNorm2d: type("GlobalBatchNorm2d", (GlobalBatchNorm, nn.BatchNorm2d), {})}
_PLAIN = {v: k for k, v in _GLOBAL.items()}


def global_batchnorm(net: nn.Module) -> nn.Module:
    """Every BatchNorm1d/2d of `net` normalises with the global batch (in place; the same
    parameters, buffers and state dict); `plain_batchnorm` undoes it."""
    for mod in net.modules():
        if type(mod) in _GLOBAL:
            mod.__class__ = _GLOBAL[type(mod)]
    return net


def plain_batchnorm(net: nn.Module) -> nn.Module:
    """torch's own BatchNorm classes back (what capture and the rest of reidc expect)."""
    for mod in net.modules():
        if type(mod) in _PLAIN:
            mod.__class__ = _PLAIN[type(mod)]
    return net


class TrainStep(nn.Module):
    """One training step's forward on a process's share of the batch: the loss of the global
    batch (what DDP wraps, so that every parameter's gradient comes through its forward)."""

    def __init__(self, net: nn.Module, objective: str):
        super().__init__()
        self.net, self.objective = net, objective

    def forward(self, x, y, m):
        feat = self.net.backbone(x, m)             # the pre-BNNeck feature
        neck = self.net.bottleneck(feat)           # the BNNeck's output (its statistics global)
        feat, neck, y, m = gather(feat), gather(neck), gather(y), gather(m)
        loss, parts = cmnas_loss(feat, neck, self.net.classifier(neck), y, m, self.objective)
        return loss, parts
