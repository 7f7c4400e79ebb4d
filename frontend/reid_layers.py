"""Layers of the ReID toolboxes' networks that reidc captures as a unit (frontend/capture.py
keeps each one a leaf of the trace and maps it onto IR ops). Their parameter names and their
forward follow the toolbox's own (fast-reid's `fastreid/layers/`), so a state dict it saved
loads as is and the module is the PyTorch reference verification compares with."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PixelNorm(nn.Module):
    """(x - mean) / std per channel, on raw 0-255 images: fast-reid's `preprocess_image`."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x):
        return (x - self.mean) / self.std


class IBN(nn.Module):
    """IBN-Net's block: InstanceNorm (affine, statistics of each sample) on the first half of
    the channels, BatchNorm on the rest."""

    def __init__(self, planes: int):
        super().__init__()
        self.half = int(planes / 2)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(planes - self.half)

    def forward(self, x):
        first, rest = torch.split(x, self.half, 1)
        return torch.cat((self.IN(first.contiguous()), self.BN(rest.contiguous())), 1)


class SELayer(nn.Module):
    """Squeeze-excitation: x * sigmoid(fc(relu(fc(mean over H, W)))) per channel."""

    def __init__(self, channel: int, reduction: int = 16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(channel, int(channel / reduction), bias=False), nn.ReLU(inplace=True),
                                nn.Linear(int(channel / reduction), channel, bias=False), nn.Sigmoid())

    def forward(self, x):
        b, c = x.shape[:2]
        return x * self.fc(self.avg_pool(x).view(b, c)).view(b, c, 1, 1)


class GeneralizedMeanPooling(nn.Module):
    """(mean(max(x, eps)^p))^(1/p) over H and W; `learned`: p is a parameter (fast-reid's
    GeneralizedMeanPoolingP), read from the checkpoint."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learned: bool = False):
        super().__init__()
        self.eps = eps
        self.p = nn.Parameter(torch.ones(1) * p) if learned else float(p)

    def forward(self, x):
        return F.adaptive_avg_pool2d(x.clamp(min=self.eps).pow(self.p), (1, 1)).pow(1.0 / self.p)


class AdaptiveAvgMaxPool(nn.Module):
    """The mean plus the max over H and W."""

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, 1) + F.adaptive_max_pool2d(x, 1)


class EmbeddingHead(nn.Module):
    """fast-reid's EmbeddingHead at inference: a global pooling, then `bottleneck` (an optional
    1x1 embedding conv, an optional BN neck), its output flattened to (N, F). The classifier
    (`weight`) is training only and not part of the network."""

    def __init__(self, pool: nn.Module, feat_dim: int, embedding_dim: int, with_bnneck: bool):
        super().__init__()
        self.pool_layer = pool
        neck = []
        if embedding_dim > 0:
            neck.append(nn.Conv2d(feat_dim, embedding_dim, 1, 1, bias=False))
            feat_dim = embedding_dim
        if with_bnneck:
            neck.append(nn.BatchNorm2d(feat_dim))
        self.bottleneck = nn.Sequential(*neck)

    def forward(self, features):
        return self.bottleneck(self.pool_layer(features))[..., 0, 0]


class ChannelGate(nn.Module):
    """OSNet's channel gate (torchreid's ChannelGate, sigmoid activation): x * sigmoid(fc2(relu(
    fc1(mean over H, W)))), the fcs 1x1 convs with bias."""

    def __init__(self, in_channels: int, reduction: int = 16):
        super().__init__()
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(in_channels, in_channels // reduction, kernel_size=1, bias=True, padding=0)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(in_channels // reduction, in_channels, kernel_size=1, bias=True, padding=0)
        self.gate_activation = nn.Sigmoid()

    def forward(self, x):
        return x * self.gate_activation(self.fc2(self.relu(self.fc1(self.global_avgpool(x)))))


class NonLocal(nn.Module):
    """fast-reid's Non_local block (fastreid/layers/non_local.py): embedded-gaussian-free
    non-local attention, f = theta^T phi / HW, z = x + W(f g). fast-reid builds it with one
    inter channel (`reduc_ratio // reduc_ratio`), which makes f g rank one:
    y_i = theta_i * mean_j(phi_j g_j), and that is how reidc captures it."""

    def __init__(self, in_channels: int, inter_channels: int = 1):
        super().__init__()
        self.in_channels, self.inter_channels = in_channels, inter_channels
        self.g = nn.Conv2d(in_channels, inter_channels, 1)
        self.W = nn.Sequential(nn.Conv2d(inter_channels, in_channels, 1), nn.BatchNorm2d(in_channels))
        self.theta = nn.Conv2d(in_channels, inter_channels, 1)
        self.phi = nn.Conv2d(in_channels, inter_channels, 1)

    def forward(self, x):
        b = x.size(0)
        g_x = self.g(x).view(b, self.inter_channels, -1).permute(0, 2, 1)
        theta_x = self.theta(x).view(b, self.inter_channels, -1).permute(0, 2, 1)
        phi_x = self.phi(x).view(b, self.inter_channels, -1)
        f = torch.matmul(theta_x, phi_x)
        y = torch.matmul(f / f.size(-1), g_x).permute(0, 2, 1).contiguous()
        return self.W(y.view(b, self.inter_channels, *x.size()[2:])) + x
