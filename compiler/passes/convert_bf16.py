"""bf16 for the real-valued convs (`--precision bf16`): graph surgery only, no calibration.

    %y = conv2d(%x)            ->   %b = to_bf16(%x)          (one per tensor, shared)
                                    %y = conv2d_bf16(%b[, %modality])
    %s = add(%x, %r)           ->   %s = add(from_bf16(%b), %r)   where %b = to_bf16(%x) exists
The weights are rounded to bf16 (nearest even); a residual add reads the bf16 copy of a tensor
the bf16 convs read (the producer then writes bf16 only: half the residual stream's bytes, as
OpenVINO's bf16 mode keeps it); per-modality weights from a split-BN fold
(the second set the first times a per-channel factor r) share one bf16 set, with out_scale
(1, r) per modality, so the mixed entry keeps one weight set and its tiles. A conv stays fp32,
and `bf16_blocker` says why, where the bf16 kernel cannot take it (input or output
channels not a multiple of 64: AMX-BF16 tiles' 64-channel rows, kept on every target so that a
build's numbers do not depend on it; a strided conv is fine: the AMX kernel splits its input
into the stride's phases) or its per-modality weights are not proportional. Binary convs stay 1-bit;
dense layers and depthwise convs stay fp32; grouped convs too, listed with their reason.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from reidc.compiler.ir import Graph, Node, Op, Placement, const
from reidc.compiler.ir.opset.bf16 import BF16
from reidc.compiler.ir.opset.refmath import to_bf16_bits

from .quant_math import proportional
from .rewrite import Applied, Fresh, Rewrite, Rule, apply_rules, modality_input

ROW = 64   # channels per AMX tile row (input) and per output block


def bf16_blocker(g: Graph, nid: str) -> str | None:
    """Why the conv `nid` cannot run in bf16 (None: it can)."""
    n = g[nid]
    if n.op == Op.GROUP_CONV2D:
        return "a grouped conv: the bf16 kernel convolves every input channel (grouped convs stay fp32)"
    if n.op != Op.CONV2D:
        return None
    c, o = g[n.inputs[0]].shape[1], n.shape[1]
    if c % ROW:
        return (f"{c} input channels: bf16 convs take whole blocks of {ROW} input channels (AMX-BF16's tile rows; "
                "the same rule on every target, so a build's numbers do not depend on it)")
    if o % ROW:
        return f"{o} output channels: the bf16 kernel writes blocks of {ROW}"
    if n.attr("pad_value") is not None:
        return "its border is a folded input normalisation's value (pad_value)"
    w = np.asarray(n.attrs["weight"])
    if w.ndim == 5 and proportional(w) is None:
        return "per-modality weights that are not one set times a per-channel factor"
    return None


def _rewrite(g: Graph, nid: str, n: Node) -> Rewrite:
    src = n.inputs[0]
    add = {}
    existing = next((c for c in g.consumers(src) if g[c].op == Op.TO_BF16), None)
    if existing is None:
        existing = Fresh(f"{src}_bf16")
        add[existing] = Node(Op.TO_BF16, (src,), g[src].shape, BF16, source=g[src].source)
    w = np.asarray(n.attrs["weight"])
    attrs = {"weight": const(to_bf16_bits(w if w.ndim == 4 else w[0])), "stride": n.attrs["stride"],
             "padding": n.attrs["padding"]}
    if w.ndim == 5:
        attrs["out_scale"] = const(np.stack([np.ones(len(w[0])), proportional(w)]).astype(np.float32))
    if n.attr("bias") is not None:
        attrs["bias"] = n.attrs["bias"]
    modal = w.ndim == 5 or np.asarray(n.attr("bias", np.zeros(1))).ndim == 2
    m = modality_input(g)
    new = n.with_(op=Op.CONV2D_BF16, inputs=(existing,) + ((m,) if modal else ()), attrs=attrs,
                  modality=Placement.SPLIT if w.ndim == 5 else n.modality)
    return Rewrite(node=new, add=add, note="bf16 weights" + (", per-modality out_scale" if w.ndim == 5 else ""))


def _stored_bf16(g: Graph, nid: str) -> str | None:
    """The to_bf16 of tensor nid, if a bf16 conv reads it."""
    return next((c for c in g.consumers(nid) if g[c].op == Op.TO_BF16), None)


def _residual(g: Graph, nid: str, n: Node) -> Rewrite | None:
    """An add reading a tensor that bf16 convs read too takes it back from the bf16 copy, so
    the producer writes only bf16 (half the bytes of the residual stream)."""
    add, inputs = {}, list(n.inputs)
    for k, src in enumerate(n.inputs):
        t = _stored_bf16(g, src)
        if t is None:
            continue
        back = next((c for c in g.consumers(t) if g[c].op == Op.FROM_BF16), None)
        if back is None:
            back = Fresh(f"{src}_f32")
            add[back] = Node(Op.FROM_BF16, (t,), g[src].shape, source=g[src].source)
        inputs[k] = back
    if inputs == list(n.inputs):
        return None
    return Rewrite(node=n.with_(inputs=tuple(inputs)), add=add, note="residual read from its bf16 copy")


def convert_bf16(g: Graph, stats: Counter | None = None) -> Applied:
    """The graph with every conv the bf16 kernel takes in bf16, and the residual adds reading
    the bf16 copies of what those convs read; facts: the convs left in fp32 and why."""
    rules = [Rule("convert_conv_bf16", Op.CONV2D, _rewrite, (
        ("the bf16 kernel takes it", lambda g, nid, n: bf16_blocker(g, nid) is None),))]
    out = apply_rules(g, rules, stats).graph
    out = apply_rules(out, [Rule("bf16_residual", Op.ADD, _residual)], stats).graph
    kept = {n.source or nid: bf16_blocker(g, nid) for nid, n in out.items() if n.op in (Op.CONV2D, Op.GROUP_CONV2D)}
    return Applied(out, {"fp32_convs": kept} if kept else {})
