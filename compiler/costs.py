"""Size and operation counts of an IR graph (pure; per sample).

OPs follow the convention of XNOR-Net / Bi-Real / BiRe-ID: binary MACs / 64 + float MACs.
fp32 bytes count every weight as a float32 (what the un-binarized network stores); packed bytes
count binary weights at one bit.
"""
from __future__ import annotations

import numpy as np

from .ir import Graph, Op


def _spatial(shape) -> int:
    return int(np.prod(shape[2:])) if len(shape) > 2 else 1


def macs(g: Graph) -> dict[str, int]:
    binary = floats = 0
    for _, n in g.items():
        if n.op == Op.BCONV2D:
            binary += int(np.prod(n.attrs["signs"].shape)) * _spatial(n.shape)
        elif n.op == Op.CONV2D:
            floats += int(np.prod(n.attrs["weight"].shape[-4:])) * _spatial(n.shape)
        elif n.op == Op.DENSE:
            floats += int(np.prod(n.attrs["weight"].shape))
    return {"binary_macs": binary, "float_macs": floats, "ops": binary // 64 + floats,
            "fp32_equivalent_ops": binary + floats}


def weight_bytes(g: Graph) -> dict[str, int]:
    """Weights of conv and dense layers: as fp32, and as reidc stores them (binary packed)."""
    fp32 = packed = 0
    for _, n in g.items():
        if n.op == Op.BCONV2D:
            count = int(np.prod(n.attrs["signs"].shape))
            fp32 += 4 * count
            packed += int(n.attrs["packed"].nbytes) if n.attr("packed") is not None else count // 8
        elif n.op in (Op.CONV2D, Op.DENSE):
            count = int(np.prod(n.attrs["weight"].shape[-4:] if n.op == Op.CONV2D else n.attrs["weight"].shape))
            fp32 += 4 * count
            packed += 4 * count
    return {"fp32_weight_bytes": fp32, "stored_weight_bytes": packed}


def deployed_weight_bytes(graphs: dict[str, Graph]) -> int:
    """Bytes of the distinct constant arrays over a model's entries (what its library stores):
    a weight set that a shared BN leaves equal in the visible and infrared entries counts once,
    a split BN in front of a float conv makes two; binary weights count packed."""
    import hashlib
    seen: dict[tuple, int] = {}
    for g in graphs.values():
        for _, n in g.items():
            for k, v in n.attrs.items():
                if isinstance(v, np.ndarray) and not (k == "signs" and n.attr("packed") is not None):
                    seen[(v.dtype.str, v.shape, hashlib.sha1(np.ascontiguousarray(v).tobytes()).hexdigest())] = v.nbytes
    return sum(seen.values())
