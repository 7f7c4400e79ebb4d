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
A bf16 conv (data as uint16 bf16 patterns: conv2d_bf16.py) takes the same stages with V rounded
to bf16 (transformed in float32 from the decoded input, then rounded to nearest even) and U
rounded to bf16 at compile time (laid out in input-channel pairs by `pair_weight`), so
the t^2 products are bf16 x bf16 pairs summed in float32 (AVX512-BF16's vdpbf16ps); the output
transform is float32. The roundings of V and U are what it adds to the direct bf16 conv (the IR
reference models them: compiler/ir/opset/refmath.py `winograd_bf16`).
The schedule is kernels/winograd_schedule.py.
"""
from __future__ import annotations

import numpy as np
from tvm import te, tirx as tir

from reidc.compiler.ir.opset.refmath import WINOGRAD_MATRICES as MATRICES, winograd_weight

from .conv2d_bf16 import PAIR, decode, encode

WINO_IN = "reidc_winograd_in"
WINO_GEMM = "reidc_winograd_gemm"
WINO_OUT = "reidc_winograd_out"

def transform_weight(w: np.ndarray, ob: int, m: int = 2) -> np.ndarray:
    """(O, C, 3, 3) float -> U = G w G^T as (m + 2, m + 2, O // ob, C, ob) float32 (computed in float64)."""
    o, c, kh, kw = w.shape
    if (kh, kw) != (3, 3) or o % ob or m not in MATRICES:
        raise ValueError(f"winograd F({m}x{m}, 3x3) needs a (O, C, 3, 3) weight with O a multiple of {ob} "
                         f"and m in {sorted(MATRICES)}; got {w.shape}, m={m}")
    u = winograd_weight(w, m)
    t = m + 2
    return np.ascontiguousarray(u.reshape(t, t, c, o // ob, ob).transpose(0, 1, 3, 2, 4)).astype(np.float32)


def pair_weight(u_bits: np.ndarray) -> np.ndarray:
    """U rounded to bf16 (uint16 patterns) as `transform_weight` lays it out, (m + 2, m + 2,
    O // ob, C, ob) -> (m + 2, m + 2, O // ob, C // 2, ob, 2): per input-channel pair, `ob`
    output channels of 2 (the direct bf16 conv's weight order, what vdpbf16ps reads)."""
    t, _, ocb, c, ob = u_bits.shape
    if c % PAIR:
        raise ValueError(f"bf16 winograd needs an even input channel count; got U {u_bits.shape}")
    v = u_bits.reshape(t, t, ocb, c // PAIR, PAIR, ob).transpose(0, 1, 2, 3, 5, 4)
    return np.ascontiguousarray(v).astype(np.uint16)


def _row(matrix, r, g):
    """Row r (a loop variable) of a constant matrix applied to g(0..k-1), as a Select over the
    rows; each row a sum over its non-zero entries in index order, +-1 as adds and subtracts.
    Each g(j) is bound once (a Let), so a nested transform is (m + 2) inner rows, not one per
    use: the unrolled loops' expressions stay small for TVM's simplifier. Unrolled, r is a
    constant and the Select folds away."""
    used = sorted({j for coeffs in matrix for j, c in enumerate(coeffs) if c})
    names = {j: tir.Var(f"w{j}", "float32") for j in used}   # both transforms read float32

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
    u (m + 2, m + 2, O // ob, C, ob) of F(m x m, 3 x 3): (N, O // ob, H, W, ob) float32, equal to
    conv2d_nchwc's up to rounding. bf16 data (uint16) takes U rounded to bf16 and laid out by `pair_weight`."""
    n, cc, h, w, cb = data.shape
    bf16 = data.dtype == "uint16"      # bf16 patterns: u is pair_weight's
    t, ocb, ob = u.shape[0], u.shape[2], u.shape[4]
    c = cc * cb
    m = int(t) - 2
    bt, at = MATRICES[m]["BT"], MATRICES[m]["AT"]
    th, tw = (int(h) + m - 1) // m, (int(w) + m - 1) // m
    read = (lambda *i: decode(data[i])) if bf16 else (lambda *i: data[i])

    def pixel(b, ch, y, x):   # the input at padded coordinates (y, x): zeros outside the map
        return tir.if_then_else(tir.all(y >= 1, y <= h, x >= 1, x <= w), read(b, ch // cb, y - 1, x - 1, ch % cb),
                                tir.const(0.0, "float32"))

    def transformed(a, bb, b, tile, ch):
        ty, tx = tile // tw, tile % tw
        v = _row(bt, a, lambda i: _row(bt, bb, lambda j: pixel(b, ch, m * ty + i, m * tx + j)))
        if not bf16:
            return v
        tv = tir.Var("tv", "float32")   # encode reads its value twice: bound once, as _row binds
        return tir.Let(tv, v, encode(tv))
    v = te.compute((t, t, n, th * tw, c), transformed, name=WINO_IN)
    if bf16:   # pairs of input channels, bf16 x bf16 products summed in float32
        rg, ri = te.reduce_axis((0, c // PAIR), "rg"), te.reduce_axis((0, PAIR), "ri")
        mm = te.compute((t, t, ocb, n, th * tw, ob), lambda a, bb, o, b, tile, lane: te.sum(
            decode(v[a, bb, b, tile, rg * PAIR + ri]) * decode(u[a, bb, o, rg, lane, ri]), axis=[rg, ri]),
            name=WINO_GEMM)
    else:
        rc = te.reduce_axis((0, c), "rc")
        mm = te.compute((t, t, ocb, n, th * tw, ob), lambda a, bb, o, b, tile, lane: te.sum(
            v[a, bb, b, tile, rc] * u[a, bb, o, rc, lane], axis=rc), name=WINO_GEMM)

    def output(b, o, y, x, lane):
        tile = (y // m) * tw + x // m
        return _row(at, y % m, lambda a: _row(at, x % m, lambda bb: mm[a, bb, o, b, tile, lane]))
    return te.compute((n, ocb, h, w, ob), output, name=WINO_OUT)
