"""aarch64 tensor intrinsics reidc registers with TVM: the int8 conv's `sdot`.

`ARM_SDOT_S8S8_4x4`: 4 int32 lanes += sum over 4 of s8 x s8, one NEON `sdot` (dotprod). TVM
ships the same intrinsic (tvm.s_tir.tensor_intrin.arm_cpu, "dot_4x4_i8i8s32_sdot"), but its
implementation binds its operands to names first; such bindings become local buffers, which
LLVM left in memory inside whole networks' kernels (the same pattern made reidc's x86 VNNI
intrinsic 1.6x slower end to end: x86_intrin.py). This one is one expression.
"""
from __future__ import annotations

from tvm.s_tir import TensorIntrin

from .dot_intrin import broadcast_dot_impl, dot_desc

ARM_SDOT_S8S8_4x4 = "reidc_arm_sdot_s8s8_4x4"


TensorIntrin.register(ARM_SDOT_S8S8_4x4, dot_desc(4, "int8"),
                      broadcast_dot_impl(4, "int8", "llvm.aarch64.neon.sdot.v4i32.v16i8"), override=True)
