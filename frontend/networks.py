"""The PyTorch network an architecture spec describes, whatever its family: CM-NAS ResNets
(models.py) or BiRe-ID binarized ResNets (bire.py, built on models.py's parts)."""
from __future__ import annotations

from torch import nn

from .arch import ArchSpec
from .bire import BiReResNet
from .models import CMNASResNet


def build_model(spec: ArchSpec) -> nn.Module:
    """The network `spec` describes, in eval mode."""
    if spec.family == "bire":
        return BiReResNet(spec).eval()
    return CMNASResNet(spec).eval()
