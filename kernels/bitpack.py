"""Bit-packing of signs along the channel axis (NHWC), at compile time (numpy) and at run time (TE).

Convention (as Larq Compute Engine's): bit 1 means -1, bit 0 means +1; x >= 0 packs to 0
(sign(0) is taken as +1). Channels fill words little-endian: channel c sits in word c // B,
bit c % B. Unused high bits of the last word are 0 in activations and weights alike, so they
never count as a mismatch.
"""
from __future__ import annotations

from tvm import te, tirx as tir

from compiler.passes.binary_math import WORD_BITS, pack_signs, words  # noqa: F401 (re-exported)


def bitpack_nhwc(x: te.Tensor, word: str = "uint64", name: str = "reidc_bitpack") -> te.Tensor:
    """TE: (N, H, W, C) float -> (N, H, W, words(C)) packed signs."""
    n, h, w, c = x.shape
    bits = WORD_BITS[word]
    cw = words(int(c), word)
    k = te.reduce_axis((0, bits), "bit")

    def bit(b, y, xx, wi, i):
        ch = wi * bits + i
        neg = tir.all(ch < c, x[b, y, xx, tir.min(ch, c - 1)] < tir.const(0, x.dtype))
        return tir.Select(neg, tir.const(1, word) << i.astype(word), tir.const(0, word))

    return te.compute((n, h, w, cw), lambda b, y, xx, wi: te.sum(bit(b, y, xx, wi, k), axis=k), name=name)
