"""AVX512-BF16's dot product as a tensor intrinsic: 16 float32 lanes += sum over a pair of input
channels of bf16 x bf16, one `vdpbf16ps` (AVX512-BF16: Zen 4 and newer AMD; Cooper Lake and
Sapphire Rapids have it too, where a target dict enables it: `x86-avx512-bf16` also asks VPOPCNTDQ,
which Cooper Lake lacks, and `x86-amx` takes AMX's tiles).

The instruction's LLVM intrinsic takes <32 x bfloat> operands, a type TVM 0.27's LLVM codegen
never emits: its bf16 legalisation widens a bfloat16 reinterpret to float32, and the call then
fails LLVM's verifier. So the intrinsic is wrapped in a few lines of LLVM IR that take the
operands as <16 x i32> (each lane a pair of bf16 bit patterns) and bitcast them; the TIR calls
the wrapper as an extern function and a `pragma_import_llvm` attribute links the IR into the
kernel's module, where LLVM inlines it (no call, no symbol left in the library).

Numbers: each product of two bf16 is exact in float32; the instruction adds the pair's two
products to the lane in turn, rounding to nearest even, with denormal inputs and results read
and written as zero (a bf16 below 1.2e-38 in magnitude). bf16 values travel as uint16 bit
patterns (conv2d_bf16.py).
"""
from __future__ import annotations

from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from .conv2d_bf16 import decode

DPBF16_16x2 = "reidc_dpbf16_16x2"
# the same on an accumulator in a "local" buffer (the schedule's register tile)
DPBF16_16x2_LOCAL = "reidc_dpbf16_16x2_local"

_WRAPPER = "reidc_dpbf16ps_512"
# linkonce_odr: every kernel that uses it links its own copy, and the copies merge
_LLVM_IR = f"""
define linkonce_odr <16 x float> @{_WRAPPER}(<16 x float> %c, <16 x i32> %a, <16 x i32> %b) #0 {{
  %a2 = bitcast <16 x i32> %a to <32 x bfloat>
  %b2 = bitcast <16 x i32> %b to <32 x bfloat>
  %r = call <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float> %c, <32 x bfloat> %a2, <32 x bfloat> %b2)
  ret <16 x float> %r
}}
declare <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float>, <32 x bfloat>, <32 x bfloat>)
attributes #0 = {{ alwaysinline nounwind "target-features"="+avx512f,+avx512bf16" }}
"""


def _desc(scope: str):
    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((2,), "uint16", offset_factor=1), B: T.Buffer((16, 2), "uint16", offset_factor=1),
             C: T.Buffer((16,), "float32", offset_factor=1, scope=scope)) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:2], B[0:16, 0:2])
            T.writes(C[0:16])
            for i in T.serial(0, 16):
                for k in T.serial(0, 2):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + decode(A[vk]) * decode(B[vi, vk])   # the conv block's own expression

    return desc


def _impl(scope: str):
    """C += A's pair broadcast to all 16 lanes . B's 16 pairs, one vdpbf16ps. One expression:
    operands bound to names become local buffers LLVM may leave in memory (x86_intrin.py)."""
    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((2,), "uint16", offset_factor=1), B: T.Buffer((16, 2), "uint16", offset_factor=1),
             C: T.Buffer((16,), "float32", offset_factor=1, scope=scope)) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:2], B[0:16, 0:2])
            T.writes(C[0:16])
            with T.attr(0, "pragma_import_llvm", _LLVM_IR):
                C[T.ramp(T.int32(0), 1, 16)] = T.call_pure_extern(
                    "float32x16", _WRAPPER, C.vload([0], dtype="float32x16"),
                    T.broadcast(T.reinterpret(A.vload([0], "uint16x2"), dtype="int32"), 16),
                    T.reinterpret(B.vload([0, 0], dtype="uint16x32"), dtype="int32x16"))

    return impl


TensorIntrin.register(DPBF16_16x2, _desc("global"), _impl("global"), override=True)
TensorIntrin.register(DPBF16_16x2_LOCAL, _desc("local"), _impl("local"), override=True)
