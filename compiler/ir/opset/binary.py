"""Binarization, explicit as in Larq Compute Engine: `bitpack` turns a tensor into bits (bit 1
means -1, the layout of compiler/ir/bits.py) and `bconv2d` convolves bits with +-1 weights.
In the reference semantics a bits tensor is held as the int8 +-1 values it stands for."""
from __future__ import annotations

import numpy as np

from ..bits import WORD_BITS
from ..spec import BITS, F32, I32, Attr, Cost, OpSpec, check_vectors, conv_out, declare
from . import refmath


def _check_bitpack(n, ins, modal):
    x = ins[0].shape
    if len(x) not in (2, 4):
        return f"packs a 4-D or 2-D tensor to its own logical shape, got {x}"
    return check_vectors(n, ("threshold", "flip"), x[1], modal)


def _bitpack_ref(values, n):
    x = np.asarray(values[0])
    m = values[1] if len(values) > 1 else None
    thr = refmath.pick(n.attrs["threshold"], m, x.ndim).astype(x.dtype)
    flip = refmath.pick(n.attrs["flip"], m, x.ndim).astype(bool)
    return np.where(np.where(flip, x > thr, x < thr), -1, 1).astype(np.int8)


BITPACK = declare(OpSpec(
    "bitpack", "Sign as a comparison, packed: bit (-1) where x < threshold, or x > threshold "
               "where flip. A float input, or the int32 accumulator of a bconv2d.",
    _bitpack_ref, modal=True, in_dtypes=(F32, I32), out_dtype=lambda a: BITS,
    attrs={"threshold": Attr("array", "(C,) or (2, C), the input's dtype"),
           "flip": Attr("array", "(C,) or (2, C) int8: compare with > instead of <"),
           "site": Attr("str", "the sign it replaces, for sign-flip reports", required=False)},
    check=_check_bitpack))


def _bconv_shape(ins, a):
    x, signs = ins[0], a["signs"]
    if len(x) == 2:  # binary dense: a 1x1 bconv on (N, C)
        return (x[0], signs.shape[0])
    return conv_out(x, signs.shape, a["stride"], a["padding"])


def _check_bconv(n, ins, modal):
    x, signs = ins[0].shape, n.attrs["signs"]
    o, i, kh, kw = signs.shape
    if i != x[1]:
        return f"weights expect {i} input channels, input has {x[1]}"
    if not np.isin(signs, (-1, 1)).all():
        return "binary weights must be +-1"
    if len(x) == 2 and (kh, kw) + tuple(n.attrs["stride"]) + tuple(n.attrs["padding"]) != (1, 1, 1, 1, 0, 0):
        return "a binary dense must be 1x1, stride 1, no padding"
    if not n.attrs.get("accumulator"):
        for k in ("scale", "bias"):
            if k not in n.attrs:
                return f"needs {k} unless it is an accumulator"
        bad = check_vectors(n, ("scale", "bias"), o, modal)
        if bad:
            return bad
    packed = n.attrs.get("packed")
    if packed is not None:
        word = n.attrs.get("word")
        if word not in WORD_BITS:
            return f"packed weights need a word of {', '.join(WORD_BITS)}, not {word!r}"
        if packed.shape != (o, kh, kw, -(-i // WORD_BITS[word])) or packed.dtype != np.dtype(word):
            return f"packed weights {packed.shape} {packed.dtype} do not fit {i} channels in {word} words"
    return None


def _bconv_cost(n) -> Cost:
    count = int(np.prod(n.attrs["signs"].shape))
    spatial = int(np.prod(n.shape[2:])) if len(n.shape) > 2 else 1
    packed = n.attrs.get("packed")
    return Cost(binary_macs=count * spatial, fp32_weight_bytes=4 * count,
                stored_weight_bytes=int(packed.nbytes) if packed is not None else count // 8)


def _bconv_ref(values, n):
    x = np.asarray(values[0], np.float64)   # +-1 products: float64 sums are exact (and BLAS-fast)
    x4 = x.reshape(x.shape + (1, 1)) if x.ndim == 2 else x
    dot = refmath.conv2d(x4, np.asarray(n.attrs["signs"], np.float64), n.attrs["stride"], n.attrs["padding"])
    dot = np.rint(dot).astype(np.int64)
    dot = dot.reshape(dot.shape[:2]) if x.ndim == 2 else dot
    if n.attrs.get("accumulator"):
        return dot.astype(np.int32)
    m = values[1] if len(values) > 1 else None
    out = dot * refmath.pick(n.attrs["scale"], m, dot.ndim).astype(np.float64) \
        + refmath.pick(n.attrs["bias"], m, dot.ndim).astype(np.float64)
    return out.astype(np.float32)


BCONV2D = declare(OpSpec(
    "bconv2d", "Binary conv of packed bits with +-1 weights (zero padding of the +-1 input, as "
               "PyTorch): out = dot * scale + bias, dot the exact integer sum of sign products; "
               "an accumulator returns dot as int32. On a 2-D input, a binary dense (1x1).",
    _bconv_ref, modal=True, in_dtypes=(BITS,), out_dtype=lambda a: I32 if a.get("accumulator") else F32,
    attrs={"signs": Attr("array", "(O, C, kh, kw) int8 +-1"), "stride": Attr("pair", "(sh, sw)"),
           "padding": Attr("pair", "(ph, pw)"),
           "scale": Attr("array", "(O,) or (2, O)", required=False),
           "bias": Attr("array", "(O,) or (2, O)", required=False),
           "accumulator": Attr("bool", "return the int32 dot for an integer threshold", required=False),
           "packed": Attr("array", "(O, kh, kw, words) after bitpack_weights", required=False),
           "word": Attr("str", "uint32 or uint64, the packed word", required=False)},
    shape=_bconv_shape, check=_check_bconv, cost=_bconv_cost))
