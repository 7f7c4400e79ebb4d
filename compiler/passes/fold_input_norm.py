"""Fold a per-channel normalisation of the image (fast-reid's `(x - mean) / std` on 0-255 RGB,
captured as an `affine` of the graph input) into the convs that read it.

conv(affine(x)) becomes conv'(pad(x)): the conv's weights absorb the scale, its bias the
shift (compiler/passes/bn_math.py). Padding needs care: the original conv pads the
*normalised* image with zeros, which is the raw value mean = -shift/scale, not raw zero. So a
conv that pads gets a `pad` node before it that fills its border with that value per channel,
and itself pads no more; a conv without padding reads the raw input directly.

Guards: the affine reads a graph input, has one (C,) table (not per modality) and no zero
scale; the conv has one weight set. A conv whose input is anything else is left alone.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from reidc.compiler.ir import Graph, Node, Op

from .bn_math import fold_input_affine_into_conv
from .rewrite import Fresh, Rewrite, Rule, apply_rules, on_producer, one_weight_set, producer_is


def _affine_of_input(g: Graph, nid: str, n: Node) -> bool:
    return g[n.inputs[0]].op == Op.INPUT and len(n.inputs) == 1 and np.asarray(n.attrs["scale"]).ndim == 1


def _nonzero_scale(g: Graph, nid: str, n: Node) -> bool:
    return bool(np.all(np.asarray(n.attrs["scale"]) != 0))


def _fold(g: Graph, nid: str, n: Node) -> Rewrite:
    norm = g[n.inputs[0]]
    x = norm.inputs[0]
    w, b, value = fold_input_affine_into_conv(n.attrs["weight"], n.attr("bias"), norm.attrs["scale"], norm.attrs["bias"])
    ph, pw = n.attrs["padding"]
    attrs = {**n.attrs, "weight": w, "bias": b, "padding": (0, 0)}
    if (ph, pw) == (0, 0):
        return Rewrite(node=n.with_(inputs=(x,), attrs=attrs), note="normalisation folded, no padding")
    shape = tuple(g[x].shape[:2]) + (g[x].shape[2] + 2 * ph, g[x].shape[3] + 2 * pw)
    pad = Node(Op.PAD, (x,), shape, attrs={"padding": (ph, pw), "value": value}, source=norm.source)
    return Rewrite(node=n.with_(inputs=(Fresh("input_pad"),), attrs=attrs), add={Fresh("input_pad"): pad},
                   note=f"normalisation folded; border padded with {np.round(value, 3).tolist()}")


def fold_input_norm(g: Graph, stats: Counter | None = None) -> Graph:
    rule = Rule("fold_input_norm_into_conv", Op.CONV2D, _fold,
                (producer_is(Op.AFFINE), on_producer(("affine of an image input", _affine_of_input)),
                 on_producer(("no zero scale", _nonzero_scale)), one_weight_set()))
    return apply_rules(g, [rule], stats).graph
