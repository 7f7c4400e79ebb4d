"""Winograd F(m x m, 3x3), m = 2 or 4, for stride-1, pad-1 3x3 convs in the blocked channel layout.

Each m x m block of output pixels (a tile) is computed from the (m + 2)^2 input patch around it
with (m + 2)^2 multiplies per input/output channel pair instead of 9 m^2 (F(2x2): 16 for 36,
2.25x fewer; F(4x4): 36 for 144, 4x fewer):
    Y = A^T [ (G g G^T) * (B^T d B) ] A     (Lavin & Gray, "Fast Algorithms for CNNs", 2016)
Three stages in one TE function (TVM fuses the conv's epilogue into the last), t = m + 2:
  wino_in    V (t, t, N, T, C): B^T d B per tile and input channel (T = tiles per image), the
             padding and the overhang of maps not a multiple of m read as zeros;
  wino_gemm  M (t, t, O // ob, N, T, ob): t^2 matrix products V[a, b] x U[a, b] over C;
  output     (N, O // ob, OH, OW, ob): A^T M A per tile, the epilogue fused after it.
U = G g G^T (t, t, O // ob, C, ob) is computed at compile time in float64 (`transform_weight`).
The added rounding is that of the transforms: F(2x2)'s few adds and G's halves (exact in
binary) give a relative L2 error of ~1e-6 against the direct conv on ResNet-50's layers;
F(4x4)'s G has sixths and its B^T and A^T multiply by 2, 4, 5 and 8: 2-5e-6.
The schedule is kernels/winograd_schedule.py.
"""
from __future__ import annotations

import numpy as np
from tvm import te, tirx as tir

WINO_IN = "reidc_winograd_in"
WINO_GEMM = "reidc_winograd_gemm"
WINO_OUT = "reidc_winograd_out"

# F(m x m, 3 x 3): Y = A^T [(G g G^T) * (B^T d B)] A on (m + 2)^2 input patches (Lavin & Gray's
# matrices; F(4x4) on the points 0, +-1, +-2 and infinity)
MATRICES = {
    2: dict(G=[[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
            BT=[[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
            AT=[[1, 1, 1, 0], [0, 1, -1, -1]]),
    4: dict(G=[[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
               [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
            BT=[[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
                [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
            AT=[[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]),
}
def transform_weight(w: np.ndarray, ob: int, m: int = 2) -> np.ndarray:
    """(O, C, 3, 3) float -> U = G w G^T as (m + 2, m + 2, O // ob, C, ob) float32 (computed in float64)."""
    o, c, kh, kw = w.shape
    if (kh, kw) != (3, 3) or o % ob or m not in MATRICES:
        raise ValueError(f"winograd F({m}x{m}, 3x3) needs a (O, C, 3, 3) weight with O a multiple of {ob} "
                         f"and m in {sorted(MATRICES)}; got {w.shape}, m={m}")
    g = np.array(MATRICES[m]["G"], np.float64)
    u = np.einsum("ai,ocij,bj->abco", g, np.asarray(w, np.float64), g)
    t = m + 2
    return np.ascontiguousarray(u.reshape(t, t, c, o // ob, ob).transpose(0, 1, 3, 2, 4)).astype(np.float32)


def _row(matrix, r, g, dtype: str = "float32"):
    """Row r (a loop variable) of a constant matrix applied to g(0..k-1), as a Select over the
    rows; each row a sum over its non-zero entries in index order, +-1 as adds and subtracts.
    Each g(j) is bound once (a Let), so a nested transform is (m + 2) inner rows, not one per
    use: the unrolled loops' expressions stay small for TVM's simplifier. Unrolled, r is a
    constant and the Select folds away."""
    used = sorted({j for coeffs in matrix for j, c in enumerate(coeffs) if c})
    names = {j: tir.Var(f"w{j}", dtype) for j in used}

    def term(acc, c, j):
        v = names[j]
        if c in (1, -1):
            return v if acc is None and c == 1 else (-v if acc is None else (acc + v if c == 1 else acc - v))
        v = v * float(c)
        return v if acc is None else acc + v

    rows = []
    for coeffs in matrix:
        acc = None
        for j, c in enumerate(coeffs):
            if c:
                acc = term(acc, c, j)
        rows.append(acc)
    expr = rows[-1]
    for i in range(len(rows) - 2, -1, -1):
        expr = tir.Select(r == i, rows[i], expr)
    for j in reversed(used):
        expr = tir.Let(names[j], g(j), expr)
    return expr


def conv2d_winograd_nchwc(data: te.Tensor, u: te.Tensor) -> te.Tensor:
    """The 3x3, stride-1, pad-1 conv of data (N, C // cb, H, W, cb) with the transformed weight
    u (m + 2, m + 2, O // ob, C, ob) of F(m x m, 3 x 3): (N, O // ob, H, W, ob), equal to
    conv2d_nchwc's up to rounding."""
    n, cc, h, w, cb = data.shape
    t, _, ocb, c, ob = u.shape
    m = int(t) - 2
    bt, at = MATRICES[m]["BT"], MATRICES[m]["AT"]
    th, tw = (int(h) + m - 1) // m, (int(w) + m - 1) // m

    def pixel(b, ch, y, x):   # the input at padded coordinates (y, x): zeros outside the map
        return tir.if_then_else(tir.all(y >= 1, y <= h, x >= 1, x <= w), data[b, ch // cb, y - 1, x - 1, ch % cb],
                                tir.const(0.0, data.dtype))

    def transformed(a, bb, b, tile, ch):
        ty, tx = tile // tw, tile % tw
        return _row(bt, a, lambda i: _row(bt, bb, lambda j: pixel(b, ch, m * ty + i, m * tx + j), data.dtype),
                    data.dtype)
    v = te.compute((t, t, n, th * tw, c), transformed, name=WINO_IN)
    rc = te.reduce_axis((0, c), "rc")
    mm = te.compute((t, t, ocb, n, th * tw, ob), lambda a, bb, o, b, tile, lane: te.sum(
        v[a, bb, b, tile, rc] * u[a, bb, o, rc, lane], axis=rc), name=WINO_GEMM)

    def output(b, o, y, x, lane):
        tile = (y // m) * tw + x // m
        return _row(at, y % m, lambda a: _row(at, x % m, lambda bb: mm[a, bb, o, b, tile, lane], mm.dtype), mm.dtype)
    return te.compute((n, ocb, h, w, ob), output, name=WINO_OUT)
