"""Winograd F(2x2, 3x3) for stride-1, pad-1 3x3 convs in the blocked channel layout.

Each 2x2 block of output pixels (a tile) is computed from the 4x4 input patch around it with
16 multiplies per input/output channel pair instead of 36 (2.25x fewer MACs):
    Y = A^T [ (G g G^T) * (B^T d B) ] A     (Lavin & Gray, "Fast Algorithms for CNNs", 2016)
Three stages in one TE function (TVM fuses the conv's epilogue into the last):
  wino_in    V (4, 4, N, T, C): B^T d B per tile and input channel (T = tiles per image), the
             padding and the overhang of odd maps read as zeros;
  wino_gemm  M (4, 4, O // ob, N, T, ob): 16 matrix products V[a, b] x U[a, b] over C;
  output     (N, O // ob, OH, OW, ob): A^T M A per tile, the epilogue fused after it.
U = G g G^T (4, 4, O // ob, C, ob) is computed at compile time (`transform_weight`). The added
rounding is that of the transforms' few adds and the 0.5 factors of G (exact in binary): the
relative L2 error against the direct conv is ~1e-6 on ResNet-50's layers.
The schedule is kernels/winograd_schedule.py.
"""
from __future__ import annotations

import numpy as np
from tvm import te, tirx as tir

WINO_IN = "reidc_winograd_in"
WINO_GEMM = "reidc_winograd_gemm"
WINO_OUT = "reidc_winograd_out"

G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def transform_weight(w: np.ndarray, ob: int) -> np.ndarray:
    """(O, C, 3, 3) float -> U = G w G^T as (4, 4, O // ob, C, ob) float32 (computed in float64)."""
    o, c, kh, kw = w.shape
    if (kh, kw) != (3, 3) or o % ob:
        raise ValueError(f"winograd F(2x2, 3x3) needs a (O, C, 3, 3) weight with O a multiple of {ob}; got {w.shape}")
    u = np.einsum("ai,ocij,bj->abco", G, np.asarray(w, np.float64), G)
    return np.ascontiguousarray(u.reshape(4, 4, c, o // ob, ob).transpose(0, 1, 3, 2, 4)).astype(np.float32)


def _bt(a, g):
    """Row a of B^T applied to g(0..3): [d0 - d2, d1 + d2, d2 - d1, d1 - d3]."""
    return tir.Select(a == 0, g(0) - g(2), tir.Select(a == 1, g(1) + g(2), tir.Select(a == 2, g(2) - g(1), g(1) - g(3))))


def _at(r, g):
    """Row r of A^T applied to g(0..3): [m0 + m1 + m2, m1 - m2 - m3]."""
    return tir.Select(r == 0, g(0) + g(1) + g(2), g(1) - g(2) - g(3))


def conv2d_winograd_nchwc(data: te.Tensor, u: te.Tensor) -> te.Tensor:
    """The 3x3, stride-1, pad-1 conv of data (N, C // cb, H, W, cb) with the transformed weight
    u (4, 4, O // ob, C, ob): (N, O // ob, H, W, ob), equal to conv2d_nchwc's up to rounding."""
    n, cc, h, w, cb = data.shape
    _, _, ocb, c, ob = u.shape
    th, tw = (int(h) + 1) // 2, (int(w) + 1) // 2

    def pixel(b, ch, y, x):   # the input at padded coordinates (y, x): zeros outside the map
        return tir.if_then_else(tir.all(y >= 1, y <= h, x >= 1, x <= w), data[b, ch // cb, y - 1, x - 1, ch % cb],
                                tir.const(0.0, data.dtype))

    def transformed(a, bb, b, t, ch):
        ty, tx = t // tw, t % tw
        return _bt(a, lambda i: _bt(bb, lambda j: pixel(b, ch, 2 * ty + i, 2 * tx + j)))
    v = te.compute((4, 4, n, th * tw, c), transformed, name=WINO_IN)
    rc = te.reduce_axis((0, c), "rc")
    m = te.compute((4, 4, ocb, n, th * tw, ob), lambda a, bb, o, b, t, lane: te.sum(
        v[a, bb, b, t, rc] * u[a, bb, o, rc, lane], axis=rc), name=WINO_GEMM)

    def output(b, o, y, x, lane):
        t = (y // 2) * tw + x // 2
        return _at(y % 2, lambda a: _at(x % 2, lambda bb: m[a, bb, o, b, t, lane]))
    return te.compute((n, ocb, h, w, ob), output, name=WINO_OUT)
