"""Fold a per-channel normalisation of the image (fast-reid's `(x - mean) / std` on 0-255 RGB,
captured as an `affine` of the graph input) into the convs that read it.

conv(affine(x)) becomes conv'(x): the conv's weights absorb the scale, its bias the shift
(compiler/passes/bn_math.py). Padding needs care: the original conv pads the *normalised*
image with zeros, which is the raw value mean = -shift/scale, not raw zero. So a conv that
pads gets `pad_value`, that value per input channel, which its kernel writes into the border
it pads (no separate padding pass over the image; an int8 stem gets a `pad` node instead,
compiler/passes/quantize_int8.py).

Guards: the affine reads a graph input, has one (C,) table (not per modality) and no zero
scale; the conv has one weight set and no pad value yet. Any other conv is left alone.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from reidc.compiler.ir import Graph, Node, Op

from .bn_math import fold_input_affine_into_conv
from .rewrite import Rewrite, Rule, apply_rules, on_producer, one_weight_set, producer_is


def _affine_of_input(g: Graph, nid: str, n: Node) -> bool:
    return g[n.inputs[0]].op == Op.INPUT and len(n.inputs) == 1 and np.asarray(n.attrs["scale"]).ndim == 1


def _nonzero_scale(g: Graph, nid: str, n: Node) -> bool:
    return bool(np.all(np.asarray(n.attrs["scale"]) != 0))


def _fold(g: Graph, nid: str, n: Node) -> Rewrite:
    norm = g[n.inputs[0]]
    w, b, value = fold_input_affine_into_conv(n.attrs["weight"], n.attr("bias"), norm.attrs["scale"], norm.attrs["bias"])
    attrs = {**n.attrs, "weight": w, "bias": b}
    if tuple(n.attrs["padding"]) != (0, 0):
        attrs["pad_value"] = value
    return Rewrite(node=n.with_(inputs=(norm.inputs[0],), attrs=attrs),
                   note=f"normalisation folded; border value {np.round(value, 3).tolist()}")


def fold_input_norm(g: Graph, stats: Counter | None = None) -> Graph:
    rule = Rule("fold_input_norm_into_conv", Op.CONV2D, _fold,
                (producer_is(Op.AFFINE), on_producer(("affine of an image input", _affine_of_input)),
                 on_producer(("no zero scale", _nonzero_scale)), one_weight_set(),
                 ("no pad value yet", lambda g, nid, n: n.attr("pad_value") is None)))
    return apply_rules(g, [rule], stats).graph
