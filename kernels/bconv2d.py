"""Binary conv2d on bit-packed NHWC data: XOR + popcount, exact against a float +-1 convolution.

For a tap whose input pixel exists, sum_c x*w over C channels equals C - 2*popcount(x ^ w).
Zero padding in PyTorch means border taps contribute 0; reidc pads the packed input with zero
words (all +1) and subtracts, per output pixel and channel, what those padded taps added:
sum over out-of-bounds taps of (C - 2*popcount(w_tap)) (`border_correction`, computed at
compile time). Output: the exact int32 accumulator, or float via a per-channel affine.

Layouts: data (N, H, W, CW) words; weight (O // ob, KH, KW, CW, ob) words; output (N, OH, OW, O).
"""
from __future__ import annotations

import numpy as np
from tvm import te, tirx as tir

from compiler.passes.binary_math import border_correction, pack_signs  # noqa: F401 (re-exported)

BCONV_BLOCK = "reidc_bconv2d"


def pack_binary_weight(w: np.ndarray, ob: int, word: str = "uint64") -> np.ndarray:
    """(O, C, KH, KW) +-alpha (or +-1) -> (O // ob, KH, KW, CW, ob) packed signs."""
    o = w.shape[0]
    packed = pack_signs(np.transpose(w, (0, 2, 3, 1)), word)  # (O, KH, KW, CW)
    return np.ascontiguousarray(packed.reshape(o // ob, ob, *packed.shape[1:]).transpose(0, 2, 3, 4, 1))


def bconv2d_nhwc(data: te.Tensor, weight: te.Tensor, correction: te.Tensor, channels: int,
                 stride: tuple, padding: tuple, word: str = "uint64") -> te.Tensor:
    """int32 (N, OH, OW, O) = exact sum over taps and channels of sign(x) * sign(w)."""
    n, h, w, cw = data.shape
    oc, kh, kw, _, ob = weight.shape
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    if ph or pw:
        src = te.compute((n, h + 2 * ph, w + 2 * pw, cw), lambda b, y, x, i: tir.if_then_else(
            tir.all(y >= ph, y < h + ph, x >= pw, x < w + pw), data[b, y - ph, x - pw, i],
            tir.const(0, word)), name="reidc_bpad")
    else:
        src = data
    ry, rx, rc = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx"), te.reduce_axis((0, cw), "rc")
    pop = te.compute((n, oh, ow, oc * ob), lambda b, y, x, o: te.sum(
        tir.popcount(src[b, y * sh + ry, x * sw + rx, rc] ^ weight[o // ob, ry, rx, rc, o % ob]),
        axis=[ry, rx, rc]), name=BCONV_BLOCK)  # accumulate in the word type: no per-step narrowing
    full = channels * int(kh) * int(kw)
    return te.compute(pop.shape, lambda b, y, x, o: full - 2 * pop[b, y, x, o].astype("int32") - correction[y, x, o],
                      name="reidc_bconv_dot")


def schedule_bconv2d(sch, ob: int, reg_w: int = 4):
    """x86/ARM: parallel over (n, row), `reg_w` pixels x `ob` channels in registers, channels
    vectorised (vector popcount: VPOPCNTQ with AVX-512 VPOPCNTDQ, a pshufb sequence on AVX2,
    `cnt` on NEON), the reduction over (ky, kx, words) outside the register tile."""
    out = sch.get_sblock("reidc_bconv_dot")
    pop = sch.get_sblock(BCONV_BLOCK)
    n, y, x, o = sch.get_loops(out)
    ow = int(sch.get(x).extent)
    reg_w = max(d for d in range(1, min(reg_w, ow) + 1) if ow % d == 0)
    oo, oi = sch.split(o, [None, ob])
    xo, xi = sch.split(x, [None, reg_w])
    sch.reorder(n, y, oo, xo, xi, oi)
    sch.parallel(sch.fuse(n, y))
    sch.vectorize(oi)
    sch.compute_at(pop, xo)
    sch.set_scope(pop, 0, "local")
    inner = sch.get_loops(pop)[3:]  # under (n*y, o-block, x-block); unit loops are dropped
    nsp = 1 + (reg_w > 1)
    spatial, red = inner[:nsp], inner[nsp:]
    if red:
        sch.reorder(*red, *spatial)
    if len(spatial) == 2:
        sch.unroll(spatial[0])
    sch.vectorize(spatial[-1])
    init = sch.decompose_reduction(pop, red[0] if red else spatial[0])
    sch.vectorize(sch.get_loops(init)[-1])
    try:
        pad = sch.get_sblock("reidc_bpad")
        pl = sch.get_loops(pad)
        sch.parallel(sch.fuse(pl[0], pl[1]))
    except Exception:  # noqa: BLE001 - no padding stage for pad=0
        pass
    return sch
