"""Fold modality-specific (split) BNs for a mixed-modality batch.

For `conv -> split BN` the layer's strategy comes from `mixed_plan.choose` (per-sample affine
after the conv, or per-modality folded weights) and is recorded in `graph.meta["mixed_plan"]`
with its reason. A split BN with no conv before it becomes a per-modality affine.
Runs in the `mixed` pipeline after `fold_shared_bn` (single-modality pipelines have no split
BN left after `specialise_modality`).
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from compiler.ir import Graph, Node, Op

from . import mixed_plan
from .bn_math import bn_params_affine, fold_affine_into_conv
from .rewrite import Rule, apply_rules, modality_is, producer_has_one_use, producer_is

MODS = ("visible", "infrared")


def _tables(n: Node):
    pairs = [bn_params_affine(n.attrs["params"], n.attrs["eps"], m) for m in MODS]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def _fold(forced):
    def rewrite(g: Graph, nid, n):
        cid, mid = n.inputs
        conv = g[cid]
        choice = mixed_plan.choose(conv.attrs["weight"].shape, conv.shape, forced)
        g.meta.setdefault("mixed_plan", {})[conv.source or cid] = {
            "strategy": choice.strategy, "reason": choice.reason}
        scale, shift = _tables(n)
        if choice.strategy == "weights":
            folded = [fold_affine_into_conv(conv.attrs["weight"], conv.attr("bias"), scale[k], shift[k])
                      for k in range(2)]
            w = np.stack([f[0] for f in folded])
            b = np.stack([f[1] for f in folded])
            g.replace(cid, conv.with_(inputs=(conv.inputs[0], mid), attrs={**conv.attrs, "weight": w, "bias": b},
                                      modality="split"))
            g.redirect(nid, cid)
            g.remove(nid)
            return "per-modality weights"
        bias = conv.attr("bias")
        if bias is not None:  # conv bias passes through the affine: (y + b) * s + t
            shift = shift + bias[None, :] * scale
            conv = conv.with_(attrs={k: v for k, v in conv.attrs.items() if k != "bias"})
            g.replace(cid, conv)
        g.replace(nid, n.with_(op=Op.AFFINE, attrs={"scale": scale, "bias": shift}, modality="split"))
        return "per-sample affine"
    return rewrite


def _to_affine(g: Graph, nid, n):
    scale, shift = _tables(n)
    g.replace(nid, n.with_(op=Op.AFFINE, attrs={"scale": scale, "bias": shift}))
    return "per-modality affine"


def fold_modality_bn(g: Graph, stats: Counter | None = None, strategy: str | None = None) -> Graph:
    """strategy: None chooses per layer; "affine" or "weights" forces one for every layer."""
    conv_single = ("conv has one weight set", lambda g, nid, n: g[n.inputs[0]].attrs["weight"].ndim == 4)
    rules = [
        Rule("fold_split_bn_after_conv", Op.BATCH_NORM, _fold(strategy),
             (modality_is("split"), producer_is(Op.CONV2D), conv_single, producer_has_one_use())),
        Rule("split_bn_to_affine", Op.BATCH_NORM, _to_affine, (modality_is("split"),)),
    ]
    return apply_rules(g, rules, stats)
