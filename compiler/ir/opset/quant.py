"""int8 ops: quantizing an activation to uint8, and the int8 convolution that consumes it.

Activations are uint8 with a zero point (0 after a ReLU, 128 where values take both signs) and
a scale per tensor, or per modality in a mixed graph (a split BN gives each modality its own
range); weights are symmetric int8 with a scale per output channel. The conv accumulates the
exact int32 sum of q_x * q_w and dequantizes in its epilogue:
    y[o] = (acc[o] - zp * sum(q_w[o])) * input_scale[m] * weight_scale[o] + bias[o]
"""
from __future__ import annotations

import numpy as np

from ..spec import Attr, Cost, OpSpec, conv_out, declare
from . import refmath

U8 = "uint8"


def inverse_scale(scale) -> np.ndarray:
    """1 / scale in float32: what quantize multiplies by, in the reference and the kernel alike."""
    return (np.float32(1) / np.asarray(scale, np.float32)).astype(np.float32)


def _per_sample(table, modality, n: int, ndim: int) -> np.ndarray:
    t = np.asarray(table)
    t = t[np.asarray(modality, np.int64)] if len(t) == 2 and modality is not None else np.broadcast_to(t[:1], (n,))
    return t.reshape((n,) + (1,) * (ndim - 1))


def _quantize_ref(v, n):
    x = np.asarray(v[0], np.float32)
    inv = _per_sample(inverse_scale(n.attrs["scale"]), v[1] if len(v) > 1 else None, len(x), x.ndim)
    q = np.rint(x * inv) + np.float32(n.attrs["zero_point"])
    return np.clip(q, 0, 255).astype(np.uint8)


def _check_scales(n, modal, key):
    s = n.attrs[key]
    if s.shape != ((2,) if modal else (1,)):
        return f"{key} must be (1,), or (2,) per modality with the modality input; is {s.shape}"
    if not (s > 0).all():
        return f"{key} must be positive"
    return None


def _check_zero_point(n):
    zp = n.attrs["zero_point"]
    return None if zp in (0, 128) else f"zero_point must be 0 or 128, is {zp}"


def _check_quantize(n, ins, modal):
    return _check_scales(n, modal, "scale") or _check_zero_point(n)


QUANTIZE = declare(OpSpec(
    "quantize", "float -> uint8: clip(rint(x * (1/scale)) + zero_point, 0, 255); scale (1,) or per "
                "modality (2,) with the modality vector.",
    _quantize_ref, modal=True, out_dtype=lambda a: U8,
    attrs={"scale": Attr("array", "(1,), or (2,) per modality"),
           "zero_point": Attr("float", "0 (non-negative values) or 128")},
    check=_check_quantize))


def _dequantize_ref(v, n):
    q = np.asarray(v[0], np.float32) - np.float32(n.attrs["zero_point"])
    return (q * _per_sample(np.asarray(n.attrs["scale"], np.float32), v[1] if len(v) > 1 else None,
                            len(q), q.ndim)).astype(np.float32)


DEQUANTIZE = declare(OpSpec(
    "dequantize", "uint8 -> float: (q - zero_point) * scale; scale (1,) or per modality (2,) with the "
                  "modality vector (a quantized tensor read by a float op: a residual add).",
    _dequantize_ref, modal=True, in_dtypes=(U8,),
    attrs={"scale": Attr("array", "(1,), or (2,) per modality"),
           "zero_point": Attr("float", "0 or 128")},
    check=_check_quantize))


