"""Fold a per-channel affine (a BN before the sign) into the bit-packing threshold (stage 3):
sign(x * s + t) packs as bit = x < -t/s (x > -t/s where s < 0). Per-modality BNs give
per-modality thresholds. Guards: the producer is an affine or a BN with one use.

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

from compiler.ir import Graph, Op

from .binary_math import integer_threshold, sign_threshold
from .bn_math import bn_params_affine
from .rewrite import Rule, apply_rules, producer_has_one_use

MODS = ("visible", "infrared")


def _affine_of(node):
    if node.op == Op.AFFINE:
        return np.asarray(node.attrs["scale"]), np.asarray(node.attrs["bias"])
    if node.modality == "shared":
        return bn_params_affine(node.attrs["params"], node.attrs["eps"], "shared")
    pairs = [bn_params_affine(node.attrs["params"], node.attrs["eps"], m) for m in MODS]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def _fold(g: Graph, nid, n):
    pid = n.inputs[0]
    p = g[pid]
    s, t = _affine_of(p)
    if np.asarray(n.attrs["threshold"]).any() or np.asarray(n.attrs["flip"]).any():
        return None  # already thresholded
    thr, flip = sign_threshold(s, t)
    inputs = (p.inputs[0],) + ((p.inputs[1],) if thr.ndim == 2 else ())
    g.replace(nid, n.with_(inputs=inputs, attrs={**n.attrs, "threshold": thr, "flip": flip},
                           modality="split" if thr.ndim == 2 else n.modality))
    if not g.consumers(pid) and pid not in g.outputs:
        g.remove(pid)
    return f"threshold from {pid}"


def _on_accumulator(g: Graph, nid, n):
    bid = n.inputs[0]
    b = g[bid]
    if np.asarray(n.attrs["threshold"]).any() or np.asarray(n.attrs["flip"]).any():
        return None
    thr, flip = integer_threshold(b.attrs["scale"], b.attrs["bias"])
    inputs = (bid,) + ((b.inputs[1],) if thr.ndim == 2 else ())
    o = b.shape[1]
    g.replace(bid, b.with_(inputs=b.inputs[:1], dtype="int32", modality="any", attrs={
        **b.attrs, "accumulator": True, "scale": np.ones(o, np.float32), "bias": np.zeros(o, np.float32)}))
    g.replace(nid, n.with_(inputs=inputs, attrs={**n.attrs, "threshold": thr, "flip": flip},
                           modality="split" if thr.ndim == 2 else n.modality))
    return f"integer threshold on {bid}"


def fold_sign_threshold(g: Graph, stats: Counter | None = None) -> Graph:
    affine_like = ("producer is a per-channel affine or BN",
                   lambda g, nid, n: g[n.inputs[0]].op in (Op.AFFINE, Op.BATCH_NORM))
    float_bconv = ("producer is a float-output bconv2d",
                   lambda g, nid, n: g[n.inputs[0]].op == Op.BCONV2D and not g[n.inputs[0]].attr("accumulator"))
    rules = [Rule("fold_sign_threshold", Op.BITPACK, _fold, (affine_like, producer_has_one_use())),
             Rule("threshold_on_accumulator", Op.BITPACK, _on_accumulator, (float_bconv, producer_has_one_use()))]
    return apply_rules(g, rules, stats)
