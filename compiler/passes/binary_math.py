"""Pure maths of binarization (numpy): recognising +-alpha weights, sign thresholds, bit-packing,
the zero-padding correction of a binary conv. The binary passes and kernels only wire these.

Bit convention (as Larq Compute Engine's): bit 1 means -1, bit 0 means +1; sign(0) = +1.
Channels fill words little-endian: channel c is bit c % B of word c // B; unused high bits of
the last word are 0 in activations and weights alike, so they never count as a mismatch.
"""
from __future__ import annotations

import numpy as np

WORD_BITS = {"uint32": 32, "uint64": 64}
#: largest finite float32: a threshold no activation crosses
NEVER = float(np.finfo(np.float32).max)


def binary_weight_scale(w: np.ndarray, rtol: float = 1e-5):
    """(signs int8 +-1, alpha (O,)) when every output channel's weights are +-alpha_o with
    alpha_o > 0 (within rtol), else None."""
    w = np.asarray(w, np.float64)
    mag = np.abs(w).reshape(w.shape[0], -1)
    alpha = mag.max(axis=1)
    if (alpha <= 0).any() or not np.isfinite(alpha).all():
        return None
    if (np.abs(mag - alpha[:, None]) > rtol * alpha[:, None]).any():
        return None
    return np.where(w >= 0, 1, -1).astype(np.int8), alpha.astype(np.float32)


def sign_threshold(scale: np.ndarray, shift: np.ndarray):
    """sign(x * s + t) as a comparison on x: bit (= -1) when x < thr, or x > thr where s < 0.

    Returns (thr float32, flip int8). s == 0 gives a constant: bit always (t < 0: x < +max,
    which every finite x satisfies... except +max itself) or never (x < -max)."""
    s = np.asarray(scale, np.float64)
    t = np.asarray(shift, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        thr = np.where(s != 0, -t / s, np.where(t < 0, NEVER, -NEVER))
    return thr.astype(np.float32), (s < 0).astype(np.int8)


def integer_threshold(scale: np.ndarray, shift: np.ndarray):
    """sign(dot * a + b) for an integer dot, as an exact integer comparison on dot:
    a > 0: bit when dot < ceil(-b/a); a < 0: bit when dot > floor(-b/a); a == 0: constant.
    Returns (thr int32, flip int8); computed in float64 as PyTorch's float layer would round."""
    a = np.asarray(scale, np.float64)
    b = np.asarray(shift, np.float64)
    big = np.iinfo(np.int32).max
    with np.errstate(divide="ignore", invalid="ignore"):
        q = -b / a
        thr = np.where(a > 0, np.ceil(q), np.where(a < 0, np.floor(q), np.where(b < 0, big, -big)))
    return np.clip(thr, -big, big).astype(np.int32), (a < 0).astype(np.int8)


def words(channels: int, word: str = "uint64") -> int:
    return -(-channels // WORD_BITS[word])


def pack_bits(negative: np.ndarray, word: str = "uint64") -> np.ndarray:
    """Pack a boolean last axis (True = -1) into words: (..., C) -> (..., words(C))."""
    bits = WORD_BITS[word]
    neg = np.asarray(negative).astype(np.uint64)
    c = neg.shape[-1]
    pad = words(c, word) * bits - c
    neg = np.concatenate([neg, np.zeros(neg.shape[:-1] + (pad,), np.uint64)], axis=-1)
    neg = neg.reshape(neg.shape[:-1] + (-1, bits))
    place = np.uint64(1) << np.arange(bits, dtype=np.uint64)
    return (neg * place).sum(axis=-1, dtype=np.uint64).astype(word)


def pack_signs(x: np.ndarray, word: str = "uint64") -> np.ndarray:
    """Pack the signs of the last axis of a float array (x < 0 -> bit 1)."""
    return pack_bits(np.asarray(x) < 0, word)


def border_correction(signs: np.ndarray, in_hw: tuple[int, int], stride: tuple[int, int],
                      padding: tuple[int, int]):
    """What padding with zero words (= +1 bits) adds to each output's dot product, to subtract
    so borders equal PyTorch's zero padding of the +-1 input. Returned compactly, by border
    class: (table (NY, NX, O) int32, row class (OH,) int32, column class (OW,) int32); the
    correction at (y, x, o) is table[row[y], col[x], o]. Interior pixels share a zero entry."""
    o, c, kh, kw = signs.shape
    (h, wd), (sh, sw), (ph, pw) = in_hw, stride, padding
    oh, ow = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    tap = np.asarray(signs, np.int64).sum(axis=1)  # (O, KH, KW): a +1 input against the tap's weights
    oob_y = (lambda ys: (ys < 0) | (ys >= h))(np.arange(oh)[:, None] * sh + np.arange(kh)[None, :] - ph)
    oob_x = (lambda xs: (xs < 0) | (xs >= wd))(np.arange(ow)[:, None] * sw + np.arange(kw)[None, :] - pw)
    ky, ycls = np.unique(oob_y, axis=0, return_inverse=True)  # distinct out-of-bounds patterns
    kx, xcls = np.unique(oob_x, axis=0, return_inverse=True)
    oob = ky[:, None, :, None] | kx[None, :, None, :]  # (NY, NX, KH, KW)
    table = np.einsum("yxij,oij->yxo", oob.astype(np.int64), tap).astype(np.int32)
    return table, ycls.reshape(-1).astype(np.int32), xcls.reshape(-1).astype(np.int32)


def expand_correction(table: np.ndarray, ycls: np.ndarray, xcls: np.ndarray) -> np.ndarray:
    """The full (OH, OW, O) correction, for tests and reference."""
    return table[ycls][:, xcls]
