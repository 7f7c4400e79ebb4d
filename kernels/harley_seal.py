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
implementation binds every intermediate word once (each is used twice or more: a plain
expression tree would double at every adder) and carries the adders' state from one 8-word
block to the next in a local buffer (see _emit_count), exact in uint64 like the sum.
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


def _emit_count(words: list, lanes: int, state) -> tir.PrimExpr:
    """Inside TVMScript: the statements that count `words` through the adders, 8 words a block,
    and the sum they leave (an expression). Each block's intermediate words are T.bind-ings and
    its "ones", "twos", "fours" and "eights" go through `state`, a (4, lanes) local buffer that
    LLVM keeps in registers. Carried as bound values instead, every block's expression would
    reach back through all the earlier ones, and TVM's simplifier expands a binding's value when
    it records it: one 512-channel conv (9 blocks) took 5.4 s to build instead of 0.3 s."""
    vt = f"uint64x{lanes}"
    zero = tir.Broadcast(tir.const(0, "uint64"), lanes)
    ramp = tir.Ramp(tir.const(0, "int32"), 1, lanes)
    nblocks = len(words) // 8
    if nblocks:
        for i in range(4):
            T.buffer_store(state, zero, [i, ramp])
    for b in range(nblocks):
        d = [T.bind(w) for w in words[8 * b:8 * b + 8]]
        ones, twos, fours, eights = (state.vload([i, 0], vt) for i in range(4))
        t_a, ones = _csa(ones, d[0], d[1], T.bind)
        t_b, ones = _csa(ones, d[2], d[3], T.bind)
        f_a, twos = _csa(twos, t_a, t_b, T.bind)
        t_a, ones = _csa(ones, d[4], d[5], T.bind)
        t_b, ones = _csa(ones, d[6], d[7], T.bind)
        f_b, twos = _csa(twos, t_a, t_b, T.bind)
        e, fours = _csa(fours, f_a, f_b, T.bind)
        for i, v in enumerate((ones, twos, fours, eights + tir.popcount(e))):
            T.buffer_store(state, v, [i, ramp])

    def shl(x, n):
        return tir.shift_left(x, tir.Broadcast(tir.const(n, "uint64"), lanes))

    total = zero
    if nblocks:
        ones, twos, fours, eights = (state.vload([i, 0], vt) for i in range(4))
        total = shl(eights, 3) + shl(tir.popcount(fours), 2) + shl(tir.popcount(twos), 1) + tir.popcount(ones)
    for w in words[8 * nblocks:]:
        total = total + tir.popcount(w)
    return total


def harley_seal_intrinsic(kh: int, kw: int, cw: int, lanes: int) -> str:
    """The intrinsic for a (kh, kw) kernel over `cw` words per pixel and `lanes` output channels
    (input: a pixel's (kh, kw, cw) words, rows and columns strided; weights (kh, kw, cw, lanes))."""
    name = f"reidc_bconv_harley_seal_{kh}x{kw}x{cw}x{lanes}"   # the form _NAME reads back
    if name in _REGISTERED:
        return name
    vt = f"uint64x{lanes}"

    def count(X, W, S):
        words = [tir.bitwise_xor(tir.Broadcast(X[y, x, c], lanes), W.vload([y, x, c, 0], vt))
                 for y in range(kh) for x in range(kw) for c in range(cw)]
        return _emit_count(words, lanes, S)

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
            harley_seal_state = T.alloc_buffer((4, lanes), "uint64", scope="local")
            C[T.ramp(T.int32(0), 1, lanes)] = C.vload([0], vt) + count(X, W, harley_seal_state)

    TensorIntrin.register(name, desc, impl, override=True)
    _REGISTERED.add(name)
    return name
