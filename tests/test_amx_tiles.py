"""AMX int8 convs: tiles configured once per task (kernels/amx_config.py), narrow maps in 16-row
tiles (whole image rows: Int8Flavour.row_tiles), and the stem's phases and column taps folded
into 64-channel rows (conv2d_int8.py fold_columns / fold_weight). The assembly and schedule
checks need no AMX; the numbers are checked exactly where this machine has AMX-INT8, and the
folded stem runs exactly on any x86 (its conv then takes the VNNI or plain loops)."""
from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.s_tir import dlight as dl
from tvm.script import tirx as T

from reidc.compiler.ir import Graph, Node, Op, const, verify
from reidc.compiler.ir.interp import run_all
from reidc.compiler.ir.shapes import infer
from reidc.compiler.ir.spec import spec_of
from reidc.compiler.lower.build import build, fused_module, int8_flavour, schedule_rules
from reidc.compiler.lower.to_relax import to_relax
from reidc.kernels.amx_config import hoist_tile_config
from reidc.kernels.conv2d_int8 import Int8Flavour, column_fold
from reidc.targets import get_target

from asm_text import asm_of, functions_with

RNG = np.random.default_rng(11)
AMX = get_target("x86-amx")


@pytest.fixture(scope="module")
def host():
    return get_target("host")


def _qconv(o, i, k, stride=(1, 1), padding=(0, 0), zero_point=0, weight=None):
    return {"weight": const(weight if weight is not None else RNG.integers(-127, 128, (o, i, k, k)).astype(np.int8)),
            "weight_scale": const(RNG.uniform(0.001, 0.01, (o,)).astype(np.float32)),
            "bias": const(RNG.standard_normal(o).astype(np.float32)), "stride": stride, "padding": padding,
            "input_scale": const([0.05]), "zero_point": zero_point}


def _chain(c, size, steps) -> Graph:
    g = Graph("op")
    g.add("x", Node(Op.INPUT, (), ("N", c) + size, attrs={"name": "x"}))
    prev = "x"
    for k, (op, attrs) in enumerate(steps):
        prev = g.add(f"n{k}", Node(op, (prev,), infer(op, [g[prev].shape], attrs), spec_of(op).out_dtype(attrs), attrs))
    g.outputs = [prev]
    return verify(g)


