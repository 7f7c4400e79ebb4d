"""Find binary convolutions by pattern, not by module class (stage 1 of 4, as in Larq CE:
detect -> fold scales and biases -> thresholds -> bit-pack).

Pattern: conv2d(sign(x)) or dense(sign(x)) whose weights are +-alpha_o per output channel
(checked on the constants, relative tolerance 1e-5); a binary dense becomes a 1x1 bconv2d on
the (N, C) tensor. Rewrite: bconv2d(bitpack(x)) with the +-1 signs, scale
alpha and the conv's bias; `bitpack` with threshold 0 is exactly sign(), and each binary conv
gets its own (a sign with no other use goes). Bail-outs (logged, counted): a weight tensor that
is not +-alpha per channel, per-modality weights (run before the BN folds, which create those).
Run before fold_shared_bn, so a BN after a binary conv folds into its scale (fold_binary_scale),
never into the +-1 weights.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from reidc.compiler.ir import Graph, Node, Op
from reidc.compiler.ir.ops import BITS

from .binary_math import binary_weight_scale
from .rewrite import Fresh, Rewrite, Rule, apply_rules, one_weight_set, producer_is


def _rewrite(g: Graph, nid, n):
    signs, alpha = binary_weight_scale(n.attrs["weight"])  # the guard checked it is not None
    sid = n.inputs[0]
    sign = g[sid]
    x = sign.inputs[0]
    c = g[x].shape[1]
    pack = Fresh(f"{sid}_bitpack")
    bitpack = Node(Op.BITPACK, (x,), g[x].shape, BITS, {
        "threshold": np.zeros(c, np.float32), "flip": np.zeros(c, np.int8),
        "site": sign.attr("site", sign.source)}, sign.source)
    bias = n.attr("bias")
    if n.op == Op.DENSE:  # a binary dense is a 1x1 binary conv on (N, C)
        signs = signs.reshape(signs.shape + (1, 1))
    bconv = n.with_(op=Op.BCONV2D, inputs=(pack,), attrs={
        "signs": signs, "scale": alpha, "bias": np.zeros(len(alpha), np.float32) if bias is None else bias,
        "stride": n.attr("stride", (1, 1)), "padding": n.attr("padding", (0, 0))})
    return Rewrite(node=bconv, add={pack: bitpack}, note="binary conv")


def detect_binary_conv(g: Graph, stats: Counter | None = None) -> Graph:
    pm = ("weights are +-alpha per output channel",
          lambda g, nid, n: binary_weight_scale(n.attrs["weight"]) is not None)
    rules = [Rule("detect_binary_conv", Op.CONV2D, _rewrite, (producer_is(Op.SIGN), one_weight_set(), pm)),
             Rule("detect_binary_dense", Op.DENSE, _rewrite, (producer_is(Op.SIGN), pm))]
    return apply_rules(g, rules, stats).graph
