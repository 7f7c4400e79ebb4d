"""Fold what follows a binary conv into its per-channel output affine (stage 2): a BN (shared,
or split into per-modality tables) or an affine. The +-1 weights are never touched: only
`scale` and `bias` of the bconv2d change. Guard: the bconv has one use.
Runs after detect_binary_conv (after specialise_modality in single-modality pipelines).
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from reidc.compiler.ir import Graph, Placement, Op

from .bn_math import bn_tables
from .rewrite import Rewrite, Rule, apply_rules, producer_has_one_use, producer_is


def _fold(g: Graph, nid, n, scale, shift):
    """y = (dot * a + b) * s + t  ->  dot * (a s) + (b s + t); tables broadcast (2, O) vs (O,)."""
    bid = n.inputs[0]
    b = g[bid]
    a, c = np.asarray(b.attrs["scale"]), np.asarray(b.attrs["bias"])
    new_scale, new_bias = (a * scale).astype(np.float32), (c * scale + shift).astype(np.float32)
    split = new_scale.ndim == 2
    inputs = b.inputs + ((n.inputs[1],) if split and len(b.inputs) == 1 else ())  # tables need the modality
    folded = b.with_(inputs=inputs, attrs={**b.attrs, "scale": new_scale, "bias": new_bias},
                     modality=Placement.SPLIT if split else b.modality)
    return Rewrite(producers={bid: folded}, forward=bid, note=f"folded into {bid}")


def _bn(g, nid, n):
    return _fold(g, nid, n, *bn_tables(n.attrs["params"], n.attrs["eps"]))


def _affine(g, nid, n):
    return _fold(g, nid, n, np.asarray(n.attrs["scale"]), np.asarray(n.attrs["bias"]))


def fold_binary_scale(g: Graph, stats: Counter | None = None) -> Graph:
    guards = (producer_is(Op.BCONV2D), producer_has_one_use())
    rules = [Rule("fold_bn_into_bconv", Op.BATCH_NORM, _bn, guards),
             Rule("fold_affine_into_bconv", Op.AFFINE, _affine, guards)]
    return apply_rules(g, rules, stats).graph
