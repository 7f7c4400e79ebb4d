"""bf16 convs on CUDA tensor cores (sm_80+): TVM's own WMMA matmul rule (dlight
`MatmulTensorization`), given bf16 fragments.

TVM ships WMMA intrinsics for fp16 and int8 only, and its rule names the fp16 ones; what reidc
adds is what TVM lacks: the bf16 fragment loads and the bf16 x bf16 -> f32 `mma_sync`, built by
TVM's own intrinsic generators (`get_wmma_load_intrin`, `get_wmma_sync_intrin`) with dtype
bfloat16, and the rule run with them in place of the fp16 names. The schedule itself (16x16x16
fragments, 8 warps, shared-memory staging, software pipeline, padding of the matmul to whole
tiles, the epilogue inlined after the accumulator store) is TVM's.

The conv (kernels/conv2d_bf16.py `conv2d_nchwc_wmma`) is an implicit-GEMM matmul to that rule,
one per sample (the batch is the rule's batch axis, grid z): I = output pixels, J = output
channels, K = taps x input channels.
"""
from __future__ import annotations

import contextlib
import functools
import re
import threading

from tvm import s_tir, tirx
from tvm.s_tir import TensorIntrin
from tvm.s_tir.dlight.gpu.base import GPUScheduleRule
from tvm.s_tir.dlight.gpu.matmul import MatmulTensorization

from .conv2d_bf16 import WMMA_BLOCK
from .schedule_utils import block_named

_LOAD_A = "reidc_wmma_load_16x16x16_bf16_a_shared_dyn"
_LOAD_B = "reidc_wmma_load_16x16x16_bf16_b_trans_shared_dyn"
_SYNC = "reidc_wmma_sync_16x16x16_bf16bf16f32_trans"
_lock = threading.Lock()


@functools.cache
def _register() -> None:
    """Once per process: each registration builds TVMScript functions."""
    import tvm.s_tir.tensor_intrin.cuda as ci
    for name, (desc, impl) in ((_LOAD_A, ci.get_wmma_load_intrin(16, 16, 16, "bfloat16", "shared.dyn", False, False)),
                               (_LOAD_B, ci.get_wmma_load_intrin(16, 16, 16, "bfloat16", "shared.dyn", True, True)),
                               (_SYNC, ci.get_wmma_sync_intrin(16, 16, 16, "bfloat16", "float32", True))):
        TensorIntrin.register(name, desc, impl, override=True)


class _Declined(Exception):
    """TVM's rule asked for an intrinsic group reidc has no bf16 twin of (its retry with an f16
    accumulator, after the f32 one failed to tensorize)."""


@contextlib.contextmanager
def _bf16_fragments():
    """TVM's rule picks its intrinsics through `get_wmma_intrin_group(in_dtype="float16", ...)`;
    for the span of one `apply` (one at a time: the lock) the group's loads and product are the
    bf16 ones (the fill and the f32 accumulator store are dtype-free of the inputs and stay TVM's)."""
    import tvm.s_tir.tensor_intrin.cuda as ci
    with _lock:
        fp16_group = ci.get_wmma_intrin_group

        def bf16_group(**kw):
            if kw.get("in_dtype") != "float16" or kw.get("out_dtype") != "float32" or not kw.get("trans_b"):
                raise _Declined(kw)
            return {**fp16_group(**kw), "load_a": _LOAD_A, "load_b": _LOAD_B, "compute": _SYNC}

        ci.get_wmma_intrin_group = bf16_group
        try:
            yield
        finally:
            ci.get_wmma_intrin_group = fp16_group


class ConvBF16WMMA(GPUScheduleRule):
    """reidc's bf16 conv (its block `WMMA_BLOCK`) on tensor cores; other functions, and a conv
    TVM's rule cannot tensorize: None (dlight's generic rules then schedule it on CUDA cores)."""

    def apply(self, func, target, tunable):
        if not isinstance(func, tirx.PrimFunc) or block_named(s_tir.Schedule(func), func, WMMA_BLOCK) is None:
            return None
        _register()
        try:
            with _bf16_fragments():
                return MatmulTensorization().apply(func, target, tunable)
        except _Declined:
            return None


def wmma_arch(arch: str | None, dtype: str = "bfloat16") -> bool:
    """Whether a CUDA arch ("sm_86", "sm_90a") has WMMA for `dtype`: bf16 from Ampere (sm_80),
    int8 from Xavier and Turing (sm_72)."""
    m = re.match(r"sm_(\d+)", arch or "")
    return bool(m) and int(m.group(1)) >= {"bfloat16": 80, "int8": 72}[dtype]
