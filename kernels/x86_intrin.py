"""x86 tensor intrinsics reidc registers with TVM: VNNI and AVX2 (vpmaddubsw) for the int8 conv, and
the bit-packing word (AMX tiles: amx_intrin.py).

`VNNI_U8S8_16x4`: 16 int32 lanes += sum over 4 of u8 x s8, one AVX-512 VNNI `vpdpbusd`. TVM
ships the same description (tvm.s_tir.tensor_intrin.x86), but its implementation passes the
byte operands as <16 x i32>, which the LLVM that TVM 0.27 links (where vpdpbusd takes
<64 x i8>) rejects; this one passes bytes.
"""
from __future__ import annotations

import re

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from .dot_intrin import broadcast_dot_impl, dot_desc

VNNI_U8S8_16x4 = "reidc_vnni_u8s8_16x4"
# the same on an accumulator in a "local" buffer (a register tile the schedule caches: its zeroing
# is then no memset of the task's accumulator block)
VNNI_U8S8_16x4_LOCAL = "reidc_vnni_u8s8_16x4_local"


def _vnni(scope: str):
    return broadcast_dot_impl(16, "uint8", "llvm.x86.avx512.vpdpbusd.512", scope)


TensorIntrin.register(VNNI_U8S8_16x4, dot_desc(16, "uint8"), _vnni("global"), override=True)
TensorIntrin.register(VNNI_U8S8_16x4_LOCAL, dot_desc(16, "uint8", "local"), _vnni("local"), override=True)

# AVX2 (no VNNI): 8 int32 lanes += sum over 4 of u8 x s8, weights in "dot4" order (8 lanes x 4
# input channels: 32 contiguous bytes), as ONNX Runtime and oneDNN do it on AVX2: `vpmaddubsw`
# (u8 x s8, adjacent pairs summed into int16), then `vpmaddwd` with int16 ones (adjacent int16
# pairs summed into int32), added to C. vpmaddubsw SATURATES its int16 pair sums, so this is exact
# only for weights |w| <= 63: 2 * 255 * 63 = 32130 <= 32767, while 2 * 255 * 127 = 64770 would
# clip. The description is the exact sum (what tensorize matches the conv's block against); the
# implementation equals it for |w| <= 63 only: the int8 pass quantizes weights to [-63, 63] for
# this flavour (Int8Flavour.weight_max), the lowering (compiler/lower/ops/quant.py) refuses a
# weight outside it, and the schedule tensorizes only kernels annotated with weight_max <= 63.
AVX2_U8S8_8x4 = "reidc_avx2_u8s8_8x4"


@T.prim_func(s_tir=True)
def _avx2(A: T.Buffer((4,), "uint8", offset_factor=1), B: T.Buffer((8, 4), "int8", offset_factor=1),
          C: T.Buffer((8,), "int32", offset_factor=1)) -> None:
    with T.sblock("root"):
        T.reads(C[0:8], A[0:4], B[0:8, 0:4])
        T.writes(C[0:8])
        # one expression: a TVMScript assignment would be a local buffer, which LLVM does not
        # always promote back to registers (it stayed in memory in whole networks' kernels)
        C[T.ramp(T.int32(0), 1, 8)] = C.vload([0], "int32x8") + T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"),
            T.call_llvm_pure_intrin(   # u8 x s8 pairs summed into int16, saturating
                T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.ub.sw"),
                T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), 8), dtype="int8x32"),
                B.vload([0, 0], dtype="int8x32"), dtype="int16x16"),
            T.broadcast(T.int16(1), 16), dtype="int32x8")


TensorIntrin.register(AVX2_U8S8_8x4, dot_desc(8, "uint8"), _avx2, override=True)

