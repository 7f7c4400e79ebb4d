"""Fold a per-channel affine (a BN before the sign) into the bit-packing threshold (stage 3):
sign(x * s + t) packs as bit = x < -t/s (x > -t/s where s < 0). Per-modality BNs give
per-modality thresholds. Guards: the bitpack is not thresholded yet; the producer is an affine
or a BN with one use.

When the producer is itself a binary conv (bconv -> BN -> sign -> bconv, folded by
fold_binary_scale into dot * a + b), the threshold moves onto the integer accumulator:
bit = dot < ceil(-b/a) (dot > floor(-b/a) where a < 0), exact, and the bconv emits its int32
accumulator, so binary layers chain without a float round trip (rule `threshold_on_accumulator`).

Thresholds move the comparison from `x*s + t < 0` to `x < -t/s`: activations within float
rounding of the threshold can flip sign. Verification counts such near-threshold values on
the PyTorch side and reports them (compiler/reference.py), never hides them.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from reidc.compiler.ir import Graph, Op, Placement

from .binary_math import integer_threshold, sign_threshold
from .bn_math import bn_tables
from .rewrite import Rewrite, Rule, apply_rules, producer_has_one_use


def _affine_of(node):
    if node.op == Op.AFFINE:
        return np.asarray(node.attrs["scale"]), np.asarray(node.attrs["bias"])
    return bn_tables(node.attrs["params"], node.attrs["eps"])


def _thresholded(n, thr, flip, inputs):
    """The bitpack `n` comparing inputs[0] with thr/flip; per-modality (2, C) tables also take
    the modality input, inputs[1]."""
    split = thr.ndim == 2
    return n.with_(inputs=inputs[:2 if split else 1], attrs={**n.attrs, "threshold": thr, "flip": flip},
                   modality=Placement.SPLIT if split else n.modality)


def _fold(g: Graph, nid, n):
    pid = n.inputs[0]
    p = g[pid]
    thr, flip = sign_threshold(*_affine_of(p))
    return Rewrite(node=_thresholded(n, thr, flip, p.inputs), note=f"threshold from {pid}")


def _on_accumulator(g: Graph, nid, n):
    bid = n.inputs[0]
    b = g[bid]
    thr, flip = integer_threshold(b.attrs["scale"], b.attrs["bias"])
    o = b.shape[1]
    acc = b.with_(inputs=b.inputs[:1], dtype="int32", modality=Placement.ANY, attrs={
        **b.attrs, "accumulator": True, "scale": np.ones(o, np.float32), "bias": np.zeros(o, np.float32)})
    return Rewrite(node=_thresholded(n, thr, flip, (bid,) + b.inputs[1:]), producers={bid: acc},
                   note=f"integer threshold on {bid}")


def fold_sign_threshold(g: Graph, stats: Counter | None = None) -> Graph:
    unthresholded = ("not thresholded yet",
                     lambda g, nid, n: not (np.asarray(n.attrs["threshold"]).any() or np.asarray(n.attrs["flip"]).any()))
    affine_like = ("producer is a per-channel affine or BN",
                   lambda g, nid, n: g[n.inputs[0]].op in (Op.AFFINE, Op.BATCH_NORM))
    float_bconv = ("producer is a float-output bconv2d",
                   lambda g, nid, n: g[n.inputs[0]].op == Op.BCONV2D and not g[n.inputs[0]].attr("accumulator"))
    one_use = producer_has_one_use()
    rules = [Rule("fold_sign_threshold", Op.BITPACK, _fold, (unthresholded, affine_like, one_use)),
             Rule("threshold_on_accumulator", Op.BITPACK, _on_accumulator, (unthresholded, float_bconv, one_use))]
    return apply_rules(g, rules, stats).graph
