"""Bit-packing with a per-channel threshold, from the float blocked layout (N, C//cb, H, W, cb)
to packed NHWC words (N, H, W, words(C)).

bit(c) = x > thr[c] if flip[c] else x < thr[c]   (bit 1 means -1; thr 0, flip 0 is sign(x))
Per-modality thresholds (2, C) are picked per sample by an int32 modality vector. Channels
past C in the last word stay 0. Conventions: compiler/passes/binary_math.py.
"""
from __future__ import annotations

from tvm import te, tirx as tir

from reidc.compiler.ir.bits import WORD_BITS, words

BITPACK_BLOCK = "reidc_bitpack"


def bitpack_nchwc(data: te.Tensor, threshold: te.Tensor, flip: te.Tensor, channels: int,
                  modality: te.Tensor | None = None, word: str = "uint64") -> te.Tensor:
    n, _, h, w, cb = data.shape
    bits = WORD_BITS[word]
    k = te.reduce_axis((0, bits), "bit")

    def bit(b, y, x, wi, i):
        ch = tir.min(wi * bits + i, channels - 1)
        v = data[b, ch // cb, y, x, ch % cb]
        t = threshold[ch] if modality is None else threshold[modality[b], ch]
        f = flip[ch] if modality is None else flip[modality[b], ch]
        neg = tir.Select(f != 0, v > t, v < t)
        return tir.Select(tir.all(wi * bits + i < channels, neg), tir.const(1, word) << i.astype(word),
                          tir.const(0, word))

    return te.compute((n, h, w, words(channels, word)), lambda b, y, x, wi: te.sum(bit(b, y, x, wi, k), axis=k),
                      name=BITPACK_BLOCK)