# AVX2 with 6-bit weights (|w| <= 31): 8 int32 lanes += sum over 8 input channels (two groups of
# 4, their weights `sb` apart) of u8 x s8. Two vpmaddubsw (one per group) are added in int16 by
# one vpaddw before ONE vpmaddwd: 3 multiply uops per 64 products instead of 4, the multiply
# ports being what the 8x4 kernel is bound by (83-92% of their peak on Zen 3). Exact for
# |w| <= 31: each pair sum is within 2 * 255 * 31 = 15810, two of them 31620 <= 32767.
AVX2_U8S8_8x8 = "reidc_avx2_u8s8_8x8"


@T.prim_func(s_tir=True)
def _avx2x8_desc(a: T.handle, b: T.handle, c: T.handle) -> None:
    sb = T.int32()
    A = T.match_buffer(a, (8,), "uint8", offset_factor=1)
    B = T.match_buffer(b, (2, 8, 4), "int8", offset_factor=1, strides=[sb, 4, 1])
    C = T.match_buffer(c, (8,), "int32", offset_factor=1)
    with T.sblock("root"):
        T.reads(C[0:8], A[0:8], B[0:2, 0:8, 0:4])
        T.writes(C[0:8])
        for g, i, k in T.grid(2, 8, 4):
            with T.sblock("update"):
                vi, vg, vk = T.axis.remap("SRR", [i, g, k])   # the conv block's order: lanes first
                C[vi] = C[vi] + T.cast(A[vg * 4 + vk], "int32") * T.cast(B[vg, vi, vk], "int32")


def _pair_sums(A, B, g):
    """Group g's vpmaddubsw: the 4 activations broadcast x 8 lanes x 4 weights, pairs in int16."""
    quad = T.reinterpret(T.broadcast(T.reinterpret(A.vload([4 * g], "uint8x4"), dtype="int32"), 8), dtype="int8x32")
    return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.ub.sw"), quad,
                                   B.vload([g, 0, 0], dtype="int8x32"), dtype="int16x16")


@T.prim_func(s_tir=True)
def _avx2x8(a: T.handle, b: T.handle, c: T.handle) -> None:
    sb = T.int32()
    A = T.match_buffer(a, (8,), "uint8", offset_factor=1)
    B = T.match_buffer(b, (2, 8, 4), "int8", offset_factor=1, strides=[sb, 4, 1])
    C = T.match_buffer(c, (8,), "int32", offset_factor=1)
    with T.sblock("root"):
        T.reads(C[0:8], A[0:8], B[0:2, 0:8, 0:4])
        T.writes(C[0:8])
        C[T.ramp(T.int32(0), 1, 8)] = C.vload([0], "int32x8") + T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"), _pair_sums(A, B, 0) + _pair_sums(A, B, 1),
            T.broadcast(T.int16(1), 16), dtype="int32x8")


TensorIntrin.register(AVX2_U8S8_8x8, _avx2x8_desc, _avx2x8, override=True)


_REGISTERED: set[str] = set()


# --- Bit-packing (kernels/bitpack.py) ---------------------------------------------------------
# One packed word: bit k = A[k] * S[k] < B[k] over the word's `bits` channels, the lanes of
# whole channel blocks (`cb` lanes each, blocks `sa` apart) or one slice of a block. Each 16
# channels are one vector multiply and compare, the compare's lanes as bytes (0 or -1) through
# SSE2 `pmovmskb` into a 16-bit mask; LLVM turns that into vcmpps + kmovw on AVX-512 and into
# vcmpps + vpackssdw/vpacksswb + vpmovmskb on AVX2. The description is the kernel's reduction,
# the masks ORed at 16 * j are its sum (disjoint bits).


