"""bf16 ops: rounding an activation to bf16, and the bf16 convolution that consumes it.

A bf16 tensor holds the bit patterns of its values as uint16 (the top half of the float32,
rounded to nearest even: refmath.to_bf16_bits); the IR calls that dtype "bfloat16". The conv
multiplies bf16 activations by bf16 weights (every product exact in float32) and sums in
float32; a per-modality `out_scale` lets the two modalities of a split-BN fold share one weight
set (the second set is the first times a per-channel factor) as the int8 conv's scales do.
With `algorithm` "winograd_f2" the conv is computed as Winograd F(2x2, 3x3) with its transformed
input and weights rounded to bf16 (refmath.winograd_bf16: the reference models those roundings).
"""
from __future__ import annotations

import numpy as np

from ..spec import F32, Attr, Cost, OpSpec, conv_out, declare
from . import refmath

BF16 = "bfloat16"
WINOGRAD_BF16 = "winograd_f2"   # the one Winograd a bf16 conv takes: F(2x2, 3x3)


TO_BF16 = declare(OpSpec(
    "to_bf16", "float32 -> bf16, rounding to nearest even (held as its uint16 bit pattern).",
    lambda v, n: refmath.to_bf16_bits(np.asarray(v[0], np.float32)), out_dtype=lambda a: BF16))


FROM_BF16 = declare(OpSpec(
    "from_bf16", "bf16 -> float32 (exact): a tensor stored in bf16 read by a float op (a residual add).",
    lambda v, n: refmath.from_bf16_bits(v[0]), in_dtypes=(BF16,)))


def _check_conv_bf16(n, ins, modal):
    w = n.attrs["weight"]
    if w.dtype != np.uint16 or w.ndim != 4:
        return f"weight must be bf16 bit patterns (uint16) (O, I, kh, kw), is {w.dtype} {w.shape}"
    o, i = w.shape[:2]
    if i != ins[0].shape[1]:
        return f"weight expects {i} input channels, input has {ins[0].shape[1]}"
    s, b = n.attrs.get("out_scale"), n.attrs.get("bias")
    if s is not None and s.shape != (2, o):
        return f"out_scale has shape {s.shape}, expected (2, {o}) (one row per modality)"
    if b is not None and b.shape not in ((o,), (2, o)):
        return f"bias shape {b.shape} does not fit {o} channels"
    per_mod = s is not None or (b is not None and b.ndim == 2)
    if per_mod != modal:
        return "a per-modality out_scale or bias needs the modality input, and only they do"
    algo = n.attrs.get("algorithm", "direct")
    if algo not in ("direct", WINOGRAD_BF16):
        return f"algorithm {algo!r}: expected direct or {WINOGRAD_BF16}"
    if algo != "direct" and (tuple(w.shape[2:]) != (3, 3) or tuple(n.attrs["stride"]) != (1, 1)
                             or tuple(n.attrs["padding"]) != (1, 1) or i % 2):
        return f"{algo} needs a 3x3 weight with an even input channel count, stride 1 and padding 1"
    return None


def _conv_bf16_cost(n) -> Cost:
    count = int(np.prod(n.attrs["weight"].shape))
    stored = count // 9 * 16 if n.attrs.get("algorithm", "direct") != "direct" else count   # F(2x2)'s 4x4 U
    return Cost(float_macs=count * int(np.prod(n.shape[2:])), fp32_weight_bytes=4 * count,
                stored_weight_bytes=2 * stored)


def _conv_bf16_ref(values, n):
    if n.attrs.get("algorithm", "direct") != "direct":
        y = refmath.winograd_bf16(values[0], n.attrs["weight"], 2)
    else:
        x = refmath.from_bf16_bits(values[0]).astype(np.float64)
        w = refmath.from_bf16_bits(n.attrs["weight"]).astype(np.float64)
        y = refmath.conv2d(x, w, n.attrs["stride"], n.attrs["padding"])
    m = values[1] if len(values) > 1 else None
    s, b = n.attr("out_scale"), n.attr("bias")
    if s is not None:
        y = y * refmath.pick(np.asarray(s, np.float64), m, 4)
    if b is not None:
        y = y + refmath.pick(np.asarray(b, np.float64), m, 4)
    return y.astype(np.float32)


CONV2D_BF16 = declare(OpSpec(
    "conv2d_bf16", "convolution of a bf16 activation with bf16 weights, float32 sums and output: "
                   "conv(x, w)[o] * out_scale[m][o] + bias[o]; zero padding.",
    _conv_bf16_ref, modal=True, in_dtypes=(BF16,), out_dtype=lambda a: F32,
    attrs={"weight": Attr("array", "bf16 bit patterns (uint16) (O, I, kh, kw)"),
           "out_scale": Attr("array", "(2, O) per modality: a split BN's fold on one shared weight set",
                             required=False),
           "bias": Attr("array", "(O,) or (2, O)", required=False),
           "stride": Attr("pair", "(sh, sw)"), "padding": Attr("pair", "(ph, pw)"),
           "algorithm": Attr("str", f"direct (default) or {WINOGRAD_BF16}: Winograd F(2x2, 3x3) with the transformed "
                                    "input and weights rounded to bf16 (compiler/passes/choose_winograd.py)",
                             required=False)},
    shape=lambda ins, a: conv_out(ins[0], a["weight"].shape, a["stride"], a["padding"]),
    check=_check_conv_bf16, cost=_conv_bf16_cost))
