"""Numpy helpers for the ops' reference semantics (compiler/ir/opset): exact where the maths is
integer, float64 accumulation rounded to float32 elsewhere. Slow and plain on purpose."""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def pick(table, modality, ndim: int) -> np.ndarray:
    """A (C,) constant, or a per-modality (2, C) table picked per sample, shaped to broadcast
    over an (N, C, ...) tensor of `ndim` dimensions."""
    t = np.asarray(table)
    t = t[np.asarray(modality, np.int64)] if t.ndim == 2 else t[None]
    return t.reshape(t.shape + (1,) * (ndim - 2))


def per_sample(outs: list[np.ndarray], modality) -> np.ndarray:
    """Sample i of outs[modality[i]]: a per-modality op run once per modality, then selected."""
    sel = np.asarray(modality, np.int64).reshape((-1,) + (1,) * (outs[0].ndim - 1))
    return np.where(sel == 1, outs[1], outs[0])


def windows(x: np.ndarray, kernel, stride, padding=(0, 0), fill=0.0) -> np.ndarray:
    """(N, C, OH, OW, kh, kw) views of x's sliding windows, after padding with `fill`."""
    (ph, pw), (sh, sw) = padding, stride
    x = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    return sliding_window_view(x, tuple(kernel), axis=(2, 3))[:, :, ::sh, ::sw]


def conv2d(x: np.ndarray, w: np.ndarray, stride, padding, fill=0.0) -> np.ndarray:
    """Cross-correlation as PyTorch's conv2d, in the dtype of x (float64 for float inputs);
    `fill`: the padding value (an int8 conv pads with its input's zero point)."""
    win = windows(x, w.shape[2:], stride, padding, fill)
    return np.einsum("nchwij,ocij->nohw", win, w, optimize=True)


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bit patterns (uint16: the top half of the float32), rounding to nearest
    even; exactly what the kernels compute (kernels/conv2d_bf16.py `encode`). Finite inputs."""
    b = np.ascontiguousarray(x, np.float32).view(np.uint32)
    return ((b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)


def from_bf16_bits(b: np.ndarray) -> np.ndarray:
    """bf16 bit patterns -> float32 (exact)."""
    return (np.asarray(b, np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


# F(m x m, 3 x 3): Y = A^T [(G g G^T) * (B^T d B)] A on (m + 2)^2 input patches (Lavin & Gray's
# matrices; F(4x4) on the points 0, +-1, +-2 and infinity)
WINOGRAD_MATRICES = {
    2: dict(G=[[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
            BT=[[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
            AT=[[1, 1, 1, 0], [0, 1, -1, -1]]),
    4: dict(G=[[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
               [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
            BT=[[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
                [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
            AT=[[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]),
}


def winograd_weight(w: np.ndarray, m: int) -> np.ndarray:
    """U = G w G^T of F(m x m, 3 x 3) in float64: (O, C, 3, 3) -> (m + 2, m + 2, C, O)."""
    g = np.array(WINOGRAD_MATRICES[m]["G"], np.float64)
    return np.einsum("ai,ocij,bj->abco", g, np.asarray(w, np.float64), g)


def winograd_bf16(x_bits: np.ndarray, w_bits: np.ndarray, m: int = 2) -> np.ndarray:
    """The 3x3, stride-1, pad-1 conv of bf16 patterns as reidc's bf16 Winograd kernel computes it
    (kernels/winograd.py): V = B^T d B per m x m output tile in float32, each patch row first
    (F(2x2)'s rows are one add or subtract each, so the roundings are the kernel's), rounded to
    bf16; U = G w G^T in float64, rounded to
    float32 and then to bf16; their products summed over input channels and A^T M A applied in
    float64 (the kernel's float32 sums differ from these in their rounding only). (N, O, H, W).
    F(2x2) only: the bf16 kernel takes no other (and F(4x4)'s rows would round in an order this
    does not model)."""
    if m != 2:
        raise ValueError(f"winograd_bf16 models F(2x2, 3x3) only, not F({m}x{m})")
    mats = WINOGRAD_MATRICES[m]
    bt, at = (np.array(mats[k], np.float64) for k in ("BT", "AT"))
    x = from_bf16_bits(x_bits)
    n, c, h, w = x.shape
    th, tw, t = -(-h // m), -(-w // m), m + 2
    pad = np.zeros((n, c, th * m + 2, tw * m + 2), np.float32)
    pad[:, :, 1:h + 1, 1:w + 1] = x
    # the (t, t) input patch of every tile: (N, C, th, tw, t, t)
    patches = np.stack([np.stack([pad[:, :, i:i + th * m:m, j:j + tw * m:m] for j in range(t)], -1)
                        for i in range(t)], -2)
    # the kernel's order: each patch row's transform, then the rows' (one rounding each for F(2x2))
    inner = np.einsum("bj,nchwij->nchwib", bt.astype(np.float32), patches)
    v = np.einsum("ai,nchwib->nchwab", bt.astype(np.float32), inner)
    v = from_bf16_bits(to_bf16_bits(v)).astype(np.float64)
    u = winograd_weight(from_bf16_bits(w_bits), m)
    u = from_bf16_bits(to_bf16_bits(u.astype(np.float32))).astype(np.float64)
    mm = np.einsum("nchwab,abco->nohwab", v, u, optimize=True)
    y = np.einsum("pa,nohwab,qb->nohpwq", at, mm, at).reshape(n, u.shape[3], th * m, tw * m)
    return y[:, :, :h, :w]
