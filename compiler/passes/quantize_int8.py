"""Post-training int8 for the real-valued convs (`--precision int8`): graph surgery only; the
maths is quant_math.py and the calibration statistics come in as `ranges`.

    %y = conv2d(%x)            ->   %q = quantize(%x[, %modality])   (one per tensor, shared)
                                    %y = conv2d_int8(%q[, %modality])
Each quantized conv reads a uint8 tensor; TVM fuses the quantize into the epilogue of the conv
that produced %x (requantisation in registers, uint8 to memory). A conv stays fp32, and
`int8_blocker` says why, where the kernel cannot take it (input channels not a multiple of 4,
the int8 dot product's group, except the image's: its weights get a zero fourth channel;
output channels not a multiple of 16) or calibration has no range for its input; a grouped conv
stays fp32 with its reason too (the int8 kernel convolves every input channel). Binary convs
stay 1-bit; dense layers stay fp32. In a mixed graph every scale is per modality (a split BN
gives the two modalities different ranges).
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from reidc.compiler.ir import Graph, Node, Op, Placement, const

from .quant_math import ActivationRange, divided, quantize_weight, shared_weight
from .rewrite import Applied, Fresh, Rewrite, Rule, apply_rules, modality_input

GROUP, LANES = 4, 16   # the int8 kernel's input-channel group and output-channel block
GROUPED = "a grouped conv: the int8 kernel convolves every input channel (grouped convs stay fp32)"


def int8_blocker(g: Graph, nid: str) -> str | None:
    """Why the conv `nid` cannot run in int8 (None: it can)."""
    n = g[nid]
    if n.op == Op.GROUP_CONV2D:
        return GROUPED
    if n.op != Op.CONV2D:
        return None
    c, o = g[n.inputs[0]].shape[1], n.shape[1]
    if c % GROUP and g[n.inputs[0]].op != Op.INPUT:   # the image's channels pad to a group
        return f"{c} input channels: the int8 dot product takes groups of {GROUP}"
    if o % LANES:
        return f"{o} output channels: the int8 kernel writes blocks of {LANES}"
    return None


def calibration_sites(g: Graph) -> list[str]:
    """The tensors calibration must measure: the inputs of the convs int8 can take."""
    return sorted({g[nid].inputs[0] for nid, n in g.items() if n.op == Op.CONV2D and int8_blocker(g, nid) is None},
                  key=g.order)


def _scales(r: ActivationRange, modal: bool, unclipped: bool) -> np.ndarray:
    s = r.scales(unclipped)
    if modal:
        return s if len(s) == 2 else np.repeat(s, 2)
    return s[:1] if len(s) == 1 else np.array([s.max()], np.float32)


def _weights(w: np.ndarray, qmax: int):
    if w.ndim == 4:
        return quantize_weight(w, qmax)
    shared = shared_weight(w, qmax=qmax)
    if shared is not None:
        return shared
    q0, s0 = quantize_weight(w[0], qmax)
    q1, s1 = quantize_weight(w[1], qmax)
    return np.stack([q0, q1]), np.stack([s0, s1])


def _rewrite(ranges: dict[str, ActivationRange], residual: bool, weight_max: int):
    def rewrite(g: Graph, nid: str, n: Node) -> Rewrite:
        src, m = n.inputs[0], modality_input(g)
        modal = m is not None
        r = ranges[src]
        # a tensor a residual add will read back from the uint8 copy keeps its tail: no clipping
        unclipped = residual and any(g[c].op == Op.ADD for c in g.consumers(src))
        scale = _scales(r, modal, unclipped)
        extra = (m,) if modal else ()
        padding, pv = n.attrs["padding"], n.attr("pad_value")
        add = {}
        if pv is not None:   # a folded input normalisation's border: padded in float, then quantized
            (ph, pw), shape = padding, g[src].shape
            padded = Fresh(f"{src}_padded")
            add[padded] = Node(Op.PAD, (src,), shape[:2] + (shape[2] + 2 * ph, shape[3] + 2 * pw),
                               attrs={"padding": padding, "value": pv}, source=g[src].source)
            existing = Fresh(f"{src}_padded_u8")
            add[existing] = Node(Op.QUANTIZE, (padded,) + extra, add[padded].shape, "uint8",
                                 {"scale": const(scale), "zero_point": r.zero_point}, source=g[src].source)
            padding = (0, 0)
        else:
            existing = next((c for c in g.consumers(src) if g[c].op == Op.QUANTIZE), None)
        if existing is None:
            existing = Fresh(f"{src}_u8")
            add[existing] = Node(Op.QUANTIZE, (src,) + extra, g[src].shape, "uint8",
                                 {"scale": const(scale), "zero_point": r.zero_point},
                                 source=g[src].source)
        w = np.asarray(n.attrs["weight"])
        c = w.shape[-3]
        if c % GROUP:   # the image's 3 channels: one zero weight channel makes a group of 4
            pad = [(0, 0)] * w.ndim
            pad[-3] = (0, GROUP - c % GROUP)
            w = np.pad(w, pad)
        q, ws = _weights(w, weight_max)
        attrs = {"weight": q, "weight_scale": const(ws), "input_scale": const(scale), "zero_point": r.zero_point,
                 "stride": n.attrs["stride"], "padding": padding}
        if n.attr("bias") is not None:
            attrs["bias"] = n.attrs["bias"]
        needs_m = modal or q.ndim == 5 or ws.ndim == 2 or np.asarray(n.attr("bias", np.zeros(1))).ndim == 2
        placement = Placement.SPLIT if (q.ndim == 5 or ws.ndim == 2) else n.modality
        new = n.with_(op=Op.CONV2D_INT8, inputs=(existing,) + (extra if needs_m else ()), attrs=attrs,
                      modality=placement)
        how = "shared int8 weights, per-modality scales" if q.ndim == 4 and ws.ndim == 2 else \
            "per-modality int8 weights" if q.ndim == 5 else "int8 weights"
        return Rewrite(node=new, add=add, note=f"{how}; input zero point {r.zero_point}, step {scale.tolist()}")
    return rewrite


def _residual(g: Graph, nid: str, n: Node) -> Rewrite | None:
    """An add reading a tensor that int8 convs read too takes it back from the uint8 copy (the
    producer then writes uint8 only: a quarter of the float residual stream's bytes)."""
    add, inputs = {}, list(n.inputs)
    for k, src in enumerate(n.inputs):
        q = next((c for c in g.consumers(src) if g[c].op == Op.QUANTIZE), None)
        if q is None:
            continue
        back = next((c for c in g.consumers(q) if g[c].op == Op.DEQUANTIZE), None)
        if back is None:
            back = Fresh(f"{src}_f32")
            qn = g[q]
            add[back] = Node(Op.DEQUANTIZE, (q,) + qn.inputs[1:], g[src].shape,
                             attrs={"scale": qn.attrs["scale"], "zero_point": qn.attrs["zero_point"]},
                             source=g[src].source)
        inputs[k] = back
    if inputs == list(n.inputs):
        return None
    return Rewrite(node=n.with_(inputs=tuple(inputs)), add=add, note="residual read from its uint8 copy")


def _clipping_quantize(g: Graph, nid: str, n: Node) -> Rewrite:
    """A ReLU read only by a zero-point-0 quantize goes: the quantize's clip at 0 does its work
    (x < 0 rounds to 0 or below and clips to 0), exactly, and the conv epilogue it is fused
    into does one max fewer per vector."""
    return Rewrite(node=n.with_(inputs=(g[n.inputs[0]].inputs[0],) + n.inputs[1:]), note="ReLU folded into the clip")


def _sole_reader(g: Graph, nid: str) -> str | None:
    readers = g.consumers(nid)
    return readers[0] if len(readers) == 1 and nid not in g.outputs else None


def _step_folds(g: Graph, q: str) -> bool:
    """Whether the per-tensor step of quantize q can be taken by what makes its input: an int8
    conv, or an add of int8 convs and dequantizes (a residual block's end), each read only on
    the way to q. Then y / s is what they compute (conv: weight_scale / s, bias / s; dequantize:
    scale / s) and q multiplies by nothing: one vector multiply fewer in the conv's epilogue."""
    n = g[q]
    if n.op != Op.QUANTIZE or np.shape(n.attrs["scale"]) != (1,) or float(n.attrs["scale"][0]) == 1.0:
        return False
    src = n.inputs[0]
    if _sole_reader(g, src) != q:
        return False
    if g[src].op == Op.CONV2D_INT8:
        return True
    return g[src].op == Op.ADD and all(
        g[i].op in (Op.CONV2D_INT8, Op.DEQUANTIZE) and _sole_reader(g, i) == src for i in g[src].inputs)


def _quantize_taking_step(g: Graph, nid: str) -> str | None:
    """The quantize whose step the conv or dequantize nid takes, or None."""
    r = _sole_reader(g, nid)
    if r is not None and g[r].op == Op.ADD:
        r = _sole_reader(g, r)
    return r if r is not None and _step_folds(g, r) else None


def _step_into_producer(g: Graph, nid: str, n: Node) -> Rewrite:
    step = g[_quantize_taking_step(g, nid)].attrs["scale"]
    if n.op == Op.DEQUANTIZE:
        attrs = {**n.attrs, "scale": const(divided(n.attrs["scale"], step))}
    else:
        attrs = {**n.attrs, "weight_scale": const(divided(n.attrs["weight_scale"], step))}
        if n.attr("bias") is not None:
            attrs["bias"] = const(divided(n.attrs["bias"], step))
    return Rewrite(node=n.with_(attrs=attrs), note=f"takes the step {float(step[0]):g} of the quantize it feeds")


def _step_taken(g: Graph, nid: str, n: Node) -> Rewrite:
    return Rewrite(node=n.with_(attrs={**n.attrs, "scale": const(np.ones(1, np.float32))}),
                   note="its step taken by its producers")


def _only_reader(g: Graph, nid: str, n: Node) -> bool:
    return _sole_reader(g, n.inputs[0]) == nid


def quantize_int8(g: Graph, ranges: dict[str, ActivationRange], stats: Counter | None = None,
                  residual: bool = True, weight_max: int = 127, fold_steps: bool = True) -> Applied:
    """The graph with every conv int8 can take quantized, weights in [-weight_max, weight_max]
    (63 for a target whose dot product sums pairs in int16), and, with `residual`, the residual
    adds reading the uint8 copies of what those convs read, ReLUs whose only reader is a
    zero-point-0 quantize left to its clip, and per-tensor quantize steps taken by the convs
    (and residual dequantizes) that feed them (`_step_folds`; `fold_steps`); facts: the convs left in fp32
    and why."""
    rules = [Rule("quantize_conv_int8", Op.CONV2D, _rewrite(ranges, residual, weight_max), (
        ("the int8 kernel takes it", lambda g, nid, n: int8_blocker(g, nid) is None),
        ("calibrated", lambda g, nid, n: n.inputs[0] in ranges)))]
    out = apply_rules(g, rules, stats).graph
    if residual:
        out = apply_rules(out, [Rule("int8_residual", Op.ADD, _residual)], stats).graph
    out = apply_rules(out, [Rule("relu_into_quantize_clip", Op.QUANTIZE, _clipping_quantize, (
        ("reads a ReLU", lambda g, nid, n: g[n.inputs[0]].op == Op.RELU),
        ("zero point 0", lambda g, nid, n: int(n.attrs["zero_point"]) == 0),
        ("the ReLU's only reader", _only_reader)))], stats).graph
    takes = ("feeds a quantize whose per-tensor step folds",
             lambda g, nid, n: fold_steps and _quantize_taking_step(g, nid) is not None)
    out = apply_rules(out, [
        Rule("quantize_step_into_conv", Op.CONV2D_INT8, _step_into_producer, (takes,)),
        Rule("quantize_step_into_dequantize", Op.DEQUANTIZE, _step_into_producer, (takes,)),
        Rule("quantize_step_taken", Op.QUANTIZE, _step_taken, (
            ("its producers took its per-tensor step", lambda g, nid, n: fold_steps and _step_folds(g, nid)),))],
        stats).graph
    kept = {n.source or nid: int8_blocker(g, nid) or "its input was not calibrated"
            for nid, n in out.items() if n.op in (Op.CONV2D, Op.GROUP_CONV2D)}
    return Applied(out, {"fp32_convs": kept} if kept else {})
