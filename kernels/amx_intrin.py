"""AMX tensor intrinsics reidc registers with TVM: tiles of the int8 (tdpbusd) and bf16 (tdpbf16ps)
convs, registered per tile shape on first use."""
from __future__ import annotations

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

# --- AMX-INT8 (Sapphire Rapids and newer) -----------------------------------------------------
# A tile of M output pixels x 64 output channels: C in tmm0-3 (16 channels each), A (M pixels x
# 64 input channels, u8) in tmm4, B (16 groups x 16 channels x 4, s8) rotating through tmm5-7 so
# that a load need not wait for the tdpbusd reading the previous one.


class _AmxTypes:
    """What an AMX kind fixes: accumulator and operand dtypes, elements per dot-product group,
    A's columns in one 64-byte row (K), the element size, the zero, the instruction, and the
    value of an operand in the description's arithmetic."""

    def __init__(self, kind: str):
        self.bf16 = kind == "bf16"
        self.acc, self.elem, self.weight, self.group = (("float32", "uint16", "uint16", 2) if self.bf16
                                                        else ("int32", "uint8", "int8", 4))
        self.esize = 2 if self.bf16 else 1
        self.K = 64 // self.esize
        self.zero = T.float32(0) if self.bf16 else T.int32(0)
        self.dot = "llvm.x86.tdpbf16ps" if self.bf16 else "llvm.x86.tdpbusd"

    def value(self, v):
        return (T.reinterpret("float32", T.shift_left(T.Cast("uint32", v), T.uint32(16))) if self.bf16
                else T.Cast("int32", v))