def _bitpack_group(A, S, B, cb, slice_, j, dtype):
    """Channels 16j .. 16j + 15 of the word, as their 16-bit mask shifted into place."""
    if slice_ or cb >= 16:
        idx = [0, 0, 0, 16 * j] if slice_ else [16 * j // cb, 0, 0, 16 * j % cb]
        v = A.vload(idx, f"{dtype}x16")
    else:  # blocks narrower than 16 lanes: their loads joined into one vector
        v = T.Shuffle([A.vload([16 * j // cb + q, 0, 0, 0], f"{dtype}x{cb}") for q in range(16 // cb)],
                      list(range(16)))
    below = v * S.vload([16 * j], f"{dtype}x16") < B.vload([16 * j], f"{dtype}x16")
    mask = T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.sse2.pmovmskb.128"),
                                   T.Select(below, T.broadcast(T.int8(-1), 16), T.broadcast(T.int8(0), 16)),
                                   dtype="int32")
    return T.shift_left(T.Cast("uint64", mask), T.uint64(16 * j))


def bitpack_intrinsic(cb: int, bits: int, dtype: str = "float32") -> str:
    """The tensor intrinsic packing one `bits`-bit word (uint32 or uint64) from `dtype` data
    (float32 or int32) in channel blocks of `cb` lanes (cb divides bits, or is a multiple of it:
    the word is one slice of a block), registered on first use."""
    slice_ = cb > bits
    lanes = bits if slice_ else cb
    word = f"uint{bits}"
    name = f"reidc_bitpack_{dtype}_{word}_{'slice' if slice_ else cb}"
    if name in _REGISTERED:
        return name
    groups = 1 if slice_ else bits // cb
    from tvm import tirx
    one, zero = tirx.const(1, word), tirx.const(0, word)

    def at(vk):
        return (0, 0, 0, vk) if slice_ else (vk // cb, 0, 0, vk % cb)

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, s: T.handle, b: T.handle, c: T.handle) -> None:
        sa, sb, sc = T.int32(), T.int32(), T.int32()
        A = T.match_buffer(a, (groups, 1, 1, lanes), dtype, strides=[sa, sb, sc, 1], offset_factor=1)
        S = T.match_buffer(s, (bits,), dtype, offset_factor=1)
        B = T.match_buffer(b, (bits,), dtype, offset_factor=1)
        C = T.match_buffer(c, (1,), word, offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:1], A[0:groups, 0, 0, 0:lanes], S[0:bits], B[0:bits])
            T.writes(C[0:1])
            for k in T.serial(bits):
                with T.sblock("update"):
                    vk = T.axis.reduce(bits, k)
                    C[0] = C[0] + T.Select(A[at(vk)] * S[vk] < B[vk], T.shift_left(one, T.Cast(word, vk)), zero)

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, s: T.handle, b: T.handle, c: T.handle) -> None:
        sa, sb, sc = T.int32(), T.int32(), T.int32()
        A = T.match_buffer(a, (groups, 1, 1, lanes), dtype, strides=[sa, sb, sc, 1], offset_factor=1)
        S = T.match_buffer(s, (bits,), dtype, offset_factor=1)
        B = T.match_buffer(b, (bits,), dtype, offset_factor=1)
        C = T.match_buffer(c, (1,), word, offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:1], A[0:groups, 0, 0, 0:lanes], S[0:bits], B[0:bits])
            T.writes(C[0:1])
            # one expression (see _avx2): the word's 16-channel masks ORed together
            C[0] = C[0] + T.Cast(word, _bitpack_word(A, S, B, cb, slice_, bits, dtype))

    TensorIntrin.register(name, desc, impl, override=True)
    _REGISTERED.add(name)
    return name


_BITPACK_NAME = re.compile(r"reidc_bitpack_(float32|int32)_uint(32|64)_(slice|\d+)")


def register_bitpack_named_in(text: str) -> None:
    """Register every bit-packing intrinsic `text` (tuning records) names: a binary conv that
    packs its output (compiler/lower/fuse_bitpack.py) tensorizes with one, and TVM cannot read
    a record whose trace names an intrinsic it does not know."""
    for dtype, bits, cb in set(_BITPACK_NAME.findall(text)):
        bitpack_intrinsic(2 * int(bits) if cb == "slice" else int(cb), int(bits), dtype)


def _bitpack_word(A, S, B, cb, slice_, bits, dtype):
    w = _bitpack_group(A, S, B, cb, slice_, 0, dtype)
    for j in range(1, bits // 16):
        w = T.bitwise_or(w, _bitpack_group(A, S, B, cb, slice_, j, dtype))
    return w
