"""The CUDA tensor intrinsic reidc registers with TVM: `DP4A_U8S8`, one `dp4a.u32.s32` (an int32
+= four u8 x s8 products, sm_61 and newer) on operands in shared memory and an accumulator in
registers. TVM ships the same one (tvm.s_tir.tensor_intrin's "dp4a_u8s8s32"), but importing
that package registers every CUDA MMA intrinsic first, which takes about 25 s.

The instruction is a device function of reidc's own whose source travels with the call
(`tirx.cuda.func_call`), not CUDA's `__dp4a`: CUDA declares no u8 x s8 `__dp4a`, and TVM's
generated header only declares one when NVRTC compiles it (the default when a library loads),
so ptxas failed on an H200 with "Unresolved extern function '_Z6__dp4ajii'"."""
from __future__ import annotations

from tvm.backend.cuda.op import cuda_func_call
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

DP4A_U8S8 = "reidc_dp4a_u8s8"
DP4A_FUNC = "reidc_dp4a_u8s8"
DP4A_SOURCE = f"""
__device__ __forceinline__ int {DP4A_FUNC}(unsigned int a, int b, int c) {{
  int d;
  asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}}
"""


@T.prim_func(s_tir=True)
def _desc(A: T.Buffer((4,), "uint8", offset_factor=1, align=4, scope="shared"),
          B: T.Buffer((4,), "int8", offset_factor=1, align=4, scope="shared"),
          C: T.Buffer((1,), "int32", offset_factor=1, align=4, scope="local")) -> None:
    with T.sblock("root"):
        T.reads(C[0], A[0:4], B[0:4])
        T.writes(C[0])
        for k in range(0, 4):
            with T.sblock("update"):
                vk = T.axis.remap("R", [k])
                C[0] = C[0] + T.cast(A[vk], "int32") * T.cast(B[vk], "int32")


@T.prim_func(s_tir=True)
def _dp4a(A: T.Buffer((4,), "uint8", offset_factor=1, align=4, scope="shared"),
          B: T.Buffer((4,), "int8", offset_factor=1, align=4, scope="shared"),
          C: T.Buffer((1,), "int32", offset_factor=1, align=4, scope="local")) -> None:
    with T.sblock("root"):
        T.reads(C[0], A[0:4], B[0:4])
        T.writes(C[0])
        C[0] += cuda_func_call(DP4A_FUNC, A.vload([0], "uint8x4"), B.vload([0], "int8x4"), T.int32(0),
                               source_code=DP4A_SOURCE, return_type="int32")


TensorIntrin.register(DP4A_U8S8, _desc, _dp4a, override=True)
