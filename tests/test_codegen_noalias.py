"""Kernels compiled as restricted (noalias) functions in a whole network's library.

TVM 0.27's LLVM codegen compiles every function of a module with the noalias flag of the function
last in name order; in a network built for any batch that is Relax's `shape_func`, which has none,
so every kernel lost `noalias` and LLVM stored the dot-product accumulators after each step.
`restrict_single_buffer_functions` (compiler/lower/build.py) gives the single-buffer functions
the flag. Checked three ways: the IR it produces, the loops in the assembly (with and without
it), and the numbers."""
from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import tirx as T

from reidc.compiler.ir import Op, const
from reidc.compiler.ir.interp import run_all
from reidc.compiler.lower.build import build, int8_flavour, relax_pipeline, restrict_single_buffer_functions
from reidc.compiler.lower.to_relax import to_relax
from reidc.targets import get_target

from asm_text import asm_of, functions_with, stores_in_loops
from test_amx_tiles import _chain, _qconv

RNG = np.random.default_rng(5)


@T.prim_func(s_tir=True)
def _one_buffer(H: T.Buffer((4,), "int64")):
    H[1] = H[0] * T.int64(2)


@T.prim_func(s_tir=True)
def _two_buffers(A: T.Buffer((4,), "float32"), B: T.Buffer((4,), "float32")):
    for i in range(4):
        B[i] = A[i]


def test_only_single_buffer_functions_become_restricted():
    mod = tvm.IRModule({"shape_func": _one_buffer, "copy": _two_buffers,
                        "kernel": _two_buffers.with_attr("tirx.noalias", True)})
    out = restrict_single_buffer_functions(mod)
    flag = {gv.name_hint: bool(f.attrs.get("tirx.noalias", False)) if f.attrs else False
            for gv, f in out.functions.items()}
    assert flag == {"shape_func": True, "copy": False, "kernel": True}   # two buffers may alias: untouched
    assert out["kernel"].same_as(mod["kernel"])


def _network(wmax: int):
    """A 3x3 int8 conv, then a global pool: its reshape makes Relax emit a `shape_func` for
    the free batch, the name that sorts last."""
    q = _qconv(64, 64, 3, padding=(1, 1), weight=RNG.integers(-wmax, wmax + 1, (64, 64, 3, 3)).astype(np.int8))
    return _chain(64, (16, 8), [(Op.RELU, {}), (Op.QUANTIZE, {"scale": const([0.02]), "zero_point": 0}),
                                (Op.CONV2D_INT8, q), (Op.GLOBAL_AVGPOOL, {})])