def amx_intrinsics(rows: int, kind: str = "int8") -> tuple[str, str, str]:
    """(init, update, store) tensor intrinsics for `rows` output pixels (1..16) x 64 output
    channels, registered on first use: init = configure the tiles (once per tile group) and
    zero tmm0-3; update = C += A . B, one A load, four B loads, four dot products, where
    kind "int8": A rows x 64 u8, B 16 x 64 x 4 s8 (VNNI order), tdpbusd into int32;
    kind "bf16": A rows x 32 bf16, B 16 x 64 x 2 bf16 (pairs), tdpbf16ps into float32
    (bf16 as uint16 bit patterns: conv2d_bf16.py); both are 64-byte tile rows.
    store = tmm0-3 to memory. C lives in the tile registers from init to store (the local
    buffer the descriptions name is never touched)."""
    names = tuple(f"reidc_amx_{kind}_{k}_{rows}" for k in ("init", "update", "store"))
    if names[0] in _REGISTERED:
        return names
    M = rows
    t = _AmxTypes(kind)
    acc, elem, weight, group, K, zero, dot, esize, a_val = t.acc, t.elem, t.weight, t.group, t.K, t.zero, t.dot, t.esize, t.value

    @T.prim_func(s_tir=True)
    def init_desc(c: T.handle) -> None:
        sc = T.int32()
        C = T.match_buffer(c, (M, 64), acc, offset_factor=1, strides=[sc, 1], scope="local")
        with T.sblock("root"):
            T.reads()
            T.writes(C[0:M, 0:64])
            for i, j in T.grid(M, 64):
                with T.sblock("init"):
                    vi, vj = T.axis.remap("SS", [i, j])
                    C[vi, vj] = zero

    @T.prim_func(s_tir=True)
    def init_impl(c: T.handle) -> None:
        sc = T.int32()
        C = T.match_buffer(c, (M, 64), acc, offset_factor=1, strides=[sc, 1], scope="local")
        with T.sblock("root"):
            T.reads()
            T.writes(C[0:M, 0:64])
            cfg = T.alloc_buffer((64,), "uint8")
            for i in range(64):   # palette 1; tmm0-7 64 bytes wide; tmm0-4 M rows, tmm5-7 16 rows
                cfg[i] = T.if_then_else(i == 0, T.uint8(1), T.if_then_else(
                    16 <= i and i < 32 and i % 2 == 0, T.uint8(64), T.if_then_else(
                        48 <= i and i < 53, T.uint8(M), T.if_then_else(53 <= i and i < 56, T.uint8(16), T.uint8(0)))))
            T.evaluate(T.call_llvm_intrin("void", "llvm.x86.ldtilecfg", T.address_of(cfg[0])))
            for t in T.unroll(4):
                T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tilezero", T.uint8(t)))

    @T.prim_func(s_tir=True)
    def update_desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        sa, sb, sc = T.int32(), T.int32(), T.int32()
        A = T.match_buffer(a, (M, K), elem, offset_factor=1, strides=[sa, 1])
        B = T.match_buffer(b, (16, 64, group), weight, offset_factor=1, strides=[sb, group, 1])
        C = T.match_buffer(c, (M, 64), acc, offset_factor=1, strides=[sc, 1], scope="local")
        with T.sblock("root"):
            T.reads(C[0:M, 0:64], A[0:M, 0:K], B[0:16, 0:64, 0:group])
            T.writes(C[0:M, 0:64])
            for m, n, g, k in T.grid(M, 64, 16, group):
                with T.sblock("update"):
                    vm, vn, vg, vk = T.axis.remap("SSRR", [m, n, g, k])
                    C[vm, vn] = C[vm, vn] + a_val(A[vm, vg * group + vk]) * a_val(B[vg, vn, vk])

    @T.prim_func(s_tir=True)
    def update_impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        sa, sb, sc = T.int32(), T.int32(), T.int32()
        A = T.match_buffer(a, (M, K), elem, offset_factor=1, strides=[sa, 1])
        B = T.match_buffer(b, (16, 64, group), weight, offset_factor=1, strides=[sb, group, 1])
        C = T.match_buffer(c, (M, 64), acc, offset_factor=1, strides=[sc, 1], scope="local")
        with T.sblock("root"):
            T.reads(C[0:M, 0:64], A[0:M, 0:K], B[0:16, 0:64, 0:group])
            T.writes(C[0:M, 0:64])
            T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tileloadd64", T.uint8(4), A.access_ptr("r"),
                                          T.int64(sa * esize)))
            for j in T.unroll(4):   # B's 16 output channels j: 64 bytes into each row
                T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tileloadd64", T.uint8(5 + j % 3),
                                              B.access_ptr("r", offset=16 * group * j), T.int64(sb * esize)))
                T.evaluate(T.call_llvm_intrin("void", dot, T.uint8(j), T.uint8(4), T.uint8(5 + j % 3)))

    @T.prim_func(s_tir=True)
    def store_desc(c: T.handle, d: T.handle) -> None:
        sc, sd = T.int32(), T.int32()
        C = T.match_buffer(c, (M, 64), acc, offset_factor=1, strides=[sc, 1], scope="local")
        D = T.match_buffer(d, (M, 64), acc, offset_factor=1, strides=[sd, 1])
        with T.sblock("root"):
            T.reads(C[0:M, 0:64])
            T.writes(D[0:M, 0:64])
            for m, n in T.grid(M, 64):
                with T.sblock("store"):
                    vm, vn = T.axis.remap("SS", [m, n])
                    D[vm, vn] = C[vm, vn]

    @T.prim_func(s_tir=True)
    def store_impl(c: T.handle, d: T.handle) -> None:
        sc, sd = T.int32(), T.int32()
        C = T.match_buffer(c, (M, 64), acc, offset_factor=1, strides=[sc, 1], scope="local")
        D = T.match_buffer(d, (M, 64), acc, offset_factor=1, strides=[sd, 1])
        with T.sblock("root"):
            T.reads(C[0:M, 0:64])
            T.writes(D[0:M, 0:64])
            for j in T.unroll(4):
                T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tilestored64", T.uint8(j),
                                              D.access_ptr("w", offset=16 * j), T.int64(sd * 4)))

    for name, desc, impl in zip(names, (init_desc, update_desc, store_desc), (init_impl, update_impl, store_impl)):
        TensorIntrin.register(name, desc, impl, override=True)
    _REGISTERED.add(names[0])
    return names


