"""BNNeck folding: the BN after global pooling becomes a per-channel affine, and folds into a
following dense layer where that is its only use.

It cannot fold backwards into the last conv (a ReLU and a residual add stand between), so the
affine stays and TVM fuses it into the pooling kernel's epilogue. Runs after the BN folds.
"""
from __future__ import annotations

from collections import Counter

from reidc.compiler.ir import Graph, Op, Placement

from .bn_math import fold_affine_into_dense
from .rewrite import Rewrite, Rule, apply_rules, bn_to_affine, modality_is, producer_has_one_use


def _affine_into_dense(g: Graph, nid, n):
    a = g[n.inputs[0]]
    w, b = fold_affine_into_dense(n.attrs["weight"], n.attr("bias"), a.attrs["scale"], a.attrs["bias"])
    return Rewrite(node=n.with_(inputs=a.inputs, attrs={**n.attrs, "weight": w, "bias": b}),
                   note=f"folded {n.inputs[0]}")


def fold_bnneck(g: Graph, stats: Counter | None = None) -> Graph:
    rules = [
        Rule("bnneck_to_affine", Op.BATCH_NORM, bn_to_affine,
             (modality_is(Placement.SHARED), ("input is (N, C)", lambda g, nid, n: len(n.shape) == 2))),
    ]
    g = apply_rules(g, rules, stats).graph
    dense_rules = [
        Rule("fold_affine_into_dense", Op.DENSE, _affine_into_dense, (
            ("producer is a shared affine", lambda g, nid, n: g[n.inputs[0]].op == Op.AFFINE
             and g[n.inputs[0]].attrs["scale"].ndim == 1),
            producer_has_one_use())),
    ]
    return apply_rules(g, dense_rules, stats).graph
