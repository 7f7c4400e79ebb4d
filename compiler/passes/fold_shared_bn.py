"""Fold a shared BatchNorm into the convolution before it (conv weights scaled, bias shifted).

Guards: the producer is a conv2d (or a depthwise or grouped conv: one kernel per output channel,
scaled the same way) with one weight set and one use (a conv output read twice
cannot absorb the BN). Any other shared BN on a 4-D tensor becomes a per-channel `affine`
(rule `shared_bn_to_affine`), which TVM fuses into its neighbours.
"""
from __future__ import annotations

from collections import Counter

from reidc.compiler.ir import Graph, Op, Placement

from .bn_math import bn_tables, fold_affine_into_conv
from .rewrite import (Rewrite, Rule, apply_rules, bn_to_affine, modality_is, on_producer, one_weight_set,
                      producer_has_one_use, producer_is)


def _fold(g: Graph, nid, n):
    cid = n.inputs[0]
    conv = g[cid]
    w, b = fold_affine_into_conv(conv.attrs["weight"], conv.attr("bias"), *bn_tables(n.attrs["params"], n.attrs["eps"]))
    return Rewrite(producers={cid: conv.with_(attrs={**conv.attrs, "weight": w, "bias": b})}, forward=cid,
                   note=f"folded into {cid}")


def fold_shared_bn(g: Graph, stats: Counter | None = None) -> Graph:
    shared = modality_is(Placement.SHARED)
    rules = [
        Rule("fold_shared_bn_into_conv", Op.BATCH_NORM, _fold,
             (shared, producer_is(Op.CONV2D), on_producer(one_weight_set()), producer_has_one_use())),
        Rule("fold_shared_bn_into_depthwise", Op.BATCH_NORM, _fold,
             (shared, producer_is(Op.DEPTHWISE_CONV2D), producer_has_one_use())),
        Rule("fold_shared_bn_into_group_conv", Op.BATCH_NORM, _fold,
             (shared, producer_is(Op.GROUP_CONV2D), producer_has_one_use())),
        Rule("shared_bn_to_affine", Op.BATCH_NORM, bn_to_affine,
             (shared, ("input is 4-D", lambda g, nid, n: len(n.shape) == 4))),
    ]
    return apply_rules(g, rules, stats).graph
