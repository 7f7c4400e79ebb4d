"""The description half of the int8 dot-product tensor intrinsics (x86_intrin.py, arm_intrin.py):
`lanes` int32 lanes C += sum over 4 of A (the input's 4 channels, broadcast) x B (lanes x 4
weights), the shape `tensorize` matches an int8 conv's innermost loops against. The
implementations (one instruction each: vpdpbusd, vpmaddubsw + vpmaddwd, sdot) stay with their
targets."""
from __future__ import annotations

from tvm.script import tirx as T


def dot_desc(lanes: int, a_dtype: str, scope: str = "global"):
    """The sum a `lanes` x 4 dot product computes, on an accumulator C in `scope`."""
    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((4,), a_dtype, offset_factor=1), B: T.Buffer((lanes, 4), "int8", offset_factor=1),
             C: T.Buffer((lanes,), "int32", offset_factor=1, scope=scope)) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            for i in T.serial(0, lanes):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    return desc


def broadcast_dot_impl(lanes: int, a_dtype: str, llvm_intrinsic: str, scope: str = "global"):
    """`dot_desc`'s sum as one instruction that takes C, A's 4 bytes broadcast to every lane, and
    B's lanes x 4 bytes (vpdpbusd, sdot). One expression: operands bound to names first become
    local buffers that LLVM left in memory inside whole networks' kernels."""
    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((4,), a_dtype, offset_factor=1), B: T.Buffer((lanes, 4), "int8", offset_factor=1),
             C: T.Buffer((lanes,), "int32", offset_factor=1, scope=scope)) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(llvm_intrinsic), C.vload([0], dtype=f"int32x{lanes}"),
                T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], f"{a_dtype}x4"), dtype="int32"), lanes),
                              dtype=f"int8x{4 * lanes}"),
                B.vload([0, 0], dtype=f"int8x{4 * lanes}"), dtype=f"int32x{lanes}")

    return impl
