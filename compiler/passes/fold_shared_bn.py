"""Fold a shared BatchNorm into the convolution before it (conv weights scaled, bias shifted).

Guards: the producer is a conv2d with one weight set and one use (a conv output read twice
cannot absorb the BN). Any other shared BN on a 4-D tensor becomes a per-channel `affine`
(rule `shared_bn_to_affine`), which TVM fuses into its neighbours.
"""
from __future__ import annotations

from collections import Counter

from compiler.ir import Graph, Op

from .bn_math import bn_params_affine, fold_affine_into_conv
from .rewrite import Rule, apply_rules, modality_is, producer_has_one_use, producer_is


def _fold(g: Graph, nid, n):
    cid = n.inputs[0]
    conv = g[cid]
    s, t = bn_params_affine(n.attrs["params"], n.attrs["eps"], "shared")
    w, b = fold_affine_into_conv(conv.attrs["weight"], conv.attr("bias"), s, t)
    g.replace(cid, conv.with_(attrs={**conv.attrs, "weight": w, "bias": b}))
    g.redirect(nid, cid)
    g.remove(nid)
    return f"folded into {cid}"


def _to_affine(g: Graph, nid, n):
    s, t = bn_params_affine(n.attrs["params"], n.attrs["eps"], "shared")
    g.replace(nid, n.with_(op=Op.AFFINE, attrs={"scale": s, "bias": t}, modality="any"))
    return "per-channel affine"


def fold_shared_bn(g: Graph, stats: Counter | None = None) -> Graph:
    conv_single = ("conv has one weight set", lambda g, nid, n: g[n.inputs[0]].attrs["weight"].ndim == 4)
    rules = [
        Rule("fold_shared_bn_into_conv", Op.BATCH_NORM, _fold,
             (modality_is("shared"), producer_is(Op.CONV2D), conv_single, producer_has_one_use())),
        Rule("shared_bn_to_affine", Op.BATCH_NORM, _to_affine,
             (modality_is("shared"), ("input is 4-D", lambda g, nid, n: len(n.shape) == 4))),
    ]
    return apply_rules(g, rules, stats)