def amx_intrinsics_2x2(width: int, kind: str = "int8", image_rows: int = 1) -> tuple[str, str, str]:
    """As `amx_intrinsics`, for two tiles of pixels x 32 output channels: C in tmm0-3 (pixel
    tile r, 16 channels j in tmm 2r + j), A (the two pixel tiles) in tmm4-5, B (the two
    16-channel halves) in tmm6-7. Per step 2 A and 2 B loads feed 4 dot products, so each weight
    tile loaded serves two pixel tiles: half the weight traffic of the 1 x 4 layout, which is
    what the large layers' convs (weights streamed from L2) are bound by.
    A pixel tile is `image_rows` image rows of `width` pixels (image_rows x width <= 16): one
    row by default; on a narrow map (width 8, 4, 2) several, so a tile still has 16 rows. The
    descriptions name (2 x image_rows, width, ...) regions; the implementations load and store
    image_rows of them as one tile, which is right only where consecutive image rows are
    consecutive in memory (a row's stride is width x the pixel's): the schedule asks for more
    than one only for convs whose input and accumulator rows are exactly `width` pixels."""
    R, W = image_rows, width
    M, H = R * W, 2 * R
    names = tuple(f"reidc_amx2_{kind}_{k}_{R}x{W}" for k in ("init", "update", "store"))
    if names[0] in _REGISTERED:
        return names
    t = _AmxTypes(kind)
    acc, elem, weight, group, K, zero, dot, esize, a_val = t.acc, t.elem, t.weight, t.group, t.K, t.zero, t.dot, t.esize, t.value

    @T.prim_func(s_tir=True)
    def init_desc(c: T.handle) -> None:
        sr, s1 = T.int32(), T.int32()
        C = T.match_buffer(c, (H, W, 32), acc, offset_factor=1, strides=[sr, s1, 1], scope="local")
        with T.sblock("root"):
            T.reads()
            T.writes(C[0:H, 0:W, 0:32])
            for y, i, j in T.grid(H, W, 32):
                with T.sblock("init"):
                    vy, vi, vj = T.axis.remap("SSS", [y, i, j])
                    C[vy, vi, vj] = zero

    @T.prim_func(s_tir=True)
    def init_impl(c: T.handle) -> None:
        sr, s1 = T.int32(), T.int32()
        C = T.match_buffer(c, (H, W, 32), acc, offset_factor=1, strides=[sr, s1, 1], scope="local")
        with T.sblock("root"):
            T.reads()
            T.writes(C[0:H, 0:W, 0:32])
            cfg = T.alloc_buffer((64,), "uint8")
            for i in range(64):   # palette 1; tmm0-7 64 bytes wide; tmm0-5 M rows, tmm6-7 16 rows
                cfg[i] = T.if_then_else(i == 0, T.uint8(1), T.if_then_else(
                    16 <= i and i < 32 and i % 2 == 0, T.uint8(64), T.if_then_else(
                        48 <= i and i < 54, T.uint8(M), T.if_then_else(54 <= i and i < 56, T.uint8(16), T.uint8(0)))))
            T.evaluate(T.call_llvm_intrin("void", "llvm.x86.ldtilecfg", T.address_of(cfg[0])))
            for t in T.unroll(4):
                T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tilezero", T.uint8(t)))

    @T.prim_func(s_tir=True)
    def update_desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        ar, a1, sb, sr, s1 = T.int32(), T.int32(), T.int32(), T.int32(), T.int32()
        A = T.match_buffer(a, (H, W, K), elem, offset_factor=1, strides=[ar, a1, 1])
        B = T.match_buffer(b, (16, 32, group), weight, offset_factor=1, strides=[sb, group, 1])
        C = T.match_buffer(c, (H, W, 32), acc, offset_factor=1, strides=[sr, s1, 1], scope="local")
        with T.sblock("root"):
            T.reads(C[0:H, 0:W, 0:32], A[0:H, 0:W, 0:K], B[0:16, 0:32, 0:group])
            T.writes(C[0:H, 0:W, 0:32])
            for y, m, n, g, k in T.grid(H, W, 32, 16, group):
                with T.sblock("update"):
                    vy, vm, vn, vg, vk = T.axis.remap("SSSRR", [y, m, n, g, k])
                    C[vy, vm, vn] = C[vy, vm, vn] + a_val(A[vy, vm, vg * group + vk]) * a_val(B[vg, vn, vk])

    @T.prim_func(s_tir=True)
    def update_impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        ar, a1, sb, sr, s1 = T.int32(), T.int32(), T.int32(), T.int32(), T.int32()
        A = T.match_buffer(a, (H, W, K), elem, offset_factor=1, strides=[ar, a1, 1])
        B = T.match_buffer(b, (16, 32, group), weight, offset_factor=1, strides=[sb, group, 1])
        C = T.match_buffer(c, (H, W, 32), acc, offset_factor=1, strides=[sr, s1, 1], scope="local")
        with T.sblock("root"):
            T.reads(C[0:H, 0:W, 0:32], A[0:H, 0:W, 0:K], B[0:16, 0:32, 0:group])
            T.writes(C[0:H, 0:W, 0:32])
            for r in T.unroll(2):   # image rows r*R .. r*R + R - 1: M consecutive pixels, a1 apart
                T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tileloadd64", T.uint8(4 + r),
                                              A.access_ptr("r", offset=ar * R * r), T.int64(a1 * esize)))
            for j in T.unroll(2):
                T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tileloadd64", T.uint8(6 + j),
                                              B.access_ptr("r", offset=16 * group * j), T.int64(sb * esize)))
            for r in T.unroll(2):
                for j in T.unroll(2):
                    T.evaluate(T.call_llvm_intrin("void", dot, T.uint8(2 * r + j), T.uint8(4 + r), T.uint8(6 + j)))

    @T.prim_func(s_tir=True)
    def store_desc(c: T.handle, d: T.handle) -> None:
        sr, s1, dr, d1 = T.int32(), T.int32(), T.int32(), T.int32()
        C = T.match_buffer(c, (H, W, 32), acc, offset_factor=1, strides=[sr, s1, 1], scope="local")
        D = T.match_buffer(d, (H, W, 32), acc, offset_factor=1, strides=[dr, d1, 1])
        with T.sblock("root"):
            T.reads(C[0:H, 0:W, 0:32])
            T.writes(D[0:H, 0:W, 0:32])
            for y, m, n in T.grid(H, W, 32):
                with T.sblock("store"):
                    vy, vm, vn = T.axis.remap("SSS", [y, m, n])
                    D[vy, vm, vn] = C[vy, vm, vn]

    @T.prim_func(s_tir=True)
    def store_impl(c: T.handle, d: T.handle) -> None:
        sr, s1, dr, d1 = T.int32(), T.int32(), T.int32(), T.int32()
        C = T.match_buffer(c, (H, W, 32), acc, offset_factor=1, strides=[sr, s1, 1], scope="local")
        D = T.match_buffer(d, (H, W, 32), acc, offset_factor=1, strides=[dr, d1, 1])
        with T.sblock("root"):
            T.reads(C[0:H, 0:W, 0:32])
            T.writes(D[0:H, 0:W, 0:32])
            for r in T.unroll(2):
                for j in T.unroll(2):
                    T.evaluate(T.call_llvm_intrin("void", "llvm.x86.tilestored64", T.uint8(2 * r + j),
                                                  D.access_ptr("w", offset=dr * R * r + 16 * j), T.int64(d1 * 4)))

    for name, desc, impl in zip(names, (init_desc, update_desc, store_desc), (init_impl, update_impl, store_impl)):
        TensorIntrin.register(name, desc, impl, override=True)
    _REGISTERED.add(names[0])
    return names


_REGISTERED: set[str] = set()
