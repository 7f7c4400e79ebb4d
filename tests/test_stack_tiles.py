"""Register tiles on the stack (kernels/stack_tiles.py): TVM served every "local" allocation
from a heap workspace, so a binary conv's popcount tile (12 pixels x 16 channels of uint64 on
AVX-512: 1 KB) was zeroed by a memset per tile and stored after its reduction. Checked three
ways: which allocations the pass marks (small "local" ones only), the generated code with and
without it (no workspace and no memset for the tile), and the numbers (integer-exact)."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import tvm
from tvm import te
from tvm.script import tirx as T

from reidc.compiler.ir.bits import border_correction, pack_signs, words
from reidc.compiler.lower.build import CPU_TIR_PIPELINE
from reidc.kernels.bconv2d import bconv2d_nchwc, pack_binary_weight
from reidc.kernels.bconv_schedule import BConv2dNCHWc
from reidc.kernels.stack_tiles import DISABLE_LOWER_BUILTIN, stack_register_tiles
from reidc.targets import get_target

from asm_text import asm_of, functions_with


@T.prim_func(s_tir=True)
def _three_allocations(A: T.Buffer((64,), "float32")):
    small = T.alloc_local((16,), "float32")
    big = T.alloc_local((2048,), "float32")    # 8 KB: past the bound, stays a workspace
    glob = T.alloc_buffer((16,), "float32")    # global: TVM already keeps it on the stack
    for i in range(16):
        small[i] = A[i]
        big[i] = A[i + 16]
        glob[i] = A[i + 32]
    for i in range(16):
        A[i] = small[i] + big[i] + glob[i]


def test_only_small_local_allocations_are_marked():
    text = stack_register_tiles(_three_allocations).script()
    marked = [ln.split("=")[0].strip() for ln in text.splitlines() if DISABLE_LOWER_BUILTIN in ln]
    assert marked == ["small"]
    assert stack_register_tiles(stack_register_tiles(_three_allocations)).script() == text   # idempotent


N, C, H, W, O = 1, 64, 8, 16, 64   # bire-resnet18's layer1 conv, a smaller map


def _bconv(pipeline: str):
    preset = get_target("x86-avx512-vnni")
    target = preset.tvm_target()
    X = te.placeholder((N, H, W, words(C)), "uint64", name="X")
    Wt = te.placeholder((O // 64, 3, 3, words(C), 64), "uint64", name="W")
    signs = np.where(np.random.default_rng(4).standard_normal((O, C, 3, 3)) < 0, -1, 1).astype(np.int8)
    corr = border_correction(signs, (H, W), (1, 1), (1, 1))
    ph = [te.placeholder(a.shape, "int32", name=f"c{k}") for k, a in enumerate(corr)]
    func = te.create_prim_func([X, Wt, *ph, bconv2d_nchwc(X, Wt, *ph, C, (1, 1), (1, 1))])
    with target:   # the AVX-512 tile: 8 pixels (of 16) x 16 channels of uint64, 1 KB
        sch = BConv2dNCHWc(reg_w=12, lanes=16).apply(func, target, False)
    lib = tvm.compile(tvm.IRModule({"main": sch.mod["main"].with_attr("global_symbol", "main")}), target=target,
                      tir_pipeline=pipeline)
    return lib, signs, corr, preset


def test_the_binary_tile_is_registers_not_a_zeroed_workspace():
    for pipeline, tile_in_heap in ((CPU_TIR_PIPELINE, False), ("default", True)):
        lib, *_ = _bconv(pipeline)
        ll = lib.mod.inspect_source("ll")
        sizes = [int(s) for s in re.findall(r"i32 %dev_id, i64 (\d+)", ll)]
        asm = asm_of(lib)
        assert (1024 in sizes) is tile_in_heap, (pipeline, sizes)   # the rest: the padded input
        assert bool(functions_with(asm, "memset") & functions_with(asm, "vpopcntq")) is tile_in_heap, pipeline


def test_the_numbers_stay_exact():
    lib, signs, corr, preset = _bconv(CPU_TIR_PIPELINE)
    if preset.missing_on_host():
        pytest.skip("this CPU lacks AVX-512 VPOPCNTDQ: checked in its code only")
    x = np.random.default_rng(5).standard_normal((N, C, H, W)).astype(np.float32)
    out = tvm.runtime.tensor(np.zeros((N, O // 64, H, W, 64), np.int32))
    lib["main"](tvm.runtime.tensor(pack_signs(x.transpose(0, 2, 3, 1))),
                tvm.runtime.tensor(pack_binary_weight(pack_signs(signs.transpose(0, 2, 3, 1)), 64)),
                *(tvm.runtime.tensor(a) for a in corr), out)
    ref = torch.nn.functional.conv2d(torch.from_numpy(np.where(x < 0, -1.0, 1.0)),
                                     torch.from_numpy(signs.astype(np.float64)), padding=1).numpy()
    np.testing.assert_array_equal(out.numpy().transpose(0, 1, 4, 2, 3).reshape(ref.shape), ref.astype(np.int32))
