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
