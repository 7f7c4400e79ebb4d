"""The bit layout of reidc's binary tensors and the zero-padding correction of a binary conv
(pure numpy). The IR's contract, read by the passes that pack weights, the kernels that pack
activations, the lowering and the torch reference alike.

Bit convention (as Larq Compute Engine's): bit 1 means -1, bit 0 means +1; sign(0) = +1.
Channels fill words little-endian: channel c is bit c % B of word c // B; unused high bits of
the last word are 0 in activations and weights alike, so they never count as a mismatch.
"""
from __future__ import annotations

import numpy as np

WORD_BITS = {"uint32": 32, "uint64": 64}


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
