"""The binary conv's popcount reduction for x86 without VPOPCNTQ, as Harley-Seal carry-save adders.

AVX2 has no vector popcount: a word's count is two `vpshufb` nibble lookups plus shifts, masks,
an add and a `vpsadbw` (10 vector ops per 64-bit word and 4 output channels, with the XOR and
the add into the accumulator). Harley and Seal's method counts a run of words through a tree of
carry-save adders (CSA(a, b, c) = (majority, parity): 5 bitwise ops) into "ones", "twos" and
"fours" words and popcounts only every 8th carry: about 6 ops per word. Measured on Zen 3, one
thread, the whole reduction of a 3x3 conv per pixel and 4 output channels: 256 input channels
(36 words) 0.378 -> 0.311 ms for 14x14x256 -> 256, 512 channels (72 words) 1.19x; 128 channels
(18 words) no gain, so the schedule takes it from 32 words up (MIN_WORDS).

`harley_seal_intrinsic(kh, kw, cw, lanes)` registers, on first use, the tensor intrinsic that
replaces the conv block's reduction over (ky, kx, words) for one pixel and `lanes` 64-bit
output-channel lanes: the description is the block's own sum of popcount(x ^ w); the
implementation is one expression whose intermediate words are Let-bound (each used twice or
more: a plain expression tree would double at every adder), exact in uint64 like the sum.
"""
from __future__ import annotations

import re

from tvm import tirx as tir
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

MIN_WORDS = 32       # fewer words per output: the plain reduction is as fast (18 words: equal)
_REGISTERED: set[str] = set()
_NAME = re.compile(r"reidc_bconv_harley_seal_(\d+)x(\d+)x(\d+)x(\d+)")


def register_named_in(text: str) -> None:
    """Register every intrinsic of this kind that `text` (tuning records) names: TVM cannot read
    a record whose trace tensorizes with an intrinsic it does not know."""
    for dims in set(_NAME.findall(text)):
        harley_seal_intrinsic(*map(int, dims))


def _csa(a, b, c, let):
    """(carry, sum) of three words, bit by bit: carry = majority(a, b, c), sum = a ^ b ^ c."""
    u = let(tir.bitwise_xor(a, b))
    return (let(tir.bitwise_or(tir.bitwise_and(a, b), tir.bitwise_and(u, c))), let(tir.bitwise_xor(u, c)))


def harley_seal_count(words: list, lanes: int):
    """sum over `words` (uint64 x lanes vectors) of their popcounts, as one Let-bound expression."""
    vt = f"uint64x{lanes}"
    bindings: list[tuple[tir.Var, tir.PrimExpr]] = []

    def let(value):
        v = tir.Var(f"harley_seal_{len(bindings)}", vt)
        bindings.append((v, value))
        return v

    def shl(x, n):
        return tir.shift_left(x, tir.Broadcast(tir.const(n, "uint64"), lanes))

    zero = tir.Broadcast(tir.const(0, "uint64"), lanes)
    d = [let(w) for w in words]
    ones = twos = fours = eights = zero
    k = 0
    while k + 8 <= len(d):
        t_a, ones = _csa(ones, d[k], d[k + 1], let)
        t_b, ones = _csa(ones, d[k + 2], d[k + 3], let)
        f_a, twos = _csa(twos, t_a, t_b, let)
        t_a, ones = _csa(ones, d[k + 4], d[k + 5], let)
        t_b, ones = _csa(ones, d[k + 6], d[k + 7], let)
        f_b, twos = _csa(twos, t_a, t_b, let)
        e, fours = _csa(fours, f_a, f_b, let)
        eights = let(eights + tir.popcount(e))
        k += 8
    total = shl(eights, 3) + shl(tir.popcount(fours), 2) + shl(tir.popcount(twos), 1) + tir.popcount(ones)
    for w in d[k:]:
        total = total + tir.popcount(w)
    for v, value in reversed(bindings):
        total = tir.Let(v, value, total)
    return total


def harley_seal_intrinsic(kh: int, kw: int, cw: int, lanes: int) -> str:
    """The intrinsic for a (kh, kw) kernel over `cw` words per pixel and `lanes` output channels
    (input: a pixel's (kh, kw, cw) words, rows and columns strided; weights (kh, kw, cw, lanes))."""
    name = f"reidc_bconv_harley_seal_{kh}x{kw}x{cw}x{lanes}"   # the form _NAME reads back
    if name in _REGISTERED:
        return name
    vt = f"uint64x{lanes}"

    def count(X, W):
        words = [tir.bitwise_xor(tir.Broadcast(X[y, x, c], lanes), W.vload([y, x, c, 0], vt))
                 for y in range(kh) for x in range(kw) for c in range(cw)]
        return harley_seal_count(words, lanes)

    @T.prim_func(s_tir=True)
    def desc(x: T.handle, w: T.handle, c: T.handle) -> None:
        sx0, sx1, sw0, sw1, sw2 = T.int32(), T.int32(), T.int32(), T.int32(), T.int32()
        X = T.match_buffer(x, (kh, kw, cw), "uint64", strides=[sx0, sx1, 1], offset_factor=1)
        W = T.match_buffer(w, (kh, kw, cw, lanes), "uint64", strides=[sw0, sw1, sw2, 1], offset_factor=1)
        C = T.match_buffer(c, (lanes,), "uint64", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:lanes], X[0:kh, 0:kw, 0:cw], W[0:kh, 0:kw, 0:cw, 0:lanes])
            T.writes(C[0:lanes])
            for v, ry, rx, rc in T.grid(lanes, kh, kw, cw):
                with T.sblock("update"):
                    vv, vy, vx, vc = T.axis.remap("SRRR", [v, ry, rx, rc])
                    C[vv] = C[vv] + T.popcount(T.bitwise_xor(X[vy, vx, vc], W[vy, vx, vc, vv]))

    @T.prim_func(s_tir=True)
    def impl(x: T.handle, w: T.handle, c: T.handle) -> None:
        sx0, sx1, sw0, sw1, sw2 = T.int32(), T.int32(), T.int32(), T.int32(), T.int32()
        X = T.match_buffer(x, (kh, kw, cw), "uint64", strides=[sx0, sx1, 1], offset_factor=1)
        W = T.match_buffer(w, (kh, kw, cw, lanes), "uint64", strides=[sw0, sw1, sw2, 1], offset_factor=1)
        C = T.match_buffer(c, (lanes,), "uint64", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:lanes], X[0:kh, 0:kw, 0:cw], W[0:kh, 0:kw, 0:cw, 0:lanes])
            T.writes(C[0:lanes])
            C[T.ramp(T.int32(0), 1, lanes)] = C.vload([0], vt) + count(X, W)

    TensorIntrin.register(name, desc, impl, override=True)
    _REGISTERED.add(name)
    return name
