"""Fold modality-specific (split) BNs for a mixed-modality batch.

For `conv -> split BN` the layer's strategy comes from `mixed_plan.choose` (per-sample affine
after the conv, or per-modality folded weights); the pass returns the plan it followed,
{layer: {"strategy", "reason"}}, with the graph (the pipeline records it as the graph's
`mixed_plan`). A split BN with no conv before it, or after a depthwise or grouped conv (which take
no per-modality weights), becomes a per-modality affine.
Runs in the `mixed` pipeline after `fold_shared_bn` (single-modality pipelines have no split
BN left after `specialise_modality`).
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from reidc.compiler.ir import Graph, Op, Placement

from . import mixed_plan
from .bn_math import bn_tables, fold_affine_into_conv
from .rewrite import (Applied, Rewrite, Rule, apply_rules, bn_to_affine, modality_is, on_producer, one_weight_set,
                      producer_has_one_use, producer_is)


def _fold(forced: str | None, shared: bool):
    def rewrite(g: Graph, nid, n):
        cid, mid = n.inputs
        conv = g[cid]
        choice = mixed_plan.choose(conv.attrs["weight"].shape, conv.shape, forced, shared)
        plan = {conv.source or cid: {"strategy": choice.strategy, "reason": choice.reason}}
        scale, shift = bn_tables(n.attrs["params"], n.attrs["eps"])
        if choice.strategy == "weights":
            folded = [fold_affine_into_conv(conv.attrs["weight"], conv.attr("bias"), s, t)
                      for s, t in zip(scale, shift)]
            w, b = np.stack([f[0] for f in folded]), np.stack([f[1] for f in folded])
            conv = conv.with_(inputs=(conv.inputs[0], mid), attrs={**conv.attrs, "weight": w, "bias": b},
                              modality=Placement.SPLIT)
            return Rewrite(producers={cid: conv}, forward=cid, note="per-modality weights", facts=plan)
        bias = conv.attr("bias")
        producers = {}
        if bias is not None:  # conv bias passes through the affine: (y + b) * s + t
            shift = shift + bias[None, :] * scale
            producers[cid] = conv.with_(attrs={k: v for k, v in conv.attrs.items() if k != "bias"})
        affine = n.with_(op=Op.AFFINE, attrs={"scale": scale, "bias": shift}, modality=Placement.SPLIT)
        return Rewrite(node=affine, producers=producers, note="per-sample affine", facts=plan)
    return rewrite


def fold_modality_bn(g: Graph, stats: Counter | None = None, strategy: str | None = None,
                     share_weights: bool = False) -> Applied:
    """strategy: None chooses per layer; "affine" or "weights" forces one for every layer.
    share_weights: the artifact's visible/infrared entries keep real-valued convs' weights
    (specialise_modality), so the per-layer choice is the affine that shares them.
    Returns the graph and the mixed plan (`Applied.facts`)."""
    split = modality_is(Placement.SPLIT)
    rules = [
        Rule("fold_split_bn_after_conv", Op.BATCH_NORM, _fold(strategy, share_weights),
             (split, producer_is(Op.CONV2D), on_producer(one_weight_set()), producer_has_one_use())),
        Rule("split_bn_to_affine", Op.BATCH_NORM, bn_to_affine, (split,)),
    ]
    return apply_rules(g, rules, stats)