def _check_qconv(n, ins, modal):
    w = n.attrs["weight"]
    if w.dtype != np.int8 or w.ndim not in (4, 5):
        return f"weight must be int8 (O, I, kh, kw) or (2, O, I, kh, kw), is {w.dtype} {w.shape}"
    ws = n.attrs["weight_scale"]
    per_mod = w.ndim == 5 or ws.ndim == 2 or n.attrs["input_scale"].shape == (2,)
    if per_mod != modal:
        return "per-modality weights or scales need the modality input, and only they do"
    o, i = w.shape[-4:-2]
    c = ins[0].shape[1]
    if i != c and not (i % 4 == 0 and 0 < i - c < 4):
        return f"weight expects {i} input channels, input has {c}"
    if ws.shape not in ((o,), (2, o)) or (w.ndim == 5 and ws.ndim != 2):
        return f"weight_scale has shape {ws.shape}, expected ({o},) or (2, {o}) (per-modality weights: (2, {o}))"
    if not (ws != 0).all():
        return "weight_scale must have no zeros"
    b = n.attrs.get("bias")
    if b is not None and b.shape not in ((o,), (2, o)):
        return f"bias shape {b.shape} does not fit {o} channels"
    if b is not None and b.ndim == 2 and not modal:
        return "a per-modality bias needs the modality input"
    return _check_scales(n, modal, "input_scale") or _check_zero_point(n)


def _qconv_cost(n) -> Cost:
    count = int(np.prod(n.attrs["weight"].shape[-4:]))
    spatial = int(np.prod(n.shape[2:]))
    return Cost(int8_macs=count * spatial, fp32_weight_bytes=4 * count,
                stored_weight_bytes=count * (n.attrs["weight"].ndim - 3))


def _qconv_ref(values, n):
    x = np.asarray(values[0], np.float64)   # integers: float64 sums are exact here
    w, zp = n.attrs["weight"], float(n.attrs["zero_point"])
    extra = w.shape[-3] - x.shape[1]         # input channels padded to a group of 4 (zero weights)
    if extra:
        x = np.pad(x, ((0, 0), (0, extra), (0, 0), (0, 0)), constant_values=zp)
    m = values[1] if len(values) > 1 else None

    def one(k):
        wk = np.asarray(w if w.ndim == 4 else w[k], np.float64)
        acc = refmath.conv2d(x, wk, n.attrs["stride"], n.attrs["padding"], fill=zp)
        return acc - zp * wk.sum(axis=(1, 2, 3))[None, :, None, None]
    acc = refmath.per_sample([one(0), one(1)], m) if w.ndim == 5 else one(0)
    ws = refmath.pick(np.asarray(n.attrs["weight_scale"], np.float64), m, 4)
    xs = _per_sample(np.asarray(n.attrs["input_scale"], np.float64), m, len(x), 4)
    y = acc * ws * xs
    b = n.attrs.get("bias")
    if b is not None:
        y = y + refmath.pick(np.asarray(b, np.float64), m, 4)
    return y.astype(np.float32)


CONV2D_INT8 = declare(OpSpec(
    "conv2d_int8", "int8 convolution of a quantized (uint8) activation, dequantized to float32: "
                   "(acc - zero_point * sum(w[o])) * input_scale[m] * weight_scale[o] + bias[o]; padding "
                   "takes the zero point (a real 0).",
    _qconv_ref, modal=True, in_dtypes=(U8,),
    attrs={"weight": Attr("array", "int8 (O, I, kh, kw), or (2, O, I, kh, kw) per modality; I may round the "
                                   "input's channels up to a multiple of 4 (the extra weights 0)"),
           "weight_scale": Attr("array", "(O,), or (2, O) per modality: per output channel, signed (a "
                                         "split BN's fold may flip a channel's sign in one modality)"),
           "input_scale": Attr("array", "(1,), or (2,) per modality: the input's quantization step"),
           "zero_point": Attr("float", "the input's zero point (0 or 128)"),
           "bias": Attr("array", "(O,) or (2, O)", required=False),
           "stride": Attr("pair", "(sh, sw)"), "padding": Attr("pair", "(ph, pw)")},
    shape=lambda ins, a: conv_out(ins[0], a["weight"].shape, a["stride"], a["padding"]),
    check=_check_qconv, cost=_qconv_cost))