@pytest.mark.parametrize("preset_name, instruction", [("x86-avx512-vnni", "vpdpbusd"), ("x86-avx2", "vpmaddubsw")])
def test_dot_product_loops_keep_their_accumulators_in_registers(preset_name, instruction):
    preset = get_target(preset_name)
    g = _network(int8_flavour(preset).weight_max)
    mod = to_relax({"visible": g}, int8=int8_flavour(preset))
    ex = build(mod, preset)
    assert "shape_func" in ex.mod.imports[0].inspect_source("ll")
    loops = stores_in_loops(asm_of(ex), instruction)
    assert loops and all(stores < count / 4 for _, count, stores in loops), loops
    # TVM's own pipeline, without the fix: one store per dot product (the bug this guards against)
    plain = tvm.compile(mod, target=preset.tvm_target(), relax_pipeline=relax_pipeline(preset), tir_pipeline="default")
    assert all(stores >= count for _, count, stores in stores_in_loops(asm_of(plain), instruction))
    if preset.missing_on_host():
        pytest.skip(f"this CPU lacks {preset_name}: checked in its assembly only")
    x = RNG.standard_normal((2, 64, 16, 8)).astype(np.float32)
    got = relax.VirtualMachine(ex, tvm.cpu())["visible"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(got, run_all(g, {"x": x})[g.outputs[0]], rtol=1e-5, atol=1e-5)


def test_a_vnni_conv_keeps_every_reduction_under_its_accumulators():
    """A 1x1 conv over one 64-channel input block (R50's layer1 expansion, 64 -> 256; its input
    is the output of a 64-channel conv, so one block): its channel-group loop used to run
    outside the pixel tile, so each of its 16 steps stored and reloaded the accumulators (that
    conv ran at 30% of the VNNI peak on a Zen 4); the first conv, over four 16-channel blocks,
    had its input-block loop there. Now no vpdpbusd loop stores; the numbers are unchanged.
    Each register tile is a "local" buffer written back to the task's accumulator block once,
    so its zeroing is in registers: zeroed in the block, it was a 1 KB memset per tile; the
    fused epilogue runs per tile, inlined into the write-back (it reads the tile in registers,
    and the task's int32 block is gone)."""
    preset = get_target("x86-avx512-vnni")
    quant = (Op.QUANTIZE, {"scale": const([0.02]), "zero_point": 0})
    g = _chain(64, (16, 8), [(Op.RELU, {}), quant, (Op.CONV2D_INT8, _qconv(64, 64, 1)), (Op.RELU, {}), quant,
                             (Op.CONV2D_INT8, _qconv(256, 64, 1)), (Op.GLOBAL_AVGPOOL, {})])
    mod = to_relax({"visible": g}, int8=int8_flavour(preset))
    with preset.tvm_target():
        scheduled = relax_pipeline(preset)(mod)
    convs = [f.script() for gv, f in scheduled.functions.items() if "conv2d_int8" in gv.name_hint
             and isinstance(f, tvm.tirx.PrimFunc)]
    tiles = [[ln for ln in c.splitlines() if "alloc_buffer" in ln and 'scope="local"' in ln] for c in convs]
    assert len(convs) == 2 and all(len(t) == 1 for t in tiles), tiles   # each conv's register tile
    blocks = [ln for c in convs for ln in c.splitlines() if "alloc_buffer" in ln and '"int32"' in ln
              and 'scope="local"' not in ln]
    assert blocks == [], blocks   # no int32 block per task: the epilogue reads the tile
    ex = build(mod, preset)
    asm = asm_of(ex)
    loops = stores_in_loops(asm, "vpdpbusd")
    assert len({name for name, _, _ in loops}) == 2, loops   # both convs' dot-product loops
    assert all(stores == 0 for _, _, stores in loops), loops
    assert not functions_with(asm, "memset") & functions_with(asm, "vpdpbusd")
    # the first conv's epilogue requantises by one float add and vpmovdb (narrow_u8.py), no
    # rounding or float -> int32 convert
    dots = functions_with(asm, "vpdpbusd")
    assert functions_with(asm, "vpmovdb") & dots
    assert not (functions_with(asm, "vrndscaleps") | functions_with(asm, "vroundps")
                | functions_with(asm, "vcvttps2dq")) & dots
    # no heap workspace: the tile (4 pixels x 64 channels of int32, 1 KB) is on the stack
    # (kernels/stack_tiles.py), and the task's block (16 rows x 8 pixels x 64 channels, 32 KB)
    # it was written back to, for the epilogue to read, is gone
    ll = "\n".join(m.inspect_source("ll") for m in [ex.mod, *ex.mod.imports] if m.kind == "llvm")
    bodies = [f for f in ll.split("\ndefine ") if "vpdpbusd" in f]
    sizes = [int(s) for f in bodies for s in re.findall(r"i32 %dev_id, i64 (\d+)", f)]
    assert len(bodies) == 2 and sizes == [], sizes
    if preset.missing_on_host():
        pytest.skip("this CPU lacks AVX-512 VNNI: checked in its assembly only")
    x = RNG.standard_normal((2, 64, 16, 8)).astype(np.float32)
    got = relax.VirtualMachine(ex, tvm.cpu())["visible"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(got, run_all(g, {"x": x})[g.outputs[0]], rtol=1e-5, atol=1e-5)
