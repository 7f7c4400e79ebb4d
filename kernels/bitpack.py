"""Bit-packing with a per-channel threshold, from the blocked layout (N, C//cb, H, W, cb) (float32,
or the int32 accumulator of a bconv2d) to packed NHWC words (N, H, W, words(C)).

bit(c) = x > thr[c] if flip[c] else x < thr[c]   (bit 1 means -1; thr 0, flip 0 is sign(x))
Per-modality thresholds (2, C) are picked per sample by an int32 modality vector. Channels
past C in the last word stay 0. Conventions: compiler/passes/binary_math.py.

The kernel computes the same bits without a branch on flip: with sign s[c] = -1 where flip, else
+1, and bound u[c] = s[c] * thr[c],

    bit(c) = x * s[c] < u[c]

x > t <=> -x < -t, and a negation is exact (floats; int32 thresholds stay within +-INT32_MAX,
binary_math.integer_threshold), so NaN and x == t give bit 0 either way, as before. The
lowering (compiler/lower/ops/binary.py) stores s and u as constants (`signed_bounds`) and picks a
modality's row per sample before the kernel (per-sample (N, C) tables), so the kernel's body is a
plain multiply and compare per bit. Where a word's channels are whole channel blocks (or one
slice of a block: `whole_words`), the body reads block k // cb, lane k % cb of the word's bit k;
the CPU schedule turns one word into vector compares and bit masks (x86: `bitpack_intrinsic`).
"""
from __future__ import annotations

import numpy as np
from tvm import te, tirx as tir

from reidc.compiler.ir.bits import WORD_BITS, words

BITPACK_BLOCK = "reidc_bitpack"


def signed_bounds(threshold: np.ndarray, flip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sign, bound) in the threshold's dtype: bit = x * sign < bound equals the flag form."""
    t = np.asarray(threshold)
    sign = np.where(np.asarray(flip) != 0, -1, 1).astype(t.dtype)
    return sign, (sign * t).astype(t.dtype)


def whole_words(cb: int, channels: int, word: str = "uint64") -> bool:
    """Whether every word holds whole channel blocks (cb divides the word's bits) or a slice of
    one block (the word's bits divide cb), with no partial last word: the form the x86 schedule
    vectorises."""
    bits = WORD_BITS[word]
    return channels % bits == 0 and (bits % cb == 0 or cb % bits == 0)


def bitpack_signed_nchwc(data: te.Tensor, sign: te.Tensor, bound: te.Tensor, channels: int,
                         word: str = "uint64") -> te.Tensor:
    """bit(c) = data * sign[c] < bound[c]; sign and bound (C,), or (N, C): one row per sample."""
    n, _, h, w, cb = data.shape
    cb, bits = int(cb), WORD_BITS[word]
    k = te.reduce_axis((0, bits), "bit")
    per_sample = len(sign.shape) == 2
    one, zero = tir.const(1, word), tir.const(0, word)

    def pick(t, b, ch):
        return t[b, ch] if per_sample else t[ch]

    def packed(cond):
        return te.sum(tir.Select(cond, one << k.astype(word), zero), axis=k)

    if whole_words(cb, channels, word):
        def body(b, y, x, wi):
            ch = wi * bits + k
            if cb <= bits:  # the word's bits: blocks wi * (bits // cb) ..., each cb lanes
                v = data[b, wi * (bits // cb) + k // cb, y, x, k % cb]
            else:           # the word's bits: one slice of a block
                v = data[b, wi * bits // cb, y, x, wi * bits % cb + k]
            return packed(v * pick(sign, b, ch) < pick(bound, b, ch))
    else:  # a partial last word: channels past C clamped to a real one and masked off
        def body(b, y, x, wi):
            ch = tir.min(wi * bits + k, channels - 1)
            v = data[b, ch // cb, y, x, ch % cb]
            return packed(tir.all(wi * bits + k < channels, v * pick(sign, b, ch) < pick(bound, b, ch)))

    return te.compute((n, h, w, words(channels, word)), body, name=BITPACK_BLOCK)


def bitpack_nchwc(data: te.Tensor, threshold: te.Tensor, flip: te.Tensor, channels: int,
                  modality: te.Tensor | None = None, word: str = "uint64") -> te.Tensor:
    """The flag form (threshold, flip (C,) or per modality (2, C) with `modality`): sign and bound
    computed in the kernel. The lowering passes `signed_bounds` constants to
    `bitpack_signed_nchwc` instead, which the CPU schedule can vectorise."""
    dt = data.dtype
    n = data.shape[0]

    def sb(*i):
        s = tir.Select(flip(*i) != 0, tir.const(-1, dt), tir.const(1, dt))
        return s, s * threshold(*i).astype(dt)

    if modality is None:
        sign = te.compute(threshold.shape, lambda c: sb(c)[0], name="reidc_bitpack_sign")
        bound = te.compute(threshold.shape, lambda c: sb(c)[1], name="reidc_bitpack_bound")
    else:
        sign = te.compute((n, channels), lambda b, c: sb(modality[b], c)[0], name="reidc_bitpack_sign")
        bound = te.compute((n, channels), lambda b, c: sb(modality[b], c)[1], name="reidc_bitpack_bound")
    return bitpack_signed_nchwc(data, sign, bound, channels, word)
