"""BNNeck folding: the BN after global pooling becomes a per-channel affine, and folds into a
following dense layer where that is its only use.

It cannot fold backwards into the last conv (a ReLU and a residual add stand between), so the
affine stays and TVM fuses it into the pooling kernel's epilogue. Runs after the BN folds.
"""
from __future__ import annotations

from collections import Counter

from compiler.ir import Graph, Op

from .bn_math import bn_params_affine, fold_affine_into_dense
from .rewrite import Rule, apply_rules, modality_is


def _neck_to_affine(g: Graph, nid, n):
    s, t = bn_params_affine(n.attrs["params"], n.attrs["eps"], "shared")
    g.replace(nid, n.with_(op=Op.AFFINE, attrs={"scale": s, "bias": t}, modality="any"))
    return "affine"


def _affine_into_dense(g: Graph, nid, n):
    aid = n.inputs[0]
    a = g[aid]
    w, b = fold_affine_into_dense(n.attrs["weight"], n.attr("bias"), a.attrs["scale"], a.attrs["bias"])
    g.replace(nid, n.with_(inputs=a.inputs, attrs={**n.attrs, "weight": w, "bias": b}))
    if not g.consumers(aid) and aid not in g.outputs:
        g.remove(aid)
    return f"folded {aid}"


def fold_bnneck(g: Graph, stats: Counter | None = None) -> Graph:
    rules = [
        Rule("bnneck_to_affine", Op.BATCH_NORM, _neck_to_affine,
             (modality_is("shared"), ("input is (N, C)", lambda g, nid, n: len(n.shape) == 2))),
    ]
    g = apply_rules(g, rules, stats)
    dense_rules = [
        Rule("fold_affine_into_dense", Op.DENSE, _affine_into_dense, (
            ("producer is a shared affine", lambda g, nid, n: g[n.inputs[0]].op == Op.AFFINE
             and g[n.inputs[0]].attrs["scale"].ndim == 1),
            ("affine has one use", lambda g, nid, n: len(g.consumers(n.inputs[0])) == 1
             and n.inputs[0] not in g.outputs))),
    ]
    return apply_rules(g, dense_rules, stats)