def _exact_on_amx(g, ex, x):
    from reidc.targets.amx import request_amx
    if AMX.missing_on_host() or not request_amx():
        pytest.skip("this CPU (or kernel) has no AMX-INT8: checked in the assembly and schedule only")
    want = run_all(g, {"x": x})[g.outputs[0]]
    got = relax.VirtualMachine(ex, tvm.cpu())["visible"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# --- the tile configuration, once per task ------------------------------------------------------

def _config_loop(rows_expr):
    @T.prim_func
    def f(out: T.Buffer((64,), "int32")):
        for t in T.parallel(4):
            cfg = T.alloc_buffer((64,), "uint8")
            for g in range(3):
                for i in range(64):
                    cfg[i] = T.if_then_else(i == 0, T.uint8(1), rows_expr(g))
                T.call_llvm_intrin("void", "llvm.x86.ldtilecfg", T.address_of(cfg[0]))
                T.call_llvm_intrin("void", "llvm.x86.tilezero", T.uint8(0))
                out[t * 3 + g] = 1
    return f


def test_the_tile_config_moves_to_the_top_of_each_task():
    f = hoist_tile_config(_config_loop(lambda g: T.uint8(16)))
    task = f.body
    top = [type(s).__name__ for s in task.body.seq]
    assert top[:3] == ["AllocBuffer", "For", "Evaluate"] and "ldtilecfg" in task.body.seq[2].script()
    group_loop = task.body.seq[-1]
    assert "ldtilecfg" not in group_loop.script() and "tilezero" in group_loop.script()


def test_a_config_that_depends_on_the_group_stays_where_it_is():
    f = _config_loop(lambda g: T.Cast("uint8", g))
    assert hoist_tile_config(f).same_as(f)


def test_without_a_parallel_loop_nothing_changes():
    @T.prim_func
    def f(out: T.Buffer((64,), "int32")):
        cfg = T.alloc_buffer((64,), "uint8")
        for g in range(3):
            for i in range(64):
                cfg[i] = T.uint8(1)
            T.call_llvm_intrin("void", "llvm.x86.ldtilecfg", T.address_of(cfg[0]))
            out[g] = 1
    assert hoist_tile_config(f).same_as(f)


@pytest.mark.parametrize("size", [(9, 7), (8, 8)])
def test_strided_int8_convs_on_amx_tiles(size):
    """A strided int8 conv reads its input split into phases (conv2d_int8.py), so consecutive
    output pixels are consecutive rows of an AMX tile: 3x3 stride 2, 3x3 stride (2, 1) and 1x1
    stride 2 convs of 64-channel inputs all run tdpbusd (their own kernels, in the assembly), as
    does the first 1x1 (its input re-blocked from 16 to 64 channels).
    Odd and even maps (the last phase shorter). Where this machine has AMX-INT8: exact."""
    q = (Op.QUANTIZE, {"scale": const([0.05]), "zero_point": 128})
    g = _chain(64, size, [(Op.RELU, {}), (Op.QUANTIZE, {"scale": const([0.02]), "zero_point": 0}),
                          (Op.CONV2D_INT8, _qconv(64, 64, 1)), q,
                          (Op.CONV2D_INT8, _qconv(64, 64, 3, (2, 2), (1, 1), 128)), q,
                          (Op.CONV2D_INT8, _qconv(64, 64, 3, (2, 1), (1, 1), 128)), q,
                          (Op.CONV2D_INT8, _qconv(64, 64, 1, (2, 2), zero_point=128))])
    ex = build(to_relax({"visible": g}, int8=int8_flavour(AMX)), AMX)
    amx = {f for f in functions_with(asm_of(ex), "tdpbusd") if "conv2d_int8" in f}
    assert len(amx) == 4, sorted(amx)
    _exact_on_amx(g, ex, RNG.standard_normal((2, 64) + size).astype(np.float32))


# --- narrow maps: 16-row tiles of whole image rows -----------------------------------------------

def _tile_rows(g, preset) -> set[int]:
    """The tile rows the scheduled int8 convs configure (the init's config, bytes 48..53)."""
    mod = fused_module(to_relax({"visible": g}, int8=int8_flavour(preset)), preset)
    with preset.tvm_target():
        mod = dl.ApplyDefaultSchedule(*schedule_rules(preset))(mod)
    rows = set()
    for gv, f in mod.functions.items():
        if "conv2d_int8" in gv.name_hint:
            text = f.script()
            for m in (2, 4, 6, 7, 8, 12, 14, 16):
                if f"i < T.int64(54), T.uint8({m})" in text or f"i < 54, T.uint8({m})" in text:
                    rows.add(m)
    return rows


@pytest.mark.parametrize("size, kernel, rows", [((16, 8), 1, 16), ((16, 8), 3, 16), ((8, 4), 3, 16), ((6, 8), 3, 8)])
def test_narrow_maps_fill_sixteen_row_tiles(size, kernel, rows):
    """An 8-wide map's tiles hold two image rows (16 rows, not 8), a 4-wide map's four; a 3x3
    conv reads its input copied per column tap. Six rows of 8 do not split into pairs of
    two-row tiles: 8-row tiles there."""
    q = (Op.QUANTIZE, {"scale": const([0.05]), "zero_point": 128})
    g = _chain(64, size, [(Op.RELU, {}), (Op.QUANTIZE, {"scale": const([0.02]), "zero_point": 0}),
                          (Op.CONV2D_INT8, _qconv(64, 64, 1)), q,      # 16-channel blocks in, re-blocked to 64
                          (Op.CONV2D_INT8, _qconv(64, 64, kernel, padding=(kernel // 2,) * 2, zero_point=128))])
    assert _tile_rows(g, AMX) == {rows}
    ex = build(to_relax({"visible": g}, int8=int8_flavour(AMX)), AMX)
    _exact_on_amx(g, ex, RNG.standard_normal((2, 64) + size).astype(np.float32))


# --- the stem folded into 64-channel rows --------------------------------------------------------

def _stem(size, kernel=7, stride=2):
    w = RNG.integers(-63, 64, (64, 4, kernel, kernel)).astype(np.int8)   # AVX2 hosts take 7-bit weights
    w[:, 3] = 0   # the image's 4th channel is padding
    return _chain(3, size, [(Op.QUANTIZE, {"scale": const([0.02]), "zero_point": 128}),
                            (Op.CONV2D_INT8, _qconv(64, 4, kernel, (stride, stride), (kernel // 2,) * 2, 128, w))])


def test_which_convs_fold():
    assert column_fold((2, 2), (7, 7), 4) == (4, 4)
    assert column_fold((2, 2), (8, 8), 4) == (4, 4)
    assert column_fold((1, 1), (7, 7), 4) is None       # unit stride: nothing to fold
    assert column_fold((2, 2), (3, 3), 4) is None       # 2 x 2 x 2 x 4 = 32 channels, not a tile row
    assert column_fold((2, 2), (7, 7), 16) is None


@pytest.mark.parametrize("size", [(17, 13), (32, 16)])
def test_the_folded_stem_is_exact_anywhere(host, size):
    """The fold (phases x column taps x channels as one row, weights rearranged at compile
    time) is the same sum as the strided conv: built with the AMX flavour for this machine
    (its conv then runs on whatever dot product the host has), exact against the reference."""
    g = _stem(size)
    flavour = Int8Flavour(**{**int8_flavour(host).__dict__, "row_tiles": True})
    ex = build(to_relax({"visible": g}, int8=flavour), host)
    assert any("fold_columns" in f for f in functions_with(asm_of(ex), "ret"))
    x = RNG.standard_normal((2, 3) + size).astype(np.float32)
    want = run_all(g, {"x": x})[g.outputs[0]]
    got = relax.VirtualMachine(ex, tvm.cpu())["visible"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_the_stem_runs_on_amx_tiles():
    g = _stem((32, 16))
    ex = build(to_relax({"visible": g}, int8=int8_flavour(AMX)), AMX)
    asm = asm_of(ex)
    assert any("conv2d_int8" in f for f in functions_with(asm, "tdpbusd"))
    assert any("fold_columns" in f for f in functions_with(asm, "ret"))
    _exact_on_amx(g, ex, RNG.standard_normal((2, 3, 32, 16)).astype(np.float32))


def test_tuning_candidates_build_with_the_hoisted_tile_config():
    """MetaSchedule's builder compiles a candidate as `reidc compile` does (the reidc_cpu TIR
    pipeline), so an AMX candidate is timed with its tile config hoisted: the candidate's
    assembly is the reidc_cpu build's, not TVM's default pipeline's."""
    from reidc.compiler.lower.build import CPU_TIR_PIPELINE
    from reidc.compiler.tune.measure import build_candidate
    g = _chain(64, (16, 8), [(Op.RELU, {}), (Op.QUANTIZE, {"scale": const([0.02]), "zero_point": 0}),
                             (Op.CONV2D_INT8, _qconv(64, 64, 3, padding=(1, 1)))])
    mod = fused_module(to_relax({"visible": g}, int8=int8_flavour(AMX)), AMX)
    target = AMX.tvm_target()
    with target:
        mod = dl.ApplyDefaultSchedule(*schedule_rules(AMX))(mod)
    conv = next(f for gv, f in mod.functions.items() if "conv2d_int8" in gv.name_hint)
    one = tvm.IRModule({"main": conv.with_attr("global_symbol", "main")})
    got = asm_of(build_candidate(one, target, None))
    assert "tdpbusd" in got
    assert got == asm_of(tvm.compile(one, target=target, tir_pipeline=CPU_TIR_PIPELINE))
    assert got != asm_of(tvm.compile(one, target=target, tir_pipeline="default"))
