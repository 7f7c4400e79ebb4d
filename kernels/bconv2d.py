"""Binary conv2d on bit-packed data: XOR + popcount, exact against a float +-1 convolution.

For a tap whose input pixel exists, sum_c x*w over C channels equals C - 2*popcount(x ^ w).
PyTorch's zero padding makes border taps contribute 0; reidc pads the packed input with zero
words (all +1) and subtracts, per output pixel and channel, what those padded taps added
(`border_correction`, computed at compile time, stored per border class). The result is the exact int32 dot product;
TVM fuses the float epilogue (scale, bias, PReLU, shortcut add) behind it.

Layouts: packed data (N, H, W, CW) words (NHWC: a pixel's channels are contiguous words);
weight (O // ob, KH, KW, CW, ob) words; correction (NY, NX, O) int32 with row and column
classes (OH,), (OW,) int32;
output (N, O // ob, OH, OW, ob) int32, the blocked layout the float layers use.
"""
from __future__ import annotations

import numpy as np
from tvm import te, tirx as tir

BCONV_BLOCK = "reidc_bconv2d"
BPAD_BLOCK = "reidc_bpad"


def pack_binary_weight(packed_ohwc: np.ndarray, ob: int) -> np.ndarray:
    """(O, KH, KW, CW) words -> (O // ob, KH, KW, CW, ob), output channels innermost."""
    o = packed_ohwc.shape[0]
    return np.ascontiguousarray(packed_ohwc.reshape(o // ob, ob, *packed_ohwc.shape[1:]).transpose(0, 2, 3, 4, 1))


def bconv2d_nchwc(data: te.Tensor, weight: te.Tensor, correction: te.Tensor, row_class: te.Tensor,
                  col_class: te.Tensor, channels: int, stride: tuple, padding: tuple) -> te.Tensor:
    """int32 (N, O//ob, OH, OW, ob) = exact sum over taps and channels of sign(x) * sign(w)."""
    n, h, w, cw = data.shape
    oc, kh, kw, _, ob = weight.shape
    word = data.dtype
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    if ph or pw:
        src = te.compute((n, h + 2 * ph, w + 2 * pw, cw), lambda b, y, x, i: tir.if_then_else(
            tir.all(y >= ph, y < h + ph, x >= pw, x < w + pw), data[b, y - ph, x - pw, i],
            tir.const(0, word)), name=BPAD_BLOCK)
    else:
        src = data
    ry, rx, rc = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx"), te.reduce_axis((0, cw), "rc")
    pop = te.compute((n, oc, oh, ow, ob), lambda b, o, y, x, v: te.sum(
        tir.popcount(src[b, y * sh + ry, x * sw + rx, rc] ^ weight[o, ry, rx, rc, v]),
        axis=[ry, rx, rc]), name=BCONV_BLOCK)  # accumulate in the word type: no per-step narrowing
    full = channels * int(kh) * int(kw)
    return te.compute(pop.shape, lambda b, o, y, x, v: full - 2 * pop[b, o, y, x, v].astype("int32")
                      - correction[row_class[y], col_class[x], o * ob + v], name="reidc_bconv_dot")
