"""Size and operation counts of an IR graph (pure; per sample), summed from each op's declared
cost (compiler/ir/spec.py: `Cost`).

OPs follow the convention of XNOR-Net / Bi-Real / BiRe-ID: binary MACs / 64 + float MACs (+ int8
MACs, counted as one op each).
fp32 bytes count every weight as a float32 (what the un-binarized network stores); packed bytes
count binary weights at one bit.
"""
from __future__ import annotations

import hashlib

import numpy as np

from .ir import Graph
from .ir.spec import Cost, spec_of


def _total(g: Graph) -> Cost:
    costs = [spec_of(n.op).cost(n) for _, n in g.items()]
    return Cost(*(sum(getattr(c, f) for c in costs) for f in Cost.__dataclass_fields__))


def macs(g: Graph) -> dict[str, int]:
    c = _total(g)
    return {"binary_macs": c.binary_macs, "float_macs": c.float_macs, "int8_macs": c.int8_macs,
            "ops": c.binary_macs // 64 + c.float_macs + c.int8_macs,
            "fp32_equivalent_ops": c.binary_macs + c.float_macs + c.int8_macs}


def weight_bytes(g: Graph) -> dict[str, int]:
    """Weights of conv and dense layers: as fp32, and as reidc stores them (binary packed)."""
    c = _total(g)
    return {"fp32_weight_bytes": c.fp32_weight_bytes, "stored_weight_bytes": c.stored_weight_bytes}


def deployed_weight_bytes(graphs: dict[str, Graph]) -> int:
    """Bytes of the distinct constant arrays over a model's entries (what its library stores):
    a weight set that a shared BN leaves equal in the visible and infrared entries counts once,
    a split BN in front of a float conv makes two; binary weights count packed."""
    seen: dict[tuple, int] = {}
    for g in graphs.values():
        for _, n in g.items():
            for k, v in n.attrs.items():
                if isinstance(v, np.ndarray) and not (k == "signs" and n.attr("packed") is not None):
                    seen[(v.dtype.str, v.shape, hashlib.sha1(np.ascontiguousarray(v).tobytes()).hexdigest())] = v.nbytes
    return sum(seen.values())
