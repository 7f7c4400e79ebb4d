"""aarch64 tensor intrinsics reidc registers with TVM: the int8 conv's `sdot`.

`ARM_SDOT_S8S8_4x4`: 4 int32 lanes += sum over 4 of s8 x s8, one NEON `sdot` (dotprod). TVM
ships the same intrinsic (tvm.s_tir.tensor_intrin.arm_cpu, "dot_4x4_i8i8s32_sdot"), but its
implementation binds its operands to names first; such bindings become local buffers, which
LLVM left in memory inside whole networks' kernels (the same pattern made reidc's x86 VNNI
intrinsic 1.6x slower end to end: x86_intrin.py). This one is one expression.
"""
from __future__ import annotations

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

ARM_SDOT_S8S8_4x4 = "reidc_arm_sdot_s8s8_4x4"


@T.prim_func(s_tir=True)
def _desc(A: T.Buffer((4,), "int8", offset_factor=1), B: T.Buffer((4, 4), "int8", offset_factor=1),
          C: T.Buffer((4,), "int32", offset_factor=1)) -> None:
    with T.sblock("root"):
        T.reads(C[0:4], A[0:4], B[0:4, 0:4])
        T.writes(C[0:4])
        for i in T.serial(0, 4):
            for k in T.serial(0, 4):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")


@T.prim_func(s_tir=True)
def _sdot(A: T.Buffer((4,), "int8", offset_factor=1), B: T.Buffer((4, 4), "int8", offset_factor=1),
          C: T.Buffer((4,), "int32", offset_factor=1)) -> None:
    with T.sblock("root"):
        T.reads(C[0:4], A[0:4], B[0:4, 0:4])
        T.writes(C[0:4])
        C[T.ramp(T.int32(0), 1, 4)] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"), C.vload([0], dtype="int32x4"),
            T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int8x4"), dtype="int32"), 4), dtype="int8x16"),
            B.vload([0, 0], dtype="int8x16"), dtype="int32x4")


TensorIntrin.register(ARM_SDOT_S8S8_4x4, _desc, _sdot, override=True)
