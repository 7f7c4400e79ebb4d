"""Bit-pack binary conv weights at compile time (stage 4): +-1 signs (O, C, kh, kw) become words
(O, kh, kw, words(C)) along input channels, the layout the kernels read. The signs stay in the
IR for the verifier and the dump; the lowering uses `packed`.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from reidc.compiler.ir import Graph, Op
from reidc.compiler.ir.bits import pack_bits

from .rewrite import Rewrite, Rule, apply_rules

WORD = "uint64"


def _pack(g: Graph, nid, n):
    signs = np.asarray(n.attrs["signs"])
    packed = pack_bits(np.transpose(signs, (0, 2, 3, 1)) < 0, WORD)
    return Rewrite(node=n.with_(attrs={**n.attrs, "packed": packed, "word": WORD}),
                   note=f"{signs.size} weights in {packed.nbytes} bytes")


def bitpack_weights(g: Graph, stats: Counter | None = None) -> Graph:
    rules = [Rule("bitpack_weights", Op.BCONV2D, _pack,
                  (("not packed yet", lambda g, nid, n: n.attr("packed") is None),))]
    return apply_rules(g, rules, stats).graph
