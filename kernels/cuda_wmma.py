"""bf16 and int8 convs on CUDA tensor cores: TVM's own WMMA matmul rule (dlight
`MatmulTensorization`, written for fp16), given bf16 (sm_80+) or s8 (sm_72+) fragments.

TVM ships WMMA intrinsics for fp16 and int8 only, and its rule names the fp16 ones. What reidc
adds is what TVM lacks: the bf16 fragment loads and the bf16 x bf16 -> f32 `mma_sync`, built by
TVM's own intrinsic generators (`get_wmma_load_intrin`, `get_wmma_sync_intrin`) with dtype
bfloat16, and the rule run with the bf16 or TVM's s8 x s8 -> s32 intrinsics in place of the fp16
names. (TVM's own int8 rule, `MatmulInt8Tensorization`, fails in its software pipeline pass in
TVM 0.27, GetWmmaFragmentSize, even for a plain s8 conv; the fp16 rule's schedule with s8
fragments compiles.) The schedule itself (16x16x16 fragments, 8 warps, shared-memory staging,
software pipeline, padding of the matmul to whole tiles, the epilogue inlined after the
accumulator store) is TVM's.

The convs (kernels/conv2d_bf16.py `conv2d_nchwc_wmma`, conv2d_int8.py `conv2d_nchwc_int8_wmma`)
are implicit-GEMM matmuls to that rule: per sample (the batch is the rule's batch axis),
I = output pixels, J = output channels, K = input channels x taps.
"""
from __future__ import annotations

import contextlib
import threading

from tvm import s_tir, tirx
from tvm.s_tir import TensorIntrin
from tvm.s_tir.dlight.gpu.base import GPUScheduleRule
from tvm.s_tir.dlight.gpu.matmul import MatmulTensorization

from .conv2d_bf16 import WMMA_BLOCK
from .conv2d_int8 import QWMMA_BLOCK
from .schedule_utils import block_named

_LOAD_A = "reidc_wmma_load_16x16x16_bf16_a_shared_dyn"
_LOAD_B = "reidc_wmma_load_16x16x16_bf16_b_trans_shared_dyn"
_SYNC = "reidc_wmma_sync_16x16x16_bf16bf16f32_trans"
_lock = threading.Lock()


def _register() -> None:
    import tvm.s_tir.tensor_intrin.cuda as ci
    for name, (desc, impl) in ((_LOAD_A, ci.get_wmma_load_intrin(16, 16, 16, "bfloat16", "shared.dyn", False, False)),
                               (_LOAD_B, ci.get_wmma_load_intrin(16, 16, 16, "bfloat16", "shared.dyn", True, True)),
                               (_SYNC, ci.get_wmma_sync_intrin(16, 16, 16, "bfloat16", "float32", True))):
        TensorIntrin.register(name, desc, impl, override=True)


@contextlib.contextmanager
def _fragments(in_dtype: str):
    """TVM's rule picks its intrinsics through `get_wmma_intrin_group(in_dtype="float16",
    out_dtype="float32", ...)`; for the span of one `apply` that group is `in_dtype`'s: bf16's
    loads and product (the fill and the f32 accumulator store are TVM's), or TVM's s8 group with
    its s32 accumulator. The rule's retry with an f16 accumulator is refused."""
    import tvm.s_tir.tensor_intrin.cuda as ci
    fp16_group = ci.get_wmma_intrin_group

    def group(**kw):
        if kw.get("in_dtype") != "float16" or kw.get("out_dtype") != "float32" or not kw.get("trans_b"):
            raise ValueError("reidc's WMMA convs: only a wide accumulator with a transposed B")
        if in_dtype == "int8":
            return fp16_group(**{**kw, "in_dtype": "int8", "out_dtype": "int32"})
        return {**fp16_group(**kw), "load_a": _LOAD_A, "load_b": _LOAD_B, "compute": _SYNC}

    with _lock:
        ci.get_wmma_intrin_group = group
        try:
            yield
        finally:
            ci.get_wmma_intrin_group = fp16_group


class ConvWMMA(GPUScheduleRule):
    """reidc's tensor-core conv (the block `anchor`, operands `in_dtype`) on WMMA fragments;
    other functions: None."""

    def __init__(self, anchor: str, in_dtype: str):
        self.anchor, self.in_dtype = anchor, in_dtype

    def apply(self, func, target, tunable):
        if not isinstance(func, tirx.PrimFunc) or block_named(s_tir.Schedule(func), func, self.anchor) is None:
            return None
        if self.in_dtype == "bfloat16":
            _register()
        with _fragments(self.in_dtype):
            return MatmulTensorization().apply(func, target, tunable)


def wmma_rules() -> list:
    return [ConvWMMA(WMMA_BLOCK, "bfloat16"), ConvWMMA(QWMMA_BLOCK, "int8")]


def wmma_arch(arch: str | None, dtype: str = "bfloat16") -> bool:
    """Whether a CUDA arch ("sm_86") has WMMA for `dtype`: bf16 from Ampere (sm_80), s8 from
    Xavier and Turing (sm_72)."""
    return bool(arch) and arch.startswith("sm_") and int(arch[3:]) >= (80 if dtype == "bfloat16" else 72)
